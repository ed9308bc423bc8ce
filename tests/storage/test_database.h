#pragma once
// What the shared contract suite needs from the backend it runs against.
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include "parley/storage/memory_store.h"
#include "parley/storage/store.h"
#include "support/test_env.h"

// The tag of contract tests that need a database outside the process (a schema
// to migrate, a URL to parse, another process writing to it). The memory
// backend's run (storage_memory_tests, built with PARLEY_STORAGE_TEST_MEMORY)
// has none: there the tag hides them ("[.]"); each says why above it.
#ifdef PARLEY_STORAGE_TEST_MEMORY
#define PARLEY_NEEDS_DATABASE "[.needs-database]"
#else
#define PARLEY_NEEDS_DATABASE "[needs-database]"
#endif

namespace parley::storage::test {

// An empty database of its own for one test case.
struct test_database {
    std::string url;
    std::shared_ptr<parley::test::temp_dir> directory;  // SQLite only
    std::shared_ptr<memory_database> memory;            // memory store only
};

test_database make_test_database(const std::string& name_hint);
// A store on the test case's database, as open_store(db.url, options) opens one.
result<std::unique_ptr<store>> open_test_store(const test_database& db, const store_options& options = {});
const char* backend_name();

// Message `seq` of conversation c1 of tenant acme, stamped base + seq (the fault and memory-store tests).
inline message_record numbered_message(millis base, std::int64_t seq,
                                       std::optional<std::string> client_msg_id = std::nullopt) {
    message_record m;
    m.tenant_id = "acme";
    m.conversation_id = "c1";
    m.seq = seq;
    m.body = "message " + std::to_string(seq);
    m.client_msg_id = std::move(client_msg_id);
    m.at = base + seq;
    return m;
}

// Runs an asynchronous store operation and waits for its callback.
// Usage: auto r = wait_for<void>([&](auto done) { s.put_agent(agent, done); });
template <class T, class Start>
result<T> wait_for(Start start) {
    auto promise = std::make_shared<std::promise<result<T>>>();
    auto future = promise->get_future();
    start(callback<T>([promise](result<T> outcome) { promise->set_value(std::move(outcome)); }));
    if (future.wait_for(std::chrono::seconds(60)) != std::future_status::ready)
        return error{error_kind::internal, "test timed out waiting for a storage callback"};
    return future.get();
}

}  // namespace parley::storage::test
