#include "app/reload.h"

#include <systemd/sd-daemon.h>

#include <iterator>
#include <string>
#include <vector>

#include "parley/server/logging.h"
#include "net/websocket_session.h"
#include "parley/proto/encode.h"
#include "tenant/tenant_hub.h"

namespace parley::server {

namespace {

// Collects the dotted keys whose values differ, for one log line.
class key_diff {
public:
    template <typename T>
    void compare(const char* key, const T& before, const T& after) {
        if (!(before == after)) keys_.emplace_back(key);
    }
    bool empty() const { return keys_.empty(); }
    std::string joined() const {
        std::string out;
        for (const auto& k : keys_) out += (out.empty() ? "" : ", ") + k;
        return out;
    }

private:
    std::vector<std::string> keys_;
};

key_diff diff_limits(const config::limits_config& a, const config::limits_config& b) {
    key_diff d;
    d.compare("limits.max_frame_bytes", a.max_frame_bytes, b.max_frame_bytes);
    d.compare("limits.max_text_chars", a.max_text_chars, b.max_text_chars);
    d.compare("limits.hello_timeout_s", a.hello_timeout, b.hello_timeout);
    d.compare("limits.handshake_timeout_s", a.handshake_timeout, b.handshake_timeout);
    d.compare("limits.ping_interval_s", a.ping_interval, b.ping_interval);
    d.compare("limits.peer_silence_timeout_s", a.peer_silence_timeout, b.peer_silence_timeout);
    d.compare("limits.frames_per_second", a.frames_per_second, b.frames_per_second);
    d.compare("limits.frame_burst", a.frame_burst, b.frame_burst);
    d.compare("limits.abuse_close_after", a.abuse_close_after, b.abuse_close_after);
    d.compare("limits.outbound_max_bytes", a.outbound_max_bytes, b.outbound_max_bytes);
    d.compare("limits.outbound_max_frames", a.outbound_max_frames, b.outbound_max_frames);
    d.compare("limits.max_connections", a.max_connections, b.max_connections);
    d.compare("limits.max_connections_per_ip", a.max_connections_per_ip, b.max_connections_per_ip);
    d.compare("limits.http_body_max_bytes", a.http_body_max_bytes, b.http_body_max_bytes);
    d.compare("limits.max_agents_per_tenant", a.max_agents_per_tenant, b.max_agents_per_tenant);
    d.compare("limits.max_routes_per_tenant", a.max_routes_per_tenant, b.max_routes_per_tenant);
    d.compare("limits.max_accounts_per_tenant", a.max_accounts_per_tenant, b.max_accounts_per_tenant);
    d.compare("limits.max_sessions_per_identity", a.max_sessions_per_identity, b.max_sessions_per_identity);
    d.compare("limits.max_messages_per_conversation", a.max_messages_per_conversation,
              b.max_messages_per_conversation);
    d.compare("limits.max_transcript_reads_per_tenant", a.max_transcript_reads_per_tenant,
              b.max_transcript_reads_per_tenant);
    return d;
}

// Sections read once at start-up: listeners, threads, storage, routing defaults.
key_diff diff_needing_restart(const config::config& a, const config::config& b) {
    key_diff d;
    d.compare("server.listen_address", a.server.listen_address, b.server.listen_address);
    d.compare("server.port", a.server.port, b.server.port);
    d.compare("server.threads", a.server.threads, b.server.threads);
    d.compare("server.public_url", a.server.public_url, b.server.public_url);
    d.compare("server.shutdown_timeout_s", a.server.shutdown_timeout, b.server.shutdown_timeout);
    d.compare("server.secret_rotation_grace_s", a.server.secret_rotation_grace, b.server.secret_rotation_grace);
    d.compare("server.trusted_proxies", a.server.trusted_proxies, b.server.trusted_proxies);
    d.compare("storage.url", a.storage.url, b.storage.url);
    d.compare("storage.durability", a.storage.durability, b.storage.durability);
    d.compare("storage.batch_max", a.storage.batch_max, b.storage.batch_max);
    d.compare("storage.batch_delay_ms", a.storage.batch_delay, b.storage.batch_delay);
    d.compare("storage.queue_max", a.storage.queue_max, b.storage.queue_max);
    d.compare("storage.retention_days", a.storage.retention_days, b.storage.retention_days);
    d.compare("storage.prune_interval_s", a.storage.prune_interval, b.storage.prune_interval);
    d.compare("storage.start_wait_s", a.storage.start_wait, b.storage.start_wait);
    d.compare("storage.unavailable_after_s", a.storage.unavailable_after, b.storage.unavailable_after);
    d.compare("routing.offer_timeout_s", a.routing.offer_timeout, b.routing.offer_timeout);
    d.compare("routing.max_attempts", a.routing.max_attempts, b.routing.max_attempts);
    d.compare("routing.grace_period_s", a.routing.grace_period, b.routing.grace_period);
    d.compare("routing.conversation_idle_timeout_s", a.routing.conversation_idle_timeout,
              b.routing.conversation_idle_timeout);
    d.compare("routing.auto_away_after_missed", a.routing.auto_away_after_missed, b.routing.auto_away_after_missed);
    d.compare("routing.max_queue_length", a.routing.max_queue_length, b.routing.max_queue_length);
    d.compare("routing.restore_window_s", a.routing.restore_window, b.routing.restore_window);
    d.compare("routing.visitor_grace_s", a.routing.visitor_grace, b.routing.visitor_grace);
    return d;
}

key_diff diff_tenant(const config::tenant_config& a, const config::tenant_config& b) {
    key_diff d;
    d.compare("name", a.name, b.name);
    d.compare("admin_token", a.admin_token, b.admin_token);
    d.compare("agent_secret", a.agent_secret, b.agent_secret);
    d.compare("widget_secret", a.widget_secret, b.widget_secret);
    d.compare("allow_anonymous", a.allow_anonymous, b.allow_anonymous);
    return d;
}

}  // namespace

// The agents of `tenant_id` signed in with its previous agent_secret: their sessions end after
// server.secret_rotation_grace_s (a credentials_expiring warning first) unless they reauth with a
// token of the new secret, which moves the end as any reauth does.
void config_reloader::end_rotated_agent_sessions(const std::string& tenant_id) {
    const auto grace = state_->cfg.server.secret_rotation_grace;
    const auto end = std::chrono::system_clock::now() + grace;
    std::size_t count = 0;
    for (auto& session : state_->websockets.snapshot()) {
        if (session->role() != client_role::agent) continue;
        ++count;
        asio::post(session->executor(), [session, tenant_id, end] {
            if (!session->authenticated() || session->who().tenant != tenant_id) return;
            if (auto current = session->credentials_expire_at(); current && *current <= end) return;
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(end.time_since_epoch()).count();
            session->expire_credentials_at(end, make_frame(proto::encode_credentials_expiring_event(ms)));
        });
    }
    logger("config")->info("reload: tenant {}'s agent_secret rotated: its agents signed in with the old one have {} s "
                           "to present a new token ({} agent connection(s) checked)",
                           tenant_id, grace.count(), count);
}

config_reloader::config_reloader(asio::io_context& ioc, std::shared_ptr<shared_state> state,
                                 std::shared_ptr<storage::store> store, bool port_from_command_line)
    : ioc_(ioc),
      state_(std::move(state)),
      store_(std::move(store)),
      applied_(state_->cfg),
      port_from_command_line_(port_from_command_line),
      thread_([this] { run(); }) {}

config_reloader::~config_reloader() { stop(); }

void config_reloader::request() {
    {
        std::lock_guard lock(mutex_);
        requested_ = true;
    }
    wake_.notify_one();
}

void config_reloader::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
}

void config_reloader::run() {
    std::unique_lock lock(mutex_);
    for (;;) {
        wake_.wait(lock, [this] { return stopping_ || requested_; });
        if (stopping_) return;
        requested_ = false;
        lock.unlock();
        reload_once();
        lock.lock();
    }
}

void config_reloader::reload_once() {
    auto log = logger("config");
    sd_notify(0, "RELOADING=1");
    const auto& file = state_->cfg.source_file;
    log->info("reload: reading {}", file);
    auto parsed = config::parse_file(file, config::process_environment());
    if (!parsed.ok()) {
        for (const auto& p : parsed.problems) log->error("reload: {}", p.to_string());
        log->error("reload: {} problem(s), configuration unchanged", parsed.problems.size());
        sd_notify(0, "READY=1");
        return;
    }
    auto next = std::move(parsed.value);
    if (port_from_command_line_) next.server.port = applied_.server.port;  // --port wins over the file

    if (next.log.level != applied_.log.level) {
        setup_logging(next.log.level);
        log->info("reload: log.level {} -> {}", applied_.log.level, next.log.level);
    }
    if (auto changed = diff_limits(applied_.limits, next.limits); !changed.empty()) {
        state_->set_limits(next.limits);
        log->info("reload: applied {}", changed.joined());
    }

    // Tenants: a new map (readers hold snapshots of the old one).
    auto hubs = std::make_shared<hub_map>(*state_->hubs());
    std::vector<std::shared_ptr<tenant_hub>> removed;
    for (auto it = hubs->begin(); it != hubs->end();) {
        if (next.tenants.count(it->first) != 0) {
            ++it;
            continue;
        }
        log->info("reload: tenant {} removed; its connections are closed", it->first);
        removed.push_back(it->second);
        it = hubs->erase(it);
    }
    bool tenants_ok = true;
    for (const auto& [id, tenant] : next.tenants) {
        auto existing = hubs->find(id);
        if (existing == hubs->end()) {
            std::string error;
            auto hub = tenant_hub::open(ioc_, {state_, state_->cfg.routing}, tenant, store_, error);
            if (!hub) {
                log->error("reload: tenant {} not added: {}", id, error);
                tenants_ok = false;
                continue;
            }
            (*hubs)[id] = std::move(hub);
            log->info("reload: tenant {} added", id);
        } else if (auto changed = diff_tenant(*existing->second->tenant(), tenant); !changed.empty()) {
            const bool agent_secret_rotated = existing->second->tenant()->agent_secret != tenant.agent_secret;
            existing->second->update_tenant(tenant);
            log->info("reload: tenant {} updated: {}", id, changed.joined());
            if (agent_secret_rotated) end_rotated_agent_sessions(id);
        }
    }
    state_->set_hubs(hubs);
    // Their clients must not come back: the credentials of a removed tenant are no good.
    for (auto& hub : removed) hub->shutdown(static_cast<websocket::close_code>(4401), "tenant removed");
    {
        std::lock_guard lock(state_->retiring_mutex);
        std::erase_if(state_->retiring_hubs, [](const auto& hub) { return hub->retired(); });
        state_->retiring_hubs.insert(state_->retiring_hubs.end(), removed.begin(), removed.end());
    }
    if (!tenants_ok) {
        // Keep what did not load out of `applied_`, so the next reload tries it again.
        for (auto it = next.tenants.begin(); it != next.tenants.end();)
            it = hubs->count(it->first) != 0 ? std::next(it) : next.tenants.erase(it);
    }

    if (auto later = diff_needing_restart(applied_, next); !later.empty())
        log->warn("reload: changed but needs a restart to take effect: {}", later.joined());
    // Sections needing a restart stay as they are in force, so the warning repeats until then.
    next.server = applied_.server;
    next.storage = applied_.storage;
    next.routing = applied_.routing;
    applied_ = std::move(next);
    log->info("reload: done");
    sd_notify(0, "READY=1");
}

}  // namespace parley::server
