#pragma once
// What the shared contract suite needs from the backend it runs against.
#include <chrono>
#include <future>
#include <memory>
#include <string>

#include "parley/storage/store.h"
#include "support/test_env.h"

namespace parley::storage::test {

// An empty database of its own for one test case.
struct test_database {
    std::string url;
    std::shared_ptr<parley::test::temp_dir> directory;  // SQLite only
};

test_database make_test_database(const std::string& name_hint);
const char* backend_name();

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
