#pragma once
// What the router asks the server to do. The router never performs I/O: every
// call appends actions to a caller-owned vector (reuse it with clear() to keep
// the hot path allocation-light), and the server carries them out in order.
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <parley/routing/config.h>

namespace parley::routing {

enum class withdraw_reason { expired, visitor_left, taken, agent_unavailable };
enum class end_reason { visitor_ended, agent_ended, idle_timeout, no_agent };
enum class availability_source { schedule, override };
enum class conversation_state { routing, queued, active, ended };
enum class activity_type { chat_requested, agent_engaged, chat_missed, chat_ended };

// An agent's effective availability, as sent in the `availability` event.
// `until_at` is set only for an override (when it reverts by itself).
struct availability {
    bool available = false;
    availability_source source = availability_source::schedule;
    std::optional<time_point> until_at;

    friend bool operator==(const availability&, const availability&) = default;
};

// Offer a chat to every session of `agent_id` (protocol `offer` event).
struct send_offer {
    std::string agent_id;
    std::string offer_id;
    std::string conversation_id;
    std::string visitor_id;
    std::string route;
    time_point expires_at;
};

// Protocol `offer_withdrawn`. The router never emits `taken`: an offer goes to
// one agent at a time, so after an accept the server itself tells the agent's
// other sessions that the offer was taken.
struct withdraw_offer {
    std::string agent_id;
    std::string offer_id;
    std::string conversation_id;
    withdraw_reason reason = withdraw_reason::expired;
};

struct calendar_card {
    std::string agent_id;
    std::string agent_name;
    std::string booking_url;
};

namespace visitor_event {
struct agent_joined {
    std::string agent_id;
    std::string name;
    std::string avatar_url;
};
struct queued {
    int position = 0;  // 1 = next in line
};
struct fallback {
    std::string message;
    std::optional<calendar_card> calendar;
};
struct agent_away {};
struct agent_back {};
struct ended {
    end_reason reason = end_reason::visitor_ended;
};
}  // namespace visitor_event

using visitor_event_variant = std::variant<visitor_event::agent_joined, visitor_event::queued,
    visitor_event::fallback, visitor_event::agent_away, visitor_event::agent_back, visitor_event::ended>;

struct notify_visitor {
    std::string conversation_id;
    std::string visitor_id;
    visitor_event_variant event;
};

// Protocol `availability` event, to every session of the agent.
struct notify_agent_availability {
    std::string agent_id;
    availability state;
};

// For persistence (and for telling the agent a chat left it). `agent_id` is
// the agent holding the chat for `active`, and the last agent (possibly empty)
// for `ended`; `reason` is set only for `ended`.
struct conversation_state_changed {
    std::string conversation_id;
    std::string visitor_id;
    std::string route;
    conversation_state state = conversation_state::routing;
    std::string agent_id;
    std::optional<end_reason> reason;
    // Agents already offered this chat, in order, as they stand when the router call returns
    // (what persistence stores, so that a restart does not offer it to them again).
    std::vector<std::string> tried_agents;
};

// An activity the server records itself (protocol section 4).
struct record_activity {
    std::string visitor_id;
    std::string conversation_id;
    activity_type type = activity_type::chat_requested;
    std::string agent_id;  // empty for chat_requested
    time_point at;
};

// The earliest internal deadline changed: (re)arm the tenant's one timer for
// `at` and call timer_fired() then; nullopt means no timer is needed.
struct schedule_wakeup {
    std::optional<time_point> at;
};

using action = std::variant<send_offer, withdraw_offer, notify_visitor, notify_agent_availability,
    conversation_state_changed, record_activity, schedule_wakeup>;
using actions = std::vector<action>;

}  // namespace parley::routing
