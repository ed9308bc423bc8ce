#pragma once
// What every session of the server shares: configuration, counters, readiness.
// `cfg` is the configuration the process started with (what needs a restart
// to change); limits and tenants may be replaced by a reload (SIGHUP), so
// they are read as snapshots.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/net.h"
#include "parley/config/config.h"
#include "parley/server/client_address.h"
#include "parley/storage/store.h"

namespace parley::server {

class frame_handler;
class static_files;
class tenant_hub;
class websocket_session;
using hub_map = std::unordered_map<std::string, std::shared_ptr<tenant_hub>>;

// How one session's outbound queue (limits.outbound_max_frames and _bytes) is
// shared, so that everything that may be queued at once fits without tripping
// the slow-consumer close: a reply built from storage takes at most half of the
// bytes (tenant_hub::reply_budget), a replay fills at most a quarter
// (websocket_session::feed_paced), and the live events held behind an accept or
// a resume at most a quarter (tenant_hub::send_about).
struct outbound_share {
    std::size_t frames;
    std::size_t bytes;
};
inline std::size_t reply_share_bytes(const config::limits_config& limits) { return limits.outbound_max_bytes / 2; }
inline outbound_share paced_share(const config::limits_config& limits) {
    return {std::max<std::size_t>(1, limits.outbound_max_frames / 4), limits.outbound_max_bytes / 4};
}
inline outbound_share held_share(const config::limits_config& limits) { return paced_share(limits); }

// Open connections per client address, for limits.max_connections_per_ip:
// per IPv4 address, per IPv6 /64 (connection_limit_key).
class address_counts {
public:
    std::size_t count(const asio::ip::address& client) const {
        const auto address = connection_limit_key(client);
        std::lock_guard lock(mutex_);
        auto it = counts_.find(address);
        return it == counts_.end() ? 0 : it->second;
    }
    void add(const asio::ip::address& client) {
        const auto address = connection_limit_key(client);
        std::lock_guard lock(mutex_);
        ++counts_[address];
    }
    // Adds one unless the address already has `limit` (0: no limit).
    bool try_add(const asio::ip::address& client, std::size_t limit) {
        const auto address = connection_limit_key(client);
        std::lock_guard lock(mutex_);
        auto& count = counts_[address];
        if (limit != 0 && count >= limit) {
            if (count == 0) counts_.erase(address);
            return false;
        }
        ++count;
        return true;
    }
    void remove(const asio::ip::address& client) {
        const auto address = connection_limit_key(client);
        std::lock_guard lock(mutex_);
        if (auto it = counts_.find(address); it != counts_.end() && --it->second == 0) counts_.erase(it);
    }

private:
    mutable std::mutex mutex_;
    std::map<asio::ip::address, std::size_t> counts_;
};

// Every WebSocket session past its handshake, so that a shutdown also reaches
// the ones that have not said hello (no hub knows them).
class websocket_registry {
public:
    void add(std::uint64_t id, std::weak_ptr<websocket_session> session) {
        std::lock_guard lock(mutex_);
        sessions_.emplace(id, std::move(session));
    }
    void remove(std::uint64_t id) {
        std::lock_guard lock(mutex_);
        sessions_.erase(id);
    }
    std::vector<std::shared_ptr<websocket_session>> snapshot() const {
        std::lock_guard lock(mutex_);
        std::vector<std::shared_ptr<websocket_session>> open;
        open.reserve(sessions_.size());
        for (const auto& [id, weak] : sessions_)
            if (auto session = weak.lock()) open.push_back(std::move(session));
        return open;
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::uint64_t, std::weak_ptr<websocket_session>> sessions_;
};

struct shared_state {
    explicit shared_state(config::config c)
        : cfg(std::move(c)),
          proxies(parsed_proxies(cfg.server.trusted_proxies)),
          limits_(std::make_shared<const config::limits_config>(cfg.limits)) {}

    const config::config cfg;
    const trusted_proxies proxies;  // server.trusted_proxies
    // Snapshots: hold one for the duration of one decision, never across a wait.
    std::shared_ptr<const config::limits_config> limits() const { return limits_.load(); }
    void set_limits(const config::limits_config& limits) {
        limits_.store(std::make_shared<const config::limits_config>(limits));
    }
    std::shared_ptr<const hub_map> hubs() const { return hubs_.load(); }
    void set_hubs(std::shared_ptr<const hub_map> hubs) { hubs_.store(std::move(hubs)); }
    // Hubs of tenants removed by a reload, kept until their sessions are gone: sessions reach
    // their hub through a weak pointer, and a shutdown must drain these too.
    std::mutex retiring_mutex;
    std::vector<std::shared_ptr<tenant_hub>> retiring_hubs;

    std::atomic<bool> ready{false};     // storage reachable and migrated
    std::atomic<bool> draining{false};  // SIGTERM received: refuse new work
    std::atomic<std::int64_t> open_connections{0};
    address_counts connections_by_address;
    websocket_registry websockets;
    // Receives every WebSocket frame; set once at start-up, before listening.
    std::shared_ptr<frame_handler> websocket_handler;
    std::shared_ptr<storage::store> store;
    // The web clients ([web]); null when turned off. Set once at start-up, before listening.
    std::shared_ptr<const static_files> web_files;

private:
    static trusted_proxies parsed_proxies(const std::vector<std::string>& entries) {
        std::string bad;
        auto parsed = trusted_proxies::parse(entries, &bad);
        if (!parsed) throw std::invalid_argument("server.trusted_proxies: cannot parse \"" + bad + "\"");
        return std::move(*parsed);
    }

    std::atomic<std::shared_ptr<const config::limits_config>> limits_;
    std::atomic<std::shared_ptr<const hub_map>> hubs_;
};

// One open connection, counted for as long as its session lives. An upgrade
// moves it from the HTTP session to the WebSocket session: counted once.
class connection_slot {
public:
    connection_slot(shared_state& state, const tcp::socket& socket) : state_(&state) {
        error_code ec;
        auto endpoint = socket.remote_endpoint(ec);
        if (!ec) address_ = unmapped(endpoint.address());
        ++state_->open_connections;
        if (address_) state_->connections_by_address.add(*address_);
    }
    ~connection_slot() { release(); }
    const std::optional<asio::ip::address>& address() const { return address_; }
    // Counts the connection under `client` instead (a proxied client, see
    // client_address.h); false, and nothing changed, when `client` already
    // has limits.max_connections_per_ip.
    bool readdress(const asio::ip::address& client, std::size_t per_address_limit) {
        if (state_ == nullptr || address_ == client) return true;
        if (!state_->connections_by_address.try_add(client, per_address_limit)) return false;
        if (address_) state_->connections_by_address.remove(*address_);
        address_ = client;
        return true;
    }
    // Gives the place back before the session object goes away (see websocket_session::finish).
    void release() {
        if (state_ == nullptr) return;
        --state_->open_connections;
        if (address_) state_->connections_by_address.remove(*address_);
        state_ = nullptr;
    }
    connection_slot(connection_slot&& other) noexcept
        : state_(std::exchange(other.state_, nullptr)), address_(std::move(other.address_)) {}
    connection_slot(const connection_slot&) = delete;
    connection_slot& operator=(const connection_slot&) = delete;
    connection_slot& operator=(connection_slot&&) = delete;

private:
    shared_state* state_;
    std::optional<asio::ip::address> address_;
};

}  // namespace parley::server
