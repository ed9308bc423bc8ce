#include "test_database.h"

namespace parley::storage::test {

test_database make_test_database(const std::string& name_hint) {
    return {parley::test::fresh_postgres_database(name_hint), nullptr};
}

const char* backend_name() { return "postgresql"; }

}  // namespace parley::storage::test
