#include "test_database.h"

namespace parley::storage::test {

test_database make_test_database(const std::string& name_hint) {
    return {parley::test::fresh_postgres_database(name_hint), nullptr, nullptr};
}

result<std::unique_ptr<store>> open_test_store(const test_database& db, const store_options& options) {
    return open_store(db.url, options);
}

const char* backend_name() { return "postgresql"; }

}  // namespace parley::storage::test
