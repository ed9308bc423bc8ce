#include "test_database.h"

namespace parley::storage::test {

test_database make_test_database(const std::string&) {
    auto directory = std::make_shared<parley::test::temp_dir>();
    return {"sqlite://" + (directory->path() / "parley.db").string(), directory};
}

const char* backend_name() { return "sqlite"; }

}  // namespace parley::storage::test
