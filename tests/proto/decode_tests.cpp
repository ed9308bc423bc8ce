// Client frame decoding: a table of every client message type, from which
// the malformed, missing-field, mistyped and out-of-range cases are derived,
// plus the edge cases of the envelope, numbers, UTF-8 and the text limit.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <set>

#include "parley/proto/decode.h"

using namespace parley::proto;
using nlohmann::json;

namespace {

struct bad_value {
    std::string field;  // top-level field, or "profile.email" for one level down
    json value;
    error_code expected_code = error_code::bad_request;
};

struct message_case {
    std::string type;
    role sender;
    json valid;  // without type and id
    std::vector<std::string> required;
    std::vector<bad_value> mistyped;
    std::vector<bad_value> out_of_range;
};

const std::string long_id(129, 'c');
const std::string long_key(65, 'k');
const std::string long_token(4097, 't');

const std::vector<message_case>& message_cases() {
    static const std::vector<message_case> cases{
        {"hello", role::visitor,
         {{"tenant", "acme"},
          {"visitor_token", "jwt"},
          {"resume_token", "rt"},
          {"profile", {{"name", "Ada"}, {"email", "a@x.io"}, {"phone", nullptr}}}},
         {"tenant"},
         {{"tenant", 7}, {"visitor_token", true}, {"resume_token", json::array()}, {"profile", "Ada"},
          {"profile.name", 1}},
         {{"tenant", long_key}, {"tenant", ""}, {"visitor_token", long_token}, {"resume_token", long_token},
          {"profile.name", std::string(201, 'n')}, {"profile.email", "not-an-email"},
          {"profile.phone", std::string(65, '1')}, {"profile.company", std::string(201, 'c')}}},
        {"hello", role::agent, {{"token", "jwt"}}, {"token"}, {{"token", 1}}, {{"token", long_token}}},
        {"request_agent", role::visitor, {{"route", "sales"}, {"client_key", "k-1"}}, {"route"},
         {{"route", json::object()}, {"client_key", 5}},
         {{"route", "sales team"}, {"route", std::string(65, 'r')}, {"client_key", long_key}}},
        {"send", role::visitor, {{"conversation_id", "c_1"}, {"text", "hi"}, {"client_msg_id", "m-1"}},
         {"conversation_id", "text"},
         {{"conversation_id", 1}, {"text", 42}, {"client_msg_id", false}},
         {{"conversation_id", long_id}, {"text", ""}, {"client_msg_id", long_key},
          {"text", std::string(4001, 'x'), error_code::too_large}}},
        {"send", role::agent, {{"conversation_id", "c_1"}, {"text", "hi"}}, {"conversation_id", "text"},
         {{"text", json::array({"hi"})}}, {{"text", std::string(4001, 'x'), error_code::too_large}}},
        {"typing", role::visitor, {{"conversation_id", "c_1"}, {"on", true}}, {"conversation_id", "on"},
         {{"on", "true"}, {"on", 1}}, {{"conversation_id", long_id}}},
        {"typing", role::agent, {{"conversation_id", "c_1"}, {"on", false}}, {"conversation_id", "on"},
         {{"on", "false"}}, {}},
        {"end_chat", role::visitor, {{"conversation_id", "c_1"}}, {"conversation_id"}, {{"conversation_id", 1.5}},
         {{"conversation_id", long_id}}},
        {"end_chat", role::agent, {{"conversation_id", "c_1"}}, {"conversation_id"}, {{"conversation_id", true}},
         {{"conversation_id", ""}}},
        {"meeting_booked", role::visitor,
         {{"conversation_id", "c_1"}, {"agent_id", "a_1"}, {"start_at", 1700000000000}},
         {"conversation_id", "agent_id", "start_at"},
         {{"agent_id", 3}, {"start_at", "1700000000000"}, {"start_at", 1.5}},
         {{"agent_id", long_id}, {"start_at", -1}, {"start_at", json::parse("9223372036854775808")}}},
        {"resume", role::visitor, {{"conversation_id", "c_1"}, {"after_seq", 17}}, {"conversation_id", "after_seq"},
         {{"after_seq", "17"}, {"after_seq", 17.5}}, {{"after_seq", -1}}},
        {"resume", role::agent, {{"conversation_id", "c_1"}, {"after_seq", 0}}, {"conversation_id", "after_seq"},
         {{"conversation_id", json::object()}}, {{"conversation_id", long_id}}},
        {"set_availability", role::agent, {{"available", true}}, {"available"}, {{"available", "yes"}, {"available", 1}},
         {}},
        {"accept", role::agent, {{"offer_id", "o_1"}}, {"offer_id"}, {{"offer_id", 1}}, {{"offer_id", long_id}}},
        {"decline", role::agent, {{"offer_id", "o_1"}}, {"offer_id"}, {{"offer_id", json::array()}},
         {{"offer_id", long_id}}},
        {"share_calendar", role::agent, {{"conversation_id", "c_1"}, {"agent_id", "a_2"}},
         {"conversation_id", "agent_id"}, {{"agent_id", 2}}, {{"agent_id", long_id}}},
        {"set_score", role::agent, {{"conversation_id", "c_1"}, {"score", 3}}, {"conversation_id", "score"},
         {{"score", "3"}, {"score", 2.0}, {"score", true}},
         {{"score", 4}, {"score", -1}, {"score", json::parse("1e300")}, {"score", json::parse("99999999999999999999")}}},
        {"list_conversations", role::agent, {{"filter", "all"}, {"limit", 50}, {"cursor", "abc"}}, {},
         {{"filter", 1}, {"limit", "50"}, {"cursor", 7}},
         {{"filter", "mine"}, {"limit", 0}, {"limit", 101}, {"cursor", std::string(257, 'x')}}},
        {"get_visitor", role::agent, {{"visitor_id", "v_1"}}, {"visitor_id"}, {{"visitor_id", 1}},
         {{"visitor_id", long_id}}},
        {"get_activity", role::agent, {{"visitor_id", "v_1"}, {"limit", 100}, {"cursor", "abc"}}, {"visitor_id"},
         {{"limit", json::array()}, {"cursor", false}}, {{"limit", 1000}, {"visitor_id", ""}}},
        {"get_transcript", role::agent, {{"conversation_id", "c_1"}, {"after_seq", 40}, {"limit", 1000}},
         {"conversation_id"}, {{"conversation_id", 12}, {"after_seq", "40"}, {"limit", 2.5}},
         {{"conversation_id", long_id}, {"after_seq", -1}, {"limit", 0}, {"limit", 1001}}},
        // An addition to protocol v1 (proto/README.md): no fields, so nothing can be missing or mistyped.
        {"list_agents", role::agent, json::object(), {}, {}, {}},
        // An addition to protocol v1 (proto/README.md): a fresh token on the open connection.
        {"reauth", role::agent, {{"token", "a.b.c"}}, {"token"}, {{"token", 1}}, {{"token", std::string(4097, 'x')}}},
    };
    return cases;
}

std::string role_name(role sender) { return sender == role::visitor ? "visitor" : "agent"; }

json frame_of(const message_case& c) {
    json frame = c.valid;
    frame["type"] = c.type;
    frame["id"] = "r1";
    return frame;
}

void set_field(json& frame, const std::string& field, const json& value) {
    const auto dot = field.find('.');
    if (dot == std::string::npos) {
        frame[field] = value;
    } else {
        frame[field.substr(0, dot)][field.substr(dot + 1)] = value;
    }
}

parse_result<client_frame> parse(const std::string& text, role sender = role::visitor) {
    return parse_client_frame(text, sender, limits{});
}

void require_error(const parse_result<client_frame>& result, error_code code, const std::string& message_part,
                   const std::optional<std::string>& re) {
    REQUIRE_FALSE(result.ok());
    CHECK(to_string(result.error().code) == to_string(code));
    CHECK_THAT(result.error().message, Catch::Contains(message_part));
    CHECK(result.error().re == re);
}

std::string repeat(const std::string& piece, std::size_t times) {
    std::string text;
    for (std::size_t i = 0; i < times; ++i) text += piece;
    return text;
}

std::string send_frame(const std::string& text) {
    return json{{"type", "send"}, {"id", "s"}, {"conversation_id", "c_1"}, {"text", text}}.dump();
}

}  // namespace

TEST_CASE("the table covers every client message type on every endpoint that may send it", "[proto][decode]") {
    std::set<std::string> covered;
    for (const auto& c : message_cases()) covered.insert(c.type + "/" + role_name(c.sender));
    const std::vector<std::string> expected{
        "hello/visitor",   "hello/agent",          "request_agent/visitor", "send/visitor",
        "send/agent",      "typing/visitor",       "typing/agent",          "end_chat/visitor",
        "end_chat/agent",  "meeting_booked/visitor", "resume/visitor",      "resume/agent",
        "set_availability/agent", "accept/agent",  "decline/agent",         "share_calendar/agent",
        "set_score/agent", "list_conversations/agent", "get_visitor/agent", "get_activity/agent",
        "get_transcript/agent", "list_agents/agent", "reauth/agent"};
    for (const auto& name : expected) {
        INFO(name);
        CHECK(covered.count(name) == 1);
    }
    CHECK(covered.size() == expected.size());
}

TEST_CASE("every valid frame decodes to its type and keeps the id", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        INFO(c.type << " from " << role_name(c.sender));
        auto result = parse(frame_of(c).dump(), c.sender);
        if (!result.ok()) FAIL(result.error().message);
        CHECK(type_name(result.value().request) == c.type);
        CHECK(result.value().id == "r1");
    }
}

TEST_CASE("malformed JSON is bad_request for every type", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        INFO(c.type);
        std::string text = frame_of(c).dump();
        text.pop_back();  // drop the closing brace
        require_error(parse(text, c.sender), error_code::bad_request, "not valid JSON", std::nullopt);
    }
}

TEST_CASE("each required field, when missing or null, is named in a bad_request", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        for (const auto& field : c.required) {
            INFO(c.type << " from " << role_name(c.sender) << " without " << field);
            json missing = frame_of(c);
            missing.erase(field);
            require_error(parse(missing.dump(), c.sender), error_code::bad_request, field + " is required", "r1");
            json null_field = frame_of(c);
            null_field[field] = nullptr;
            require_error(parse(null_field.dump(), c.sender), error_code::bad_request, field + " is required", "r1");
        }
    }
}

TEST_CASE("each mistyped field is named in a bad_request", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        for (const auto& bad : c.mistyped) {
            INFO(c.type << " from " << role_name(c.sender) << " with " << bad.field << " = " << bad.value.dump());
            json frame = frame_of(c);
            set_field(frame, bad.field, bad.value);
            require_error(parse(frame.dump(), c.sender), error_code::bad_request, bad.field + " must", "r1");
        }
    }
}

TEST_CASE("each oversized or out-of-range field is refused with its code and name", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        for (const auto& bad : c.out_of_range) {
            INFO(c.type << " from " << role_name(c.sender) << " with " << bad.field << " = "
                        << bad.value.dump().substr(0, 80));
            json frame = frame_of(c);
            set_field(frame, bad.field, bad.value);
            require_error(parse(frame.dump(), c.sender), bad.expected_code, bad.field + " must", "r1");
        }
    }
}

TEST_CASE("unknown fields are ignored for every type", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        INFO(c.type);
        json frame = frame_of(c);
        frame["x_future_field"] = {{"nested", json::array({1, 2, 3})}};
        frame["version"] = 2;
        auto result = parse(frame.dump(), c.sender);
        if (!result.ok()) FAIL(result.error().message);
        CHECK(type_name(result.value().request) == c.type);
    }
}

TEST_CASE("a type of the other endpoint is forbidden, naming the type", "[proto][decode]") {
    for (const auto& c : message_cases()) {
        const role other = c.sender == role::visitor ? role::agent : role::visitor;
        bool other_may_send = false;
        for (const auto& d : message_cases()) other_may_send |= d.type == c.type && d.sender == other;
        if (other_may_send) continue;
        INFO(c.type << " sent by " << role_name(other));
        require_error(parse(frame_of(c).dump(), other), error_code::forbidden, "\"" + c.type + "\"", "r1");
    }
}

TEST_CASE("decoded fields carry the sent values", "[proto][decode]") {
    SECTION("visitor hello with profile; null and empty profile fields are absent") {
        auto r = parse(R"({"type":"hello","id":"h","tenant":"acme","resume_token":"rt",
            "profile":{"name":"Ada","job_title":"CTO","email":"a@x.io","phone":null,"crm_status":"","company":"X"}})");
        REQUIRE(r.ok());
        const auto& hello = std::get<requests::visitor_hello>(r.value().request);
        CHECK(hello.tenant == "acme");
        CHECK_FALSE(hello.visitor_token);
        CHECK(hello.resume_token == "rt");
        CHECK(hello.profile.name == "Ada");
        CHECK(hello.profile.job_title == "CTO");
        CHECK(hello.profile.email == "a@x.io");
        CHECK_FALSE(hello.profile.phone);
        CHECK_FALSE(hello.profile.crm_status);
        CHECK(hello.profile.company == "X");
    }
    SECTION("agent hello") {
        auto r = parse(R"({"type":"hello","token":"jwt"})", role::agent);
        REQUIRE(r.ok());
        CHECK(std::get<requests::agent_hello>(r.value().request).token == "jwt");
        CHECK_FALSE(r.value().id);
    }
    SECTION("send") {
        auto r = parse(R"({"type":"send","conversation_id":"c_1","text":"h\u00e9llo\n","client_msg_id":"m-1"})");
        REQUIRE(r.ok());
        const auto& send = std::get<requests::send>(r.value().request);
        CHECK(send.conversation_id == "c_1");
        CHECK(send.text == "h\xc3\xa9llo\n");
        CHECK(send.client_msg_id == "m-1");
    }
    SECTION("request_agent without client_key") {
        auto r = parse(R"({"type":"request_agent","route":"sales.eu-1_b"})");
        REQUIRE(r.ok());
        CHECK(std::get<requests::request_agent>(r.value().request).route == "sales.eu-1_b");
        CHECK_FALSE(std::get<requests::request_agent>(r.value().request).client_key);
    }
    SECTION("typing, end_chat, meeting_booked, resume") {
        auto typing = parse(R"({"type":"typing","conversation_id":"c","on":true})");
        REQUIRE(typing.ok());
        CHECK(std::get<requests::typing>(typing.value().request).on);
        auto end = parse(R"({"type":"end_chat","conversation_id":"c9"})");
        REQUIRE(end.ok());
        CHECK(std::get<requests::end_chat>(end.value().request).conversation_id == "c9");
        auto booked = parse(R"({"type":"meeting_booked","conversation_id":"c","agent_id":"a_2","start_at":1700000000000})");
        REQUIRE(booked.ok());
        CHECK(std::get<requests::meeting_booked>(booked.value().request).agent_id == "a_2");
        CHECK(std::get<requests::meeting_booked>(booked.value().request).start_at == 1700000000000);
        auto resume = parse(R"({"type":"resume","conversation_id":"c","after_seq":9223372036854775807})");
        REQUIRE(resume.ok());
        CHECK(std::get<requests::resume>(resume.value().request).after_seq == 9223372036854775807);
    }
    SECTION("agent requests") {
        const auto agent = [](const std::string& text) { return parse(text, role::agent); };
        auto availability = agent(R"({"type":"set_availability","available":false})");
        REQUIRE(availability.ok());
        CHECK_FALSE(std::get<requests::set_availability>(availability.value().request).available);
        auto accept = agent(R"({"type":"accept","offer_id":"o_1"})");
        REQUIRE(accept.ok());
        CHECK(std::get<requests::accept>(accept.value().request).offer_id == "o_1");
        auto decline = agent(R"({"type":"decline","offer_id":"o_2"})");
        REQUIRE(decline.ok());
        CHECK(std::get<requests::decline>(decline.value().request).offer_id == "o_2");
        auto share = agent(R"({"type":"share_calendar","conversation_id":"c","agent_id":"a_3"})");
        REQUIRE(share.ok());
        CHECK(std::get<requests::share_calendar>(share.value().request).agent_id == "a_3");
        auto score = agent(R"({"type":"set_score","conversation_id":"c","score":0})");
        REQUIRE(score.ok());
        CHECK(std::get<requests::set_score>(score.value().request).score == 0);
        auto visitor = agent(R"({"type":"get_visitor","visitor_id":"v_1"})");
        REQUIRE(visitor.ok());
        CHECK(std::get<requests::get_visitor>(visitor.value().request).visitor_id == "v_1");
        auto transcript = agent(R"({"type":"get_transcript","conversation_id":"c_7"})");
        REQUIRE(transcript.ok());
        CHECK(std::get<requests::get_transcript>(transcript.value().request).conversation_id == "c_7");
    }
    SECTION("list_conversations and get_activity defaults") {
        auto list = parse(R"({"type":"list_conversations"})", role::agent);
        REQUIRE(list.ok());
        const auto& query = std::get<requests::list_conversations>(list.value().request);
        CHECK(query.filter == conversation_filter::active);
        CHECK(query.limit == 20);
        CHECK_FALSE(query.cursor);
        auto all = parse(R"({"type":"list_conversations","filter":"all","limit":100,"cursor":null})", role::agent);
        REQUIRE(all.ok());
        CHECK(std::get<requests::list_conversations>(all.value().request).filter == conversation_filter::all);
        CHECK(std::get<requests::list_conversations>(all.value().request).limit == 100);
        auto activity = parse(R"({"type":"get_activity","visitor_id":"v","limit":1,"cursor":"p2"})", role::agent);
        REQUIRE(activity.ok());
        CHECK(std::get<requests::get_activity>(activity.value().request).limit == 1);
        CHECK(std::get<requests::get_activity>(activity.value().request).cursor == "p2");
        auto default_activity = parse(R"({"type":"get_activity","visitor_id":"v"})", role::agent);
        REQUIRE(default_activity.ok());
        CHECK(std::get<requests::get_activity>(default_activity.value().request).limit == 20);
    }
    SECTION("get_transcript: no limit asks for all of it, a limit for a page after after_seq") {
        auto whole = parse(R"({"type":"get_transcript","conversation_id":"c"})", role::agent);
        REQUIRE(whole.ok());
        const auto& all = std::get<requests::get_transcript>(whole.value().request);
        CHECK(all.after_seq == 0);
        CHECK_FALSE(all.limit.has_value());
        auto paged = parse(R"({"type":"get_transcript","conversation_id":"c","after_seq":200,"limit":1})", role::agent);
        REQUIRE(paged.ok());
        const auto& page = std::get<requests::get_transcript>(paged.value().request);
        CHECK(page.after_seq == 200);
        CHECK(page.limit == std::optional<int>(1));
        auto nulls = parse(R"({"type":"get_transcript","conversation_id":"c","after_seq":null,"limit":null})", role::agent);
        REQUIRE(nulls.ok());
        CHECK_FALSE(std::get<requests::get_transcript>(nulls.value().request).limit.has_value());
        require_error(parse(R"({"type":"get_transcript","id":"t","conversation_id":"c","limit":1001})", role::agent),
                      error_code::bad_request, "limit must be an integer 1..1000", "t");
    }
}

TEST_CASE("envelope: type and id", "[proto][decode]") {
    SECTION("unknown type echoes the id and names the type") {
        require_error(parse(R"({"type":"fly","id":"r7"})"), error_code::unknown_type, "unknown type \"fly\"", "r7");
    }
    SECTION("an absurdly long unknown type is not echoed") {
        auto r = parse(json{{"type", std::string(5000, 'z')}, {"id", "r"}}.dump());
        require_error(r, error_code::unknown_type, "unknown type", "r");
        CHECK(r.error().message.size() < 100);
    }
    SECTION("type missing or not a string") {
        require_error(parse(R"({"id":"r1","text":"x"})"), error_code::bad_request, "type is required", "r1");
        require_error(parse(R"({"id":"r1","type":3})"), error_code::bad_request, "type must be a string", "r1");
        require_error(parse(R"({"id":"r1","type":null})"), error_code::bad_request, "type is required", "r1");
    }
    SECTION("id limits: 64 characters pass, 65 and non-strings fail without re") {
        auto ok = parse(json{{"type", "end_chat"}, {"id", std::string(64, 'i')}, {"conversation_id", "c"}}.dump());
        REQUIRE(ok.ok());
        CHECK(ok.value().id == std::string(64, 'i'));
        require_error(parse(json{{"type", "end_chat"}, {"id", std::string(65, 'i')}, {"conversation_id", "c"}}.dump()),
                      error_code::bad_request, "id must be at most 64 characters", std::nullopt);
        require_error(parse(R"({"type":"end_chat","id":5,"conversation_id":"c"})"), error_code::bad_request,
                      "id must be a string", std::nullopt);
        require_error(parse(R"({"type":"end_chat","id":"","conversation_id":"c"})"), error_code::bad_request,
                      "id must not be empty", std::nullopt);
    }
    SECTION("a null id is no id") {
        auto r = parse(R"({"type":"end_chat","id":null,"conversation_id":"c"})");
        REQUIRE(r.ok());
        CHECK_FALSE(r.value().id);
    }
    SECTION("id is echoed on field errors, even when type comes first") {
        require_error(parse(R"({"type":"send","conversation_id":"c","id":"late"})"), error_code::bad_request,
                      "text is required", "late");
    }
}

TEST_CASE("frames that are not JSON objects", "[proto][decode]") {
    for (const std::string text : {"[]", "[1,2]", "\"hello\"", "42", "null", "true"}) {
        INFO(text);
        require_error(parse(text), error_code::bad_request, "frame must be a JSON object", std::nullopt);
    }
    for (const std::string text : {"", "   ", "{", "{\"type\":}", "{'type':'send'}", "{\"type\":\"send\"} x",
                                   "{\"type\":\"send\",}", "/* c */{}"}) {
        INFO(text);
        require_error(parse(text), error_code::bad_request, "frame is not valid JSON", std::nullopt);
    }
}

TEST_CASE("numbers: huge, negative, fractional", "[proto][decode]") {
    const auto score = [](const std::string& value) {
        return parse(R"({"type":"set_score","id":"n","conversation_id":"c","score":)" + value + "}", role::agent);
    };
    for (const std::string value : {"4", "-1", "3.5", "1e2", "1e300", "-1e300", "18446744073709551615",
                                    "99999999999999999999999", "-9223372036854775809", "\"2\"", "[2]"}) {
        INFO(value);
        require_error(score(value), error_code::bad_request, "score must be an integer 0..3", "n");
    }
    REQUIRE(score("3").ok());
    // Beyond double range the JSON parser itself gives up (number overflow).
    require_error(score("1e400"), error_code::bad_request, "frame is not valid JSON", std::nullopt);
    require_error(score("-1e400"), error_code::bad_request, "frame is not valid JSON", std::nullopt);
    const auto after = [](const std::string& value) {
        return parse(R"({"type":"resume","id":"n","conversation_id":"c","after_seq":)" + value + "}");
    };
    REQUIRE(after("9223372036854775807").ok());
    require_error(after("9223372036854775808"), error_code::bad_request, "after_seq must be an integer >= 0", "n");
    require_error(after("-0.5"), error_code::bad_request, "after_seq must be an integer >= 0", "n");
}

TEST_CASE("text is limited in code points, not bytes", "[proto][decode]") {
    const std::string e_acute = "\xc3\xa9";          // 2 bytes
    const std::string euro = "\xe2\x82\xac";          // 3 bytes
    const std::string grinning = "\xf0\x9f\x98\x80";  // 4 bytes
    for (const auto& piece : {std::string("a"), e_acute, euro, grinning}) {
        INFO("character of " << piece.size() << " bytes");
        auto exact = parse(send_frame(repeat(piece, 4000)));
        if (!exact.ok()) FAIL(exact.error().message);
        CHECK(std::get<requests::send>(exact.value().request).text.size() == 4000 * piece.size());
        require_error(parse(send_frame(repeat(piece, 4001))), error_code::too_large,
                      "text must be at most 4000 characters", "s");
    }
    SECTION("escaped characters count once") {
        std::string frame = R"({"type":"send","conversation_id":"c","text":")" + repeat("\\ud83d\\ude00", 4000) + "\"}";
        REQUIRE(parse(frame).ok());
    }
    SECTION("the cap follows limits") {
        limits small;
        small.max_text_chars = 3;
        CHECK(parse_client_frame(send_frame(euro + euro + euro), role::visitor, small).ok());
        auto r = parse_client_frame(send_frame(euro + euro + euro + euro), role::visitor, small);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == error_code::too_large);
        CHECK(r.error().message == "text must be at most 3 characters");
    }
}

TEST_CASE("invalid UTF-8 and NUL are bad_request", "[proto][decode]") {
    const std::vector<std::string> invalid_sequences{
        "\xff",              // never valid
        "\xc3",              // truncated two-byte sequence
        "\xc0\xaf",          // overlong '/'
        "\xe0\x80\xaf",      // overlong three-byte
        "\xed\xa0\x80",      // UTF-16 surrogate encoded in UTF-8
        "\xf4\x90\x80\x80",  // above U+10FFFF
        "\x80",              // lone continuation byte
    };
    for (const auto& bytes : invalid_sequences) {
        INFO("bytes of length " << bytes.size());
        std::string frame = R"({"type":"send","id":"u","conversation_id":"c","text":"a)" + bytes + "\"}";
        require_error(parse(frame), error_code::bad_request, "frame is not valid UTF-8", std::nullopt);
    }
    SECTION("a lone surrogate escape is not valid JSON") {
        require_error(parse(R"({"type":"send","conversation_id":"c","text":"\ud800"})"), error_code::bad_request,
                      "not valid JSON", std::nullopt);
    }
    SECTION("an escaped NUL is refused with the field name") {
        require_error(parse(R"({"type":"send","id":"z","conversation_id":"c","text":"a\u0000b"})"),
                      error_code::bad_request, "text must not contain U+0000", "z");
    }
}

TEST_CASE("frame size and nesting limits", "[proto][decode]") {
    limits configured;
    SECTION("a frame over max_frame_bytes is too_large before parsing") {
        std::string frame = send_frame("x");
        frame.insert(frame.size() - 1, std::string(configured.max_frame_bytes, ' '));
        auto r = parse_client_frame(frame, role::visitor, configured);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == error_code::too_large);
        CHECK_FALSE(r.error().re);
    }
    SECTION("nesting deeper than max_nesting_depth is refused; brackets in strings do not count") {
        const auto nested = [](std::size_t depth) {
            return R"({"type":"end_chat","conversation_id":"c","extra":)" + std::string(depth - 1, '[') +
                   std::string(depth - 1, ']') + "}";
        };
        CHECK(parse(nested(configured.max_nesting_depth)).ok());
        require_error(parse(nested(configured.max_nesting_depth + 1)), error_code::bad_request, "nests deeper",
                      std::nullopt);
        CHECK(parse(R"({"type":"send","conversation_id":"c","text":")" + std::string(100, '[') + "\\\"{\"}").ok());
        require_error(parse(std::string(100000, '[')), error_code::too_large, "frame must be at most", std::nullopt);
    }
}

TEST_CASE("route names", "[proto][decode]") {
    CHECK(is_valid_route_name("sales"));
    CHECK(is_valid_route_name("EU.sales_2-b"));
    CHECK(is_valid_route_name(std::string(64, 'r')));
    CHECK_FALSE(is_valid_route_name(""));
    CHECK_FALSE(is_valid_route_name(std::string(65, 'r')));
    CHECK_FALSE(is_valid_route_name("sales/eu"));
    CHECK_FALSE(is_valid_route_name("caf\xc3\xa9"));
}

TEST_CASE("reauth: an agent's fresh token; a visitor is told it is for agents", "[proto][decode]") {
    auto ok = parse(R"({"type":"reauth","id":"ra","token":"x.y.z"})", role::agent);
    REQUIRE(ok.ok());
    REQUIRE(std::holds_alternative<requests::reauth>(ok.value().request));
    CHECK(std::get<requests::reauth>(ok.value().request).token == "x.y.z");
    CHECK(type_name(ok.value().request) == "reauth");
    require_error(parse(R"({"type":"reauth","id":"ra","token":"x.y.z"})", role::visitor), error_code::forbidden,
                  "only for agents", "ra");
}

TEST_CASE("list_agents: an agent request without fields; a visitor is told it is for agents", "[proto][decode]") {
    auto ok = parse(R"({"type":"list_agents","id":"la","unknown":1})", role::agent);
    REQUIRE(ok.ok());
    CHECK(std::holds_alternative<requests::list_agents>(ok.value().request));
    CHECK(type_name(ok.value().request) == "list_agents");
    require_error(parse(R"({"type":"list_agents","id":"la"})", role::visitor), error_code::forbidden,
                  "only for agents", "la");
}
