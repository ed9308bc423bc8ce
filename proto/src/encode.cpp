#include "parley/proto/encode.h"

#include <charconv>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

#include "json_input.h"

namespace parley::proto {

namespace {

// ordered_json keeps members in insertion order, so every frame starts with
// "type" (and "re"), which makes logs and captures easy to read; with about
// ten members per object its linear lookup costs less than std::map.
using json = nlohmann::ordered_json;

json string_or_null(const std::optional<std::string>& value) {
    return value ? json(*value) : json(nullptr);
}

json integer_or_null(const std::optional<std::int64_t>& value) {
    return value ? json(*value) : json(nullptr);
}

std::string dump(const json& frame) {
    // Server data should be valid UTF-8, but a bad byte from storage must
    // not throw on the I/O path: replace it with U+FFFD instead.
    return frame.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The two frames of every relayed message (`ok` to a `send`, the `message`
// event) are written straight into a string instead of through a json object:
// no per-member allocations. The bytes are exactly what dump() writes for the
// same object (tests/proto compares them on random input), including U+FFFD
// for invalid UTF-8, which is left to nlohmann itself.
class frame_writer {
public:
    explicit frame_writer(std::size_t payload) {
        out_.reserve(payload + 160);
        out_ += '{';
    }

    frame_writer& string(std::string_view key, std::string_view value) {
        name(key);
        quoted(value);
        return *this;
    }
    frame_writer& integer(std::string_view key, std::int64_t value) {
        name(key);
        char digits[24];
        auto [end, ec] = std::to_chars(std::begin(digits), std::end(digits), value);
        out_.append(digits, end);
        return *this;
    }
    frame_writer& null(std::string_view key) {
        name(key);
        out_ += "null";
        return *this;
    }
    std::string finish() {
        out_ += '}';
        return std::move(out_);
    }

private:
    // Keys are literals of this file: nothing in them needs escaping.
    void name(std::string_view key) {
        if (out_.size() > 1) out_ += ',';
        out_ += '"';
        out_ += key;
        out_ += "\":";
    }

    void quoted(std::string_view value) {
        if (!detail::is_valid_utf8(value)) {
            out_ += dump(json(std::string(value)));
            return;
        }
        static constexpr char hex[] = "0123456789abcdef";
        out_ += '"';
        for (char ch : value) {
            const auto c = static_cast<unsigned char>(ch);
            switch (c) {
                case '"': out_ += "\\\""; break;
                case '\\': out_ += "\\\\"; break;
                case '\b': out_ += "\\b"; break;
                case '\f': out_ += "\\f"; break;
                case '\n': out_ += "\\n"; break;
                case '\r': out_ += "\\r"; break;
                case '\t': out_ += "\\t"; break;
                default:
                    if (c < 0x20) {
                        out_ += "\\u00";
                        out_ += hex[c >> 4];
                        out_ += hex[c & 0xf];
                    } else {
                        out_ += ch;
                    }
            }
        }
        out_ += '"';
    }

    std::string out_;
};

// `re` is empty when the request had no id (a valid id is 1..64 characters):
// then the reply carries no "re" at all.
json reply(std::string_view re) {
    json frame = json::object();
    frame["type"] = "ok";
    if (!re.empty()) frame["re"] = re;
    return frame;
}

json event(std::string_view type) {
    json frame = json::object();
    frame["type"] = type;
    return frame;
}

json to_json(const calendar_card& calendar) {
    json object = json::object();
    object["agent_id"] = calendar.agent_id;
    object["agent_name"] = calendar.agent_name;
    object["booking_url"] = calendar.booking_url;
    return object;
}

void add_visitor_card_fields(json& object, const visitor_card& visitor) {
    object["id"] = visitor.id;
    object["name"] = string_or_null(visitor.profile.name);
    object["job_title"] = string_or_null(visitor.profile.job_title);
    object["email"] = string_or_null(visitor.profile.email);
    object["phone"] = string_or_null(visitor.profile.phone);
    object["crm_status"] = string_or_null(visitor.profile.crm_status);
    object["company"] = string_or_null(visitor.profile.company);
}

json to_json(const visitor_card& visitor) {
    json object = json::object();
    add_visitor_card_fields(object, visitor);
    return object;
}

// The message object: the `message` event without "type". Used by events,
// transcripts, accept and last_message so clients parse one shape.
void add_message_fields(json& object, const chat_message& message) {
    object["conversation_id"] = message.conversation_id;
    object["seq"] = message.seq;
    object["from"] = to_string(message.from);
    object["agent_id"] = string_or_null(message.agent_id);
    object["kind"] = to_string(message.kind);
    if (message.kind == message_kind::text) {
        object["text"] = message.text;
    } else {
        object["calendar"] = to_json(message.calendar);
    }
    object["at"] = message.at;
}

json to_json(const chat_message& message) {
    json object = json::object();
    add_message_fields(object, message);
    return object;
}

json to_json(std::span<const chat_message> messages) {
    json array = json::array();
    for (const auto& message : messages) array.push_back(to_json(message));
    return array;
}

json to_json(const conversation_entry& conversation) {
    json object = json::object();
    object["id"] = conversation.id;
    object["visitor"] = to_json(conversation.visitor);
    object["state"] = to_string(conversation.state);
    object["agent_id"] = string_or_null(conversation.agent_id);
    object["started_at"] = conversation.started_at;
    object["ended_at"] = integer_or_null(conversation.ended_at);
    object["last_message"] = conversation.last_message ? to_json(*conversation.last_message) : json(nullptr);
    return object;
}

void add_availability_fields(json& object, const availability& current) {
    object["available"] = current.available;
    object["source"] = to_string(current.source);
    object["until_at"] = integer_or_null(current.until_at);
}

void add_offer_fields(json& object, const offer& pending_offer) {
    object["offer_id"] = pending_offer.offer_id;
    object["conversation_id"] = pending_offer.conversation_id;
    object["visitor"] = to_json(pending_offer.visitor);
    object["route"] = pending_offer.route;
    object["expires_at"] = pending_offer.expires_at;
}

json cursor_or_null(std::optional<std::string_view> cursor) {
    return cursor ? json(*cursor) : json(nullptr);
}

json conversation_event(std::string_view type, std::string_view conversation_id) {
    json frame = event(type);
    frame["conversation_id"] = conversation_id;
    return frame;
}

}  // namespace

std::string_view to_string(message_author author) { return author == message_author::visitor ? "visitor" : "agent"; }

std::string_view to_string(message_kind kind) { return kind == message_kind::text ? "text" : "calendar"; }

std::string_view to_string(conversation_state state) {
    switch (state) {
        case conversation_state::routing: return "routing";
        case conversation_state::queued: return "queued";
        case conversation_state::active: return "active";
        case conversation_state::ended: return "ended";
    }
    return "ended";
}

std::string_view to_string(end_reason reason) {
    switch (reason) {
        case end_reason::visitor_ended: return "visitor_ended";
        case end_reason::agent_ended: return "agent_ended";
        case end_reason::idle_timeout: return "idle_timeout";
        case end_reason::no_agent: return "no_agent";
    }
    return "no_agent";
}

std::string_view to_string(withdraw_reason reason) {
    switch (reason) {
        case withdraw_reason::expired: return "expired";
        case withdraw_reason::visitor_left: return "visitor_left";
        case withdraw_reason::taken: return "taken";
        case withdraw_reason::agent_unavailable: return "agent_unavailable";
    }
    return "expired";
}

std::string_view to_string(availability_source source) {
    return source == availability_source::schedule ? "schedule" : "override";
}

std::string encode_ok(std::string_view re) { return dump(reply(re)); }

std::string encode_error(std::optional<std::string_view> re, error_code code, std::string_view message) {
    json frame = event("error");
    if (re) frame["re"] = *re;
    frame["code"] = to_string(code);
    frame["message"] = message;
    return dump(frame);
}

std::string encode_error(const protocol_error& error) {
    return encode_error(error.re ? std::optional<std::string_view>(*error.re) : std::nullopt, error.code,
                        error.message);
}

std::string encode_visitor_hello_ok(std::string_view re, std::string_view visitor_id, std::string_view resume_token,
                                    const std::optional<conversation_summary>& conversation) {
    json frame = reply(re);
    frame["visitor_id"] = visitor_id;
    frame["resume_token"] = resume_token;
    if (conversation) {
        json summary = json::object();
        summary["id"] = conversation->id;
        summary["state"] = to_string(conversation->state);
        summary["last_seq"] = conversation->last_seq;
        frame["conversation"] = std::move(summary);
    } else {
        frame["conversation"] = nullptr;
    }
    return dump(frame);
}

std::string encode_agent_hello_ok(std::string_view re, const agent_info& agent, const availability& agent_availability,
                                  std::span<const conversation_entry> active, std::span<const offer> offers) {
    json frame = reply(re);
    json agent_object = json::object();
    agent_object["id"] = agent.id;
    agent_object["name"] = agent.name;
    agent_object["max_chats"] = agent.max_chats;
    agent_object["teams"] = agent.teams;
    frame["agent"] = std::move(agent_object);
    json availability_object = json::object();
    add_availability_fields(availability_object, agent_availability);
    frame["availability"] = std::move(availability_object);
    json active_array = json::array();
    for (const auto& conversation : active) active_array.push_back(to_json(conversation));
    frame["active"] = std::move(active_array);
    json offer_array = json::array();
    for (const auto& pending_offer : offers) {
        json offer_object = json::object();
        add_offer_fields(offer_object, pending_offer);
        offer_array.push_back(std::move(offer_object));
    }
    frame["offers"] = std::move(offer_array);
    return dump(frame);
}

std::string encode_request_agent_ok(std::string_view re, std::string_view conversation_id, conversation_state state) {
    json frame = reply(re);
    frame["conversation_id"] = conversation_id;
    frame["state"] = to_string(state);
    return dump(frame);
}

std::string encode_send_ok(std::string_view re, std::int64_t seq, std::int64_t at) {
    return frame_writer(re.size()).string("type", "ok").string("re", re).integer("seq", seq).integer("at", at).finish();
}

std::string encode_accept_ok(std::string_view re, const conversation_entry& conversation,
                             std::span<const chat_message> messages) {
    json frame = reply(re);
    frame["conversation"] = to_json(conversation);
    frame["messages"] = to_json(messages);
    return dump(frame);
}

std::string encode_list_conversations_ok(std::string_view re, std::span<const conversation_entry> conversations,
                                         std::optional<std::string_view> next_cursor) {
    json frame = reply(re);
    json array = json::array();
    for (const auto& conversation : conversations) array.push_back(to_json(conversation));
    frame["conversations"] = std::move(array);
    frame["next_cursor"] = cursor_or_null(next_cursor);
    return dump(frame);
}

std::string encode_get_visitor_ok(std::string_view re, const visitor_card& visitor) {
    json frame = reply(re);
    add_visitor_card_fields(frame, visitor);
    return dump(frame);
}

std::string encode_list_agents_ok(std::string_view re, std::span<const agent_listing> agents) {
    json frame = reply(re);
    json array = json::array();
    for (const auto& agent : agents)
        array.push_back({{"id", agent.id},
                         {"name", agent.name},
                         {"avatar_url", string_or_null(agent.avatar_url)},
                         {"has_calendar", agent.has_calendar}});
    frame["agents"] = std::move(array);
    return dump(frame);
}

std::string encode_credentials_expiring_event(std::int64_t expires_at_ms) {
    json frame = event("credentials_expiring");
    frame["expires_at"] = expires_at_ms;
    return dump(frame);
}

std::string encode_reauth_ok(std::string_view re, std::int64_t expires_at_ms) {
    json frame = reply(re);
    frame["expires_at"] = expires_at_ms;
    return dump(frame);
}

std::string encode_get_activity_ok(std::string_view re, std::span<const activity> activities,
                                   std::optional<std::string_view> next_cursor) {
    json frame = reply(re);
    json array = json::array();
    for (const auto& entry : activities) {
        json object = json::object();
        object["type"] = entry.type;
        object["at"] = entry.at;
        object["conversation_id"] = string_or_null(entry.conversation_id);
        object["details"] = entry.details_json.empty()
                                ? json(nullptr)
                                : json::parse(entry.details_json, nullptr, /*allow_exceptions=*/false);
        if (object["details"].is_discarded()) object["details"] = nullptr;
        array.push_back(std::move(object));
    }
    frame["activities"] = std::move(array);
    frame["next_cursor"] = cursor_or_null(next_cursor);
    return dump(frame);
}

std::string encode_get_transcript_ok(std::string_view re, std::span<const chat_message> messages,
                                     std::optional<std::int64_t> next_after_seq) {
    transcript_reply_writer writer(re);
    for (const auto& message : messages) writer.add(message, std::numeric_limits<std::size_t>::max());
    return std::move(writer).finish(next_after_seq);
}

namespace {
// What finish() appends at most: `],"next_after_seq":`, a seq (never negative: at most
// 19 digits) or null, then `}`.
constexpr std::size_t transcript_reply_tail_bytes = 19 + 19 + 1;
}  // namespace

transcript_reply_writer::transcript_reply_writer(std::string_view re) : out_(dump(reply(re))) {
    out_.pop_back();  // the object's closing brace: the members follow
    out_ += ",\"messages\":[";
}

bool transcript_reply_writer::add(const chat_message& message, std::size_t max_bytes) {
    const std::string object = dump(to_json(message));
    const std::size_t separator = count_ > 0 ? 1 : 0;
    if (out_.size() + separator + object.size() + transcript_reply_tail_bytes > max_bytes) return false;
    if (separator) out_ += ',';
    out_ += object;
    ++count_;
    return true;
}

std::string transcript_reply_writer::finish(std::optional<std::int64_t> next_after_seq) && {
    out_ += "],\"next_after_seq\":";
    out_ += next_after_seq ? std::to_string(*next_after_seq) : std::string("null");
    out_ += '}';
    return std::move(out_);
}

std::string encode_message_event(const chat_message& message) {
    if (message.kind != message_kind::text) {  // calendar cards: rare, nested
        json frame = event("message");
        add_message_fields(frame, message);
        return dump(frame);
    }
    frame_writer frame(message.conversation_id.size() + message.text.size());
    frame.string("type", "message")
        .string("conversation_id", message.conversation_id)
        .integer("seq", message.seq)
        .string("from", to_string(message.from));
    if (message.agent_id)
        frame.string("agent_id", *message.agent_id);
    else
        frame.null("agent_id");
    return frame.string("kind", to_string(message.kind)).string("text", message.text).integer("at", message.at).finish();
}

std::string encode_typing_event(std::string_view conversation_id, message_author from, bool on) {
    json frame = conversation_event("typing", conversation_id);
    frame["from"] = to_string(from);
    frame["on"] = on;
    return dump(frame);
}

std::string encode_agent_joined_event(std::string_view conversation_id, const agent_card& agent) {
    json frame = conversation_event("agent_joined", conversation_id);
    json agent_object = json::object();
    agent_object["id"] = agent.id;
    agent_object["name"] = agent.name;
    agent_object["avatar_url"] = string_or_null(agent.avatar_url);
    frame["agent"] = std::move(agent_object);
    return dump(frame);
}

std::string encode_agent_away_event(std::string_view conversation_id) {
    return dump(conversation_event("agent_away", conversation_id));
}

std::string encode_agent_back_event(std::string_view conversation_id) {
    return dump(conversation_event("agent_back", conversation_id));
}

std::string encode_queued_event(std::string_view conversation_id, std::int64_t position) {
    json frame = conversation_event("queued", conversation_id);
    frame["position"] = position;
    return dump(frame);
}

std::string encode_fallback_event(std::string_view conversation_id, std::optional<std::string_view> message,
                                  const std::optional<calendar_card>& calendar) {
    json frame = conversation_event("fallback", conversation_id);
    frame["message"] = message ? json(*message) : json(nullptr);
    frame["calendar"] = calendar ? to_json(*calendar) : json(nullptr);
    return dump(frame);
}

std::string encode_ended_event(std::string_view conversation_id, end_reason reason) {
    json frame = conversation_event("ended", conversation_id);
    frame["reason"] = to_string(reason);
    return dump(frame);
}

std::string encode_offer_event(const offer& pending_offer) {
    json frame = event("offer");
    add_offer_fields(frame, pending_offer);
    return dump(frame);
}

std::string encode_offer_withdrawn_event(std::string_view offer_id, withdraw_reason reason) {
    json frame = event("offer_withdrawn");
    frame["offer_id"] = offer_id;
    frame["reason"] = to_string(reason);
    return dump(frame);
}

std::string encode_availability_event(const availability& current) {
    json frame = event("availability");
    add_availability_fields(frame, current);
    return dump(frame);
}

}  // namespace parley::proto
