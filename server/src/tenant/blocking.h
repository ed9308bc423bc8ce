#pragma once
// Waiting for an asynchronous storage call. Only for start-up, reloads and
// tools: threads that are not I/O threads and may block.
#include <future>

#include "parley/storage/store.h"

namespace parley::server {

template <typename T, typename Start>
storage::result<T> wait_for(Start start) {
    std::promise<storage::result<T>> promise;
    auto future = promise.get_future();
    start([&promise](storage::result<T> r) { promise.set_value(std::move(r)); });
    return future.get();
}

}  // namespace parley::server
