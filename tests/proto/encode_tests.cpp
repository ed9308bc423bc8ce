// Server message encoding: every encoder's output is parsed back and each
// field checked, including the ones encoded as null.
#include <catch2/catch.hpp>

#include <climits>
#include <limits>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "parley/proto/encode.h"

using namespace parley::proto;
using nlohmann::json;

namespace {

json decode(const std::string& text) {
    INFO(text);
    REQUIRE(text.rfind("{\"type\":", 0) == 0);  // type first, for readable logs
    return json::parse(text);
}

visitor_card ada() {
    visitor_card card;
    card.id = "v_1";
    card.profile.name = "Ada";
    card.profile.job_title = "CTO";
    card.profile.email = "a@x.io";
    card.profile.crm_status = "Lead";
    return card;
}

chat_message text_message() {
    chat_message message;
    message.conversation_id = "c_1";
    message.seq = 18;
    message.from = message_author::agent;
    message.agent_id = "a_1";
    message.text = "hello \"there\"\n\xf0\x9f\x98\x80";
    message.at = 1700000000123;
    return message;
}

chat_message calendar_message() {
    chat_message message;
    message.conversation_id = "c_1";
    message.seq = 19;
    message.from = message_author::agent;
    message.agent_id = "a_1";
    message.kind = message_kind::calendar;
    message.text = "must not be encoded";
    message.calendar = {"a_2", "Bo", "https://cal.example/bo"};
    message.at = 1700000000456;
    return message;
}

conversation_entry active_conversation() {
    conversation_entry entry;
    entry.id = "c_1";
    entry.visitor = ada();
    entry.state = conversation_state::active;
    entry.agent_id = "a_1";
    entry.started_at = 1700000000000;
    entry.last_message = text_message();
    return entry;
}

void check_visitor_card(const json& object) {
    CHECK(object["id"] == "v_1");
    CHECK(object["name"] == "Ada");
    CHECK(object["job_title"] == "CTO");
    CHECK(object["email"] == "a@x.io");
    CHECK(object["phone"].is_null());
    CHECK(object["crm_status"] == "Lead");
    CHECK(object["company"].is_null());
}

void check_text_message(const json& object) {
    CHECK(object["conversation_id"] == "c_1");
    CHECK(object["seq"] == 18);
    CHECK(object["from"] == "agent");
    CHECK(object["agent_id"] == "a_1");
    CHECK(object["kind"] == "text");
    CHECK(object["text"] == "hello \"there\"\n\xf0\x9f\x98\x80");
    CHECK_FALSE(object.contains("calendar"));
    CHECK(object["at"] == 1700000000123);
}

void check_active_conversation(const json& object) {
    CHECK(object["id"] == "c_1");
    check_visitor_card(object["visitor"]);
    CHECK(object["state"] == "active");
    CHECK(object["agent_id"] == "a_1");
    CHECK(object["started_at"] == 1700000000000);
    CHECK(object["ended_at"].is_null());
    check_text_message(object["last_message"]);
}

}  // namespace

TEST_CASE("ok and error replies", "[proto][encode]") {
    auto ok = decode(encode_ok("r1"));
    CHECK(ok == json{{"type", "ok"}, {"re", "r1"}});

    auto error = decode(encode_error("r1", error_code::bad_request, "text is required"));
    CHECK(error == json{{"type", "error"}, {"re", "r1"}, {"code", "bad_request"}, {"message", "text is required"}});

    auto without_re = decode(encode_error(std::nullopt, error_code::rate_limited, "slow down"));
    CHECK_FALSE(without_re.contains("re"));
    CHECK(without_re["code"] == "rate_limited");

    auto from_error = decode(encode_error(protocol_error{error_code::too_large, "text must be at most 4000 characters", "s"}));
    CHECK(from_error["re"] == "s");
    CHECK(from_error["code"] == "too_large");
}

TEST_CASE("every error code has its protocol spelling", "[proto][encode]") {
    const std::vector<std::pair<error_code, std::string>> codes{
        {error_code::bad_request, "bad_request"}, {error_code::unknown_type, "unknown_type"},
        {error_code::unauthorized, "unauthorized"}, {error_code::forbidden, "forbidden"},
        {error_code::not_found, "not_found"}, {error_code::conflict, "conflict"},
        {error_code::capacity, "capacity"}, {error_code::rate_limited, "rate_limited"},
        {error_code::too_large, "too_large"}, {error_code::unavailable, "unavailable"},
        {error_code::internal, "internal"}};
    for (const auto& [code, name] : codes) CHECK(to_string(code) == name);
}

TEST_CASE("hello replies", "[proto][encode]") {
    SECTION("visitor with an open conversation") {
        auto frame = decode(encode_visitor_hello_ok("h", "v_1", "rt.sig",
                                                    conversation_summary{"c_1", conversation_state::active, 17}));
        CHECK(frame["re"] == "h");
        CHECK(frame["visitor_id"] == "v_1");
        CHECK(frame["resume_token"] == "rt.sig");
        CHECK(frame["conversation"] == json{{"id", "c_1"}, {"state", "active"}, {"last_seq", 17}});
    }
    SECTION("visitor without one") {
        auto frame = decode(encode_visitor_hello_ok("h", "v_1", "rt", std::nullopt));
        REQUIRE(frame.contains("conversation"));
        CHECK(frame["conversation"].is_null());
    }
    SECTION("agent") {
        offer pending{"o_1", "c_2", ada(), "sales", 1700000045000};
        std::vector<conversation_entry> active{active_conversation()};
        auto frame = decode(encode_agent_hello_ok("h", agent_info{"a_1", "Bo", 5, {"sales", "support"}},
                                                  availability{true, availability_source::override, 1700003600000},
                                                  active, std::span<const offer>(&pending, 1)));
        CHECK(frame["agent"] == json{{"id", "a_1"}, {"name", "Bo"}, {"max_chats", 5}, {"teams", {"sales", "support"}}});
        CHECK(frame["availability"] ==
              json{{"available", true}, {"source", "override"}, {"until_at", 1700003600000}});
        REQUIRE(frame["active"].size() == 1);
        check_active_conversation(frame["active"][0]);
        REQUIRE(frame["offers"].size() == 1);
        const auto& offer_object = frame["offers"][0];
        CHECK_FALSE(offer_object.contains("type"));
        CHECK(offer_object["offer_id"] == "o_1");
        CHECK(offer_object["conversation_id"] == "c_2");
        check_visitor_card(offer_object["visitor"]);
        CHECK(offer_object["route"] == "sales");
        CHECK(offer_object["expires_at"] == 1700000045000);
    }
    SECTION("agent with nothing pending: empty arrays, not null") {
        auto frame = decode(encode_agent_hello_ok("h", agent_info{"a_1", "Bo", 10, {}},
                                                  availability{false, availability_source::schedule, std::nullopt},
                                                  {}, {}));
        CHECK(frame["agent"]["teams"] == json::array());
        CHECK(frame["availability"]["until_at"].is_null());
        CHECK(frame["availability"]["source"] == "schedule");
        CHECK(frame["active"] == json::array());
        CHECK(frame["offers"] == json::array());
    }
}

TEST_CASE("a reply to a request without an id carries no re", "[proto][encode]") {
    CHECK_FALSE(decode(encode_request_agent_ok("", "c_1", conversation_state::routing)).contains("re"));
    CHECK_FALSE(decode(encode_visitor_hello_ok("", "v_1", "rt", std::nullopt)).contains("re"));
    CHECK_FALSE(decode(encode_get_transcript_ok("", {}, std::nullopt)).contains("re"));
    CHECK(decode(encode_get_transcript_ok("t", {}, std::nullopt))["re"] == "t");
}

TEST_CASE("request and query replies", "[proto][encode]") {
    CHECK(decode(encode_request_agent_ok("q", "c_1", conversation_state::routing)) ==
          json{{"type", "ok"}, {"re", "q"}, {"conversation_id", "c_1"}, {"state", "routing"}});
    CHECK(decode(encode_send_ok("s", 18, 1700000000123)) ==
          json{{"type", "ok"}, {"re", "s"}, {"seq", 18}, {"at", 1700000000123}});

    std::vector<chat_message> messages{text_message(), calendar_message()};
    SECTION("accept") {
        auto frame = decode(encode_accept_ok("a", active_conversation(), messages));
        check_active_conversation(frame["conversation"]);
        REQUIRE(frame["messages"].size() == 2);
        check_text_message(frame["messages"][0]);
        CHECK(frame["messages"][1]["kind"] == "calendar");
    }
    SECTION("list_conversations, with and without a next page") {
        conversation_entry ended;
        ended.id = "c_0";
        ended.visitor.id = "v_9";
        ended.state = conversation_state::ended;
        ended.started_at = 5;
        ended.ended_at = 9;
        std::vector<conversation_entry> conversations{active_conversation(), ended};
        auto frame = decode(encode_list_conversations_ok("l", conversations, "next-1"));
        CHECK(frame["next_cursor"] == "next-1");
        REQUIRE(frame["conversations"].size() == 2);
        check_active_conversation(frame["conversations"][0]);
        const auto& second = frame["conversations"][1];
        CHECK(second["state"] == "ended");
        CHECK(second["agent_id"].is_null());
        CHECK(second["ended_at"] == 9);
        CHECK(second["last_message"].is_null());
        CHECK(second["visitor"]["name"].is_null());
        auto last_page = decode(encode_list_conversations_ok("l", {}, std::nullopt));
        CHECK(last_page["conversations"] == json::array());
        REQUIRE(last_page.contains("next_cursor"));
        CHECK(last_page["next_cursor"].is_null());
    }
    SECTION("get_visitor spreads the card; unknown fields are null") {
        auto frame = decode(encode_get_visitor_ok("g", ada()));
        CHECK(frame["re"] == "g");
        check_visitor_card(frame);
        visitor_card bare;
        bare.id = "v_2";
        auto empty = decode(encode_get_visitor_ok("g", bare));
        for (const char* field : {"name", "job_title", "email", "phone", "crm_status", "company"}) {
            INFO(field);
            REQUIRE(empty.contains(field));
            CHECK(empty[field].is_null());
        }
    }
    SECTION("get_activity") {
        std::vector<activity> activities{{"visited_webpage", 10, std::nullopt, R"({"url":"https://x.io/pricing"})"},
                                         {"chat_ended", 20, "c_1", ""},
                                         {"corrupt", 30, std::nullopt, "{not json"}};
        auto frame = decode(encode_get_activity_ok("g", activities, std::nullopt));
        REQUIRE(frame["activities"].size() == 3);
        CHECK(frame["activities"][0] == json{{"type", "visited_webpage"}, {"at", 10}, {"conversation_id", nullptr},
                                             {"details", {{"url", "https://x.io/pricing"}}}});
        CHECK(frame["activities"][1]["conversation_id"] == "c_1");
        CHECK(frame["activities"][1]["details"].is_null());
        CHECK(frame["activities"][2]["details"].is_null());
        CHECK(frame["next_cursor"].is_null());
    }
    SECTION("get_transcript, complete and one page of several") {
        auto frame = decode(encode_get_transcript_ok("t", messages, std::nullopt));
        REQUIRE(frame["messages"].size() == 2);
        check_text_message(frame["messages"][0]);
        CHECK(frame["messages"][1]["kind"] == "calendar");
        REQUIRE(frame.contains("next_after_seq"));
        CHECK(frame["next_after_seq"].is_null());
        CHECK(decode(encode_get_transcript_ok("t", messages, 19))["next_after_seq"] == 19);
        auto empty = decode(encode_get_transcript_ok("t", {}, std::nullopt));
        CHECK(empty["messages"] == json::array());
    }
    SECTION("get_transcript written a message at a time stays within its byte budget") {
        const auto whole = encode_get_transcript_ok("t", messages, INT64_MAX);
        transcript_reply_writer unbounded("t");
        for (const auto& m : messages) CHECK(unbounded.add(m, std::numeric_limits<std::size_t>::max()));
        CHECK(std::move(unbounded).finish(INT64_MAX) == whole);

        // Exactly as many bytes as the two-message frame needs (with the longest next_after_seq): both fit;
        // one byte less: only the first, and the frame is still within the budget.
        for (std::size_t budget : {whole.size(), whole.size() - 1}) {
            transcript_reply_writer writer("t");
            CHECK(writer.add(messages[0], budget));
            CHECK(writer.add(messages[1], budget) == (budget == whole.size()));
            auto frame = std::move(writer).finish(INT64_MAX);
            CHECK(frame.size() <= budget);
            CHECK(decode(frame)["messages"].size() == (budget == whole.size() ? 2u : 1u));
        }
        transcript_reply_writer tiny("t");
        CHECK_FALSE(tiny.add(messages[0], 10));
        CHECK(tiny.message_count() == 0);
        CHECK(decode(std::move(tiny).finish(std::nullopt))["messages"] == json::array());
    }
}

TEST_CASE("message events", "[proto][encode]") {
    SECTION("text") {
        auto frame = decode(encode_message_event(text_message()));
        CHECK(frame["type"] == "message");
        CHECK_FALSE(frame.contains("re"));
        check_text_message(frame);
    }
    SECTION("calendar carries the card and no text") {
        auto frame = decode(encode_message_event(calendar_message()));
        CHECK(frame["kind"] == "calendar");
        CHECK(frame["calendar"] ==
              json{{"agent_id", "a_2"}, {"agent_name", "Bo"}, {"booking_url", "https://cal.example/bo"}});
        CHECK_FALSE(frame.contains("text"));
    }
    SECTION("from a visitor: agent_id is null") {
        chat_message message = text_message();
        message.from = message_author::visitor;
        message.agent_id.reset();
        auto frame = decode(encode_message_event(message));
        CHECK(frame["from"] == "visitor");
        REQUIRE(frame.contains("agent_id"));
        CHECK(frame["agent_id"].is_null());
    }
    SECTION("invalid UTF-8 from storage is replaced, never thrown") {
        chat_message message = text_message();
        message.text = "bad \xff byte";
        std::string encoded;
        REQUIRE_NOTHROW(encoded = encode_message_event(message));
        CHECK(decode(encoded)["text"] == "bad \xef\xbf\xbd byte");
    }
}

// `ok` to a send and the text `message` event are written without a json
// object (the relay's hot path); they must be byte for byte what nlohmann's
// dump writes, for any text: escapes, control characters, multi-byte
// characters, and invalid UTF-8 (replaced by U+FFFD).
TEST_CASE("hot-path frames are byte-identical to nlohmann's dump on random text", "[proto][encode][random]") {
    std::mt19937 random(20261126);
    const std::vector<std::string> pieces = {
        "a", "Z", " ", "\"", "\\", "/", "\b", "\f", "\n", "\r", "\t", std::string(1, '\0'), "\x01", "\x1f", "\x7f",
        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf", "\xef\xbf\xbd",
        // invalid: stray continuation, truncated, overlong, surrogate, above U+10FFFF, bad lead bytes
        "\x80", "\xc3", "\xe2\x82", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5", "\xff"};
    auto random_text = [&](bool valid_only) {
        std::string text;
        const int count = std::uniform_int_distribution<int>(0, 12)(random);
        const std::size_t last = valid_only ? 19 : pieces.size() - 1;
        for (int i = 0; i < count; ++i) text += pieces[std::uniform_int_distribution<std::size_t>(0, last)(random)];
        return text;
    };
    auto reference = [](const nlohmann::ordered_json& frame) {
        return frame.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    };
    for (int round = 0; round < 5000; ++round) {
        chat_message message;
        message.conversation_id = random_text(round % 2 == 0);
        message.seq = std::uniform_int_distribution<std::int64_t>(0, INT64_MAX)(random);
        message.at = std::uniform_int_distribution<std::int64_t>(INT64_MIN, INT64_MAX)(random);
        message.from = round % 3 == 0 ? message_author::visitor : message_author::agent;
        if (round % 3 != 0) message.agent_id = random_text(false);
        message.kind = message_kind::text;
        message.text = random_text(false);
        nlohmann::ordered_json expected = nlohmann::ordered_json::object();
        expected["type"] = "message";
        expected["conversation_id"] = message.conversation_id;
        expected["seq"] = message.seq;
        expected["from"] = to_string(message.from);
        expected["agent_id"] = message.agent_id ? nlohmann::ordered_json(*message.agent_id) : nlohmann::ordered_json(nullptr);
        expected["kind"] = "text";
        expected["text"] = message.text;
        expected["at"] = message.at;
        INFO("round " << round << ": " << message.text);
        REQUIRE(encode_message_event(message) == reference(expected));

        const std::string re = random_text(false);
        nlohmann::ordered_json ok = nlohmann::ordered_json::object();
        ok["type"] = "ok";
        ok["re"] = re;
        ok["seq"] = message.seq;
        ok["at"] = message.at;
        REQUIRE(encode_send_ok(re, message.seq, message.at) == reference(ok));
    }
}

TEST_CASE("conversation events", "[proto][encode]") {
    CHECK(decode(encode_typing_event("c_1", message_author::visitor, true)) ==
          json{{"type", "typing"}, {"conversation_id", "c_1"}, {"from", "visitor"}, {"on", true}});
    CHECK(decode(encode_agent_joined_event("c_1", agent_card{"a_1", "Bo", "https://img/bo.png"})) ==
          json{{"type", "agent_joined"},
               {"conversation_id", "c_1"},
               {"agent", {{"id", "a_1"}, {"name", "Bo"}, {"avatar_url", "https://img/bo.png"}}}});
    CHECK(decode(encode_agent_joined_event("c_1", agent_card{"a_1", "Bo", std::nullopt}))["agent"]["avatar_url"]
              .is_null());
    CHECK(decode(encode_agent_away_event("c_1")) == json{{"type", "agent_away"}, {"conversation_id", "c_1"}});
    CHECK(decode(encode_agent_back_event("c_1")) == json{{"type", "agent_back"}, {"conversation_id", "c_1"}});
    CHECK(decode(encode_queued_event("c_1", 3)) ==
          json{{"type", "queued"}, {"conversation_id", "c_1"}, {"position", 3}});
    CHECK(decode(encode_fallback_event("c_1", "Leave a message", calendar_card{"a_1", "Bo", "https://cal/bo"})) ==
          json{{"type", "fallback"},
               {"conversation_id", "c_1"},
               {"message", "Leave a message"},
               {"calendar", {{"agent_id", "a_1"}, {"agent_name", "Bo"}, {"booking_url", "https://cal/bo"}}}});
    auto bare_fallback = decode(encode_fallback_event("c_1", std::nullopt, std::nullopt));
    CHECK(bare_fallback["message"].is_null());
    CHECK(bare_fallback["calendar"].is_null());

    const std::vector<std::pair<end_reason, std::string>> reasons{{end_reason::visitor_ended, "visitor_ended"},
                                                                  {end_reason::agent_ended, "agent_ended"},
                                                                  {end_reason::idle_timeout, "idle_timeout"},
                                                                  {end_reason::no_agent, "no_agent"}};
    for (const auto& [reason, name] : reasons)
        CHECK(decode(encode_ended_event("c_1", reason)) ==
              json{{"type", "ended"}, {"conversation_id", "c_1"}, {"reason", name}});
}

TEST_CASE("agent events", "[proto][encode]") {
    auto offer_frame = decode(encode_offer_event(offer{"o_1", "c_1", ada(), "sales", 1700000045000}));
    CHECK(offer_frame["type"] == "offer");
    CHECK(offer_frame["offer_id"] == "o_1");
    CHECK(offer_frame["conversation_id"] == "c_1");
    check_visitor_card(offer_frame["visitor"]);
    CHECK(offer_frame["route"] == "sales");
    CHECK(offer_frame["expires_at"] == 1700000045000);

    const std::vector<std::pair<withdraw_reason, std::string>> reasons{
        {withdraw_reason::expired, "expired"},
        {withdraw_reason::visitor_left, "visitor_left"},
        {withdraw_reason::taken, "taken"},
        {withdraw_reason::agent_unavailable, "agent_unavailable"}};
    for (const auto& [reason, name] : reasons)
        CHECK(decode(encode_offer_withdrawn_event("o_1", reason)) ==
              json{{"type", "offer_withdrawn"}, {"offer_id", "o_1"}, {"reason", name}});

    CHECK(decode(encode_availability_event(availability{false, availability_source::override, 1700003600000})) ==
          json{{"type", "availability"}, {"available", false}, {"source", "override"}, {"until_at", 1700003600000}});
    CHECK(decode(encode_availability_event(availability{true, availability_source::schedule, std::nullopt})) ==
          json{{"type", "availability"}, {"available", true}, {"source", "schedule"}, {"until_at", nullptr}});
}

TEST_CASE("credentials_expiring event and reauth reply carry expires_at", "[proto][encode]") {
    CHECK(decode(encode_credentials_expiring_event(1'800'000'060'000)) ==
          json{{"type", "credentials_expiring"}, {"expires_at", 1'800'000'060'000}});
    CHECK(decode(encode_reauth_ok("ra", 1'800'003'660'000)) ==
          json{{"type", "ok"}, {"re", "ra"}, {"expires_at", 1'800'003'660'000}});
}

TEST_CASE("list_agents reply: id, name, avatar_url (null when absent), has_calendar", "[proto][encode]") {
    std::vector<agent_listing> agents{{"a_1", "Bo", "https://img.example/bo.png", true}, {"a_2", "Cy", std::nullopt, false}};
    auto reply = decode(encode_list_agents_ok("la", agents));
    CHECK(reply == json{{"type", "ok"},
                        {"re", "la"},
                        {"agents",
                         {{{"id", "a_1"}, {"name", "Bo"}, {"avatar_url", "https://img.example/bo.png"}, {"has_calendar", true}},
                          {{"id", "a_2"}, {"name", "Cy"}, {"avatar_url", nullptr}, {"has_calendar", false}}}}});
    CHECK(decode(encode_list_agents_ok("e", {}))["agents"] == json::array());
}
