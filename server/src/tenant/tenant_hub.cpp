// The tenant hub's shell: start-up and restart recovery, shutdown, hellos and
// session bookkeeping, and the conversations it keeps open (see tenant_hub.h).
#include "tenant/tenant_hub.h"

#include <algorithm>
#include <fmt/format.h>

#include "base/metrics.h"
#include "parley/proto/encode.h"
#include "parley/routing/route_graph.h"
#include "parley/server/auth.h"
#include "parley/server/logging.h"
#include "tenant/blocking.h"
#include "tenant/errors.h"

namespace parley::server {

namespace {

// Per tenant, behind the one running, and how long each may wait for its turn (admin_queue.h).
constexpr std::size_t max_waiting_admin_changes = 64;
constexpr std::chrono::seconds max_admin_change_wait{10};
constexpr std::size_t max_frames_behind_hello = 64;  // per session, while its hello waits for storage

// "a, b, c", up to ten names, then how many more.
std::string first_names(const std::vector<std::string>& names) {
    std::string text;
    for (std::size_t i = 0; i < names.size() && i < 10; ++i) text += (i == 0 ? "" : ", ") + names[i];
    if (names.size() > 10) text += fmt::format(" and {} more", names.size() - 10);
    return text;
}

}  // namespace

tenant_hub::tenant_hub(asio::io_context& ioc, hub_environment environment, config::tenant_config tenant,
                       std::shared_ptr<storage::store> store)
    : net_(std::move(environment.net)),
      routing_settings_(std::move(environment.routing)),
      tenant_id_(tenant.id),
      tenant_(std::make_shared<const config::tenant_config>(std::move(tenant))),
      store_(std::move(store)),
      time_(std::move(environment.time)),
      strand_(asio::make_strand(ioc)),
      wakeup_timer_(strand_),
      stats_timer_(strand_),
      restore_timer_(strand_),
      admin_queue_(std::make_shared<admin_queue>(strand_, max_waiting_admin_changes, max_admin_change_wait)),
      directory_(net_) {}

tenant_hub::~tenant_hub() = default;

// ---------------------------------------------------------------------------
// Start-up and restart recovery

std::shared_ptr<tenant_hub> tenant_hub::open(asio::io_context& ioc, hub_environment environment,
                                             const config::tenant_config& tenant,
                                             std::shared_ptr<storage::store> store, std::string& error) {
    auto stored = wait_for<void>([&](auto done) { store->put_tenant({tenant.id, {{"name", tenant.name}}}, done); });
    if (!stored) {
        error = "cannot store tenant " + tenant.id + ": " + stored.failure().message;
        return nullptr;
    }
    auto hub = std::make_shared<tenant_hub>(ioc, std::move(environment), tenant, std::move(store));
    if (auto failed = hub->load()) {
        error = *failed;
        return nullptr;
    }
    return hub;
}

std::optional<std::string> tenant_hub::load() {
    auto log = logger("route");
    const auto now = wall_now();
    routing::tenant_config config;
    config.settings = tenant_settings_from(routing_settings_);

    auto agents = wait_for<std::vector<storage::agent_record>>(
        [&](auto done) { store_->list_agents(tenant_id_, std::move(done)); });
    if (!agents) return "cannot load agents of tenant " + tenant_id_ + ": " + agents.failure().message;
    for (auto& a : agents.value()) {
        config.agents.push_back(agent_config_from_record(a));
        agents_[a.id] = std::move(a);
    }
    auto routes = wait_for<std::vector<storage::route_record>>(
        [&](auto done) { store_->list_routes(tenant_id_, std::move(done)); });
    if (!routes) return "cannot load routes of tenant " + tenant_id_ + ": " + routes.failure().message;
    std::vector<std::string> rewritten;
    for (auto& r : routes.value()) {
        auto normalised = normalised_route_json(r.config);
        auto parsed = normalised ? route_config_from_json(r.name, normalised.value(), routing_settings_)
                                 : proto::parse_result<routing::route_config>(normalised.error());
        if (!parsed) {
            log->error("tenant {}: stored route {} is invalid and skipped: {}", tenant_id_, r.name,
                       parsed.error().message);
            continue;
        }
        // Versions before routes were normalised stored the PUT body as sent: unknown fields
        // (of any size), nulls. The row becomes what a PUT of the same route stores now, so
        // none of that is kept or shown. Parsing ignored those fields in every version, and
        // they cannot be a newer release's: going back to an older release means restoring
        // the backup taken before the upgrade (README, "Upgrade").
        if (normalised.value() != r.config) {
            auto stored = wait_for<void>([&](auto done) {
                store_->put_route({tenant_id_, r.name, normalised.value()}, std::move(done));
            });
            if (stored)
                rewritten.push_back(r.name);
            else  // in effect normalised all the same; the row is retried at the next start
                log->warn("tenant {}: stored route {} could not be rewritten in normalised form: {}", tenant_id_,
                          r.name, stored.failure().message);
        }
        routes_[r.name] = parsed.value().fallback_route;
        config.routes.push_back(std::move(parsed.value()));
    }
    if (!rewritten.empty())
        log->info("tenant {}: {} stored route(s) rewritten in normalised form, unknown fields dropped: {}", tenant_id_,
                  rewritten.size(), first_names(rewritten));
    for (const auto& problem : routing::broken_fallbacks(routes_))
        log->warn("tenant {}: {} (left by an older version; PUT the route again to repair it)", tenant_id_, problem);
    auto accounts = wait_for<std::vector<storage::account_record>>(
        [&](auto done) { store_->list_accounts(tenant_id_, std::move(done)); });
    if (!accounts) return "cannot load accounts of tenant " + tenant_id_ + ": " + accounts.failure().message;
    for (const auto& a : accounts.value()) config.accounts[a.domain] = a.agent_id;

    try {
        router_ = std::make_unique<routing::tenant_router>(config, random_id("").substr(0, 8), now);
    } catch (const std::exception& e) {
        return "tenant " + tenant_id_ + ": invalid stored configuration: " + e.what();
    }

    std::string error;
    restore_state(error);
    if (!error.empty()) return error;
    return std::nullopt;
}

std::optional<routing::time_point> tenant_hub::restore_state(std::string& error) {
    const auto now = wall_now();
    auto open = store_->load_open_state(tenant_id_, to_millis(now));
    if (!open) {
        error = "cannot load open conversations of tenant " + tenant_id_ + ": " + open.failure().message;
        return std::nullopt;
    }
    for (const auto& o : open->overrides)
        if (o.until_at) router_->restore_availability_override(o.agent_id, o.available, to_time_point(*o.until_at), now);

    // Offers pending when the process died were never answered: their agents may be offered the
    // chat again, so they do not count as tried.
    std::unordered_map<std::string, std::vector<std::string>> voided_offers;  // conversation -> agents
    for (const auto& o : open->pending_offers) voided_offers[o.conversation_id].push_back(o.agent_id);

    std::size_t restored = 0;
    for (const auto& summary : open->conversations) {
        const auto& c = summary.conversation;
        conversation entry;
        entry.id = c.id;
        entry.visitor_id = c.visitor_id;
        entry.route = c.route;
        entry.state = to_routing(c.state);
        entry.agent_id = c.agent_id.value_or("");
        entry.started_at = c.started_at;
        entry.score = c.score;
        entry.messages = conversation_pipeline(c.last_seq);
        if (summary.last_message) entry.last_message = chat_message_from(*summary.last_message);
        if (summary.visitor) {
            entry.profile = proto_profile(*summary.visitor);
            visitor_profiles_[c.visitor_id] = entry.profile;
        }

        routing::restored_conversation r;
        r.conversation_id = c.id;
        r.visitor_id = c.visitor_id;
        r.profile = routing_profile(entry.profile);
        r.route = c.route;
        r.state = entry.state;
        r.agent_id = entry.agent_id;
        r.tried_agents = c.tried_agents;
        if (auto voided = voided_offers.find(c.id); voided != voided_offers.end())
            for (const auto& agent : voided->second) std::erase(r.tried_agents, agent);
        entry.tried_agents = r.tried_agents;
        r.requested_at = to_time_point(c.started_at);
        r.last_activity_at = now;  // idle timers restart: the outage was not the visitor's silence
        if (router_->restore_conversation(r, now) != routing::outcome::ok) {
            logger("route")->warn("tenant {}: conversation {} could not be restored", tenant_id_, c.id);
            continue;
        }
        conversations_.emplace(c.id, std::move(entry));
        ++restored;
    }
    // Offers pending when the process died are void: their conversations are routed again below.
    for (const auto& o : open->pending_offers)
        store_->resolve_offer(tenant_id_, o.id, storage::offer_outcome::withdrawn, to_millis(now), [](auto) {});

    if (restored > 0)
        logger("route")->info("tenant {}: restored {} open conversation(s), {} availability override(s), {} offer(s) "
                              "voided by the restart",
                              tenant_id_, restored, open->overrides.size(), open->pending_offers.size());
    // Agents need a moment to reconnect after a restart; routing waiting chats at once would send
    // them all to fallback. Active chats keep their agent meanwhile.
    restore_timer_.expires_after(restored > 0 ? routing_settings_.restore_window : std::chrono::seconds(0));
    restore_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec || self->stopped_) return;
        routing::actions actions;
        self->router_->finish_restore(self->wall_now(), actions);
        self->apply(actions);
    });
    asio::post(strand_, [self = shared_from_this()] { self->publish_stats(); });
    return std::nullopt;
}

void tenant_hub::shutdown(websocket::close_code code, std::string reason) {
    on_strand([self = shared_from_this(), code, reason = std::move(reason)] {
        self->stopped_ = true;
        self->wakeup_timer_.cancel();
        self->stats_timer_.cancel();
        self->restore_timer_.cancel();
        self->close_when_drained_ = websocket::close_reason(code, reason);
        self->close_sessions_if_drained();
        // Admin changes waiting, and later ones, are not made; the one running finishes.
        admin_reply refused = admin_error(503, proto::error_code::unavailable, reason + "; the change was not made");
        if (code == websocket::close_code::going_away) refused.retry_after_s = 1;  // a restart, not a removal
        self->admin_queue_->close(std::move(refused));
    });
}

void tenant_hub::close_sessions_if_drained() {
    if (!close_when_drained_ || pending_writes_ > 0) return;
    directory_.for_each([this](client_session& session) { close_while_stopped(session); });
    if (directory_.empty()) retired_ = true;
}

void tenant_hub::close_while_stopped(client_session& session) {
    const auto& reason = *close_when_drained_;
    session.close(reason.code, std::string(reason.reason.data(), reason.reason.size()));
}

void tenant_hub::refuse_while_stopped(std::uint64_t session_id, const std::optional<std::string>& re) {
    const auto& reason = *close_when_drained_;
    reply_error(session_id, re, proto::error_code::unavailable,
                std::string(reason.reason.data(), reason.reason.size()) + "; nothing more is accepted");
}

void tenant_hub::time_moved() {
    on_strand([self = shared_from_this()] { self->on_wakeup(); });
}

void tenant_hub::close_sessions_now() {
    on_strand([self = shared_from_this()] {
        if (!self->close_when_drained_) return;
        self->pending_writes_ = 0;  // what is still pending is committed at exit; its acks are lost
        self->close_sessions_if_drained();
    });
}


// ---------------------------------------------------------------------------
// Conversations

tenant_hub::conversation* tenant_hub::find_conversation(const std::string& id) {
    auto it = conversations_.find(id);
    return it == conversations_.end() ? nullptr : &it->second;
}

tenant_hub::conversation* tenant_hub::participant_conversation(const session_entry& from, const std::string& id,
                                                               bool agent_needs_active) {
    auto* c = find_conversation(id);
    if (c == nullptr) return nullptr;
    if (from.role == client_role::visitor) return c->visitor_id == from.principal ? c : nullptr;
    if (c->agent_id != from.principal) return nullptr;
    if (agent_needs_active && c->state != routing::conversation_state::active) return nullptr;
    return c;
}

// Not open for this sender: `conflict` when it is the sender's own conversation
// that has ended (ended ones leave memory at once, so storage says), else `not_found`.
void tenant_hub::reply_not_open(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                                const std::string& conversation_id) {
    store_->get_conversation(
        tenant_id_, conversation_id,
        back_on_strand<storage::conversation_record>(
            [self = shared_from_this(), sid, re, role = from.role,
             principal = from.principal](storage::result<storage::conversation_record> c) {
                if (!c && c.kind() != storage::error_kind::not_found)
                    return self->reply_error(sid, re, to_proto_error(c.kind()), storage_message(c.failure()));
                bool own = c && (role == client_role::visitor ? c->visitor_id == principal
                                                              : c->agent_id.value_or("") == principal);
                if (own && c->state == storage::conversation_state::ended)
                    return self->reply_error(sid, re, proto::error_code::conflict, "chat already ended");
                self->reply_error(sid, re, proto::error_code::not_found, "no such open conversation");
            }));
}

proto::visitor_card tenant_hub::visitor_card_of(const conversation& c) const { return {c.visitor_id, c.profile}; }

proto::conversation_entry tenant_hub::entry_of(const conversation& c) const {
    proto::conversation_entry e;
    e.id = c.id;
    e.visitor = visitor_card_of(c);
    e.state = to_proto(c.state);
    if (!c.agent_id.empty()) e.agent_id = c.agent_id;
    e.started_at = c.started_at;
    e.ended_at = c.ended_at;
    e.last_message = c.last_message;
    return e;
}

// Ended conversations leave memory once their last write has completed.
void tenant_hub::forget_if_done(const std::string& conversation_id) {
    auto it = conversations_.find(conversation_id);
    if (it == conversations_.end()) return;
    const auto& c = it->second;
    if (c.state == routing::conversation_state::ended && !c.messages.busy()) {
        const std::string visitor_id = c.visitor_id;
        conversations_.erase(it);
        forget_visitor_if_gone(visitor_id);
    }
}

// ---------------------------------------------------------------------------
// Sessions

void tenant_hub::visitor_hello(std::shared_ptr<client_session> session, std::optional<std::string> re,
                               std::string visitor_id, proto::visitor_profile profile, bool profile_given) {
    on_strand([self = shared_from_this(), session = std::move(session), re = std::move(re),
               visitor_id = std::move(visitor_id), profile = std::move(profile), profile_given]() mutable {
        if (self->stopped_) return self->close_while_stopped(*session);
        auto sid = session->id();
        self->directory_.add(session, client_role::visitor, visitor_id);
        global_metrics().visitor_connections++;
        if (profile_given) {
            self->store_->put_visitor(visitor_record_from(self->tenant_id_, visitor_id, profile, to_millis(self->wall_now())), [](auto) {});
            self->visitor_profiles_[visitor_id] = profile;
            if (auto cid = self->router_->open_conversation_of_visitor(visitor_id))
                if (auto* c = self->find_conversation(*cid)) c->profile = profile;
        }
        if (profile_given || self->visitor_profiles_.count(visitor_id) != 0)
            return self->finish_visitor_hello(sid, re, visitor_id);
        // A returning visitor without a profile in this hello: the stored card is what routing
        // rules and agents see. The ok waits for it, and so do the frames sent behind the hello.
        self->behind_hello_.try_emplace(sid);
        self->store_->get_visitor(
            self->tenant_id_, visitor_id,
            self->back_on_strand<storage::visitor_record>(
                [self, sid, re = std::move(re), visitor_id](storage::result<storage::visitor_record> stored) {
                    if (self->directory_.find(sid) == nullptr) return;
                    if (stored) self->visitor_profiles_.try_emplace(visitor_id, proto_profile(stored.value()));
                    self->finish_visitor_hello(sid, re, visitor_id);
                    auto waiting = self->behind_hello_.extract(sid);
                    if (waiting.empty()) return;
                    for (auto& frame : waiting.mapped()) {
                        auto* entry = self->directory_.find(sid);
                        if (entry == nullptr) return;
                        if (self->stopped_) {
                            self->refuse_while_stopped(sid, frame.id);
                            continue;
                        }
                        const session_entry from = session_directory::requester_of(*entry);
                        self->handle(from, sid, frame);
                    }
                }));
    });
}

// One visitor's tabs, one agent's tabs and devices: each session of an identity costs every
// event to it and a scan at each hello and close, so their number is bounded.
bool tenant_hub::refuse_over_session_limit(client_session& session, const std::optional<std::string>& re,
                                           client_role role, const std::string& principal) {
    const auto limit = net_->limits()->max_sessions_per_identity;
    if (directory_.count(role, principal) < limit) return false;
    session.send(make_frame(proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt,
                                                proto::error_code::capacity,
                                                std::to_string(limit) + " connections of this identity are open "
                                                "(limits.max_sessions_per_identity); close one first")));
    session.close(static_cast<std::uint16_t>(websocket::close_code::try_again_later), "too many sessions");
    return true;
}

void tenant_hub::finish_visitor_hello(std::uint64_t sid, const std::optional<std::string>& re,
                                      const std::string& visitor_id) {
    if (auto* entry = directory_.find(sid);
        entry != nullptr && refuse_over_session_limit(*entry->session(), re, client_role::visitor, visitor_id))
        return;
    // Events reach the session from its ok on: those before it are within the ok's last_seq.
    directory_.index(sid);
    std::optional<proto::conversation_summary> open;
    routing::actions actions;
    if (auto cid = router_->open_conversation_of_visitor(visitor_id)) {
        if (auto* c = find_conversation(*cid)) open = proto::conversation_summary{c->id, to_proto(c->state), c->messages.last_seq()};
        // Back within the visitor grace: the chat keeps its place in the queue and its offer.
        router_->visitor_session_opened(*cid, std::to_string(sid), wall_now(), actions);
    }
    // A tenant that requires visitor tokens decides how long a visitor stays signed in: the
    // resume token never outlives the credentials of this hello (the visitor token, or the
    // resume token it came back with), so resuming cannot stretch a short token into 30 days.
    const auto now = std::chrono::system_clock::time_point(wall_now());
    std::chrono::seconds ttl = std::chrono::hours(24 * 30);
    const auto tenant_config = tenant();
    if (!tenant_config->allow_anonymous)
        if (auto* entry = directory_.find(sid); entry != nullptr && entry->session()->credentials_expiry_s()) {
            auto left = std::chrono::seconds(*entry->session()->credentials_expiry_s() -
                                             std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
            ttl = std::clamp(left, std::chrono::seconds(1), ttl);
        }
    auto resume_token = mint_resume_token(tenant_config->widget_secret, tenant_id_, visitor_id, ttl, now);
    send(sid, proto::encode_visitor_hello_ok(re.value_or(""), visitor_id, resume_token, open));
    apply(actions);
}

// Visitor presence, for the router's visitor grace. Every session in visitor_sessions_[v] is
// attached to v's open conversation (if any): at its hello (finish_visitor_hello) or when the
// conversation is created (attach_visitor_sessions). So no session -> conversation map is kept:
// a closing session detaches from its visitor's open conversation, and the router forgets the
// sessions of a conversation that ends.
void tenant_hub::attach_visitor_sessions(const std::string& visitor_id, const std::string& conversation_id,
                                         routing::time_point now, routing::actions& actions) {
    for (auto sid : directory_.sessions_of(client_role::visitor, visitor_id)) router_->visitor_session_opened(conversation_id, std::to_string(sid), now, actions);
}

// The profile of a visitor is kept while it has a session or an open conversation.
void tenant_hub::forget_visitor_if_gone(const std::string& visitor_id) {
    if (directory_.count(client_role::visitor, visitor_id) == 0 && !router_->open_conversation_of_visitor(visitor_id))
        visitor_profiles_.erase(visitor_id);
}

void tenant_hub::agent_hello(std::shared_ptr<client_session> session, std::optional<std::string> re,
                             std::string agent_id) {
    on_strand([self = shared_from_this(), session = std::move(session), re = std::move(re),
               agent_id = std::move(agent_id)]() mutable {
        auto agent = self->agents_.find(agent_id);
        if (agent == self->agents_.end()) {
            session->send(make_frame(proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt,
                                                         proto::error_code::unauthorized,
                                                         "no agent " + agent_id + " in this tenant")));
            session->close(static_cast<std::uint16_t>(4401), "unknown agent");
            return;
        }
        if (self->stopped_) return self->close_while_stopped(*session);
        if (self->refuse_over_session_limit(*session, re, client_role::agent, agent_id)) return;
        auto sid = session->id();
        self->directory_.add(session, client_role::agent, agent_id);
        self->directory_.index(sid);
        global_metrics().agent_connections++;
        const auto now = self->wall_now();

        // The hello's ok shows the state before this connection; what the connection changes
        // (offers it makes possible, agent_back...) follows as events, so nothing comes twice.
        proto::agent_info info{agent->second.id, agent->second.name, agent->second.max_chats, agent->second.teams};
        auto availability = self->router_->availability_of(agent_id, now).value_or(routing::availability{});
        std::vector<proto::conversation_entry> active;
        std::vector<proto::offer> offers;
        if (auto snapshot = self->router_->agent(agent_id)) {
            for (const auto& cid : snapshot->active_conversations)
                if (auto* c = self->find_conversation(cid)) active.push_back(self->entry_of(*c));
            for (const auto& o : snapshot->pending_offers) {
                auto* c = self->find_conversation(o.conversation_id);
                offers.push_back({o.offer_id, o.conversation_id,
                                  c ? self->visitor_card_of(*c) : proto::visitor_card{}, o.route,
                                  to_millis(o.expires_at)});
            }
        }
        routing::actions actions;
        self->router_->agent_session_opened(agent_id, std::to_string(sid), now, actions);
        self->send(sid, proto::encode_agent_hello_ok(re.value_or(""), info, to_proto(availability), active, offers));
        self->apply(actions);
    });
}

void tenant_hub::session_closed(std::shared_ptr<client_session> session) {
    on_strand([self = shared_from_this(), session = std::move(session)] {
        auto removed = self->directory_.remove(session->id());
        if (!removed) return;
        // indexed: a visitor session whose hello got its ok, attached to the open conversation
        auto& [entry, indexed] = *removed;
        self->behind_hello_.erase(session->id());
        if (self->close_when_drained_ && self->directory_.empty() && self->pending_writes_ == 0) self->retired_ = true;
        // Shutting down (or the tenant removed): chats stay as they are for the restart. `draining`
        // too: a close handled after SIGTERM but before this hub's shutdown() reached the strand.
        const bool shutting_down = self->stopped_ || self->net_->draining.load();
        if (entry.role == client_role::agent) {
            global_metrics().agent_connections--;
            if (shutting_down) return;
            routing::actions actions;
            self->router_->agent_session_closed(entry.principal, std::to_string(session->id()), self->wall_now(), actions);
            self->apply(actions);
        } else {
            global_metrics().visitor_connections--;
            // After a restart, finish_restore starts the grace of visitors who do not come back.
            if (indexed && !shutting_down)
                if (auto cid = self->router_->open_conversation_of_visitor(entry.principal)) {
                    // The last tab closing starts the visitor grace of a waiting chat.
                    routing::actions actions;
                    self->router_->visitor_session_closed(*cid, std::to_string(session->id()), self->wall_now(),
                                                          actions);
                    self->apply(actions);
                }
            self->forget_visitor_if_gone(entry.principal);
        }
    });
}

void tenant_hub::request(std::shared_ptr<client_session> session, proto::client_frame frame) {
    on_strand([self = shared_from_this(), session = std::move(session), frame = std::move(frame)]() mutable {
        auto* entry = self->directory_.find(session->id());
        if (entry == nullptr) return;  // hello refused or session gone
        if (auto waiting = self->behind_hello_.find(session->id()); waiting != self->behind_hello_.end()) {
            if (waiting->second.size() >= max_frames_behind_hello)
                return self->reply_error(session->id(), frame.id, proto::error_code::rate_limited,
                                         "too many frames before the hello's ok");
            waiting->second.push_back(std::move(frame));
            return;
        }
        if (self->stopped_) return self->refuse_while_stopped(session->id(), frame.id);
        const session_entry from = session_directory::requester_of(*entry);
        self->handle(from, session->id(), frame);
    });
}

}  // namespace parley::server
