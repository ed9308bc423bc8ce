#pragma once
// What every session of the server shares: configuration, counters, readiness.
// Immutable after start-up except the atomics.
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "parley/config/config.h"
#include "parley/storage/store.h"

namespace parley::server {

class frame_handler;
class tenant_hub;
using hub_map = std::unordered_map<std::string, std::shared_ptr<tenant_hub>>;

struct shared_state {
    explicit shared_state(config::config c) : cfg(std::move(c)) {}

    const config::config cfg;
    std::atomic<bool> ready{false};     // storage reachable and migrated
    std::atomic<bool> draining{false};  // SIGTERM received: refuse new work
    std::atomic<std::int64_t> open_connections{0};
    // Receives every WebSocket frame; set once at start-up, before listening.
    std::shared_ptr<frame_handler> websocket_handler;
    std::shared_ptr<const hub_map> hubs;
    std::shared_ptr<storage::store> store;
};

}  // namespace parley::server
