#include "test_database.h"

namespace parley::storage::test {

test_database make_test_database(const std::string&) {
    auto directory = std::make_shared<parley::test::temp_dir>();
    return {"sqlite://" + (directory->path() / "parley.db").string(), directory, nullptr};
}

result<std::unique_ptr<store>> open_test_store(const test_database& db, const store_options& options) {
    return open_store(db.url, options);
}

const char* backend_name() { return "sqlite"; }

}  // namespace parley::storage::test
