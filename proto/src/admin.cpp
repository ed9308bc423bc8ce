#include "parley/proto/admin.h"

#include <algorithm>
#include <array>
#include <limits>

#include <nlohmann/json.hpp>

#include "json_input.h"
#include "parley/proto/decode.h"

namespace parley::proto::admin {

using detail::field_reader;
using detail::string_rule;

namespace {

// Wire names, in enum declaration order (field_reader::required_choice
// returns the index, which converts directly to the enum).
constexpr std::array<std::string_view, 7> weekday_names{"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
constexpr std::array<std::string_view, 5> route_type_names{"round_robin", "team", "agent", "account", "rules"};
constexpr std::array<std::string_view, 7> rule_field_names{"name",  "job_title",  "email",  "email_domain",
                                                           "phone", "crm_status", "company"};
constexpr std::array<std::string_view, 5> rule_operator_names{"equals", "not_equals", "contains", "starts_with",
                                                              "ends_with"};

constexpr std::size_t max_teams = 50;
constexpr std::size_t max_schedule_blocks = 100;
constexpr std::size_t max_rules = 100;
constexpr std::size_t max_rule_agents = 100;
constexpr std::size_t max_details_bytes = 16 * 1024;
constexpr int minutes_per_day = 24 * 60;

// Bodies are bounded by the HTTP layer (limits_config::http_body_max_bytes),
// so only nesting depth is checked here.
parse_result<nlohmann::json> parse_body(std::string_view body, const limits& limits) {
    return detail::parse_json_object(body, std::numeric_limits<std::size_t>::max(), limits.max_nesting_depth, "body");
}

template <typename T>
parse_result<T> finish(T value, std::optional<protocol_error>& error) {
    if (error) return *error;
    return value;
}

bool is_http_url(std::string_view text) {
    return (text.starts_with("https://") && text.size() > 8) || (text.starts_with("http://") && text.size() > 7);
}

bool is_time_zone_name(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' || c == '_' ||
               c == '+' || c == '-';
    });
}

bool is_activity_type(std::string_view text) {
    return std::all_of(text.begin(), text.end(),
                       [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; });
}

constexpr string_rule url_rule{2048, 1, error_code::bad_request, &is_http_url, "be an http:// or https:// URL"};
constexpr string_rule email_rule{254, 1, error_code::bad_request, &detail::looks_like_email,
                                 "be an email address (local@domain)"};

// "HH:MM" to minutes; "24:00" only where allow_end_of_day.
std::optional<int> parse_clock_time(std::string_view text, bool allow_end_of_day) {
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (text.size() != 5 || text[2] != ':' || !digit(text[0]) || !digit(text[1]) || !digit(text[3]) ||
        !digit(text[4]))
        return std::nullopt;
    const int hours = (text[0] - '0') * 10 + (text[1] - '0');
    const int minutes = (text[3] - '0') * 10 + (text[4] - '0');
    if (minutes > 59) return std::nullopt;
    if (hours == 24 && minutes == 0 && allow_end_of_day) return minutes_per_day;
    if (hours > 23) return std::nullopt;
    return hours * 60 + minutes;
}

std::string indexed(const std::string& path, std::size_t index) {
    return path + "[" + std::to_string(index) + "]";
}

// Reads an array of strings under `name`, each checked by `rule`.
std::vector<std::string> read_string_array(field_reader& reader, const nlohmann::json& array, const std::string& path,
                                           const string_rule& rule, std::size_t min_items, std::size_t max_items) {
    std::vector<std::string> items;
    if (array.size() < min_items || array.size() > max_items) {
        reader.fail(error_code::bad_request, path + " must have " + std::to_string(min_items) + ".." +
                                                 std::to_string(max_items) + " items");
        return items;
    }
    for (std::size_t i = 0; i < array.size() && !reader.failed(); ++i)
        if (auto item = reader.check_string(array[i], indexed(path, i), rule)) items.push_back(std::move(*item));
    return items;
}

std::optional<agent_schedule> read_schedule(field_reader& reader) {
    const auto* schedule_object = reader.optional_object("schedule");
    if (!schedule_object) return std::nullopt;
    auto schedule_reader = reader.nested(*schedule_object, "schedule");
    agent_schedule schedule;
    schedule.tz = schedule_reader.optional_string(
        "tz", string_rule{64, 1, error_code::bad_request, &is_time_zone_name, "be an IANA time zone name"});
    const auto* blocks = schedule_reader.required_array("blocks");
    if (!blocks) return schedule;
    if (blocks->size() > max_schedule_blocks) {
        reader.fail(error_code::bad_request,
                    "schedule.blocks must have at most " + std::to_string(max_schedule_blocks) + " items");
        return schedule;
    }
    for (std::size_t i = 0; i < blocks->size() && !reader.failed(); ++i) {
        const std::string path = indexed("schedule.blocks", i);
        const auto& block_value = (*blocks)[i];
        if (!block_value.is_object()) {
            reader.fail(error_code::bad_request, path + " must be an object");
            break;
        }
        auto block_reader = reader.nested(block_value, path);
        schedule_block block;
        block.day = static_cast<weekday>(
            block_reader.required_choice("day", weekday_names));
        const auto clock = [&](std::string_view name, bool allow_end_of_day) -> int {
            const std::string text = block_reader.required_string(name, string_rule{5});
            if (reader.failed()) return 0;
            const auto minutes = parse_clock_time(text, allow_end_of_day);
            if (!minutes)
                reader.fail(error_code::bad_request, block_reader.path_of(name) + " must be a time \"HH:MM\" (00:00.." +
                                                         (allow_end_of_day ? "24:00" : "23:59") + ")");
            return minutes.value_or(0);
        };
        block.start_minute = clock("start", false);
        block.end_minute = clock("end", true);
        if (reader.failed()) break;
        if (block.end_minute <= block.start_minute) {
            reader.fail(error_code::bad_request, path + ".end must be after start");
            break;
        }
        for (std::size_t earlier = 0; earlier < schedule.blocks.size(); ++earlier) {
            const auto& other = schedule.blocks[earlier];
            if (other.day == block.day && other.start_minute < block.end_minute &&
                block.start_minute < other.end_minute) {
                reader.fail(error_code::bad_request, path + " overlaps " + indexed("schedule.blocks", earlier));
                break;
            }
        }
        schedule.blocks.push_back(block);
    }
    return schedule;
}

std::vector<route_rule> read_rules(field_reader& reader, const nlohmann::json& array) {
    std::vector<route_rule> rules;
    if (array.empty() || array.size() > max_rules) {
        reader.fail(error_code::bad_request, "rules must have 1.." + std::to_string(max_rules) + " items");
        return rules;
    }
    for (std::size_t i = 0; i < array.size() && !reader.failed(); ++i) {
        const std::string path = indexed("rules", i);
        if (!array[i].is_object()) {
            reader.fail(error_code::bad_request, path + " must be an object");
            break;
        }
        auto rule_reader = reader.nested(array[i], path);
        route_rule rule;
        rule.priority = static_cast<int>(rule_reader.required_integer("priority", 0, 1'000'000));
        if (const auto* when = rule_reader.required_object("when")) {
            auto when_reader = reader.nested(*when, path + ".when");
            rule.when.field = static_cast<rule_field>(when_reader.required_choice("field", rule_field_names));
            rule.when.op = static_cast<rule_operator>(
                when_reader.required_choice("op", rule_operator_names));
            rule.when.value = when_reader.required_string("value", string_rule{256});
        }
        if (const auto* agents = rule_reader.required_array("agents"))
            rule.agents =
                read_string_array(reader, *agents, path + ".agents", detail::object_id_rule, 1, max_rule_agents);
        rules.push_back(std::move(rule));
    }
    return rules;
}

}  // namespace

parse_result<agent_body> parse_agent_body(std::string_view body, const limits& limits) {
    auto parsed = parse_body(body, limits);
    if (!parsed) return parsed.error();
    std::optional<protocol_error> error;
    field_reader reader(parsed.value(), "", error);

    agent_body agent;
    agent.name = reader.required_string("name", string_rule{200});
    agent.email = reader.optional_string("email", email_rule);
    agent.max_chats = static_cast<int>(reader.optional_integer("max_chats", 1, 10, 10));
    if (const auto* teams = reader.optional_array("teams")) {
        for (auto& team : read_string_array(reader, *teams, "teams", detail::route_name_rule, 0, max_teams))
            if (std::find(agent.teams.begin(), agent.teams.end(), team) == agent.teams.end())
                agent.teams.push_back(std::move(team));
    }
    agent.schedule = read_schedule(reader);
    agent.calendar_url = reader.optional_string("calendar_url", url_rule);
    agent.avatar_url = reader.optional_string("avatar_url", url_rule);
    return finish(std::move(agent), error);
}

parse_result<route_body> parse_route_body(std::string_view body, const limits& limits) {
    auto parsed = parse_body(body, limits);
    if (!parsed) return parsed.error();
    std::optional<protocol_error> error;
    field_reader reader(parsed.value(), "", error);

    route_body route;
    route.type = static_cast<route_type>(
        reader.required_choice("type", route_type_names));
    if (reader.failed()) return *error;

    const auto only_for = [&](std::string_view field, route_type owner) {
        if (route.type != owner && reader.find(field))
            reader.fail(error_code::bad_request,
                        std::string(field) + " is only allowed when type is " + std::string(to_string(owner)));
    };
    only_for("team", route_type::team);
    only_for("agent_id", route_type::agent);
    only_for("rules", route_type::rules);

    if (route.type == route_type::team) route.team = reader.required_string("team", detail::route_name_rule);
    if (route.type == route_type::agent) route.agent_id = reader.required_string("agent_id", detail::object_id_rule);
    if (route.type == route_type::rules)
        if (const auto* rules = reader.required_array("rules")) route.rules = read_rules(reader, *rules);

    route.offer_timeout_given = reader.find("offer_timeout_s") != nullptr;
    route.offer_timeout_s = static_cast<int>(reader.optional_integer("offer_timeout_s", 1, 3600, 45));
    route.max_attempts_given = reader.find("max_attempts") != nullptr;
    route.max_attempts = static_cast<int>(reader.optional_integer("max_attempts", 1, 100, 2));
    route.queue_wait_s = static_cast<int>(reader.optional_integer("queue_wait_s", 0, 86'400, 0));
    route.fallback_route = reader.optional_string("fallback_route", detail::route_name_rule);
    route.fallback_message = reader.optional_string("fallback_message", string_rule{limits.max_text_chars});
    route.fallback_calendar = reader.optional_bool("fallback_calendar").value_or(false);
    return finish(std::move(route), error);
}

parse_result<account_body> parse_account_body(std::string_view body, const limits& limits) {
    auto parsed = parse_body(body, limits);
    if (!parsed) return parsed.error();
    std::optional<protocol_error> error;
    field_reader reader(parsed.value(), "", error);
    account_body account{reader.required_string("agent_id", detail::object_id_rule)};
    return finish(std::move(account), error);
}

parse_result<visitor_profile> parse_visitor_profile_body(std::string_view body, const limits& limits) {
    auto parsed = parse_body(body, limits);
    if (!parsed) return parsed.error();
    std::optional<protocol_error> error;
    field_reader reader(parsed.value(), "", error);
    auto profile = detail::read_visitor_profile(reader);
    return finish(std::move(profile), error);
}

parse_result<activity_body> parse_activity_body(std::string_view body, const limits& limits) {
    // Integrations may add their own types but not forge the ones the server
    // records, which agents rely on (a fake chat_ended would mislead them).
    static constexpr std::array<std::string_view, 6> server_recorded_types{
        "chat_requested", "agent_engaged", "chat_missed", "chat_ended", "calendar_shared", "meeting_booked"};

    auto parsed = parse_body(body, limits);
    if (!parsed) return parsed.error();
    std::optional<protocol_error> error;
    field_reader reader(parsed.value(), "", error);

    activity_body activity;
    activity.type = reader.required_string(
        "type", string_rule{64, 1, error_code::bad_request, &is_activity_type,
                            "contain only lowercase letters, digits and '_'"});
    if (!reader.failed() && std::find(server_recorded_types.begin(), server_recorded_types.end(), activity.type) !=
                                server_recorded_types.end())
        reader.fail(error_code::bad_request, "type \"" + activity.type + "\" is recorded by the server itself");
    activity.at = reader.required_integer("at", 0, detail::int64_max);
    if (const auto* details = reader.optional_object("details")) {
        activity.details_json = details->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        if (activity.details_json.size() > max_details_bytes)
            reader.fail(error_code::bad_request,
                        "details must be at most " + std::to_string(max_details_bytes) + " bytes");
    }
    return finish(std::move(activity), error);
}

std::string encode_admin_error(error_code code, std::string_view message) {
    nlohmann::ordered_json body = nlohmann::ordered_json::object();
    body["code"] = to_string(code);
    body["message"] = message;
    return body.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::string encode_admin_error(const protocol_error& error) { return encode_admin_error(error.code, error.message); }

std::string_view to_string(weekday day) { return weekday_names[static_cast<std::size_t>(day)]; }
std::string_view to_string(route_type type) { return route_type_names[static_cast<std::size_t>(type)]; }
std::string_view to_string(rule_field field) { return rule_field_names[static_cast<std::size_t>(field)]; }
std::string_view to_string(rule_operator op) { return rule_operator_names[static_cast<std::size_t>(op)]; }

std::optional<std::string> percent_decode(std::string_view segment) {
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    out.reserve(segment.size());
    for (std::size_t i = 0; i < segment.size(); ++i) {
        if (segment[i] != '%') {
            out += segment[i];
            continue;
        }
        if (i + 2 >= segment.size()) return std::nullopt;  // '%' needs two digits after it
        const int high = hex(segment[i + 1]), low = hex(segment[i + 2]);
        if (high < 0 || low < 0) return std::nullopt;
        out += static_cast<char>(high * 16 + low);
        i += 2;
    }
    return out;
}

}  // namespace parley::proto::admin
