// Admin API body validation (protocol.md section 6).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "parley/proto/admin.h"

using namespace parley::proto;
using namespace parley::proto::admin;
using nlohmann::json;

namespace {

template <typename T>
void require_bad_request(const parse_result<T>& result, const std::string& message_part) {
    REQUIRE_FALSE(result.ok());
    CHECK(result.error().code == error_code::bad_request);
    CHECK_THAT(result.error().message, Catch::Contains(message_part));
}

struct invalid_body {
    json body;
    std::string message_part;
};

const json full_agent{{"name", "Bo"},
                      {"email", "bo@acme.io"},
                      {"max_chats", 4},
                      {"teams", {"sales", "support", "sales"}},
                      {"schedule",
                       {{"tz", "Europe/Paris"},
                        {"blocks",
                         {{{"day", "mon"}, {"start", "08:00"}, {"end", "12:00"}},
                          {{"day", "mon"}, {"start", "13:00"}, {"end", "24:00"}},
                          {{"day", "sun"}, {"start", "00:00"}, {"end", "00:30"}}}}}},
                      {"calendar_url", "https://cal.example/bo"},
                      {"avatar_url", "http://img.example/bo.png"}};

json with(json body, const std::string& field, const json& value) {
    body[field] = value;
    return body;
}

json without(json body, const std::string& field) {
    body.erase(field);
    return body;
}

json agent_with_blocks(const json& blocks) {
    return json{{"name", "Bo"}, {"schedule", {{"blocks", blocks}}}};
}

}  // namespace

TEST_CASE("agent body: values and defaults", "[proto][admin]") {
    auto full = parse_agent_body(full_agent.dump());
    REQUIRE(full.ok());
    const auto& agent = full.value();
    CHECK(agent.name == "Bo");
    CHECK(agent.email == "bo@acme.io");
    CHECK(agent.max_chats == 4);
    CHECK(agent.teams == std::vector<std::string>{"sales", "support"});
    REQUIRE(agent.schedule);
    CHECK(agent.schedule->tz == "Europe/Paris");
    REQUIRE(agent.schedule->blocks.size() == 3);
    CHECK(agent.schedule->blocks[0] == schedule_block{weekday::mon, 8 * 60, 12 * 60});
    CHECK(agent.schedule->blocks[1] == schedule_block{weekday::mon, 13 * 60, 24 * 60});
    CHECK(agent.schedule->blocks[2] == schedule_block{weekday::sun, 0, 30});
    CHECK(agent.calendar_url == "https://cal.example/bo");
    CHECK(agent.avatar_url == "http://img.example/bo.png");

    auto minimal = parse_agent_body(R"({"name":"Al","unknown":{"x":1}})");
    REQUIRE(minimal.ok());
    CHECK(minimal.value().max_chats == 10);
    CHECK(minimal.value().teams.empty());
    CHECK_FALSE(minimal.value().schedule);
    CHECK_FALSE(minimal.value().email);
}

TEST_CASE("agent body: every invalid field is named", "[proto][admin]") {
    const std::vector<invalid_body> cases{
        {without(full_agent, "name"), "name is required"},
        {with(full_agent, "name", ""), "name must not be empty"},
        {with(full_agent, "name", std::string(201, 'n')), "name must be at most 200 characters"},
        {with(full_agent, "email", "bo"), "email must be an email address"},
        {with(full_agent, "max_chats", 0), "max_chats must be an integer 1..10"},
        {with(full_agent, "max_chats", 11), "max_chats must be an integer 1..10"},
        {with(full_agent, "max_chats", "5"), "max_chats must be an integer 1..10"},
        {with(full_agent, "teams", "sales"), "teams must be an array"},
        {with(full_agent, "teams", {"ok", 3}), "teams[1] must be a string"},
        {with(full_agent, "teams", {"bad team"}), "teams[0] must contain only"},
        {with(full_agent, "schedule", "always"), "schedule must be an object"},
        {with(full_agent, "schedule", json::object()), "schedule.blocks is required"},
        {with(full_agent, "schedule", {{"tz", "Paris time"}, {"blocks", json::array()}}),
         "schedule.tz must be an IANA time zone name"},
        {agent_with_blocks({{{"day", "monday"}, {"start", "08:00"}, {"end", "09:00"}}}),
         "schedule.blocks[0].day must be one of: mon, tue, wed, thu, fri, sat, sun"},
        {agent_with_blocks({{{"day", "mon"}, {"start", "8:00"}, {"end", "09:00"}}}),
         "schedule.blocks[0].start must be a time \"HH:MM\""},
        {agent_with_blocks({{{"day", "mon"}, {"start", "24:00"}, {"end", "24:00"}}}),
         "schedule.blocks[0].start must be a time"},
        {agent_with_blocks({{{"day", "mon"}, {"start", "08:00"}, {"end", "09:60"}}}),
         "schedule.blocks[0].end must be a time"},
        {agent_with_blocks({{{"day", "mon"}, {"start", "10:00"}, {"end", "10:00"}}}),
         "schedule.blocks[0].end must be after start"},
        {agent_with_blocks({{{"day", "tue"}, {"start", "10:00"}}}), "schedule.blocks[0].end is required"},
        {agent_with_blocks({{{"day", "tue"}, {"start", "08:00"}, {"end", "12:00"}},
                            {{"day", "tue"}, {"start", "11:00"}, {"end", "13:00"}}}),
         "schedule.blocks[1] overlaps schedule.blocks[0]"},
        {agent_with_blocks({"mon 8-12"}), "schedule.blocks[0] must be an object"},
        {with(full_agent, "calendar_url", "ftp://x"), "calendar_url must be an http:// or https:// URL"},
        {with(full_agent, "avatar_url", 5), "avatar_url must be a string"},
    };
    for (const auto& c : cases) {
        INFO(c.body.dump());
        require_bad_request(parse_agent_body(c.body.dump()), c.message_part);
    }
    SECTION("adjacent blocks and the same hours on different days are fine") {
        CHECK(parse_agent_body(agent_with_blocks({{{"day", "tue"}, {"start", "08:00"}, {"end", "12:00"}},
                                                  {{"day", "tue"}, {"start", "12:00"}, {"end", "13:00"}},
                                                  {{"day", "wed"}, {"start", "08:00"}, {"end", "12:00"}}})
                                   .dump())
                  .ok());
    }
}

TEST_CASE("route body: each type and its fields", "[proto][admin]") {
    SECTION("round_robin takes every default") {
        auto r = parse_route_body(R"({"type":"round_robin"})");
        REQUIRE(r.ok());
        CHECK(r.value().type == route_type::round_robin);
        CHECK(r.value().offer_timeout_s == 45);
        CHECK(r.value().max_attempts == 2);
        CHECK(r.value().queue_wait_s == 0);
        CHECK_FALSE(r.value().fallback_route);
        CHECK_FALSE(r.value().fallback_message);
        CHECK_FALSE(r.value().fallback_calendar);
    }
    SECTION("team, agent, account") {
        auto team = parse_route_body(R"({"type":"team","team":"support","queue_wait_s":120})");
        REQUIRE(team.ok());
        CHECK(team.value().team == "support");
        CHECK(team.value().queue_wait_s == 120);
        auto agent = parse_route_body(R"({"type":"agent","agent_id":"a_1","fallback_calendar":true,
            "fallback_message":"Book a call","fallback_route":"sales","offer_timeout_s":3600,"max_attempts":100})");
        REQUIRE(agent.ok());
        CHECK(agent.value().agent_id == "a_1");
        CHECK(agent.value().fallback_calendar);
        CHECK(agent.value().fallback_message == "Book a call");
        CHECK(agent.value().fallback_route == "sales");
        CHECK(agent.value().offer_timeout_s == 3600);
        CHECK(agent.value().max_attempts == 100);
        CHECK(parse_route_body(R"({"type":"account"})").ok());
    }
    SECTION("rules") {
        auto r = parse_route_body(R"({"type":"rules","rules":[
            {"priority":1,"when":{"field":"email_domain","op":"equals","value":"bigco.com"},"agents":["a_1","a_2"]},
            {"priority":2,"when":{"field":"crm_status","op":"not_equals","value":"Customer"},"agents":["a_3"]}]})");
        REQUIRE(r.ok());
        REQUIRE(r.value().rules.size() == 2);
        const auto& first = r.value().rules[0];
        CHECK(first.priority == 1);
        CHECK(first.when.field == rule_field::email_domain);
        CHECK(first.when.op == rule_operator::equals);
        CHECK(first.when.value == "bigco.com");
        CHECK(first.agents == std::vector<std::string>{"a_1", "a_2"});
        CHECK(r.value().rules[1].when.op == rule_operator::not_equals);
    }
}

TEST_CASE("route body: every invalid field is named", "[proto][admin]") {
    const json rule{{"priority", 1}, {"when", {{"field", "company"}, {"op", "contains"}, {"value", "Big"}}},
                    {"agents", {"a_1"}}};
    const auto rules_route = [&](const json& one_rule) { return json{{"type", "rules"}, {"rules", {one_rule}}}; };
    const std::vector<invalid_body> cases{
        {json::object(), "type is required"},
        {{{"type", "random"}}, "type must be one of: round_robin, team, agent, account, rules"},
        {{{"type", "team"}}, "team is required"},
        {{{"type", "team"}, {"team", "a b"}}, "team must contain only"},
        {{{"type", "agent"}}, "agent_id is required"},
        {{{"type", "agent"}, {"agent_id", "a"}, {"team", "x"}}, "team is only allowed when type is team"},
        {{{"type", "round_robin"}, {"agent_id", "a"}}, "agent_id is only allowed when type is agent"},
        {{{"type", "team"}, {"team", "x"}, {"rules", json::array()}}, "rules is only allowed when type is rules"},
        {{{"type", "rules"}}, "rules is required"},
        {{{"type", "rules"}, {"rules", json::array()}}, "rules must have 1..100 items"},
        {rules_route(without(rule, "priority")), "rules[0].priority is required"},
        {rules_route(with(rule, "priority", -1)), "rules[0].priority must be an integer 0..1000000"},
        {rules_route(without(rule, "when")), "rules[0].when is required"},
        {rules_route(with(rule, "when", {{"field", "shoe_size"}, {"op", "equals"}, {"value", "9"}})),
         "rules[0].when.field must be one of:"},
        {rules_route(with(rule, "when", {{"field", "company"}, {"op", "like"}, {"value", "9"}})),
         "rules[0].when.op must be one of: equals, not_equals, contains, starts_with, ends_with"},
        {rules_route(with(rule, "when", {{"field", "company"}, {"op", "equals"}})), "rules[0].when.value is required"},
        {rules_route(with(rule, "agents", json::array())), "rules[0].agents must have 1..100 items"},
        {rules_route(with(rule, "agents", {"a_1", 2})), "rules[0].agents[1] must be a string"},
        {rules_route("first"), "rules[0] must be an object"},
        {{{"type", "account"}, {"offer_timeout_s", 0}}, "offer_timeout_s must be an integer 1..3600"},
        {{{"type", "account"}, {"offer_timeout_s", 3601}}, "offer_timeout_s must be an integer 1..3600"},
        {{{"type", "account"}, {"max_attempts", 0}}, "max_attempts must be an integer 1..100"},
        {{{"type", "account"}, {"queue_wait_s", -1}}, "queue_wait_s must be an integer 0..86400"},
        {{{"type", "account"}, {"fallback_route", "no/slash"}}, "fallback_route must contain only"},
        {{{"type", "account"}, {"fallback_message", std::string(4001, 'm')}},
         "fallback_message must be at most 4000 characters"},
        {{{"type", "account"}, {"fallback_calendar", "yes"}}, "fallback_calendar must be true or false"},
    };
    for (const auto& c : cases) {
        INFO(c.body.dump());
        require_bad_request(parse_route_body(c.body.dump()), c.message_part);
    }
}

TEST_CASE("account, visitor profile and activity bodies", "[proto][admin]") {
    SECTION("account") {
        auto r = parse_account_body(R"({"agent_id":"a_1"})");
        REQUIRE(r.ok());
        CHECK(r.value().agent_id == "a_1");
        require_bad_request(parse_account_body("{}"), "agent_id is required");
        require_bad_request(parse_account_body(R"({"agent_id":7})"), "agent_id must be a string");
    }
    SECTION("visitor profile") {
        auto r = parse_visitor_profile_body(
            R"({"name":"Ada","email":"ada@x.io","phone":null,"crm_status":"","company":"X","job_title":"CTO"})");
        REQUIRE(r.ok());
        CHECK(r.value() == visitor_profile{"Ada", "CTO", "ada@x.io", std::nullopt, std::nullopt, "X"});
        require_bad_request(parse_visitor_profile_body(R"({"email":"nope"})"), "email must be an email address");
        require_bad_request(parse_visitor_profile_body(R"({"name":["Ada"]})"), "name must be a string");
        require_bad_request(parse_visitor_profile_body(json{{"crm_status", std::string(65, 's')}}.dump()),
                            "crm_status must be at most 64 characters");
    }
    SECTION("activity") {
        auto r = parse_activity_body(R"({"type":"visited_webpage","at":1700000000000,"details":{"url":"https://x.io"}})");
        REQUIRE(r.ok());
        CHECK(r.value().type == "visited_webpage");
        CHECK(r.value().at == 1700000000000);
        CHECK(json::parse(r.value().details_json) == json{{"url", "https://x.io"}});
        auto no_details = parse_activity_body(R"({"type":"opened_email","at":0,"details":null})");
        REQUIRE(no_details.ok());
        CHECK(no_details.value().details_json.empty());

        require_bad_request(parse_activity_body(R"({"at":1})"), "type is required");
        require_bad_request(parse_activity_body(R"({"type":"Visited Page","at":1})"),
                            "type must contain only lowercase letters, digits and '_'");
        require_bad_request(parse_activity_body(R"({"type":"chat_ended","at":1})"),
                            "type \"chat_ended\" is recorded by the server itself");
        require_bad_request(parse_activity_body(R"({"type":"x"})"), "at is required");
        require_bad_request(parse_activity_body(R"({"type":"x","at":-5})"), "at must be an integer >= 0");
        require_bad_request(parse_activity_body(R"({"type":"x","at":1,"details":"text"})"),
                            "details must be an object");
        require_bad_request(parse_activity_body(json{{"type", "x"}, {"at", 1}, {"details", {{"blob", std::string(17000, 'b')}}}}.dump()),
                            "details must be at most 16384 bytes");
    }
    SECTION("bodies that are not JSON objects") {
        require_bad_request(parse_account_body("[]"), "body must be a JSON object");
        require_bad_request(parse_route_body("{"), "body is not valid JSON");
        require_bad_request(parse_agent_body("{\"name\":\"\xff\"}"), "body is not valid UTF-8");
        require_bad_request(parse_activity_body(R"({"type":"x","at":1,"details":)" + std::string(40, '[') +
                                                std::string(40, ']') + "}"),
                            "body nests deeper than 32 levels");
    }
}

TEST_CASE("admin error bodies", "[proto][admin]") {
    CHECK(encode_admin_error(error_code::bad_request, "name is required") ==
          R"({"code":"bad_request","message":"name is required"})");
    CHECK(json::parse(encode_admin_error(protocol_error{error_code::not_found, "no such agent", "ignored"})) ==
          json{{"code", "not_found"}, {"message", "no such agent"}});
    CHECK(to_string(weekday::sun) == "sun");
    CHECK(to_string(route_type::round_robin) == "round_robin");
    CHECK(to_string(rule_field::email_domain) == "email_domain");
    CHECK(to_string(rule_operator::ends_with) == "ends_with");
}

TEST_CASE("admin path segments: percent-decoding", "[proto][admin]") {
    CHECK(percent_decode("plain-id_1") == std::optional<std::string>("plain-id_1"));
    CHECK(percent_decode("a%2Fb") == std::optional<std::string>("a/b"));
    CHECK(percent_decode("%c3%a9t%C3%A9") == std::optional<std::string>("\xc3\xa9t\xc3\xa9"));
    CHECK(percent_decode("%00") == std::optional<std::string>(std::string(1, '\0')));
    CHECK(percent_decode("") == std::optional<std::string>(""));
    for (const char* bad : {"%", "%4", "a%", "%zz", "%4g", "%%41", "x%-1"}) {
        INFO(bad);
        CHECK_FALSE(percent_decode(bad));
    }
}
