#pragma once
// What every session of the server shares: configuration, counters, readiness.
// `cfg` is the configuration the process started with (what needs a restart
// to change); limits and tenants may be replaced by a reload (SIGHUP), so
// they are read as snapshots.
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
    explicit shared_state(config::config c)
        : cfg(std::move(c)), limits_(std::make_shared<const config::limits_config>(cfg.limits)) {}

    const config::config cfg;
    // Snapshots: hold one for the duration of one decision, never across a wait.
    std::shared_ptr<const config::limits_config> limits() const { return limits_.load(); }
    void set_limits(const config::limits_config& limits) {
        limits_.store(std::make_shared<const config::limits_config>(limits));
    }
    std::shared_ptr<const hub_map> hubs() const { return hubs_.load(); }
    void set_hubs(std::shared_ptr<const hub_map> hubs) { hubs_.store(std::move(hubs)); }

    std::atomic<bool> ready{false};     // storage reachable and migrated
    std::atomic<bool> draining{false};  // SIGTERM received: refuse new work
    std::atomic<std::int64_t> open_connections{0};
    // Receives every WebSocket frame; set once at start-up, before listening.
    std::shared_ptr<frame_handler> websocket_handler;
    std::shared_ptr<storage::store> store;

private:
    std::atomic<std::shared_ptr<const config::limits_config>> limits_;
    std::atomic<std::shared_ptr<const hub_map>> hubs_;
};

}  // namespace parley::server
