#pragma once
// Decoding of client -> server WebSocket frames (protocol.md sections 2-5).
// One struct per message type, holding only validated values: a server that
// receives a client_frame may use every field without checking it again
// (except against its own state: existence, ownership, permissions).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "parley/proto/common.h"

namespace parley::proto {

enum class conversation_filter { active, all };

namespace requests {

// Visitor endpoint. Authentication (token signatures, tenant policy) is the
// server's job; here only shapes and sizes are checked.
struct visitor_hello {
    std::string tenant;                         // 1..64 characters
    std::optional<std::string> visitor_token;   // 1..4096 characters
    std::optional<std::string> resume_token;    // 1..4096 characters
    visitor_profile profile;                    // empty when absent or null
};

// Agent endpoint.
struct agent_hello {
    std::string token;  // 1..4096 characters
};

struct request_agent {
    std::string route;                      // a valid route name, see is_valid_route_name
    std::optional<std::string> client_key;  // 1..64 characters
};

struct send {
    std::string conversation_id;               // 1..128 characters
    std::string text;                          // 1..limits::max_text_chars code points
    std::optional<std::string> client_msg_id;  // 1..64 characters
};

struct typing {
    std::string conversation_id;
    bool on = false;
};

struct end_chat {
    std::string conversation_id;
};

struct meeting_booked {
    std::string conversation_id;
    std::string agent_id;      // 1..128 characters
    std::int64_t start_at = 0; // ms since the Unix epoch, >= 0
};

struct set_availability {
    bool available = false;
};

struct accept {
    std::string offer_id;  // 1..128 characters
};

struct decline {
    std::string offer_id;
};

struct share_calendar {
    std::string conversation_id;
    std::string agent_id;
};

struct set_score {
    std::string conversation_id;
    int score = 0;  // 0..3
};

struct list_conversations {
    conversation_filter filter = conversation_filter::active;
    int limit = 20;                     // 1..100
    std::optional<std::string> cursor;  // opaque, 1..256 characters, from next_cursor
};

struct get_visitor {
    std::string visitor_id;  // 1..128 characters
};

struct get_activity {
    std::string visitor_id;
    int limit = 20;
    std::optional<std::string> cursor;
};

// Messages with seq > after_seq. Without `limit`, all of them in one reply
// (too_large when they do not fit); with it, a page of at most `limit`, and
// the reply's next_after_seq says where the next page starts.
struct get_transcript {
    std::string conversation_id;
    std::int64_t after_seq = 0;  // >= 0
    std::optional<int> limit;    // 1..max_transcript_page
};

// The largest `limit` of one get_transcript page.
inline constexpr int max_transcript_page = 1000;

// An addition to protocol v1 (proto/README.md): the tenant's agents, for
// picking a colleague whose calendar to share. No fields.
struct list_agents {};

struct resume {
    std::string conversation_id;
    std::int64_t after_seq = 0;  // >= 0
};

// An addition to protocol v1 (proto/README.md): an agent presents a fresh token
// on the open connection before the one of its hello expires.
struct reauth {
    std::string token;
};

}  // namespace requests

using client_request = std::variant<requests::visitor_hello, requests::agent_hello, requests::request_agent,
                                    requests::send, requests::typing, requests::end_chat,
                                    requests::meeting_booked, requests::set_availability, requests::accept,
                                    requests::decline, requests::share_calendar, requests::set_score,
                                    requests::list_conversations, requests::get_visitor,
                                    requests::get_activity, requests::get_transcript, requests::resume,
                                    requests::list_agents, requests::reauth>;

struct client_frame {
    // The envelope id (1..64 characters) when the client sent one: the
    // request then gets exactly one reply carrying it as `re`.
    std::optional<std::string> id;
    client_request request;
};

// Decodes one text frame received on the endpoint of `sender`.
//
// Checks, in order, each failing with the code shown:
//   frame bytes > max_frame_bytes                    too_large
//   invalid UTF-8, nesting > max_nesting_depth,
//   malformed JSON, not an object                    bad_request
//   `id` present but not a 1..64-character string    bad_request (no re)
//   `type` missing or not a string                   bad_request
//   `type` unknown to protocol v1                    unknown_type
//   `type` defined but not for this role             forbidden
//   any field missing, mistyped or out of range      bad_request
//   `text` longer than max_text_chars code points    too_large
// The error carries `re` whenever a valid `id` was read. Unknown fields are
// ignored; JSON null in an optional field means absent.
parse_result<client_frame> parse_client_frame(std::string_view text, role sender, const limits& limits);

// The wire `type` of a decoded request ("hello", "send", ...).
std::string_view type_name(const client_request& request);

// Route names (request_agent.route, fallback_route, the {name} of
// PUT /v1/tenants/{t}/routes/{name}): 1..64 characters of [A-Za-z0-9._-].
bool is_valid_route_name(std::string_view name);

// True when `text` is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF): what every frame and body must be. For text that
// reaches the server by other ways, such as percent-decoded URL paths.
bool is_valid_utf8(std::string_view text);

std::string_view to_string(conversation_filter filter);

}  // namespace parley::proto
