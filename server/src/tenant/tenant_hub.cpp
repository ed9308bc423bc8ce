#include "tenant/tenant_hub.h"

#include <algorithm>
#include <future>
#include <limits>

#include <fmt/chrono.h>

#include "tenant/blocking.h"
#include "tenant/json_fields.h"
#include "app/metrics.h"
#include "parley/proto/encode.h"
#include "parley/server/auth.h"
#include "parley/server/logging.h"
#include "parley/routing/route_graph.h"
#include "parley/routing/schedule.h"
#include "parley/storage/log_throttle.h"

namespace parley::server {

namespace {

constexpr std::size_t max_outbox_per_conversation = 256;
constexpr int resume_page = 200;  // messages per storage read while replaying
// Messages per storage read of a get_transcript or a transcript.txt download: what one of
// them holds at a time besides its reply (at most 200 × max_text_chars, 3.2 MB of 4-byte characters).
constexpr int transcript_page = 200;
// An accept's reply carries at most the latest this many messages (fewer when they do not fit).
constexpr int accept_history = 200;
// Over limits.max_transcript_reads_per_tenant, on the WebSocket and over HTTP alike.
constexpr std::string_view too_many_transcript_reads =
    "too many transcripts being read at once in this tenant (limits.max_transcript_reads_per_tenant); retry in a moment";
constexpr std::size_t max_waiting_resumes = 64;  // per session, behind the one replaying
constexpr std::size_t max_frames_behind_hello = 64;  // per session, while its hello waits for storage
// Per tenant, behind the one running, and how long each may wait for its turn (admin_queue.h).
constexpr std::size_t max_waiting_admin_changes = 64;
constexpr std::chrono::seconds max_admin_change_wait{10};
// Per conversation, to answer resends without a storage round trip. Under durability
// commit, storage catches older ones; under relaxed (ok before the write) a resend
// of an id older than this is acknowledged with a new seq that storage then drops.
constexpr std::size_t max_remembered_client_ids = 1024;

using frame_ptr = std::shared_ptr<const std::string>;
frame_ptr make_frame(std::string text) { return std::make_shared<const std::string>(std::move(text)); }

proto::error_code to_proto_error(storage::error_kind kind) {
    switch (kind) {
        case storage::error_kind::not_found: return proto::error_code::not_found;
        case storage::error_kind::conflict: return proto::error_code::conflict;
        case storage::error_kind::unavailable: return proto::error_code::unavailable;
        case storage::error_kind::bad_request: return proto::error_code::bad_request;
        default: return proto::error_code::internal;
    }
}

int http_status(storage::error_kind kind) {
    switch (kind) {
        case storage::error_kind::not_found: return 404;
        case storage::error_kind::conflict: return 409;
        case storage::error_kind::unavailable: return 503;
        case storage::error_kind::bad_request: return 400;
        default: return 500;
    }
}

admin_reply admin_error(int status, proto::error_code code, std::string_view message) {
    return {status, proto::admin::encode_admin_error(code, message)};
}

// A page reply (list_conversations, get_activity) that fits `budget`, the reply's share of the
// session's outbound bound: 100 entries may each carry a 4,000-character last message or 16 KiB
// of activity details. Entries are dropped from the end until it fits, and the next page then
// starts after the last one kept; one entry always goes, so a reader always gets on.
// `encode(entries, next_cursor)` encodes; `cursors[i]` is the cursor after entries[i].
template <class Entry, class Encode>
std::string fitted_page(std::vector<Entry> entries, const std::vector<std::string>& cursors,
                        std::optional<std::string> next_cursor, std::size_t budget, Encode encode) {
    auto text = encode(entries, next_cursor);
    while (text.size() > budget && entries.size() > 1) {
        // In proportion to the overshoot, and at least one fewer each time.
        const auto keep = std::clamp<std::size_t>(entries.size() * budget / text.size(), 1, entries.size() - 1);
        entries.resize(keep);
        next_cursor = cursors[keep - 1];
        text = encode(entries, next_cursor);
    }
    return text;
}

// What a client is told about a storage error. not_found, conflict and
// bad_request carry our own words; the database's own text (host names, paths,
// SQL) stays in the log.
std::string storage_message(const storage::error& e) {
    switch (e.kind) {
        case storage::error_kind::not_found:
        case storage::error_kind::conflict:
        case storage::error_kind::bad_request: return e.message;
        case storage::error_kind::unavailable:
            // The store logs an outage once when it begins; one line per refused request would flood.
            return "storage unavailable, retry";
        default: {
            static storage::log_throttle throttle{10, "storage errors", spdlog::level::info};
            auto log = logger("store");
            if (throttle.admit(*log)) log->error("storage error: {}", e.message);
            return "internal storage error";
        }
    }
}

// A PUT that would create one more agent, route or account than the tenant may have.
admin_reply over_limit(std::string_view what, std::size_t limit, std::string_view key) {
    return admin_error(400, proto::error_code::capacity,
                       fmt::format("the tenant already has {} {}, the most allowed ({}); delete one first", limit,
                                   what, key));
}

// "a, b, c", up to ten names, then how many more.
std::string first_names(const std::vector<std::string>& names) {
    std::string text;
    for (std::size_t i = 0; i < names.size() && i < 10; ++i) text += (i == 0 ? "" : ", ") + names[i];
    if (names.size() > 10) text += fmt::format(" and {} more", names.size() - 10);
    return text;
}

admin_reply admin_storage_error(const storage::error& e) {
    if (e.kind != storage::error_kind::ok) global_metrics().storage_errors++;
    return admin_error(http_status(e.kind), to_proto_error(e.kind), storage_message(e));
}


}  // namespace

tenant_hub::tenant_hub(asio::io_context& ioc, std::shared_ptr<shared_state> state, config::tenant_config tenant,
                       std::shared_ptr<storage::store> store, std::shared_ptr<const time_source> time)
    : state_(std::move(state)),
      tenant_id_(tenant.id),
      tenant_(std::make_shared<const config::tenant_config>(std::move(tenant))),
      store_(std::move(store)),
      time_(std::move(time)),
      strand_(asio::make_strand(ioc)),
      wakeup_timer_(strand_),
      stats_timer_(strand_),
      restore_timer_(strand_),
      admin_queue_(std::make_shared<admin_queue>(strand_, max_waiting_admin_changes, max_admin_change_wait)) {}

tenant_hub::~tenant_hub() = default;

// ---------------------------------------------------------------------------
// Start-up and restart recovery

std::shared_ptr<tenant_hub> tenant_hub::open(asio::io_context& ioc, std::shared_ptr<shared_state> state,
                                             const config::tenant_config& tenant,
                                             std::shared_ptr<storage::store> store, std::string& error) {
    auto stored = wait_for<void>([&](auto done) { store->put_tenant({tenant.id, {{"name", tenant.name}}}, done); });
    if (!stored) {
        error = "cannot store tenant " + tenant.id + ": " + stored.failure().message;
        return nullptr;
    }
    auto hub = std::make_shared<tenant_hub>(ioc, std::move(state), tenant, std::move(store));
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
    config.settings = tenant_settings_from(state_->cfg.routing);

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
        auto parsed = normalised ? route_config_from_json(r.name, normalised.value(), state_->cfg.routing)
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
        entry.last_seq = c.last_seq;
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
    restore_timer_.expires_after(restored > 0 ? state_->cfg.routing.restore_window : std::chrono::seconds(0));
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
    for (auto& [id, entry] : sessions_) close_while_stopped(*entry.session);
    if (sessions_.empty()) retired_ = true;
}

void tenant_hub::close_while_stopped(websocket_session& session) {
    const auto& reason = *close_when_drained_;
    session.close(reason.code, std::string(reason.reason.data(), reason.reason.size()));
}

void tenant_hub::refuse_while_stopped(std::uint64_t session_id, const std::optional<std::string>& re) {
    const auto& reason = *close_when_drained_;
    reply_error(session_id, re, proto::error_code::unavailable,
                std::string(reason.reason.data(), reason.reason.size()) + "; nothing more is accepted");
}

void tenant_hub::close_sessions_now() {
    on_strand([self = shared_from_this()] {
        if (!self->close_when_drained_) return;
        self->pending_writes_ = 0;  // what is still pending is committed at exit; its acks are lost
        self->close_sessions_if_drained();
    });
}

void tenant_hub::release_sessions() {
    sessions_.clear();
    agent_sessions_.clear();
    visitor_sessions_.clear();
}

// ---------------------------------------------------------------------------
// Sending

void tenant_hub::send(const session_entry& to, const frame_ptr& frame) {
    to.session->send(frame);
    global_metrics().frames_out++;
}

void tenant_hub::send(std::uint64_t session_id, std::string frame) {
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) send(it->second, make_frame(std::move(frame)));
}

void tenant_hub::reply_error(std::uint64_t session_id, const std::optional<std::string>& re, proto::error_code code,
                             std::string message) {
    global_metrics().protocol_errors++;
    send(session_id, proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt, code, message));
}

void tenant_hub::reply_ok(std::uint64_t session_id, const std::optional<std::string>& re) {
    if (re) send(session_id, proto::encode_ok(*re));
}

void tenant_hub::to_agent(const std::string& agent_id, const frame_ptr& frame, std::uint64_t except_session) {
    auto it = agent_sessions_.find(agent_id);
    if (it == agent_sessions_.end()) return;
    for (auto sid : it->second)
        if (sid != except_session) send(sessions_.at(sid), frame);
}

void tenant_hub::send_about(session_entry& entry, const std::string& conversation_id, std::int64_t seq,
                            const frame_ptr& frame) {
    auto hold = entry.replaying.find(conversation_id);
    if (hold == entry.replaying.end()) return send(entry, frame);
    // Released at once behind a replay's last page or an accept's reply, they must still fit
    // the session's queue beside them (held_share).
    const auto share = held_share(*state_->limits());
    if (hold->second.held.size() >= share.frames || hold->second.held_bytes + frame->size() > share.bytes) {
        // As for any slow consumer: closed, and everything stays in storage for the next resume.
        global_metrics().slow_consumer_closes++;
        entry.replaying.erase(hold);
        entry.session->close(websocket::close_code::try_again_later, "slow consumer");
        return;
    }
    hold->second.held_bytes += frame->size();
    hold->second.held.emplace_back(seq, frame);
}

void tenant_hub::deliver_message(const conversation& c, std::int64_t seq, const frame_ptr& event,
                                 std::uint64_t except_session) {
    auto deliver = [&](std::uint64_t sid) {
        if (sid != except_session) send_about(sessions_.at(sid), c.id, seq, event);
    };
    if (auto it = visitor_sessions_.find(c.visitor_id); it != visitor_sessions_.end())
        for (auto sid : it->second) deliver(sid);
    // An ended chat's agent still gets the messages accepted before the end (its `ended` waits for them).
    if (c.agent_id.empty() || (c.state != routing::conversation_state::active &&
                               c.state != routing::conversation_state::ended))
        return;
    if (auto it = agent_sessions_.find(c.agent_id); it != agent_sessions_.end())
        for (auto sid : it->second) deliver(sid);
}

void tenant_hub::to_agent_about(const std::string& conversation_id, const std::string& agent_id,
                                const frame_ptr& frame) {
    if (auto it = agent_sessions_.find(agent_id); it != agent_sessions_.end())
        for (auto sid : it->second) send_about(sessions_.at(sid), conversation_id, no_seq, frame);
}

void tenant_hub::to_visitor_about(const std::string& conversation_id, const std::string& visitor_id,
                                  const frame_ptr& frame) {
    if (auto it = visitor_sessions_.find(visitor_id); it != visitor_sessions_.end())
        for (auto sid : it->second) send_about(sessions_.at(sid), conversation_id, no_seq, frame);
}

void tenant_hub::send_ended(const std::string& conversation_id, bool to_agent, const std::string& principal,
                            frame_ptr frame) {
    auto* c = find_conversation(conversation_id);
    if (c != nullptr && (c->writing || !c->outbox.empty())) {
        c->ended_events.emplace_back(to_agent, std::move(frame));
        return;
    }
    if (to_agent) to_agent_about(conversation_id, principal, frame);
    else to_visitor_about(conversation_id, principal, frame);
}

void tenant_hub::flush_ended_events(conversation& c) {
    if (c.writing || !c.outbox.empty() || c.ended_events.empty()) return;
    auto events = std::move(c.ended_events);
    c.ended_events.clear();
    for (auto& [to_agent, frame] : events) {
        if (to_agent) to_agent_about(c.id, c.agent_id, frame);
        else to_visitor_about(c.id, c.visitor_id, frame);
    }
}

void tenant_hub::release_hold(session_entry& entry, const std::string& conversation_id, std::int64_t sent_through) {
    auto hold = entry.replaying.find(conversation_id);
    if (hold == entry.replaying.end()) return;
    // While another replay of the conversation still runs, it keeps holding; the last one
    // to end sends what it did not send itself.
    if (--hold->second.replays > 0) return;
    auto held = std::move(hold->second.held);
    entry.replaying.erase(hold);
    for (const auto& [seq, frame] : held)
        if (seq > sent_through) send(entry, frame);  // older ones were in the replay
}

std::size_t tenant_hub::reply_budget() const { return reply_share_bytes(*state_->limits()); }

// Who sent a request, copied (a handler may end the session) without the
// session's holds and waiting resumes, which handlers never read.
tenant_hub::session_entry tenant_hub::requester_of(const session_entry& entry) {
    return {entry.session, entry.role, entry.principal, {}, false, {}};
}

bool tenant_hub::begin_replay(std::uint64_t session_id, const std::string& conversation_id, std::function<void()> start) {
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return true;  // gone: nothing to replay to
    auto& entry = it->second;
    if (entry.waiting_replays.size() >= max_waiting_resumes) return false;
    ++entry.replaying[conversation_id].replays;
    if (entry.replay_running) {
        entry.waiting_replays.push_back(std::move(start));
    } else {
        entry.replay_running = true;
        start();
    }
    return true;
}

void tenant_hub::end_replay(std::uint64_t session_id, const std::string& conversation_id,
                            std::int64_t replayed_through, frame_ptr final_frame) {
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return;
    auto& entry = it->second;
    release_hold(entry, conversation_id, replayed_through);
    if (final_frame) send(entry, final_frame);
    entry.replay_running = !entry.waiting_replays.empty();
    if (entry.replay_running) {
        auto next = std::move(entry.waiting_replays.front());
        entry.waiting_replays.erase(entry.waiting_replays.begin());
        next();
    }
}

// ---------------------------------------------------------------------------
// Router actions

void tenant_hub::apply(routing::actions& actions) {
    auto& m = global_metrics();
    const auto now_ms = to_millis(wall_now());
    for (auto& action : actions) {
        std::visit(
            [&](auto& a) {
                using A = std::decay_t<decltype(a)>;
                if constexpr (std::is_same_v<A, routing::send_offer>) {
                    m.chats_offered++;
                    offers_[a.offer_id] = {a.conversation_id, a.agent_id, monotonic_now()};
                    storage::offer_record offer;
                    offer.tenant_id = tenant_id_;
                    offer.id = a.offer_id;
                    offer.conversation_id = a.conversation_id;
                    offer.agent_id = a.agent_id;
                    offer.created_at = now_ms;
                    offer.expires_at = to_millis(a.expires_at);
                    store_->put_offer(std::move(offer), [](auto) {});
                    auto* c = find_conversation(a.conversation_id);
                    proto::offer event{a.offer_id, a.conversation_id,
                                       c ? visitor_card_of(*c) : proto::visitor_card{a.visitor_id, {}}, a.route,
                                       to_millis(a.expires_at)};
                    to_agent(a.agent_id, make_frame(proto::encode_offer_event(event)));
                } else if constexpr (std::is_same_v<A, routing::withdraw_offer>) {
                    if (a.reason == routing::withdraw_reason::expired) m.chats_expired++;
                    offers_.erase(a.offer_id);
                    store_->resolve_offer(tenant_id_, a.offer_id,
                                          a.reason == routing::withdraw_reason::expired
                                              ? storage::offer_outcome::expired
                                              : storage::offer_outcome::withdrawn,
                                          now_ms, [](auto) {});
                    to_agent(a.agent_id, make_frame(proto::encode_offer_withdrawn_event(a.offer_id, to_proto(a.reason))));
                } else if constexpr (std::is_same_v<A, routing::notify_visitor>) {
                    std::string frame = std::visit(
                        [&](const auto& e) -> std::string {
                            using E = std::decay_t<decltype(e)>;
                            namespace ve = routing::visitor_event;
                            if constexpr (std::is_same_v<E, ve::agent_joined>) {
                                m.chats_accepted++;
                                return proto::encode_agent_joined_event(
                                    a.conversation_id,
                                    {e.agent_id, e.name,
                                     e.avatar_url.empty() ? std::nullopt : std::optional<std::string>(e.avatar_url)});
                            } else if constexpr (std::is_same_v<E, ve::queued>) {
                                return proto::encode_queued_event(a.conversation_id, e.position);
                            } else if constexpr (std::is_same_v<E, ve::fallback>) {
                                m.chats_fallback++;
                                std::optional<proto::calendar_card> card;
                                if (e.calendar)
                                    card = proto::calendar_card{e.calendar->agent_id, e.calendar->agent_name,
                                                                e.calendar->booking_url};
                                return proto::encode_fallback_event(
                                    a.conversation_id,
                                    e.message.empty() ? std::nullopt : std::optional<std::string_view>(e.message), card);
                            } else if constexpr (std::is_same_v<E, ve::agent_away>) {
                                return proto::encode_agent_away_event(a.conversation_id);
                            } else if constexpr (std::is_same_v<E, ve::agent_back>) {
                                return proto::encode_agent_back_event(a.conversation_id);
                            } else {
                                return proto::encode_ended_event(a.conversation_id, to_proto(e.reason));
                            }
                        },
                        a.event);
                    if (std::holds_alternative<routing::visitor_event::ended>(a.event))
                        send_ended(a.conversation_id, false, a.visitor_id, make_frame(std::move(frame)));
                    else
                        to_visitor_about(a.conversation_id, a.visitor_id, make_frame(std::move(frame)));
                } else if constexpr (std::is_same_v<A, routing::notify_agent_availability>) {
                    to_agent(a.agent_id, make_frame(proto::encode_availability_event(to_proto(a.state))));
                    // Persist the override so a restart keeps it; a revert clears it.
                    if (a.state.source == routing::availability_source::override && a.state.until_at)
                        store_->set_override({tenant_id_, a.agent_id, a.state.available, to_millis(*a.state.until_at),
                                              now_ms},
                                             [](auto) {});
                    else
                        store_->clear_override(tenant_id_, a.agent_id, [](auto) {});
                } else if constexpr (std::is_same_v<A, routing::conversation_state_changed>) {
                    auto it = conversations_.find(a.conversation_id);
                    if (it == conversations_.end()) return;
                    auto& c = it->second;
                    const std::string previous_agent = c.agent_id;
                    c.state = a.state;
                    c.route = a.route;
                    if (a.state == routing::conversation_state::active || a.state == routing::conversation_state::ended)
                        c.agent_id = a.agent_id;
                    else
                        c.agent_id.clear();
                    if (a.state == routing::conversation_state::queued) m.chats_queued++;
                    if (a.state == routing::conversation_state::ended) {
                        c.ended_at = now_ms;
                        if (a.reason) c.end_reason = end_reason_name(*a.reason);
                        if (!a.agent_id.empty() && a.reason)
                            send_ended(c.id, true, a.agent_id, make_frame(proto::encode_ended_event(c.id, to_proto(*a.reason))));
                    } else if (!previous_agent.empty() && previous_agent != c.agent_id &&
                               a.state != routing::conversation_state::active) {
                        // The chat left its agent (grace period over): tell the agent's clients it is gone.
                        to_agent_about(c.id, previous_agent,
                                       make_frame(proto::encode_ended_event(c.id, proto::end_reason::no_agent)));
                    }
                    persist_conversation(c);
                    if (a.state == routing::conversation_state::ended) forget_if_done(c.id);
                } else if constexpr (std::is_same_v<A, routing::record_activity>) {
                    storage::activity_record activity;
                    activity.tenant_id = tenant_id_;
                    activity.visitor_id = a.visitor_id;
                    activity.type = activity_name(a.type);
                    activity.at = to_millis(a.at);
                    activity.conversation_id = a.conversation_id;
                    if (!a.agent_id.empty()) activity.details = {{"agent_id", a.agent_id}};
                    if (a.type == routing::activity_type::chat_requested) m.chats_requested++;
                    store_->append_activity(std::move(activity), [](auto) {});
                } else if constexpr (std::is_same_v<A, routing::schedule_wakeup>) {
                    arm_wakeup(a.at);
                }
            },
            action);
    }
    actions.clear();
}

void tenant_hub::arm_wakeup(std::optional<routing::time_point> at) {
    wakeup_timer_.cancel();
    if (!at || stopped_) return;
    auto delay = *at - wall_now();
    wakeup_timer_.expires_after(std::max(routing::duration::zero(), delay));
    wakeup_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) self->on_wakeup();
    });
}

void tenant_hub::on_wakeup() {
    if (stopped_) return;
    routing::actions actions;
    router_->timer_fired(wall_now(), actions);
    apply(actions);
    // The router says schedule_wakeup only when the earliest deadline changes; re-arm from its answer.
    arm_wakeup(router_->next_deadline());
}

void tenant_hub::persist_conversation(const conversation& c) {
    storage::conversation_record record;
    record.tenant_id = tenant_id_;
    record.id = c.id;
    record.visitor_id = c.visitor_id;
    record.route = c.route;
    record.state = to_storage(c.state);
    if (!c.agent_id.empty()) record.agent_id = c.agent_id;
    record.started_at = c.started_at;
    record.ended_at = c.ended_at;
    record.end_reason = c.end_reason;
    record.score = c.score;
    if (auto snapshot = router_->conversation(c.id)) record.tried_agents = snapshot->tried_agents;
    store_->save_conversation(std::move(record), [](storage::status s) {
        if (!s) global_metrics().storage_errors++;
    });
}

// Gauges are process-wide; each hub adds the change since its last report.
void tenant_hub::publish_stats() {
    if (stopped_) return;
    auto& m = global_metrics();
    auto now = wall_now();
    auto s = router_->stats();
    m.agents_available += static_cast<std::int64_t>(s.agents_available) -
                          static_cast<std::int64_t>(published_stats_.agents_available);
    m.capacity_in_use += static_cast<std::int64_t>(s.capacity_in_use) -
                         static_cast<std::int64_t>(published_stats_.capacity_in_use);
    m.capacity_total += static_cast<std::int64_t>(s.capacity_total) -
                        static_cast<std::int64_t>(published_stats_.capacity_total);
    m.queue_depth += static_cast<std::int64_t>(s.queued) - static_cast<std::int64_t>(published_stats_.queued);
    std::int64_t oldest_ms = 0;
    for (const auto& [name, body] : routes_)
        if (auto q = router_->queue(name); q && q->oldest_enqueued_at)
            oldest_ms = std::max<std::int64_t>(oldest_ms, (now - *q->oldest_enqueued_at).count());
    // Oldest wait is a maximum over tenants; with one hub per tenant the last writer wins, which is
    // exact for one tenant and a lower bound otherwise.
    if (oldest_ms > 0 || published_oldest_wait_ms_ > 0) m.queue_oldest_wait_ms = oldest_ms;
    published_oldest_wait_ms_ = oldest_ms;
    published_stats_ = s;
    stats_timer_.expires_after(std::chrono::seconds(1));
    stats_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) self->publish_stats();
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
    if (c.state == routing::conversation_state::ended && !c.writing && c.outbox.empty()) {
        const std::string visitor_id = c.visitor_id;
        conversations_.erase(it);
        forget_visitor_if_gone(visitor_id);
    }
}

// ---------------------------------------------------------------------------
// Sessions

void tenant_hub::visitor_hello(std::shared_ptr<websocket_session> session, std::optional<std::string> re,
                               std::string visitor_id, proto::visitor_profile profile, bool profile_given) {
    on_strand([self = shared_from_this(), session = std::move(session), re = std::move(re),
               visitor_id = std::move(visitor_id), profile = std::move(profile), profile_given]() mutable {
        if (self->stopped_) return self->close_while_stopped(*session);
        auto sid = session->id();
        self->sessions_[sid] = {session, client_role::visitor, visitor_id, {}, false, {}};
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
                    if (self->sessions_.count(sid) == 0) return;
                    if (stored) self->visitor_profiles_.try_emplace(visitor_id, proto_profile(stored.value()));
                    self->finish_visitor_hello(sid, re, visitor_id);
                    auto waiting = self->behind_hello_.extract(sid);
                    if (waiting.empty()) return;
                    for (auto& frame : waiting.mapped()) {
                        auto it = self->sessions_.find(sid);
                        if (it == self->sessions_.end()) return;
                        if (self->stopped_) {
                            self->refuse_while_stopped(sid, frame.id);
                            continue;
                        }
                        const session_entry from = requester_of(it->second);
                        self->handle(from, sid, frame);
                    }
                }));
    });
}

// One visitor's tabs, one agent's tabs and devices: each session of an identity costs every
// event to it and a scan at each hello and close, so their number is bounded.
bool tenant_hub::refuse_over_session_limit(websocket_session& session, const std::optional<std::string>& re,
                                           const session_index& index, const std::string& principal) {
    const auto limit = state_->limits()->max_sessions_per_identity;
    const auto open = index.find(principal);
    if (open == index.end() || open->second.size() < limit) return false;
    session.send(make_frame(proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt,
                                                proto::error_code::capacity,
                                                std::to_string(limit) + " connections of this identity are open "
                                                "(limits.max_sessions_per_identity); close one first")));
    session.close(static_cast<std::uint16_t>(websocket::close_code::try_again_later), "too many sessions");
    return true;
}

void tenant_hub::finish_visitor_hello(std::uint64_t sid, const std::optional<std::string>& re,
                                      const std::string& visitor_id) {
    if (auto session = sessions_.find(sid);
        session != sessions_.end() && refuse_over_session_limit(*session->second.session, re, visitor_sessions_, visitor_id))
        return;
    // Events reach the session from its ok on: those before it are within the ok's last_seq.
    visitor_sessions_[visitor_id].push_back(sid);
    std::optional<proto::conversation_summary> open;
    routing::actions actions;
    if (auto cid = router_->open_conversation_of_visitor(visitor_id)) {
        if (auto* c = find_conversation(*cid)) open = proto::conversation_summary{c->id, to_proto(c->state), c->last_seq};
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
        if (auto it = sessions_.find(sid); it != sessions_.end() && it->second.session->credentials_expire_at_s) {
            auto left = std::chrono::seconds(*it->second.session->credentials_expire_at_s -
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
    auto sessions = visitor_sessions_.find(visitor_id);
    if (sessions == visitor_sessions_.end()) return;
    for (auto sid : sessions->second) router_->visitor_session_opened(conversation_id, std::to_string(sid), now, actions);
}

// The profile of a visitor is kept while it has a session or an open conversation.
void tenant_hub::forget_visitor_if_gone(const std::string& visitor_id) {
    if (visitor_sessions_.count(visitor_id) == 0 && !router_->open_conversation_of_visitor(visitor_id))
        visitor_profiles_.erase(visitor_id);
}

void tenant_hub::agent_hello(std::shared_ptr<websocket_session> session, std::optional<std::string> re,
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
        if (self->refuse_over_session_limit(*session, re, self->agent_sessions_, agent_id)) return;
        auto sid = session->id();
        self->sessions_[sid] = {session, client_role::agent, agent_id, {}, false, {}};
        self->agent_sessions_[agent_id].push_back(sid);
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

void tenant_hub::session_closed(std::shared_ptr<websocket_session> session) {
    on_strand([self = shared_from_this(), session = std::move(session)] {
        auto it = self->sessions_.find(session->id());
        if (it == self->sessions_.end()) return;
        auto entry = std::move(it->second);
        self->sessions_.erase(it);
        self->behind_hello_.erase(session->id());
        if (self->close_when_drained_ && self->sessions_.empty() && self->pending_writes_ == 0) self->retired_ = true;
        auto& index = entry.role == client_role::agent ? self->agent_sessions_ : self->visitor_sessions_;
        bool indexed = false;  // a visitor session whose hello got its ok: attached to the open conversation
        if (auto list = index.find(entry.principal); list != index.end()) {
            indexed = std::erase(list->second, session->id()) > 0;
            if (list->second.empty()) index.erase(list);
        }
        // Shutting down (or the tenant removed): chats stay as they are for the restart. `draining`
        // too: a close handled after SIGTERM but before this hub's shutdown() reached the strand.
        const bool shutting_down = self->stopped_ || self->state_->draining.load();
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

void tenant_hub::request(std::shared_ptr<websocket_session> session, proto::client_frame frame) {
    on_strand([self = shared_from_this(), session = std::move(session), frame = std::move(frame)]() mutable {
        auto it = self->sessions_.find(session->id());
        if (it == self->sessions_.end()) return;  // hello refused or session gone
        if (auto waiting = self->behind_hello_.find(session->id()); waiting != self->behind_hello_.end()) {
            if (waiting->second.size() >= max_frames_behind_hello)
                return self->reply_error(session->id(), frame.id, proto::error_code::rate_limited,
                                         "too many frames before the hello's ok");
            waiting->second.push_back(std::move(frame));
            return;
        }
        if (self->stopped_) return self->refuse_while_stopped(session->id(), frame.id);
        const session_entry from = requester_of(it->second);
        self->handle(from, session->id(), frame);
    });
}

// ---------------------------------------------------------------------------
// Requests

void tenant_hub::handle(const session_entry& from, std::uint64_t sid, proto::client_frame& frame) {
    namespace rq = proto::requests;
    const auto& re = frame.id;
    const auto now = wall_now();
    routing::actions actions;
    std::visit(
        [&](auto& r) {
            using R = std::decay_t<decltype(r)>;
            if constexpr (std::is_same_v<R, rq::visitor_hello> || std::is_same_v<R, rq::agent_hello>) {
                reply_error(sid, re, proto::error_code::bad_request, "hello was already received");
            } else if constexpr (std::is_same_v<R, rq::request_agent>) {
                handle_request_agent(from, sid, re, r);
            } else if constexpr (std::is_same_v<R, rq::send>) {
                handle_send(from, sid, re, r.conversation_id, storage::message_kind::text, std::move(r.text),
                            std::move(r.client_msg_id));
            } else if constexpr (std::is_same_v<R, rq::typing>) {
                auto* c = participant_conversation(from, r.conversation_id, true);
                if (c == nullptr) return reply_error(sid, re, proto::error_code::not_found, "no such open conversation");
                bool from_agent = from.role == client_role::agent;
                auto event = make_frame(proto::encode_typing_event(
                    c->id, from_agent ? proto::message_author::agent : proto::message_author::visitor, r.on));
                if (from_agent) to_visitor_about(c->id, c->visitor_id, event);
                else if (!c->agent_id.empty()) to_agent_about(c->id, c->agent_id, event);
                reply_ok(sid, re);
            } else if constexpr (std::is_same_v<R, rq::end_chat>) {
                auto* c = participant_conversation(from, r.conversation_id, false);
                if (c == nullptr) return reply_not_open(from, sid, re, r.conversation_id);
                auto outcome = router_->chat_ended(
                    r.conversation_id, from.role == client_role::agent ? routing::ended_by::agent : routing::ended_by::visitor,
                    now, actions);
                if (outcome == routing::outcome::ok) reply_ok(sid, re);
                else reply_error(sid, re, proto::error_code::conflict, "chat already ended");
            } else if constexpr (std::is_same_v<R, rq::meeting_booked>) {
                if (from.role != client_role::visitor) return;
                if (agents_.count(r.agent_id) == 0) return reply_error(sid, re, proto::error_code::not_found, "no such agent");
                storage::activity_record activity;
                activity.tenant_id = tenant_id_;
                activity.visitor_id = from.principal;
                activity.type = "meeting_booked";
                activity.at = to_millis(now);
                activity.conversation_id = r.conversation_id;
                activity.details = {{"agent_id", r.agent_id}, {"start_at", r.start_at}};
                auto record = [self = shared_from_this(), sid, re, activity = std::move(activity)]() mutable {
                    self->store_->append_activity(std::move(activity), self->back_on_strand<void>([self, sid, re](storage::status s) {
                        if (s) self->reply_ok(sid, re);
                        else self->reply_error(sid, re, to_proto_error(s.kind()), storage_message(s.failure()));
                    }));
                };
                // Only about the visitor's own conversation, open or past (a booking may come after the chat).
                if (auto* c = find_conversation(r.conversation_id)) {
                    if (c->visitor_id != from.principal)
                        return reply_error(sid, re, proto::error_code::not_found, "no such conversation of yours");
                    return record();
                }
                store_->get_conversation(
                    tenant_id_, r.conversation_id,
                    back_on_strand<storage::conversation_record>(
                        [self = shared_from_this(), sid, re, principal = from.principal,
                         record = std::move(record)](storage::result<storage::conversation_record> c) mutable {
                            if (!c) return self->reply_error(sid, re, to_proto_error(c.kind()), "no such conversation of yours");
                            if (c->visitor_id != principal)
                                return self->reply_error(sid, re, proto::error_code::not_found,
                                                         "no such conversation of yours");
                            record();
                        }));
            } else if constexpr (std::is_same_v<R, rq::set_availability>) {
                auto result = router_->set_availability(from.principal, r.available, now, actions);
                if (!result) return reply_error(sid, re, proto::error_code::not_found, "unknown agent");
                reply_ok(sid, re);
            } else if constexpr (std::is_same_v<R, rq::accept>) {
                handle_accept(from, sid, re, r.offer_id);
            } else if constexpr (std::is_same_v<R, rq::decline>) {
                if (router_->offer_declined(r.offer_id, from.principal, now, actions) != routing::outcome::ok)
                    return reply_error(sid, re, proto::error_code::conflict, "the offer is no longer pending");
                global_metrics().chats_declined++;
                offers_.erase(r.offer_id);
                store_->resolve_offer(tenant_id_, r.offer_id, storage::offer_outcome::declined, to_millis(now),
                                      [](auto) {});
                reply_ok(sid, re);
                // The agent's other tabs drop the offer too.
                to_agent(from.principal,
                         make_frame(proto::encode_offer_withdrawn_event(r.offer_id, proto::withdraw_reason::taken)), sid);
            } else if constexpr (std::is_same_v<R, rq::share_calendar>) {
                auto target = agents_.find(r.agent_id);
                if (target == agents_.end()) return reply_error(sid, re, proto::error_code::not_found, "no such agent");
                if (!target->second.calendar_url)
                    return reply_error(sid, re, proto::error_code::not_found, "that agent has no calendar_url");
                nlohmann::json card = {{"agent_id", target->second.id},
                                       {"agent_name", target->second.name},
                                       {"booking_url", *target->second.calendar_url}};
                auto* c = participant_conversation(from, r.conversation_id, true);
                // Over the cap nothing is stored, the activity neither.
                if (c != nullptr && c->state != routing::conversation_state::ended && message_cap_reached(*c))
                    return refuse_over_message_cap(*c, sid, re);
                if (c != nullptr) {
                    storage::activity_record activity;
                    activity.tenant_id = tenant_id_;
                    activity.visitor_id = c->visitor_id;
                    activity.type = "calendar_shared";
                    activity.at = to_millis(now);
                    activity.conversation_id = c->id;
                    activity.details = {{"agent_id", target->second.id}, {"shared_by", from.principal}};
                    store_->append_activity(std::move(activity), [](auto) {});
                }
                handle_send(from, sid, re, r.conversation_id, storage::message_kind::calendar, card.dump());
            } else if constexpr (std::is_same_v<R, rq::set_score>) {
                auto* c = find_conversation(r.conversation_id);
                if (c != nullptr && c->agent_id == from.principal) {
                    c->score = r.score;
                    persist_conversation(*c);
                    return reply_ok(sid, re);
                }
                // A past conversation: read it, check it was this agent's, store the score.
                store_->get_conversation(
                    tenant_id_, r.conversation_id,
                    back_on_strand<storage::conversation_record>(
                        [self = shared_from_this(), sid, re, agent = from.principal,
                         score = r.score](storage::result<storage::conversation_record> found) mutable {
                            if (!found || found->agent_id.value_or("") != agent)
                                return self->reply_error(sid, re, proto::error_code::not_found,
                                                         "no such conversation of yours");
                            auto record = std::move(found.value());
                            record.score = score;
                            self->store_->save_conversation(
                                std::move(record),
                                self->back_on_strand<void>([self, sid, re](storage::status s) {
                                    if (s) self->reply_ok(sid, re);
                                    else self->reply_error(sid, re, to_proto_error(s.kind()), storage_message(s.failure()));
                                }));
                        }));
            } else if constexpr (std::is_same_v<R, rq::list_conversations>) {
                storage::conversation_query q;
                q.tenant_id = tenant_id_;
                q.agent_id = from.principal;
                q.filter = r.filter == proto::conversation_filter::all ? storage::conversation_filter::all
                                                                       : storage::conversation_filter::active;
                q.limit = r.limit;
                q.cursor = r.cursor;
                q.now = to_millis(now);
                store_->list_conversations(std::move(q), [self = shared_from_this(), sid, re, budget = reply_budget()](
                                                             storage::result<storage::conversation_page> page) {
                    if (!page) return self->on_strand([self, sid, re, e = page.failure()] {
                        self->reply_error(sid, re, to_proto_error(e.kind), storage_message(e));
                    });
                    std::vector<proto::conversation_entry> entries;
                    std::vector<std::string> cursors;
                    for (const auto& s : page->conversations) {
                        cursors.push_back(storage::cursor_after(s.conversation));
                        proto::conversation_entry e;
                        e.id = s.conversation.id;
                        e.visitor = {s.conversation.visitor_id, s.visitor ? proto_profile(*s.visitor) : proto::visitor_profile{}};
                        e.state = to_proto(s.conversation.state);
                        e.agent_id = s.conversation.agent_id;
                        e.started_at = s.conversation.started_at;
                        e.ended_at = s.conversation.ended_at;
                        if (s.last_message) e.last_message = chat_message_from(*s.last_message);
                        entries.push_back(std::move(e));
                    }
                    // Encoding happens here on the storage thread; only the send hops to the strand.
                    auto text = fitted_page(std::move(entries), cursors, page->next_cursor, budget,
                                            [&re](const auto& list, const std::optional<std::string>& cursor) {
                                                return proto::encode_list_conversations_ok(re.value_or(""), list, cursor);
                                            });
                    self->on_strand([self, sid, text = std::move(text)]() mutable { self->send(sid, std::move(text)); });
                });
            } else if constexpr (std::is_same_v<R, rq::get_visitor>) {
                store_->get_visitor(tenant_id_, r.visitor_id,
                                    [self = shared_from_this(), sid, re, id = r.visitor_id](
                                        storage::result<storage::visitor_record> v) {
                                        std::string text =
                                            v ? proto::encode_get_visitor_ok(re.value_or(""), proto::visitor_card{id, proto_profile(v.value())})
                                              : proto::encode_error(
                                                    re ? std::optional<std::string_view>(*re) : std::nullopt,
                                                    to_proto_error(v.kind()), storage_message(v.failure()));
                                        self->on_strand([self, sid, text = std::move(text)]() mutable {
                                            self->send(sid, std::move(text));
                                        });
                                    });
            } else if constexpr (std::is_same_v<R, rq::get_activity>) {
                storage::activity_query q{tenant_id_, r.visitor_id, r.limit, r.cursor, to_millis(now)};
                store_->get_activity(std::move(q), [self = shared_from_this(), sid, re, budget = reply_budget()](
                                                       storage::result<storage::activity_page> page) {
                    std::string text;
                    if (!page) {
                        text = proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt,
                                                   to_proto_error(page.kind()), storage_message(page.failure()));
                    } else {
                        std::vector<proto::activity> list;
                        std::vector<std::string> cursors;
                        for (const auto& a : page->activities) {
                            list.push_back({a.type, a.at, a.conversation_id,
                                            a.details.is_null() ? std::string() : a.details.dump()});
                            cursors.push_back(storage::cursor_after(a));
                        }
                        text = fitted_page(std::move(list), cursors, page->next_cursor, budget,
                                           [&re](const auto& entries, const std::optional<std::string>& cursor) {
                                               return proto::encode_get_activity_ok(re.value_or(""), entries, cursor);
                                           });
                    }
                    self->on_strand([self, sid, text = std::move(text)]() mutable { self->send(sid, std::move(text)); });
                });
            } else if constexpr (std::is_same_v<R, rq::get_transcript>) {
                auto ticket = try_begin_transcript_read();
                if (!ticket)
                    return reply_error(sid, re, proto::error_code::rate_limited, std::string(too_many_transcript_reads));
                std::make_shared<transcript_read>(shared_from_this(), from.session, re, r, reply_budget(),
                                                  to_millis(now), std::move(ticket))
                    ->read_page();
            } else if constexpr (std::is_same_v<R, rq::resume>) {
                handle_resume(sid, re, r);
            }
        },
        frame.request);
    apply(actions);
}

void tenant_hub::handle_request_agent(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                                      const proto::requests::request_agent& r) {
    if (from.role != client_role::visitor) return reply_error(sid, re, proto::error_code::forbidden, "visitors only");
    std::string key;
    if (r.client_key) {
        key = from.principal + '\n' + *r.client_key;
        if (auto known = client_keys_.find(key); known != client_keys_.end()) {
            auto* c = find_conversation(known->second);
            auto state = c ? to_proto(c->state) : proto::conversation_state::ended;
            return send(sid, proto::encode_request_agent_ok(re.value_or(""), known->second, state));
        }
    }
    if (routes_.count(r.route) == 0)
        return reply_error(sid, re, proto::error_code::not_found, "no route named " + r.route);

    const auto now = wall_now();
    routing::chat_request request;
    request.conversation_id = random_id("c_");
    request.visitor_id = from.principal;
    request.route = r.route;
    // The profile the visitor gave at hello (kept on an earlier conversation or in storage) is
    // what rules and account routing see; start from the last known one.
    proto::visitor_profile profile;
    if (auto known = visitor_profiles_.find(from.principal); known != visitor_profiles_.end()) profile = known->second;
    request.profile = routing_profile(profile);

    // Create our record first: the router's actions refer to it.
    conversation c;
    c.id = request.conversation_id;
    c.visitor_id = from.principal;
    c.route = r.route;
    c.started_at = to_millis(now);
    c.profile = profile;
    auto [it, inserted] = conversations_.emplace(c.id, std::move(c));

    routing::actions actions;
    auto result = router_->chat_requested(request, now, actions);
    if (result.result != routing::outcome::ok || !result.created) conversations_.erase(it);
    // The visitor's sessions (this one, other tabs) are what keeps the chat's place while it waits.
    if (result.result == routing::outcome::ok && result.state != routing::conversation_state::ended)
        attach_visitor_sessions(from.principal, result.conversation_id, now, actions);
    if (result.result == routing::outcome::not_found)
        return reply_error(sid, re, proto::error_code::not_found, "no route named " + r.route);
    if (result.result != routing::outcome::ok)
        return reply_error(sid, re, proto::error_code::bad_request, "cannot route this request");
    if (result.created) {
        // Every visitor with a conversation has a card, if only an empty one (an anonymous
        // visitor's): get_visitor answers with nulls, not not_found. Merging keeps what is stored.
        store_->put_visitor(visitor_record_from(tenant_id_, from.principal, profile, to_millis(now)), [](auto) {});
        persist_conversation(conversations_.at(result.conversation_id));
    }
    if (!key.empty()) {
        client_keys_[key] = result.conversation_id;
        client_key_order_.push_back(key);
        if (client_key_order_.size() > client_key_capacity) {
            client_keys_.erase(client_key_order_.front());
            client_key_order_.pop_front();
        }
    }
    // The ok first, so the widget knows the conversation id before any event about it.
    send(sid, proto::encode_request_agent_ok(re.value_or(""), result.conversation_id, to_proto(result.state)));
    apply(actions);
}

void tenant_hub::handle_send(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                             const std::string& conversation_id, storage::message_kind kind, std::string body,
                             std::optional<std::string> client_msg_id) {
    auto* c = participant_conversation(from, conversation_id, true);
    if (c == nullptr || c->state == routing::conversation_state::ended)
        return reply_not_open(from, sid, re, conversation_id);
    if (c->outbox.size() >= max_outbox_per_conversation)
        return reply_error(sid, re, proto::error_code::rate_limited, "too many messages waiting to be stored");
    pending_write w;
    // Each sender has its own client_msg_id space: stored scoped by who sent it.
    if (client_msg_id)
        w.message.client_msg_id =
            (from.role == client_role::agent
                 ? "a:" + std::to_string(from.principal.size()) + ":" + from.principal + ":"  // ids may hold ':'
                 : std::string("v:")) +
            *client_msg_id;
    // A resend of a message already stored is still answered with its seq (submit_next_write).
    const bool known_resend = w.message.client_msg_id && c->stored_client_ids.count(*w.message.client_msg_id) > 0;
    if (!known_resend && message_cap_reached(*c)) return refuse_over_message_cap(*c, sid, re);
    w.message.tenant_id = tenant_id_;
    w.message.conversation_id = c->id;
    w.message.sender = from.role == client_role::agent ? storage::sender_kind::agent : storage::sender_kind::visitor;
    if (from.role == client_role::agent) w.message.agent_id = from.principal;
    w.message.kind = kind;
    w.message.body = std::move(body);
    w.origin_session = sid;
    w.re = re;
    w.received_at = monotonic_now();
    c->outbox.push_back(std::move(w));
    ++pending_writes_;
    submit_next_write(*c);
}

// Per conversation, one message write in flight: seq is assigned when the
// write is submitted, so a failed write gives its seq back and seq stays
// gap-free; group commit still batches across conversations.
void tenant_hub::submit_next_write(conversation& c) {
    while (!c.writing && !c.outbox.empty()) {
        auto w = std::move(c.outbox.front());
        c.outbox.pop_front();
        if (w.message.client_msg_id) {
            auto known = c.stored_client_ids.find(*w.message.client_msg_id);
            if (known != c.stored_client_ids.end()) {
                if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, known->second.first, known->second.second));
                if (pending_writes_ > 0) --pending_writes_;
                continue;
            }
        }
        // Admitted under the cap, but a reload may have lowered it since.
        if (c.last_seq >= static_cast<std::int64_t>(state_->limits()->max_messages_per_conversation)) {
            if (pending_writes_ > 0) --pending_writes_;
            refuse_over_message_cap(c, w.origin_session, w.re);
            continue;
        }
        w.message.seq = c.last_seq + 1;
        w.message.at = to_millis(wall_now());
        c.last_seq = w.message.seq;
        c.writing = true;
        auto record = w.message;
        store_->append_message(
            std::move(record),
            [self = shared_from_this(), id = c.id, w = std::move(w)](storage::result<storage::append_outcome> r) mutable {
                asio::post(self->strand_, [self, id = std::move(id), w = std::move(w), r = std::move(r)]() mutable {
                    self->on_message_stored(id, std::move(w), std::move(r));
                });
            });
    }
}

void tenant_hub::remember_client_id(conversation& c, const std::string& client_msg_id, std::int64_t seq,
                                    std::int64_t at) {
    if (!c.stored_client_ids.try_emplace(client_msg_id, seq, at).second) return;
    c.stored_client_id_order.push_back(client_msg_id);
    if (c.stored_client_id_order.size() > max_remembered_client_ids) {
        c.stored_client_ids.erase(c.stored_client_id_order.front());
        c.stored_client_id_order.pop_front();
    }
}

bool tenant_hub::message_cap_reached(const conversation& c) const {
    const auto limit = state_->limits()->max_messages_per_conversation;
    return c.last_seq + static_cast<std::int64_t>(c.outbox.size()) >= static_cast<std::int64_t>(limit);
}

void tenant_hub::refuse_over_message_cap(conversation& c, std::uint64_t sid, const std::optional<std::string>& re) {
    const auto limit = state_->limits()->max_messages_per_conversation;
    global_metrics().message_cap_refusals++;
    if (!c.message_cap_logged) {
        c.message_cap_logged = true;
        logger("route")->info("tenant {}: conversation {} reached {} messages (limits.max_messages_per_conversation); "
                              "further messages are refused",
                              tenant_id_, c.id, limit);
    }
    reply_error(sid, re, proto::error_code::capacity,
                fmt::format("the conversation already holds {} messages, the most allowed "
                            "(limits.max_messages_per_conversation); end it and start a new one",
                            limit));
}

void tenant_hub::on_message_stored(const std::string& conversation_id, pending_write w,
                                   storage::result<storage::append_outcome> r) {
    if (pending_writes_ > 0) --pending_writes_;
    auto* c = find_conversation(conversation_id);
    if (c == nullptr) return close_sessions_if_drained();
    c->writing = false;
    if (!r) {
        c->last_seq = w.message.seq - 1;  // give the seq back: nothing was stored under it
        global_metrics().storage_errors++;
        reply_error(w.origin_session, w.re, to_proto_error(r.kind()),
                    storage_message(r.failure()));
    } else if (r->duplicate) {
        c->last_seq = w.message.seq - 1;
        if (w.message.client_msg_id) remember_client_id(*c, *w.message.client_msg_id, r->seq, r->at);
        if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, r->seq, r->at));
    } else {
        if (w.message.client_msg_id) remember_client_id(*c, *w.message.client_msg_id, r->seq, r->at);
        auto& m = global_metrics();
        m.send_ack_seconds.observe(std::chrono::duration<double>(monotonic_now() - w.received_at).count());
        if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, r->seq, r->at));
        auto message = chat_message_from(w.message);
        message.seq = r->seq;
        message.at = r->at;
        auto event = make_frame(proto::encode_message_event(message));
        c->last_message = std::move(message);
        deliver_message(*c, r->seq, event, w.origin_session);
        routing::actions actions;
        router_->message_seen(c->id, wall_now(), actions);
        apply(actions);
        c = find_conversation(conversation_id);
        if (c == nullptr) return;
    }
    submit_next_write(*c);
    flush_ended_events(*c);
    forget_if_done(conversation_id);
    close_sessions_if_drained();
}

void tenant_hub::handle_accept(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                               const std::string& offer_id) {
    const auto now = wall_now();
    routing::actions actions;
    auto result = router_->offer_accepted(offer_id, from.principal, now, actions);
    if (result.result != routing::outcome::ok)
        return reply_error(sid, re, proto::error_code::conflict, "the offer expired, was withdrawn or was taken");
    if (auto o = offers_.find(offer_id); o != offers_.end()) {
        global_metrics().offer_to_accept_seconds.observe(
            std::chrono::duration<double>(monotonic_now() - o->second.offered_at).count());
        offers_.erase(o);
    }
    store_->resolve_offer(tenant_id_, offer_id, storage::offer_outcome::accepted, to_millis(now), [](auto) {});
    apply(actions);
    // The agent's other tabs see the offer gone.
    to_agent(from.principal, make_frame(proto::encode_offer_withdrawn_event(offer_id, proto::withdraw_reason::taken)), sid);
    auto* c = find_conversation(result.conversation_id);
    if (c == nullptr) return reply_error(sid, re, proto::error_code::conflict, "the conversation ended");
    auto entry = entry_of(*c);
    // Messages the visitor sent while waiting; the ok carries them so the agent starts with the
    // context. Until it is sent, this session's live messages of the chat are held, then those
    // past the ok's last message follow it: none comes before the ok, none twice.
    if (auto session = sessions_.find(sid); session != sessions_.end()) ++session->second.replaying[c->id].replays;
    // The latest accept_history messages at most: seq is gap-free, so they start after last_seq minus that.
    const std::int64_t after_seq = std::max<std::int64_t>(0, c->last_seq - accept_history);
    store_->get_transcript(
        tenant_id_, c->id, after_seq, accept_history, to_millis(now),
        [self = shared_from_this(), sid, re, entry = std::move(entry),
         budget = reply_budget()](storage::result<storage::message_page> page) {
            std::vector<proto::chat_message> list;
            if (page)
                for (const auto& m : page->messages) list.push_back(chat_message_from(m));
            auto text = proto::encode_accept_ok(re.value_or(""), entry, list);
            // Too long for one frame: the latest messages that fit. Their seqs show
            // what is left out, and resume reads it.
            while (text.size() > budget && !list.empty()) {
                list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>((list.size() + 1) / 2));
                text = proto::encode_accept_ok(re.value_or(""), entry, list);
            }
            const std::int64_t through = list.empty() ? 0 : list.back().seq;
            self->on_strand([self, sid, text = std::move(text), cid = entry.id, through]() mutable {
                auto it = self->sessions_.find(sid);
                if (it == self->sessions_.end()) return;
                // Paced like a transcript (which see); the held events follow once it is queued.
                global_metrics().frames_out++;
                it->second.session->send_paced({make_frame(std::move(text))}, [self, sid, cid, through] {
                    self->on_strand([self, sid, cid, through] {
                        if (auto session = self->sessions_.find(sid); session != self->sessions_.end())
                            self->release_hold(session->second, cid, through);
                    });
                });
            });
        });
}

// One `resume`: pages of stored messages handed to the session paced by its
// outbound queue (websocket_session::send_paced), so a long gap never trips
// the slow-consumer bound; then `ok`. Each step holds the next by shared_ptr
// only: if the session goes away, the chain is dropped with it.
// Live events of the conversation are held by the hub meanwhile (begin_replay)
// and sent after the last page, before the `ok` (end_replay).
struct tenant_hub::resume_replay : std::enable_shared_from_this<resume_replay> {
    resume_replay(std::shared_ptr<tenant_hub> h, std::shared_ptr<websocket_session> s, std::optional<std::string> r,
                  std::string c)
        : hub(std::move(h)), session(std::move(s)), re(std::move(r)), conversation_id(std::move(c)) {}

    void finish(std::int64_t replayed_through, frame_ptr final_frame) {
        hub->on_strand([hub = hub, sid = session->id(), conversation_id = conversation_id, replayed_through,
                        final_frame = std::move(final_frame)]() mutable {
            hub->end_replay(sid, conversation_id, replayed_through, std::move(final_frame));
        });
    }

    void read_after(std::int64_t after_seq) {
        hub->store_->messages_after(
            hub->tenant_id_, conversation_id, after_seq, resume_page, to_millis(hub->wall_now()),
            [self = shared_from_this(), after_seq](storage::result<std::vector<storage::message_record>> page) {
                if (!page) {
                    self->finish(after_seq, make_frame(proto::encode_error(
                                                self->re ? std::optional<std::string_view>(*self->re) : std::nullopt,
                                                to_proto_error(page.kind()), "cannot read messages now")));
                    return;
                }
                // Encoded here, on the storage thread; the session only queues them.
                std::vector<frame_ptr> frames;
                frames.reserve(page->size());
                for (const auto& m : page.value()) frames.push_back(make_frame(proto::encode_message_event(chat_message_from(m))));
                global_metrics().frames_out += frames.size();
                const bool more = page->size() == static_cast<std::size_t>(resume_page);
                const std::int64_t last = page->empty() ? after_seq : page->back().seq;
                self->session->send_paced(std::move(frames), [self, more, last] {
                    if (more) return self->read_after(last);
                    self->finish(last, self->re ? make_frame(proto::encode_ok(*self->re)) : nullptr);
                });
            });
    }

    std::shared_ptr<tenant_hub> hub;
    std::shared_ptr<websocket_session> session;
    std::optional<std::string> re;
    std::string conversation_id;
};

// One `get_transcript`: pages of at most transcript_page messages, read on the
// storage reader threads and written straight into the reply, which ends at the
// request's `limit` or before it would grow past the reply budget (a page holds
// at least one message, so a reader always gets on). Without `limit` the reply
// is the whole transcript or `too_large`, decided having held no more than the
// budget and one page. The reply is queued paced (websocket_session::send_paced):
// the replies of pipelined requests take turns in the session's queue instead of
// piling up past its slow-consumer bound, and the ticket goes once it is queued.
struct tenant_hub::transcript_read : std::enable_shared_from_this<transcript_read> {
    transcript_read(std::shared_ptr<tenant_hub> h, std::shared_ptr<websocket_session> s, std::optional<std::string> r,
                    proto::requests::get_transcript q, std::size_t b, storage::millis n, transcript_ticket t)
        : hub(std::move(h)),
          session(std::move(s)),
          re(std::move(r)),
          request(std::move(q)),
          budget(b),
          now(n),
          ticket(std::move(t)),
          after_seq(request.after_seq),
          reply(re.value_or("")) {}

    void read_page() {
        int page = transcript_page;
        if (request.limit) page = std::min(page, *request.limit - static_cast<int>(reply.message_count()));
        hub->store_->get_transcript(hub->tenant_id_, request.conversation_id, after_seq, page, now,
                                    [self = shared_from_this()](storage::result<storage::message_page> read) {
                                        self->on_page(std::move(read));
                                    });
    }

    void on_page(storage::result<storage::message_page> page) {
        if (!page) {
            if (page.kind() != storage::error_kind::not_found) global_metrics().storage_errors++;
            return finish_with_error(to_proto_error(page.kind()), storage_message(page.failure()));
        }
        for (const auto& m : page->messages) {
            const bool first_of_page = request.limit && reply.message_count() == 0;
            if (!reply.add(chat_message_from(m), first_of_page ? std::numeric_limits<std::size_t>::max() : budget)) {
                if (!request.limit)
                    return finish_with_error(proto::error_code::too_large,
                                             "transcript larger than one reply; read it in pages with limit and "
                                             "after_seq");
                return finish(after_seq);  // full: the next page starts behind the last message it holds
            }
            after_seq = m.seq;
        }
        if (!page->next_after_seq) return finish(std::nullopt);
        if (request.limit && static_cast<int>(reply.message_count()) >= *request.limit) return finish(after_seq);
        read_page();
    }

    void finish(std::optional<std::int64_t> next_after_seq) {
        queue(std::move(reply).finish(next_after_seq));
    }
    void finish_with_error(proto::error_code code, std::string_view message) {
        global_metrics().protocol_errors++;
        queue(proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt, code, message));
    }
    void queue(std::string text) {
        global_metrics().frames_out++;
        session->send_paced({make_frame(std::move(text))}, [ticket = std::move(ticket)] {});
    }

    std::shared_ptr<tenant_hub> hub;
    std::shared_ptr<websocket_session> session;
    std::optional<std::string> re;
    proto::requests::get_transcript request;
    std::size_t budget;
    storage::millis now;
    transcript_ticket ticket;
    std::int64_t after_seq;  // the last seq in the reply so far (the request's after_seq before any)
    proto::transcript_reply_writer reply;
};

tenant_hub::transcript_ticket tenant_hub::try_begin_transcript_read() {
    const auto limit = state_->limits()->max_transcript_reads_per_tenant;
    if (transcript_reads_->fetch_add(1) >= limit) {
        transcript_reads_->fetch_sub(1);
        global_metrics().transcript_reads_refused++;
        return nullptr;
    }
    global_metrics().transcript_reads++;
    return {transcript_reads_.get(), [reads = transcript_reads_](const void*) {
                reads->fetch_sub(1);
                global_metrics().transcript_reads--;
            }};
}

void tenant_hub::handle_resume(std::uint64_t sid, const std::optional<std::string>& re,
                               const proto::requests::resume& r) {
    const auto& from = sessions_.at(sid);
    auto replay = [self = shared_from_this(), session = from.session, re, conversation_id = r.conversation_id,
                   after = r.after_seq] {
        std::make_shared<resume_replay>(self, session, re, conversation_id)->read_after(after);
    };
    std::function<void()> start = replay;
    if (auto* c = find_conversation(r.conversation_id)) {
        bool allowed = from.role == client_role::visitor ? c->visitor_id == from.principal : c->agent_id == from.principal;
        if (!allowed) return reply_error(sid, re, proto::error_code::not_found, "no such conversation of yours");
    } else {
        // Not open any more: ownership is checked in storage, as the first step of this replay's
        // turn, so that the session's resumes still run and answer in the order they came.
        start = [self = shared_from_this(), sid, re, replay, conversation_id = r.conversation_id, role = from.role,
                 principal = from.principal] {
            auto refuse = [self, sid, re, conversation_id](proto::error_code code, const std::string& message) {
                global_metrics().protocol_errors++;
                self->end_replay(sid, conversation_id, 0,
                                 make_frame(proto::encode_error(
                                     re ? std::optional<std::string_view>(*re) : std::nullopt, code, message)));
            };
            self->store_->get_conversation(
                self->tenant_id_, conversation_id,
                self->back_on_strand<storage::conversation_record>(
                    [replay, refuse, role, principal](storage::result<storage::conversation_record> stored) {
                        if (!stored && stored.kind() != storage::error_kind::not_found)
                            return refuse(to_proto_error(stored.kind()), storage_message(stored.failure()));
                        bool allowed = stored && (role == client_role::visitor
                                                      ? stored->visitor_id == principal
                                                      : true /* agents read the tenant's history */);
                        if (!allowed) return refuse(proto::error_code::not_found, "no such conversation of yours");
                        replay();
                    }));
        };
    }
    // From here on, live events of the conversation for this session wait for the replay
    // to end; those it did not contain follow it, so nothing falls in between or comes twice.
    if (!begin_replay(sid, r.conversation_id, std::move(start)))
        reply_error(sid, re, proto::error_code::rate_limited, "too many resumes waiting");
}

}  // namespace parley::server

// ---------------------------------------------------------------------------
// Admin API: persisted first, then applied to the running router on the strand.
// Changes hold the tenant's admin turn (admin_queue.h) from their checks until
// they answer, so every check sees what the changes before it did.

namespace parley::server {

void tenant_hub::mutate(admin_done done, admin_queue::mutation m) {
    on_strand([self = shared_from_this(), done = std::move(done), m = std::move(m)]() mutable {
        self->admin_queue_->submit(std::move(done), std::move(m));
    });
}

void tenant_hub::admin_put_agent(std::string id, proto::admin::agent_body body, admin_done done) {
    auto record = agent_record_from_body(tenant_id_, id, body);
    auto config = agent_config_from_record(record);
    // Validate against the router's rules (time zone exists, ...) before storing anything.
    try {
        routing::resolved_schedule check(config.schedule);
    } catch (const std::exception& e) {
        return done(admin_error(400, proto::error_code::bad_request, std::string("schedule: ") + e.what()));
    }
    mutate(std::move(done), [self = shared_from_this(), record = std::move(record),
                             config = std::move(config)](admin_done finish) {
        const bool creating = self->agents_.count(record.id) == 0;
        if (creating) {
            const auto limit = self->state_->limits()->max_agents_per_tenant;
            if (self->agents_.size() >= limit) return finish(over_limit("agents", limit, "limits.max_agents_per_tenant"));
        }
        self->store_->put_agent(record, self->back_on_strand<void>([self, record, config, creating,
                                                                   finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            try {
                self->router_->upsert_agent(config, self->wall_now(), actions);
            } catch (const std::exception& e) {
                return finish(admin_error(400, proto::error_code::bad_request, e.what()));
            }
            self->agents_[record.id] = record;
            self->apply(actions);
            logger("route")->info("tenant {}: agent {} {}", self->tenant_id_, record.id, creating ? "created" : "updated");
            finish({creating ? 201 : 200, dump_stored(agent_record_to_json(record))});
        }));
    });
}

void tenant_hub::admin_delete_agent(std::string id, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), id = std::move(id)](admin_done finish) {
        if (self->agents_.count(id) == 0) return finish(admin_error(404, proto::error_code::not_found, "no such agent"));
        self->store_->delete_agent(self->tenant_id_, id, self->back_on_strand<void>([self, id, finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            self->router_->remove_agent(id, self->wall_now(), actions);
            self->agents_.erase(id);
            self->apply(actions);
            // Its sessions lose their standing: close them.
            if (auto it = self->agent_sessions_.find(id); it != self->agent_sessions_.end())
                for (auto sid : it->second)
                    self->sessions_.at(sid).session->close(static_cast<std::uint16_t>(4401), "agent deleted");
            finish({204, ""});
        }));
    });
}

void tenant_hub::admin_list_agents(admin_done done) {
    on_strand([self = shared_from_this(), done = std::move(done)] {
        nlohmann::json list = nlohmann::json::array();
        std::vector<const storage::agent_record*> sorted;
        for (const auto& [id, a] : self->agents_) sorted.push_back(&a);
        std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->id < b->id; });
        const auto now = self->wall_now();
        for (const auto* a : sorted) {
            auto json = agent_record_to_json(*a);
            if (auto availability = self->router_->availability_of(a->id, now))
                json["available"] = availability->available;
            if (auto snapshot = self->router_->agent(a->id)) {
                json["connected"] = snapshot->sessions > 0;
                json["active_chats"] = snapshot->active_conversations.size();
            }
            list.push_back(std::move(json));
        }
        done({200, dump_stored(nlohmann::json{{"agents", list}})});
    });
}

void tenant_hub::admin_put_route(std::string name, proto::admin::route_body body, admin_done done) {
    // Only the normalised route is kept and stored: unknown fields of the body go no further.
    auto route_json = route_json_from_body(body);
    // Parsed back as on load, with the configured defaults: what is accepted here loads again.
    auto parsed = route_config_from_json(name, route_json, state_->cfg.routing);
    if (!parsed) return done({400, proto::admin::encode_admin_error(parsed.error())});
    auto config = std::move(parsed.value());
    storage::route_record record{tenant_id_, name, std::move(route_json)};
    mutate(std::move(done), [self = shared_from_this(), record = std::move(record),
                             config = std::move(config)](admin_done finish) {
        // A fallback_route must exist and must not lead back here.
        if (auto problem = routing::fallback_problem(self->routes_, config.name, config.fallback_route))
            return finish(admin_error(400, proto::error_code::bad_request, *problem));
        const bool creating = self->routes_.count(record.name) == 0;
        if (creating) {
            const auto limit = self->state_->limits()->max_routes_per_tenant;
            if (self->routes_.size() >= limit) return finish(over_limit("routes", limit, "limits.max_routes_per_tenant"));
        }
        self->store_->put_route(record, self->back_on_strand<void>([self, record, config, creating,
                                                                   finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            try {
                self->router_->upsert_route(config, self->wall_now(), actions);
            } catch (const std::exception& e) {
                return finish(admin_error(400, proto::error_code::bad_request, e.what()));
            }
            self->routes_[record.name] = config.fallback_route;
            self->apply(actions);
            logger("route")->info("tenant {}: route {} {}", self->tenant_id_, record.name, creating ? "created" : "updated");
            auto reply = record.config;
            reply["name"] = record.name;
            finish({creating ? 201 : 200, dump_stored(reply)});
        }));
    });
}

void tenant_hub::admin_delete_route(std::string name, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), name = std::move(name)](admin_done finish) {
        if (self->routes_.count(name) == 0) return finish(admin_error(404, proto::error_code::not_found, "no such route"));
        // A route another one falls back to stays: deleting it would leave that one pointing nowhere.
        const auto users = routing::routes_falling_back_to(self->routes_, name);
        if (!users.empty()) {
            std::string list;
            for (const auto& user : users) list += (list.empty() ? "" : ", ") + user;
            return finish(admin_error(409, proto::error_code::conflict,
                                      "route " + name + " is the fallback_route of " + list + "; change or delete " +
                                          (users.size() == 1 ? "it" : "them") + " first"));
        }
        self->store_->delete_route(self->tenant_id_, name, self->back_on_strand<void>([self, name, finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            self->router_->remove_route(name, self->wall_now(), actions);
            self->routes_.erase(name);
            self->apply(actions);
            finish({204, ""});
        }));
    });
}

void tenant_hub::admin_list_routes(admin_done done) {
    // From storage, on a reader thread: the running router keeps no copy of the stored form.
    store_->list_routes(tenant_id_, [tenant_id = tenant_id_, done = std::move(done)](
                                        storage::result<std::vector<storage::route_record>> routes) {
        if (!routes) return done(admin_storage_error(routes.failure()));
        auto& records = routes.value();
        std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
        nlohmann::json list = nlohmann::json::array();
        for (const auto& r : records) {
            // Normalised again: a row an older version stored raw shows no unknown field. One
            // that is not a valid route was skipped by load() and is not in effect.
            auto normalised = normalised_route_json(r.config);
            if (!normalised) continue;
            normalised.value()["name"] = r.name;
            list.push_back(std::move(normalised.value()));
        }
        done({200, dump_stored(nlohmann::json{{"routes", std::move(list)}})});
    });
}

namespace {

std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return text;
}

}  // namespace

void tenant_hub::admin_put_account(std::string key, std::string agent_id, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), domain = lowercase(std::move(key)),
                             agent_id = std::move(agent_id)](admin_done finish) {
        if (self->agents_.count(agent_id) == 0)
            return finish(admin_error(400, proto::error_code::bad_request, "agent_id: no such agent"));
        if (!self->router_->has_account(domain)) {
            const auto limit = self->state_->limits()->max_accounts_per_tenant;
            if (self->router_->account_count() >= limit)
                return finish(over_limit("accounts", limit, "limits.max_accounts_per_tenant"));
        }
        self->store_->put_account({self->tenant_id_, domain, agent_id},
                                  self->back_on_strand<void>([self, domain, agent_id, finish](storage::status s) {
                                      if (!s) return finish(admin_storage_error(s.failure()));
                                      self->router_->upsert_account(domain, agent_id);
                                      finish({200, dump_stored(nlohmann::json{{"domain", domain}, {"agent_id", agent_id}})});
                                  }));
    });
}

void tenant_hub::admin_delete_account(std::string key, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), domain = lowercase(std::move(key))](admin_done finish) {
        if (!self->router_->has_account(domain))
            return finish(admin_error(404, proto::error_code::not_found, "no such account"));
        self->store_->delete_account(self->tenant_id_, domain,
                                     self->back_on_strand<void>([self, domain, finish](storage::status s) {
                                         if (!s) return finish(admin_storage_error(s.failure()));
                                         self->router_->remove_account(domain);
                                         finish({204, ""});
                                     }));
    });
}

void tenant_hub::admin_put_visitor(std::string id, proto::visitor_profile profile, admin_done done) {
    // The body is the whole card: a field left out is cleared.
    store_->replace_visitor(visitor_record_from(tenant_id_, id, profile, to_millis(wall_now())),
                            back_on_strand<void>([self = shared_from_this(), id, profile, done = std::move(done)](
                                                     storage::status s) {
                                if (!s) return done(admin_storage_error(s.failure()));
                                // A connected visitor and its open conversation show the new card at once.
                                if (auto known = self->visitor_profiles_.find(id); known != self->visitor_profiles_.end())
                                    known->second = profile;
                                if (auto cid = self->router_->open_conversation_of_visitor(id))
                                    if (auto* c = self->find_conversation(*cid)) c->profile = profile;
                                done({200, dump_stored(nlohmann::json{{"id", id}})});
                            }));
}

void tenant_hub::admin_add_activity(std::string visitor_id, proto::admin::activity_body body, admin_done done) {
    storage::activity_record activity;
    activity.tenant_id = tenant_id_;
    activity.visitor_id = visitor_id;
    activity.type = body.type;
    activity.at = body.at;
    if (!body.details_json.empty()) activity.details = nlohmann::json::parse(body.details_json, nullptr, false);
    store_->append_activity(std::move(activity), [done = std::move(done)](storage::status s) {
        if (!s) return done(admin_storage_error(s.failure()));
        done({201, "{}"});
    });
}

namespace {

// A message's text in transcript.txt. Every line the export writes starts with
// "[date time UTC] #seq", so a message's own line breaks become indented
// continuation lines (a visitor cannot forge a line that looks like an agent's),
// and other control characters are written as \xNN.
void append_transcript_body(std::string& out, std::string_view body) {
    for (std::size_t i = 0; i < body.size(); ++i) {
        auto ch = static_cast<unsigned char>(body[i]);
        bool unicode_break = ch == 0xE2 && i + 2 < body.size() && static_cast<unsigned char>(body[i + 1]) == 0x80 &&
                             (static_cast<unsigned char>(body[i + 2]) == 0xA8 ||
                              static_cast<unsigned char>(body[i + 2]) == 0xA9);  // U+2028, U+2029
        bool next_line = ch == 0xC2 && i + 1 < body.size() && static_cast<unsigned char>(body[i + 1]) == 0x85;
        if (ch == '\r' && i + 1 < body.size() && body[i + 1] == '\n') continue;  // CRLF is one break
        if (ch == '\n' || ch == '\r' || unicode_break || next_line) {
            out += "\n    ";
            i += unicode_break ? 2 : next_line ? 1 : 0;
        } else if ((ch < 0x20 && ch != '\t') || ch == 0x7F) {
            out += fmt::format("\\x{:02X}", ch);
        } else {
            out += static_cast<char>(ch);
        }
    }
}

// One page of transcript.txt: a line per message (see append_transcript_body).
std::string transcript_lines(const std::vector<storage::message_record>& messages) {
    std::string text;
    for (const auto& m : messages) {
        auto seconds = std::chrono::sys_seconds{std::chrono::seconds{m.at / 1000}};
        std::string who = m.sender == storage::sender_kind::agent ? "agent " + m.agent_id.value_or("")
                                                                  : std::string("visitor");
        std::string body = m.body;
        if (m.kind == storage::message_kind::calendar) {
            auto card = nlohmann::json::parse(m.body, nullptr, false);
            body = "[calendar] " + string_field(card, "agent_name") + " " + string_field(card, "booking_url");
        }
        text += fmt::format("[{:%Y-%m-%d %H:%M:%S} UTC] #{} {}: ", seconds, m.seq, who);
        append_transcript_body(text, body);
        text += '\n';
    }
    return text;
}

// The pages of transcript.txt after the first, one piece each (see body_stream):
// read and formatted on a storage reader thread when the http_session asks for
// the next, so a download holds one page whatever the conversation's length, and
// a client that stops reading stops the reads. Holds its transcript ticket.
class transcript_text_stream final : public body_stream, public std::enable_shared_from_this<transcript_text_stream> {
public:
    transcript_text_stream(std::shared_ptr<storage::store> store, std::string tenant_id, std::string conversation_id,
                           storage::millis now, std::string first_page, std::int64_t after_seq,
                           std::shared_ptr<const void> ticket)
        : store_(std::move(store)),
          tenant_id_(std::move(tenant_id)),
          conversation_id_(std::move(conversation_id)),
          now_(now),
          pending_(std::move(first_page)),
          after_seq_(after_seq),
          ticket_(std::move(ticket)) {}

    void next(std::function<void(piece)> done) override {
        if (!pending_.empty()) return done({std::exchange(pending_, {})});
        if (!after_seq_) return done({});
        store_->get_transcript(
            tenant_id_, conversation_id_, *after_seq_, transcript_page, now_,
            [self = shared_from_this(), done = std::move(done)](storage::result<storage::message_page> page) {
                if (!page) {
                    // The status line went out with the first page: all that is left is to cut the transfer.
                    logger("store")->warn("tenant {}: transcript.txt of {} cut after seq {}: {}", self->tenant_id_,
                                          self->conversation_id_, *self->after_seq_, storage_message(page.failure()));
                    return done({{}, true});
                }
                self->after_seq_ = page->next_after_seq;
                done({transcript_lines(page->messages)});  // empty only when nothing followed: the end
            });
    }

private:
    const std::shared_ptr<storage::store> store_;
    const std::string tenant_id_;
    const std::string conversation_id_;
    const storage::millis now_;  // one retention window for every page
    std::string pending_;        // the first page, until it is asked for
    std::optional<std::int64_t> after_seq_;  // where the next page starts; nullopt: no more
    std::shared_ptr<const void> ticket_;
};

}  // namespace

void tenant_hub::transcript_text(std::string conversation_id, std::string agent_id, admin_done done) {
    if (!agent_id.empty()) {
        // A signed token outlives its agent: a deleted (or never created) agent reads nothing.
        return on_strand([self = shared_from_this(), conversation_id = std::move(conversation_id),
                          agent_id = std::move(agent_id), done = std::move(done)]() mutable {
            if (self->agents_.count(agent_id) == 0)
                return done(admin_error(401, proto::error_code::unauthorized, "unknown agent"));
            self->transcript_text(std::move(conversation_id), {}, std::move(done));
        });
    }
    auto ticket = try_begin_transcript_read();
    if (!ticket) {
        auto refused = admin_error(503, proto::error_code::rate_limited, too_many_transcript_reads);
        refused.retry_after_s = 1;
        return done(std::move(refused));
    }
    const auto now = to_millis(wall_now());
    // The first page decides the status: an unknown conversation is a 404, not a cut 200. A
    // transcript of one page is sent whole (with its Content-Length), a longer one in chunks.
    store_->get_transcript(
        tenant_id_, conversation_id, 0, transcript_page, now,
        [store = store_, tenant_id = tenant_id_, conversation_id, now, ticket = std::move(ticket),
         done = std::move(done)](storage::result<storage::message_page> page) {
            if (!page) return done(admin_storage_error(page.failure()));
            admin_reply reply{200, transcript_lines(page->messages), "text/plain; charset=utf-8"};
            if (page->next_after_seq)
                reply.rest = std::make_shared<transcript_text_stream>(store, tenant_id, conversation_id, now,
                                                                      std::exchange(reply.body, {}),
                                                                      *page->next_after_seq, ticket);
            done(std::move(reply));
        });
}

}  // namespace parley::server
