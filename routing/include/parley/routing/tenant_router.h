#pragma once
// parley::routing::tenant_router: decides which agent gets which chat for one
// tenant. Pure logic: no I/O, no threads, no clock reads. Every mutating call
// takes `now` and appends the resulting actions to `out`, in the order the
// server must carry them out. One instance per tenant, owned by one strand.
//
// Invariants (checked by tests/routing/invariant_tests.cpp):
//  - an agent never holds more than max_chats active chats plus pending offers;
//  - a conversation is active with at most one agent;
//  - a visitor has at most one open (routing, queued, active) conversation;
//  - every offer is resolved exactly once: accepted, declined, expired or withdrawn;
//  - a route's queue is first come, first served;
//  - a waiting (routing or queued) conversation whose visitor has had no session for
//    visitor_grace has ended: it holds no queue place and no offer.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <parley/routing/actions.h>
#include <parley/routing/config.h>

namespace parley::routing {

// Results the server maps to protocol error codes.
enum class outcome { ok, conflict, not_found, bad_request };

enum class ended_by { visitor, agent };

struct chat_request {
    std::string conversation_id;  // chosen by the caller, unique per tenant
    std::string visitor_id;
    visitor_profile profile;
    std::string route;
};

struct request_result {
    outcome result = outcome::ok;
    // On ok: the new conversation, or the visitor's already open one
    // (request_agent is idempotent); `created` tells which.
    std::string conversation_id;
    conversation_state state = conversation_state::routing;
    bool created = false;
};

struct accept_result {
    outcome result = outcome::ok;
    std::string conversation_id;
};

struct pending_offer_info {
    std::string offer_id;
    std::string conversation_id;
    std::string route;
    time_point expires_at;
};

// For the agent `hello` reply.
struct agent_snapshot {
    std::string agent_id;
    int max_chats = 0;
    int sessions = 0;
    bool in_grace = false;  // last session dropped, chats still held
    std::vector<std::string> active_conversations;
    std::vector<pending_offer_info> pending_offers;
};

struct conversation_snapshot {
    std::string conversation_id;
    std::string visitor_id;
    std::string route;  // the route in effect (a fallback_route once taken)
    conversation_state state = conversation_state::routing;
    std::string agent_id;  // active: the agent; routing: the agent holding the offer
    std::string offer_id;  // routing with a pending offer
    std::vector<std::string> tried_agents;
    int queue_position = 0;  // queued only, 1-based
    int visitor_sessions = 0;  // visitor sessions attached (visitor_session_opened)
    // Set while the place is kept for a visitor who has no session (visitor_grace).
    std::optional<time_point> visitor_grace_ends_at;
};

struct queue_stats {
    std::size_t depth = 0;
    std::optional<time_point> oldest_enqueued_at;
};

struct tenant_stats {
    std::size_t agents = 0;
    std::size_t agents_connected = 0;
    std::size_t agents_available = 0;  // connected and available
    std::size_t agents_eligible = 0;   // connected, available and under capacity
    std::size_t capacity_total = 0;    // sum of max_chats over connected agents
    std::size_t capacity_in_use = 0;   // active chats plus pending offers, all agents
    std::size_t open_conversations = 0;
    std::size_t pending_offers = 0;
    std::size_t queued = 0;
};

// A conversation read back from storage after a restart.
struct restored_conversation {
    std::string conversation_id;
    std::string visitor_id;
    visitor_profile profile;
    std::string route;
    conversation_state state = conversation_state::routing;  // routing, queued or active
    std::string agent_id;  // active only
    std::vector<std::string> tried_agents;
    time_point requested_at;
    time_point last_activity_at;
};

class tenant_router {
public:
    // `offer_id_prefix` makes offer ids unique across restarts (e.g. the
    // process start time or a random token): ids are "o_<prefix>_<counter>".
    // Throws std::invalid_argument for invalid configuration (see upsert_agent).
    tenant_router(const tenant_config& config, std::string offer_id_prefix, time_point now);
    ~tenant_router();
    tenant_router(tenant_router&&) noexcept;
    tenant_router& operator=(tenant_router&&) noexcept;
    tenant_router(const tenant_router&) = delete;
    tenant_router& operator=(const tenant_router&) = delete;

    // --- configuration, applied without losing live state ---------------
    // Throws std::invalid_argument for an empty id, max_chats outside 1..10,
    // an unknown time zone or a bad schedule block. Lowering max_chats below
    // the current load keeps the chats; the agent just gets no new offers.
    void upsert_agent(const agent_config& agent, time_point now, actions& out);
    // Pending offers are withdrawn (agent_unavailable) and re-routed; active
    // chats are routed again at once (they would otherwise be orphaned).
    outcome remove_agent(std::string_view agent_id, time_point now, actions& out);
    // Throws std::invalid_argument for an empty name, max_attempts < 1 or a
    // non-positive offer timeout. Queued conversations keep their place.
    void upsert_route(const route_config& route, time_point now, actions& out);
    // Conversations queued on the route fall back (ended, no_agent). Others
    // carry on; if they need routing again they fall back.
    outcome remove_route(std::string_view name, time_point now, actions& out);
    // `key` is an email domain or a company name (compared ignoring case).
    void upsert_account(std::string_view key, std::string_view agent_id);
    outcome remove_account(std::string_view key);
    void update_settings(const tenant_settings& settings);

    // --- events ---------------------------------------------------------
    outcome agent_session_opened(std::string_view agent_id, std::string_view session_id, time_point now,
        actions& out);
    outcome agent_session_closed(std::string_view agent_id, std::string_view session_id, time_point now,
        actions& out);
    // Returns the resulting availability; not_found for an unknown agent.
    std::optional<availability> set_availability(std::string_view agent_id, bool available, time_point now,
        actions& out);
    request_result chat_requested(const chat_request& request, time_point now, actions& out);
    // conflict: the offer expired, was withdrawn, answered, or is another agent's.
    accept_result offer_accepted(std::string_view offer_id, std::string_view agent_id, time_point now,
        actions& out);
    outcome offer_declined(std::string_view offer_id, std::string_view agent_id, time_point now, actions& out);
    // A message from either side: resets the idle timer.
    outcome message_seen(std::string_view conversation_id, time_point now, actions& out);
    // not_found for an unknown or already ended conversation; conflict when
    // the agent ends a chat that is not active.
    outcome chat_ended(std::string_view conversation_id, ended_by who, time_point now, actions& out);
    // The visitor went away for good (closed the widget, resume impossible).
    outcome visitor_left(std::string_view conversation_id, time_point now, actions& out);
    // Visitor presence, tracked like agent sessions: the server reports every visitor session
    // attached to an open conversation (a visitor may have several tabs open with one resume
    // token) and the end of each. When the last one closes while the conversation is routing
    // or queued, it keeps its place and pending offer for settings.visitor_grace; a session
    // opened before then cancels the deadline, otherwise the conversation ends as visitor_left
    // does (offer withdrawn with visitor_left, ended visitor_ended). Active conversations are
    // left to the idle timeout; one routed again later while its visitor is still away (its
    // agent's grace ran out) gets a fresh visitor grace then. A conversation whose presence was
    // never reported is not affected. Opening a session twice is ok; not_found for an unknown
    // conversation, or when closing a session that is not attached.
    outcome visitor_session_opened(std::string_view conversation_id, std::string_view session_id, time_point now,
        actions& out);
    outcome visitor_session_closed(std::string_view conversation_id, std::string_view session_id, time_point now,
        actions& out);
    // Process everything due at or before `now`.
    void timer_fired(time_point now, actions& out);

    // --- restart recovery (storage, issue 4) ----------------------------
    // Call on a fresh router, then finish_restore() once.
    void restore_availability_override(std::string_view agent_id, bool available, time_point until_at,
        time_point now);
    outcome restore_conversation(const restored_conversation& conversation, time_point now);
    // Active chats whose agent has no session start their grace period;
    // routing and queued conversations are routed again in request order.
    // Restored conversations without a visitor session (visitor_session_opened
    // since the restore) count as visitors away: routing ones start their
    // visitor grace here.
    void finish_restore(time_point now, actions& out);

    // --- queries --------------------------------------------------------
    std::optional<time_point> next_deadline() const;
    std::optional<availability> availability_of(std::string_view agent_id, time_point now) const;
    std::optional<agent_snapshot> agent(std::string_view agent_id) const;
    std::optional<conversation_snapshot> conversation(std::string_view conversation_id) const;
    std::optional<std::string> open_conversation_of_visitor(std::string_view visitor_id) const;
    std::optional<queue_stats> queue(std::string_view route) const;
    std::vector<std::string> queued_conversations(std::string_view route) const;  // FIFO order
    tenant_stats stats() const;
    bool has_account(std::string_view key) const;  // compared ignoring case
    std::size_t account_count() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace parley::routing
