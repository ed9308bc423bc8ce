#pragma once
// Validation of admin HTTP API request bodies (protocol.md section 6). Each
// parser takes the raw body and returns a plain struct (std types only, so
// the server maps it to its own model) or a bad_request error naming the
// field, to be sent as HTTP 400 with encode_admin_error(). Unknown fields
// are ignored; JSON null in an optional field means absent. PUT bodies
// describe the whole object: an absent optional field means "none", not
// "keep the old value".
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "parley/proto/common.h"

namespace parley::proto::admin {

enum class weekday { mon, tue, wed, thu, fri, sat, sun };

// One weekly availability block. Minutes since local midnight in the
// schedule's time zone: 0 <= start_minute < end_minute <= 1440 ("24:00").
struct schedule_block {
    weekday day = weekday::mon;
    int start_minute = 0;
    int end_minute = 0;
    bool operator==(const schedule_block&) const = default;
};

struct agent_schedule {
    // IANA zone name as sent ("Europe/Paris"); only its spelling is checked
    // here, the server must check that the zone exists. nullopt means UTC.
    std::optional<std::string> tz;
    std::vector<schedule_block> blocks;  // no two overlap on the same day; order as sent
};

// PUT /v1/tenants/{t}/agents/{id}
struct agent_body {
    std::string name;                    // 1..200 characters
    std::optional<std::string> email;    // <= 254 characters, local@domain
    int max_chats = 10;                  // 1..10
    std::vector<std::string> teams;      // team names (route-name syntax), duplicates removed, <= 50
    std::optional<agent_schedule> schedule;
    std::optional<std::string> calendar_url;  // http(s) URL, <= 2048 characters
    std::optional<std::string> avatar_url;    // http(s) URL, <= 2048 characters
};

enum class route_type { round_robin, team, agent, account, rules };

// Visitor attributes a rule can test. email_domain is the part of the
// visitor's email after the last '@'.
enum class rule_field { name, job_title, email, email_domain, phone, crm_status, company };

// Comparisons are meant to be case-insensitive; a visitor field that is null
// never matches, not even not_equals.
enum class rule_operator { equals, not_equals, contains, starts_with, ends_with };

struct rule_condition {
    rule_field field = rule_field::company;
    rule_operator op = rule_operator::equals;
    std::string value;  // 1..256 characters
};

struct route_rule {
    int priority = 0;  // 0..1000000; lower is evaluated first, ties in array order
    rule_condition when;
    std::vector<std::string> agents;  // 1..100 agent ids, offered in this order
};

// PUT /v1/tenants/{t}/routes/{name}. Fields of other route types are
// refused (a `team` on an agent route is a mistake, not something to ignore).
struct route_body {
    route_type type = route_type::round_robin;
    std::optional<std::string> team;      // required for and only for type team
    std::optional<std::string> agent_id;  // required for and only for type agent
    std::vector<route_rule> rules;        // required (1..100) for and only for type rules
    int offer_timeout_s = 45;             // 1..3600
    int max_attempts = 2;                 // 1..100
    int queue_wait_s = 0;                 // 0..86400; 0 = no queue
    std::optional<std::string> fallback_route;    // route name; cycles are the server's to check
    std::optional<std::string> fallback_message;  // 1..limits::max_text_chars characters
    bool fallback_calendar = false;
    // Whether offer_timeout_s and max_attempts were in the body (not absent or
    // null). The server applies its own configured defaults where they were not.
    bool offer_timeout_given = false;
    bool max_attempts_given = false;
};

// PUT /v1/tenants/{t}/accounts/{domain}
struct account_body {
    std::string agent_id;  // 1..128 characters
};

// POST /v1/tenants/{t}/visitors/{id}/activities
struct activity_body {
    std::string type;  // 1..64 of [a-z0-9_]; not one of the types the server records itself
    std::int64_t at = 0;  // ms since the Unix epoch, >= 0
    // `details` re-serialized compactly (an object, <= 16 KiB); empty when
    // absent or null. Store it as is; encode_get_activity_ok embeds it.
    std::string details_json;
};

parse_result<agent_body> parse_agent_body(std::string_view body, const limits& limits = {});
parse_result<route_body> parse_route_body(std::string_view body, const limits& limits = {});
parse_result<account_body> parse_account_body(std::string_view body, const limits& limits = {});
// PUT /v1/tenants/{t}/visitors/{id}: the profile fields of visitor_profile.
parse_result<visitor_profile> parse_visitor_profile_body(std::string_view body, const limits& limits = {});
parse_result<activity_body> parse_activity_body(std::string_view body, const limits& limits = {});

// One segment of an admin path, percent-decoded (RFC 3986 2.1); nullopt when a
// '%' is not followed by two hex digits. The result may hold any byte: callers
// check it for UTF-8 and for what an id allows.
std::optional<std::string> percent_decode(std::string_view segment);

// The HTTP 400/401/403/404 body: {"code":"bad_request","message":"..."}.
std::string encode_admin_error(const protocol_error& error);
std::string encode_admin_error(error_code code, std::string_view message);

std::string_view to_string(weekday day);
std::string_view to_string(route_type type);
std::string_view to_string(rule_field field);
std::string_view to_string(rule_operator op);

}  // namespace parley::proto::admin
