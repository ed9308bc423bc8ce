#include "parley/proto/decode.h"

#include <array>

#include "json_input.h"

namespace parley::proto {

using detail::field_reader;
using detail::string_rule;

namespace {

client_request parse_hello(field_reader& reader, role sender, const limits&) {
    if (sender == role::agent) return requests::agent_hello{reader.required_string("token", detail::token_rule)};
    requests::visitor_hello hello;
    hello.tenant = reader.required_string("tenant", detail::short_key_rule);
    hello.visitor_token = reader.optional_string("visitor_token", detail::token_rule);
    hello.resume_token = reader.optional_string("resume_token", detail::token_rule);
    if (const auto* profile = reader.optional_object("profile")) {
        auto profile_reader = reader.nested(*profile, reader.path_of("profile"));
        hello.profile = detail::read_visitor_profile(profile_reader);
    }
    return hello;
}

client_request parse_request_agent(field_reader& reader, role, const limits&) {
    requests::request_agent request;
    request.route = reader.required_string("route", detail::route_name_rule);
    request.client_key = reader.optional_string("client_key", detail::short_key_rule);
    return request;
}

client_request parse_send(field_reader& reader, role, const limits& limits) {
    requests::send send;
    send.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    send.text = reader.required_string("text", string_rule{limits.max_text_chars, 1, error_code::too_large});
    send.client_msg_id = reader.optional_string("client_msg_id", detail::short_key_rule);
    return send;
}

client_request parse_typing(field_reader& reader, role, const limits&) {
    requests::typing typing;
    typing.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    typing.on = reader.required_bool("on");
    return typing;
}

client_request parse_end_chat(field_reader& reader, role, const limits&) {
    return requests::end_chat{reader.required_string("conversation_id", detail::object_id_rule)};
}

client_request parse_meeting_booked(field_reader& reader, role, const limits&) {
    requests::meeting_booked booked;
    booked.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    booked.agent_id = reader.required_string("agent_id", detail::object_id_rule);
    booked.start_at = reader.required_integer("start_at", 0, detail::int64_max);
    return booked;
}

client_request parse_set_availability(field_reader& reader, role, const limits&) {
    return requests::set_availability{reader.required_bool("available")};
}

client_request parse_accept(field_reader& reader, role, const limits&) {
    return requests::accept{reader.required_string("offer_id", detail::object_id_rule)};
}

client_request parse_decline(field_reader& reader, role, const limits&) {
    return requests::decline{reader.required_string("offer_id", detail::object_id_rule)};
}

client_request parse_share_calendar(field_reader& reader, role, const limits&) {
    requests::share_calendar share;
    share.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    share.agent_id = reader.required_string("agent_id", detail::object_id_rule);
    return share;
}

client_request parse_set_score(field_reader& reader, role, const limits&) {
    requests::set_score score;
    score.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    score.score = static_cast<int>(reader.required_integer("score", 0, 3));
    return score;
}

// Wire names of conversation_filter, in declaration order.
constexpr std::array<std::string_view, 2> filter_names{"active", "all"};

// Page sizes: protocol.md caps them at 100; 20 fits one inbox screen.
constexpr std::int64_t default_page_limit = 20;
constexpr std::int64_t max_page_limit = 100;

client_request parse_list_conversations(field_reader& reader, role, const limits&) {
    requests::list_conversations list;
    list.filter = static_cast<conversation_filter>(reader.optional_choice("filter", filter_names, 0));
    list.limit = static_cast<int>(reader.optional_integer("limit", 1, max_page_limit, default_page_limit));
    list.cursor = reader.optional_string("cursor", detail::cursor_rule);
    return list;
}

client_request parse_get_visitor(field_reader& reader, role, const limits&) {
    return requests::get_visitor{reader.required_string("visitor_id", detail::object_id_rule)};
}

client_request parse_get_activity(field_reader& reader, role, const limits&) {
    requests::get_activity activity;
    activity.visitor_id = reader.required_string("visitor_id", detail::object_id_rule);
    activity.limit = static_cast<int>(reader.optional_integer("limit", 1, max_page_limit, default_page_limit));
    activity.cursor = reader.optional_string("cursor", detail::cursor_rule);
    return activity;
}

client_request parse_get_transcript(field_reader& reader, role, const limits&) {
    requests::get_transcript transcript;
    transcript.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    transcript.after_seq = reader.optional_integer("after_seq", 0, detail::int64_max, 0);
    // No default page size: a request without `limit` asks for the whole transcript (protocol v1 as first written).
    constexpr std::int64_t absent = 0;  // outside 1..max, so only ever the fallback
    if (auto limit = reader.optional_integer("limit", 1, requests::max_transcript_page, absent); limit != absent)
        transcript.limit = static_cast<int>(limit);
    return transcript;
}

client_request parse_resume(field_reader& reader, role, const limits&) {
    requests::resume resume;
    resume.conversation_id = reader.required_string("conversation_id", detail::object_id_rule);
    resume.after_seq = reader.required_integer("after_seq", 0, detail::int64_max);
    return resume;
}

client_request parse_list_agents(field_reader&, role, const limits&) { return requests::list_agents{}; }

client_request parse_reauth(field_reader& reader, role, const limits&) {
    return requests::reauth{reader.required_string("token", detail::token_rule)};
}

struct message_type {
    std::string_view name;
    bool visitor_may_send;
    bool agent_may_send;
    client_request (*parse)(field_reader&, role, const limits&);
};

// Every client message type of protocol v1 and who may send it. A type sent
// on the wrong endpoint is `forbidden`, not `unknown_type`: the type exists,
// and telling the client so points at the real mistake.
constexpr std::array message_types{
    message_type{"hello", true, true, &parse_hello},
    message_type{"request_agent", true, false, &parse_request_agent},
    message_type{"send", true, true, &parse_send},
    message_type{"typing", true, true, &parse_typing},
    message_type{"end_chat", true, true, &parse_end_chat},
    message_type{"meeting_booked", true, false, &parse_meeting_booked},
    message_type{"resume", true, true, &parse_resume},
    message_type{"set_availability", false, true, &parse_set_availability},
    message_type{"accept", false, true, &parse_accept},
    message_type{"decline", false, true, &parse_decline},
    message_type{"share_calendar", false, true, &parse_share_calendar},
    message_type{"set_score", false, true, &parse_set_score},
    message_type{"list_conversations", false, true, &parse_list_conversations},
    message_type{"get_visitor", false, true, &parse_get_visitor},
    message_type{"get_activity", false, true, &parse_get_activity},
    message_type{"get_transcript", false, true, &parse_get_transcript},
    message_type{"list_agents", false, true, &parse_list_agents},
    message_type{"reauth", false, true, &parse_reauth},
};

// Wire names in client_request's alternative order.
constexpr std::array<std::string_view, std::variant_size_v<client_request>> request_type_names{
    "hello",        "hello",          "request_agent",  "send",          "typing",
    "end_chat",     "meeting_booked", "set_availability", "accept",      "decline",
    "share_calendar", "set_score",    "list_conversations", "get_visitor", "get_activity",
    "get_transcript", "resume",         "list_agents", "reauth"};

}  // namespace

parse_result<client_frame> parse_client_frame(std::string_view text, role sender, const limits& limits) {
    auto parsed = detail::parse_json_object(text, limits.max_frame_bytes, limits.max_nesting_depth, "frame");
    if (!parsed) return parsed.error();
    const nlohmann::json& object = parsed.value();

    std::optional<protocol_error> error;
    field_reader reader(object, "", error);

    // The id is read first so that every later error can echo it.
    std::optional<std::string> id = reader.optional_string("id", detail::short_key_rule);
    if (error) return *error;

    const auto* type_value = reader.find("type");
    if (!type_value) return protocol_error{error_code::bad_request, "type is required", id};
    if (!type_value->is_string()) return protocol_error{error_code::bad_request, "type must be a string", id};
    const auto& type = type_value->get_ref<const std::string&>();

    const message_type* found = nullptr;
    for (const auto& candidate : message_types)
        if (candidate.name == type) found = &candidate;
    if (!found) {
        // Echo short names only: the message must stay small whatever was sent.
        const bool echo = detail::count_code_points(type) <= 64 && type.find('\0') == std::string::npos;
        return protocol_error{error_code::unknown_type, echo ? "unknown type \"" + type + "\"" : "unknown type", id};
    }
    const bool allowed = sender == role::visitor ? found->visitor_may_send : found->agent_may_send;
    if (!allowed)
        return protocol_error{error_code::forbidden,
                              "type \"" + type + "\" is only for " +
                                  (sender == role::visitor ? "agents" : "visitors"),
                              id};

    client_request request = found->parse(reader, sender, limits);
    if (error) {
        error->re = id;
        return *error;
    }
    return client_frame{std::move(id), std::move(request)};
}

std::string_view type_name(const client_request& request) { return request_type_names[request.index()]; }

bool is_valid_utf8(std::string_view text) { return detail::is_valid_utf8(text); }

bool is_valid_route_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    for (const char c : name) {
        const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                             c == '.' || c == '_' || c == '-';
        if (!allowed) return false;
    }
    return true;
}

std::string_view to_string(conversation_filter filter) { return filter_names[static_cast<std::size_t>(filter)]; }

std::string_view to_string(error_code code) {
    switch (code) {
        case error_code::bad_request: return "bad_request";
        case error_code::unknown_type: return "unknown_type";
        case error_code::unauthorized: return "unauthorized";
        case error_code::forbidden: return "forbidden";
        case error_code::not_found: return "not_found";
        case error_code::conflict: return "conflict";
        case error_code::capacity: return "capacity";
        case error_code::rate_limited: return "rate_limited";
        case error_code::too_large: return "too_large";
        case error_code::unavailable: return "unavailable";
        case error_code::internal: return "internal";
    }
    return "internal";
}

}  // namespace parley::proto
