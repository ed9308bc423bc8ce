#pragma once
// Encoding of server -> client WebSocket messages (protocol.md sections 2-5):
// `ok` replies, `error` replies and events. Every encoder returns the finished
// text frame; none depends on the recipient, so the server encodes a message
// once and fans the same shared_ptr<const std::string> out to every session.
// Field lists and examples of every message: proto/README.md.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "parley/proto/common.h"

namespace parley::proto {

enum class message_author { visitor, agent };
enum class message_kind { text, calendar };
enum class conversation_state { routing, queued, active, ended };
enum class end_reason { visitor_ended, agent_ended, idle_timeout, no_agent };
enum class withdraw_reason { expired, visitor_left, taken, agent_unavailable };
enum class availability_source { schedule, override };

std::string_view to_string(message_author author);
std::string_view to_string(message_kind kind);
std::string_view to_string(conversation_state state);
std::string_view to_string(end_reason reason);
std::string_view to_string(withdraw_reason reason);
std::string_view to_string(availability_source source);

// An agent's booking link, sent in calendar messages and fallbacks.
struct calendar_card {
    std::string agent_id;
    std::string agent_name;
    std::string booking_url;
};

// The agent a visitor sees in agent_joined.
struct agent_card {
    std::string id;
    std::string name;
    std::optional<std::string> avatar_url;  // null on the wire when absent
};

// What agents see of a visitor (get_visitor, offers, conversation lists).
// Fields nobody supplied are encoded as JSON null.
struct visitor_card {
    std::string id;
    visitor_profile profile;
};

// One stored chat message. kind text uses `text`; kind calendar uses
// `calendar`; the other is not encoded.
struct chat_message {
    std::string conversation_id;
    std::int64_t seq = 0;
    message_author from = message_author::visitor;
    std::optional<std::string> agent_id;  // the author when from == agent; null otherwise
    message_kind kind = message_kind::text;
    std::string text;
    calendar_card calendar;
    std::int64_t at = 0;
};

// The visitor's open conversation in the hello reply.
struct conversation_summary {
    std::string id;
    conversation_state state = conversation_state::routing;
    std::int64_t last_seq = 0;  // 0 when no message yet
};

// A conversation as agents see it (list_conversations, agent hello `active`,
// accept).
struct conversation_entry {
    std::string id;
    visitor_card visitor;
    conversation_state state = conversation_state::routing;
    std::optional<std::string> agent_id;       // null while nobody holds it
    std::int64_t started_at = 0;
    std::optional<std::int64_t> ended_at;      // null while open
    std::optional<chat_message> last_message; // null when there is none
};

struct agent_info {
    std::string id;
    std::string name;
    int max_chats = 10;
    std::vector<std::string> teams;
};

struct availability {
    bool available = false;
    availability_source source = availability_source::schedule;
    std::optional<std::int64_t> until_at;  // when an override ends by itself; null for schedule
};

struct offer {
    std::string offer_id;
    std::string conversation_id;
    visitor_card visitor;
    std::string route;
    std::int64_t expires_at = 0;
};

struct activity {
    std::string type;
    std::int64_t at = 0;
    std::optional<std::string> conversation_id;
    // The stored details as JSON text (as accepted by parse_activity_body).
    // Empty or unparsable text encodes as null.
    std::string details_json;
};

// ---- Replies -------------------------------------------------------------

// {"type":"ok","re":...}: the reply to requests whose result is only success
// (decline, typing, end_chat, set_score, meeting_booked, set_availability,
// resume).
std::string encode_ok(std::string_view re);

// {"type":"error","re":...,"code":...,"message":...}; `re` is omitted when the
// request carried no (readable) id.
std::string encode_error(std::optional<std::string_view> re, error_code code, std::string_view message);
std::string encode_error(const protocol_error& error);

std::string encode_visitor_hello_ok(std::string_view re, std::string_view visitor_id, std::string_view resume_token,
                                    const std::optional<conversation_summary>& conversation);

std::string encode_agent_hello_ok(std::string_view re, const agent_info& agent, const availability& agent_availability,
                                  std::span<const conversation_entry> active, std::span<const offer> offers);

std::string encode_request_agent_ok(std::string_view re, std::string_view conversation_id, conversation_state state);

// Reply to `send` and to `share_calendar` (the calendar message it stored).
std::string encode_send_ok(std::string_view re, std::int64_t seq, std::int64_t at);

std::string encode_accept_ok(std::string_view re, const conversation_entry& conversation,
                             std::span<const chat_message> messages);

// `next_cursor` is null on the last page.
std::string encode_list_conversations_ok(std::string_view re, std::span<const conversation_entry> conversations,
                                         std::optional<std::string_view> next_cursor);

// The card's fields are spread into the ok: {"type":"ok","re":..,"id":..,"name":..}.
std::string encode_get_visitor_ok(std::string_view re, const visitor_card& visitor);

// One of the tenant's agents in the list_agents reply (an addition to protocol v1).
struct agent_listing {
    std::string id;
    std::string name;
    std::optional<std::string> avatar_url;  // null on the wire when absent
    bool has_calendar = false;              // whether share_calendar with this agent_id can work
};

// {"type":"ok","re":..,"agents":[{id,name,avatar_url,has_calendar}]}, in the order given.
std::string encode_list_agents_ok(std::string_view re, std::span<const agent_listing> agents);

// Additions to protocol v1 (proto/README.md) for agent credentials that expire on an open
// connection: {"type":"credentials_expiring","expires_at":ms} warns before the close with 4401;
// {"type":"ok","re":..,"expires_at":ms} answers a reauth with the new token's end.
std::string encode_credentials_expiring_event(std::int64_t expires_at_ms);
std::string encode_reauth_ok(std::string_view re, std::int64_t expires_at_ms);

std::string encode_get_activity_ok(std::string_view re, std::span<const activity> activities,
                                   std::optional<std::string_view> next_cursor);

// `next_after_seq` is null when the messages reach the end of the transcript.
std::string encode_get_transcript_ok(std::string_view re, std::span<const chat_message> messages,
                                     std::optional<std::int64_t> next_after_seq);

// A get_transcript ok written one message at a time, so that its builder can
// stop before the frame grows past a byte budget without encoding anything
// twice. finish() gives the same bytes as encode_get_transcript_ok.
class transcript_reply_writer {
public:
    explicit transcript_reply_writer(std::string_view re);
    // Appends `message` unless the finished frame could then be longer than
    // `max_bytes` (whatever next_after_seq it ends with); says whether it did.
    bool add(const chat_message& message, std::size_t max_bytes);
    std::size_t message_count() const { return count_; }
    std::string finish(std::optional<std::int64_t> next_after_seq) &&;

private:
    std::string out_;
    std::size_t count_ = 0;
};

// ---- Events (no `re`) ----------------------------------------------------

std::string encode_message_event(const chat_message& message);
std::string encode_typing_event(std::string_view conversation_id, message_author from, bool on);
std::string encode_agent_joined_event(std::string_view conversation_id, const agent_card& agent);
std::string encode_agent_away_event(std::string_view conversation_id);
std::string encode_agent_back_event(std::string_view conversation_id);
std::string encode_queued_event(std::string_view conversation_id, std::int64_t position);
// `message` and `calendar` are null on the wire when absent.
std::string encode_fallback_event(std::string_view conversation_id, std::optional<std::string_view> message,
                                  const std::optional<calendar_card>& calendar);
std::string encode_ended_event(std::string_view conversation_id, end_reason reason);
std::string encode_offer_event(const offer& pending_offer);
std::string encode_offer_withdrawn_event(std::string_view offer_id, withdraw_reason reason);
std::string encode_availability_event(const availability& current);

}  // namespace parley::proto
