#pragma once
// The app's state: what the net layer shares (net_context: limits, connection
// counts, draining, the handlers), plus the configuration the process started
// with (what needs a restart to change), the tenants' hubs (replaced as a
// whole by a reload, read as snapshots), storage and readiness.
//
// Ownership points one way: sessions own the net_context (this object), which
// owns the hubs and the handlers; the handlers reach it by reference and the
// hubs reach sessions through weak references (session_directory.h), so no
// cycle needs breaking by hand at exit.
#include <atomic>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/net_context.h"
#include "parley/config/config.h"
#include "parley/storage/store.h"

namespace parley::server {

class static_files;
class tenant_hub;
using hub_map = std::unordered_map<std::string, std::shared_ptr<tenant_hub>>;

struct shared_state : net_context {
    explicit shared_state(config::config c)
        : net_context(parsed_proxies(c.server.trusted_proxies), c.limits), cfg(std::move(c)) {}

    const config::config cfg;
    std::shared_ptr<const hub_map> hubs() const { return hubs_.load(); }
    void set_hubs(std::shared_ptr<const hub_map> hubs) { hubs_.store(std::move(hubs)); }
    // Hubs of tenants removed by a reload, kept until their sessions are gone: sessions reach
    // their hub through a weak pointer, and a shutdown must drain these too.
    std::mutex retiring_mutex;
    std::vector<std::shared_ptr<tenant_hub>> retiring_hubs;

    std::atomic<bool> ready{false};  // storage reachable and migrated
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

    std::atomic<std::shared_ptr<const hub_map>> hubs_;
};

}  // namespace parley::server
