#pragma once
// What every session of the server shares: configuration, counters, readiness.
// Immutable after start-up except the atomics.
#include <atomic>
#include <cstdint>

#include "parley/config/config.h"

namespace parley::server {

struct shared_state {
    explicit shared_state(config::config c) : cfg(std::move(c)) {}

    const config::config cfg;
    std::atomic<bool> ready{false};     // storage reachable and migrated
    std::atomic<bool> draining{false};  // SIGTERM received: refuse new work
    std::atomic<std::int64_t> open_connections{0};
};

}  // namespace parley::server
