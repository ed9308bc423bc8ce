#pragma once
// What every connection of the process shares: the limits (replaced by a
// reload, read as snapshots), the connection counts behind max_connections
// and max_connections_per_ip, the registry a shutdown walks, whether the
// server is draining, the clock, and the two handlers the app installs once
// at start-up, before listening: one for WebSocket frames, one for plain HTTP
// requests. net/ knows nothing of tenants: what a session is for is the
// handlers' business.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/time_source.h"
#include "net/net.h"
#include "parley/config/config.h"
#include "parley/server/client_address.h"

namespace parley::server {

class frame_handler;
class http_handler;
class websocket_session;

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

struct net_context {
    net_context(trusted_proxies proxies_, const config::limits_config& limits,
                std::shared_ptr<const time_source> time_ = std::make_shared<real_time_source>())
        : proxies(std::move(proxies_)),
          time(std::move(time_)),
          limits_(std::make_shared<const config::limits_config>(limits)) {}

    const trusted_proxies proxies;  // server.trusted_proxies
    // Monotonic time for the sessions' rate limits and silence checks (timers run on Asio's clock).
    const std::shared_ptr<const time_source> time;
    // Snapshots: hold one for the duration of one decision, never across a wait.
    std::shared_ptr<const config::limits_config> limits() const { return limits_.load(); }
    void set_limits(const config::limits_config& limits) {
        limits_.store(std::make_shared<const config::limits_config>(limits));
    }

    std::atomic<bool> draining{false};  // SIGTERM received: refuse new work
    std::atomic<std::int64_t> open_connections{0};
    address_counts connections_by_address;
    websocket_registry websockets;
    // Set once at start-up, before listening. Neither may own the net_context (sessions do).
    std::shared_ptr<frame_handler> websocket_handler;  // frames of sessions that have not said hello
    std::shared_ptr<http_handler> http;                 // every plain HTTP request

private:
    std::atomic<std::shared_ptr<const config::limits_config>> limits_;
};

// One open connection, counted for as long as its session lives. An upgrade
// moves it from the HTTP session to the WebSocket session: counted once.
class connection_slot {
public:
    connection_slot(net_context& context, const tcp::socket& socket) : context_(&context) {
        error_code ec;
        auto endpoint = socket.remote_endpoint(ec);
        if (!ec) address_ = unmapped(endpoint.address());
        ++context_->open_connections;
        if (address_) context_->connections_by_address.add(*address_);
    }
    ~connection_slot() { release(); }
    const std::optional<asio::ip::address>& address() const { return address_; }
    // Counts the connection under `client` instead (a proxied client, see
    // client_address.h); false, and nothing changed, when `client` already
    // has limits.max_connections_per_ip.
    bool readdress(const asio::ip::address& client, std::size_t per_address_limit) {
        if (context_ == nullptr || address_ == client) return true;
        if (!context_->connections_by_address.try_add(client, per_address_limit)) return false;
        if (address_) context_->connections_by_address.remove(*address_);
        address_ = client;
        return true;
    }
    // Gives the place back before the session object goes away (see websocket_session::finish).
    void release() {
        if (context_ == nullptr) return;
        --context_->open_connections;
        if (address_) context_->connections_by_address.remove(*address_);
        context_ = nullptr;
    }
    connection_slot(connection_slot&& other) noexcept
        : context_(std::exchange(other.context_, nullptr)), address_(std::move(other.address_)) {}
    connection_slot(const connection_slot&) = delete;
    connection_slot& operator=(const connection_slot&) = delete;
    connection_slot& operator=(connection_slot&&) = delete;

private:
    net_context* context_;
    std::optional<asio::ip::address> address_;
};

}  // namespace parley::server
