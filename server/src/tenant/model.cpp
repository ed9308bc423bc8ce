#include "tenant/model.h"

#include "base/json_fields.h"

#include <cstdio>

namespace parley::server {

routing::time_point to_time_point(storage::millis ms) { return routing::time_point{routing::duration{ms}}; }
storage::millis to_millis(routing::time_point t) { return t.time_since_epoch().count(); }
namespace {

std::string minutes_to_text(int minutes) {
    char text[32];
    std::snprintf(text, sizeof text, "%02d:%02d", minutes / 60, minutes % 60);
    return text;
}

std::optional<int> text_to_minutes(const std::string& text) {
    int hours = 0, minutes = 0;
    char extra = 0;
    if (std::sscanf(text.c_str(), "%d:%d%c", &hours, &minutes, &extra) != 2) return std::nullopt;
    if (hours < 0 || hours > 24 || minutes < 0 || minutes > 59 || (hours == 24 && minutes != 0)) return std::nullopt;
    return hours * 60 + minutes;
}

// proto weekday (mon = 0) -> C encoding (Sunday = 0) used by routing.
unsigned c_weekday(proto::admin::weekday day) {
    return (static_cast<unsigned>(day) + 1) % 7;
}

}  // namespace

storage::agent_record agent_record_from_body(const std::string& tenant, const std::string& id,
                                             const proto::admin::agent_body& body) {
    storage::agent_record agent;
    agent.tenant_id = tenant;
    agent.id = id;
    agent.name = body.name;
    agent.email = body.email;
    agent.max_chats = body.max_chats;
    agent.teams = body.teams;
    agent.calendar_url = body.calendar_url;
    agent.avatar_url = body.avatar_url;
    if (body.schedule) {
        nlohmann::json blocks = nlohmann::json::array();
        for (const auto& b : body.schedule->blocks)
            blocks.push_back({{"day", proto::admin::to_string(b.day)},
                              {"start", minutes_to_text(b.start_minute)},
                              {"end", minutes_to_text(b.end_minute)}});
        agent.schedule = {{"tz", body.schedule->tz ? nlohmann::json(*body.schedule->tz) : nlohmann::json(nullptr)},
                          {"blocks", blocks}};
    }
    return agent;
}

nlohmann::json agent_record_to_json(const storage::agent_record& agent) {
    auto optional = [](const std::optional<std::string>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    return {{"id", agent.id},
            {"name", agent.name},
            {"email", optional(agent.email)},
            {"max_chats", agent.max_chats},
            {"teams", agent.teams},
            {"schedule", agent.schedule},
            {"calendar_url", optional(agent.calendar_url)},
            {"avatar_url", optional(agent.avatar_url)}};
}

routing::agent_config agent_config_from_record(const storage::agent_record& agent) {
    routing::agent_config c;
    c.id = agent.id;
    c.name = agent.name;
    c.avatar_url = agent.avatar_url.value_or("");
    c.calendar_url = agent.calendar_url.value_or("");
    c.max_chats = agent.max_chats;
    c.teams = agent.teams;
    if (agent.schedule.is_object()) {
        if (auto tz = agent.schedule.find("tz"); tz != agent.schedule.end() && tz->is_string()) c.schedule.tz = *tz;
        static const char* days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
        for (const auto& b : agent.schedule.value("blocks", nlohmann::json::array())) {
            if (!b.is_object()) continue;
            std::string day = string_field(b, "day");
            for (unsigned i = 0; i < 7; ++i) {
                if (day != days[i]) continue;
                auto start = text_to_minutes(string_field(b, "start"));
                auto end = text_to_minutes(string_field(b, "end"));
                if (start && end)
                    c.schedule.blocks.push_back({c_weekday(static_cast<proto::admin::weekday>(i)), *start, *end});
            }
        }
    }
    return c;
}

nlohmann::json route_json_from_body(const proto::admin::route_body& body) {
    nlohmann::json route{{"type", proto::admin::to_string(body.type)}};
    if (body.team) route["team"] = *body.team;
    if (body.agent_id) route["agent_id"] = *body.agent_id;
    if (body.type == proto::admin::route_type::rules) {
        nlohmann::json rules = nlohmann::json::array();
        for (const auto& rule : body.rules)
            rules.push_back({{"priority", rule.priority},
                             {"when",
                              {{"field", proto::admin::to_string(rule.when.field)},
                               {"op", proto::admin::to_string(rule.when.op)},
                               {"value", rule.when.value}}},
                             {"agents", rule.agents}});
        route["rules"] = std::move(rules);
    }
    if (body.offer_timeout_given) route["offer_timeout_s"] = body.offer_timeout_s;
    if (body.max_attempts_given) route["max_attempts"] = body.max_attempts;
    route["queue_wait_s"] = body.queue_wait_s;
    if (body.fallback_route) route["fallback_route"] = *body.fallback_route;
    if (body.fallback_message) route["fallback_message"] = *body.fallback_message;
    route["fallback_calendar"] = body.fallback_calendar;
    return route;
}

proto::parse_result<nlohmann::json> normalised_route_json(const nlohmann::json& stored) {
    auto parsed = proto::admin::parse_route_body(dump_stored(stored));
    if (!parsed) return parsed.error();
    return route_json_from_body(parsed.value());
}

proto::parse_result<routing::route_config> route_config_from_json(const std::string& name, const nlohmann::json& body,
                                                                  const config::routing_config& defaults) {
    nlohmann::json effective = body;
    // Tenant-wide defaults from the config file apply where the route does not say.
    if (effective.is_object()) {
        if (!effective.contains("offer_timeout_s")) effective["offer_timeout_s"] = defaults.offer_timeout.count();
        if (!effective.contains("max_attempts")) effective["max_attempts"] = defaults.max_attempts;
    }
    auto parsed = proto::admin::parse_route_body(dump_stored(effective));
    if (!parsed) return parsed.error();
    const auto& b = parsed.value();
    routing::route_config r;
    r.name = name;
    r.type = static_cast<routing::route_type>(b.type);
    r.team = b.team.value_or("");
    r.agent_id = b.agent_id.value_or("");
    for (const auto& rule : b.rules) {
        routing::routing_rule out;
        out.priority = rule.priority;
        out.when.field = static_cast<routing::visitor_field>(rule.when.field);
        out.when.op = static_cast<routing::rule_op>(rule.when.op);
        out.when.value = rule.when.value;
        out.agents = rule.agents;
        r.rules.push_back(std::move(out));
    }
    r.offer_timeout = std::chrono::seconds(b.offer_timeout_s);
    r.max_attempts = b.max_attempts;
    r.queue_wait = std::chrono::seconds(b.queue_wait_s);
    r.fallback_route = b.fallback_route.value_or("");
    r.fallback_message = b.fallback_message.value_or("");
    r.fallback_calendar = b.fallback_calendar;
    return r;
}

routing::tenant_settings tenant_settings_from(const config::routing_config& routing) {
    routing::tenant_settings s;
    s.grace_period = routing.grace_period;
    s.idle_timeout = routing.conversation_idle_timeout;
    s.auto_away_after_missed = static_cast<int>(routing.auto_away_after_missed);
    s.max_queue_length = routing.max_queue_length;
    s.visitor_grace = routing.visitor_grace;
    return s;
}

routing::visitor_profile routing_profile(const proto::visitor_profile& p) {
    return {p.name.value_or(""),       p.job_title.value_or(""),  p.email.value_or(""),
            p.phone.value_or(""),      p.crm_status.value_or(""), p.company.value_or("")};
}

proto::visitor_profile proto_profile(const storage::visitor_record& v) {
    return {v.name, v.job_title, v.email, v.phone, v.crm_status, v.company};
}

storage::visitor_record visitor_record_from(const std::string& tenant, const std::string& id,
                                            const proto::visitor_profile& p, storage::millis written_at) {
    return {tenant, id, p.name, p.job_title, p.email, p.phone, p.crm_status, p.company, written_at};
}

// The four vocabularies list conversation states, end reasons and so on in
// the same order (protocol.md's); static_asserts keep it that way.
static_assert(static_cast<int>(routing::conversation_state::ended) == static_cast<int>(proto::conversation_state::ended));
static_assert(static_cast<int>(storage::conversation_state::ended) == static_cast<int>(proto::conversation_state::ended));
static_assert(static_cast<int>(routing::end_reason::no_agent) == static_cast<int>(proto::end_reason::no_agent));
static_assert(static_cast<int>(routing::withdraw_reason::agent_unavailable) ==
              static_cast<int>(proto::withdraw_reason::agent_unavailable));
static_assert(static_cast<int>(routing::route_type::rules) == static_cast<int>(proto::admin::route_type::rules));
static_assert(static_cast<int>(routing::visitor_field::company) == static_cast<int>(proto::admin::rule_field::company));
static_assert(static_cast<int>(routing::rule_op::ends_with) == static_cast<int>(proto::admin::rule_operator::ends_with));

proto::conversation_state to_proto(routing::conversation_state s) { return static_cast<proto::conversation_state>(s); }
proto::conversation_state to_proto(storage::conversation_state s) { return static_cast<proto::conversation_state>(s); }
storage::conversation_state to_storage(routing::conversation_state s) { return static_cast<storage::conversation_state>(s); }
routing::conversation_state to_routing(storage::conversation_state s) { return static_cast<routing::conversation_state>(s); }
proto::end_reason to_proto(routing::end_reason r) { return static_cast<proto::end_reason>(r); }
proto::withdraw_reason to_proto(routing::withdraw_reason r) { return static_cast<proto::withdraw_reason>(r); }

proto::availability to_proto(const routing::availability& a) {
    proto::availability out;
    out.available = a.available;
    out.source = a.source == routing::availability_source::override ? proto::availability_source::override
                                                                     : proto::availability_source::schedule;
    if (a.until_at) out.until_at = to_millis(*a.until_at);
    return out;
}

const char* activity_name(routing::activity_type type) {
    switch (type) {
        case routing::activity_type::chat_requested: return "chat_requested";
        case routing::activity_type::agent_engaged: return "agent_engaged";
        case routing::activity_type::chat_missed: return "chat_missed";
        case routing::activity_type::chat_ended: return "chat_ended";
    }
    return "unknown";
}

std::string end_reason_name(routing::end_reason reason) { return std::string(proto::to_string(to_proto(reason))); }

proto::chat_message chat_message_from(const storage::message_record& m) {
    proto::chat_message out;
    out.conversation_id = m.conversation_id;
    out.seq = m.seq;
    out.from = m.sender == storage::sender_kind::agent ? proto::message_author::agent : proto::message_author::visitor;
    out.agent_id = m.agent_id;
    out.at = m.at;
    if (m.kind == storage::message_kind::calendar) {
        out.kind = proto::message_kind::calendar;
        auto card = nlohmann::json::parse(m.body, nullptr, false);
        if (card.is_object())
            out.calendar = {string_field(card, "agent_id"), string_field(card, "agent_name"), string_field(card, "booking_url")};
    } else {
        out.text = m.body;
    }
    return out;
}

}  // namespace parley::server
