#pragma once
// Plain records the storage library reads and writes. Every record is scoped by
// tenant_id: a query never returns a row of another tenant. Times are integers,
// milliseconds since the Unix epoch, as on the wire (protocol.md section 2).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace parley::storage {

using millis = std::int64_t;

struct tenant_record {
    std::string id;
    nlohmann::json settings = nlohmann::json::object();
};

struct agent_record {
    std::string tenant_id;
    std::string id;
    std::string name;
    std::optional<std::string> email;
    int max_chats = 10;
    std::vector<std::string> teams;
    nlohmann::json schedule = nullptr;  // {tz, blocks:[{day,start,end}]}, null = always on
    std::optional<std::string> calendar_url;
    std::optional<std::string> avatar_url;
};

struct route_record {
    std::string tenant_id;
    std::string name;
    nlohmann::json config = nlohmann::json::object();  // protocol.md section 6, normalised by the server (known fields only)
};

struct account_record {
    std::string tenant_id;
    std::string domain;  // email domain or company name
    std::string agent_id;
};

// A field nobody supplied stays std::nullopt (the wire shows null).
struct visitor_record {
    std::string tenant_id;
    std::string id;
    std::optional<std::string> name;
    std::optional<std::string> job_title;
    std::optional<std::string> email;
    std::optional<std::string> phone;
    std::optional<std::string> crm_status;
    std::optional<std::string> company;
    // When the card was last written. Retention deletes a card this old once
    // the visitor has no conversation and no activity left.
    millis seen_at = 0;
};

enum class conversation_state { routing, queued, active, ended };

struct conversation_record {
    std::string tenant_id;
    std::string id;
    std::string visitor_id;
    std::string route;
    conversation_state state = conversation_state::routing;
    std::optional<std::string> agent_id;
    millis started_at = 0;
    std::optional<millis> ended_at;
    std::optional<std::string> end_reason;
    std::optional<int> score;
    std::vector<std::string> tried_agents;
    // Filled by reads only (highest stored seq); ignored by save_conversation.
    std::int64_t last_seq = 0;
};

enum class sender_kind { visitor, agent, system };
enum class message_kind { text, calendar };

struct message_record {
    std::string tenant_id;
    std::string conversation_id;
    std::int64_t seq = 0;  // assigned by the server: 1, 2, 3 ... per conversation
    sender_kind sender = sender_kind::visitor;
    std::optional<std::string> agent_id;
    message_kind kind = message_kind::text;
    std::string body;  // the text, or the calendar JSON for kind calendar
    std::optional<std::string> client_msg_id;  // unique per conversation when present (the server scopes it by sender)
    millis at = 0;
};

struct append_outcome {
    std::int64_t seq = 0;    // the stored seq: for a duplicate client_msg_id the first message's seq
    millis at = 0;           // the stored time
    bool duplicate = false;  // client_msg_id was already stored: nothing new was written
    bool durable = false;    // true once committed; false for durability relaxed (only queued)
};

enum class offer_outcome { pending, accepted, declined, expired, withdrawn };

struct offer_record {
    std::string tenant_id;
    std::string id;
    std::string conversation_id;
    std::string agent_id;
    millis created_at = 0;
    millis expires_at = 0;
    offer_outcome outcome = offer_outcome::pending;
    std::optional<millis> resolved_at;
};

struct activity_record {
    std::string tenant_id;
    std::string visitor_id;
    std::string type;
    millis at = 0;
    std::optional<std::string> conversation_id;
    nlohmann::json details;  // null: none given
    std::int64_t id = 0;  // assigned by storage; used for cursor paging
};

// An agent's manual availability, overriding the weekly schedule until until_at
// (null = until switched back). The routing core decides when it expires.
struct availability_override {
    std::string tenant_id;
    std::string agent_id;
    bool available = false;
    std::optional<millis> until_at;
    millis set_at = 0;
};

enum class conversation_filter {
    active,  // the agent's own active conversations
    all,     // every conversation of the tenant, newest first
};

struct conversation_query {
    std::string tenant_id;
    std::string agent_id;  // whose "active" conversations; ignored for filter all
    conversation_filter filter = conversation_filter::active;
    int limit = 50;  // 1..100
    std::optional<std::string> cursor;  // next_cursor of the previous page
    millis now = 0;  // retention window is measured back from here
};

struct conversation_summary {
    conversation_record conversation;
    std::optional<visitor_record> visitor;  // null when the visitor row does not exist
    std::optional<message_record> last_message;
};

struct conversation_page {
    std::vector<conversation_summary> conversations;
    std::optional<std::string> next_cursor;  // null on the last page
};
// The cursor of the page that starts after `last`: what next_cursor is when a
// page ends there, for a reader that sends fewer entries than it read.
std::string cursor_after(const conversation_record& last);

// One page of a conversation's messages (store::get_transcript).
struct message_page {
    std::vector<message_record> messages;  // seq order
    // The seq to pass as after_seq for the next page; null when no message follows these.
    std::optional<std::int64_t> next_after_seq;
};

// The most messages one store::get_transcript page may ask for.
constexpr int max_message_page = 1000;

struct activity_query {
    std::string tenant_id;
    std::string visitor_id;
    int limit = 50;  // 1..100
    std::optional<std::string> cursor;
    millis now = 0;
};

struct activity_page {
    std::vector<activity_record> activities;  // newest first
    std::optional<std::string> next_cursor;
};
std::string cursor_after(const activity_record& last);  // as for conversations

// What a restarting server needs to resume: every conversation not ended (with
// its agent, tried agents and highest seq), pending offers, and overrides not
// yet expired at `now`.
struct open_state {
    // With the visitor's card and the last message, so an inbox rebuilt after a
    // restart looks as it did before.
    std::vector<conversation_summary> conversations;
    std::vector<offer_record> pending_offers;
    std::vector<availability_override> overrides;
};

struct prune_report {
    std::uint64_t messages = 0;
    std::uint64_t activities = 0;
    std::uint64_t conversations = 0;
    std::uint64_t offers = 0;
    std::uint64_t visitors = 0;  // cards of visitors with nothing else left
    std::uint64_t batches = 0;  // delete transactions that removed rows
    bool stopped = false;       // stop_requested said so between two batches: the rest waits for the next run
};

std::string_view to_string(conversation_state state);
std::string_view to_string(sender_kind sender);
std::string_view to_string(message_kind kind);
std::string_view to_string(offer_outcome outcome);
std::optional<conversation_state> parse_conversation_state(std::string_view text);
std::optional<sender_kind> parse_sender_kind(std::string_view text);
std::optional<message_kind> parse_message_kind(std::string_view text);
std::optional<offer_outcome> parse_offer_outcome(std::string_view text);

}  // namespace parley::storage
