#pragma once
// Plain configuration structs for one tenant's routing. Defaults follow
// protocol.md section 6. The router validates what it must to stay safe
// (see tenant_router.h) but parsing and user-facing validation belong to
// parley::config and the admin API.
#include <chrono>
#include <string>
#include <unordered_map>
#include <vector>

namespace parley::routing {

using duration = std::chrono::milliseconds;
using time_point = std::chrono::sys_time<duration>;

// One block of an agent's weekly schedule, in the agent's local time.
// `day` uses the C encoding (0 = Sunday … 6 = Saturday, like
// date::weekday::c_encoding()); minutes count from local midnight, and
// end_minute may be 1440 (a block that runs to midnight).
struct schedule_block {
    unsigned day = 0;
    int start_minute = 0;
    int end_minute = 0;
};

// An empty block list means "no schedule": available whenever connected,
// unless the agent toggles availability off.
struct weekly_schedule {
    std::string tz;  // IANA name; empty means UTC
    std::vector<schedule_block> blocks;
};

struct agent_config {
    std::string id;
    std::string name;
    std::string avatar_url;
    std::string calendar_url;
    int max_chats = 10;  // 1..10: active chats plus pending offers
    std::vector<std::string> teams;
    weekly_schedule schedule;
};

enum class route_type { round_robin, team, agent, account, rules };

// Visitor fields a rule can test. `email_domain` is the part of `email`
// after the '@'.
enum class visitor_field { name, job_title, email, email_domain, phone, crm_status, company };

// All comparisons ignore ASCII case. An absent field (the empty string in
// visitor_profile) matches no operator, not even not_equals.
enum class rule_op { equals, not_equals, contains, starts_with, ends_with };

struct rule_condition {
    visitor_field field = visitor_field::email_domain;
    rule_op op = rule_op::equals;
    std::string value;
};

// Rules are evaluated by ascending `priority` (1 before 2); ties keep
// configuration order.
struct routing_rule {
    int priority = 0;
    rule_condition when;
    std::vector<std::string> agents;
};

struct route_config {
    std::string name;
    route_type type = route_type::round_robin;
    std::string team;      // type team
    std::string agent_id;  // type agent
    std::vector<routing_rule> rules;  // type rules (and account, after the account lookup)
    duration offer_timeout = std::chrono::seconds{45};
    int max_attempts = 2;  // agents offered per routing round
    duration queue_wait = duration::zero();  // > 0: queue instead of falling back
    std::string fallback_route;  // tried when no agent is eligible at all
    std::string fallback_message;
    bool fallback_calendar = false;
};

struct tenant_settings {
    duration grace_period = std::chrono::seconds{60};
    duration idle_timeout = std::chrono::minutes{10};
    int auto_away_after_missed = 0;  // 0 = off
    // Per route: a conversation that would queue behind this many falls back instead.
    std::size_t max_queue_length = 1000;
    // A routing or queued conversation whose visitor's last session closed keeps its place
    // (and its pending offer) this long; then it ends as if the visitor had left. Zero ends
    // it as soon as the last session closes.
    duration visitor_grace = std::chrono::seconds{30};
};

struct tenant_config {
    tenant_settings settings;
    std::vector<agent_config> agents;
    std::vector<route_config> routes;
    // Account routing: lower-case email domain or company name -> owner agent id.
    std::unordered_map<std::string, std::string> accounts;
};

// What the widget told us about the visitor; an empty string means unknown.
struct visitor_profile {
    std::string name;
    std::string job_title;
    std::string email;
    std::string phone;
    std::string crm_status;
    std::string company;
};

}  // namespace parley::routing
