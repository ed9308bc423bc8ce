#include "test_database.h"

namespace parley::storage::test {

// No URL: "memory:<hint>" only names the database in messages. Stores made on
// `memory` share its tables, as stores opened on one URL share a database.
test_database make_test_database(const std::string& name_hint) {
    return {"memory:" + name_hint, nullptr, make_memory_database()};
}

result<std::unique_ptr<store>> open_test_store(const test_database& db, const store_options& options) {
    auto made = make_memory_store(options, db.memory);
    if (!made) return made.failure();
    return std::unique_ptr<store>(std::move(made).value());
}

const char* backend_name() { return "memory"; }

}  // namespace parley::storage::test
