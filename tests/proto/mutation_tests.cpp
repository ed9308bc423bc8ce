// Randomized robustness of every decoder: valid frames and admin bodies,
// mutated at the byte level (flips, inserts, cuts, repeats) and the JSON level
// (a member's value swapped for one of another type, deleted, nested deep),
// must come back as a value or as a protocol error with a known code: never an
// exception, never a crash, never a reply id the envelope could not carry.
#include <catch2/catch.hpp>

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>

#include "parley/proto/admin.h"
#include "parley/proto/decode.h"

using namespace parley::proto;
using nlohmann::json;

namespace {

const std::vector<json> client_frames = {
    {{"type", "hello"}, {"id", "h"}, {"tenant", "acme"}, {"resume_token", "rt"},
     {"profile", {{"name", "Ada"}, {"email", "a@x.io"}, {"phone", nullptr}, {"company", "X"}}}},
    {{"type", "hello"}, {"id", "h"}, {"token", "eyJhbGciOiJIUzI1NiJ9.e30.sig"}},
    {{"type", "request_agent"}, {"id", "q"}, {"route", "sales"}, {"client_key", "k-1"}},
    {{"type", "send"}, {"id", "s"}, {"conversation_id", "c_1"}, {"text", "héllo \u2603"}, {"client_msg_id", "m-1"}},
    {{"type", "typing"}, {"conversation_id", "c_1"}, {"on", true}},
    {{"type", "end_chat"}, {"id", "e"}, {"conversation_id", "c_1"}},
    {{"type", "meeting_booked"}, {"conversation_id", "c_1"}, {"agent_id", "a_1"}, {"start_at", 1700000000000}},
    {{"type", "resume"}, {"id", "r"}, {"conversation_id", "c_1"}, {"after_seq", 17}},
    {{"type", "set_availability"}, {"available", false}},
    {{"type", "accept"}, {"id", "a"}, {"offer_id", "o_1"}},
    {{"type", "decline"}, {"offer_id", "o_1"}},
    {{"type", "share_calendar"}, {"conversation_id", "c_1"}, {"agent_id", "a_2"}},
    {{"type", "set_score"}, {"conversation_id", "c_1"}, {"score", 2}},
    {{"type", "list_conversations"}, {"filter", "all"}, {"limit", 50}, {"cursor", "abc"}},
    {{"type", "get_visitor"}, {"visitor_id", "v_1"}},
    {{"type", "get_activity"}, {"visitor_id", "v_1"}, {"limit", 10}},
    {{"type", "get_transcript"}, {"conversation_id", "c_1"}},
};

const std::vector<std::pair<std::string, json>> admin_bodies = {
    {"agent",
     {{"name", "Ann"}, {"email", "ann@x.io"}, {"max_chats", 5}, {"teams", {"sales", "vip"}},
      {"schedule", {{"tz", "Europe/Paris"}, {"blocks", {{{"day", "mon"}, {"start", "08:00"}, {"end", "12:00"}}}}}},
      {"calendar_url", "https://cal.example/ann"}}},
    {"route",
     {{"type", "rules"},
      {"rules", {{{"priority", 1}, {"when", {{"field", "email"}, {"op", "ends_with"}, {"value", "@x.io"}}},
                  {"agents", {"a1"}}}}},
      {"offer_timeout_s", 30}, {"max_attempts", 3}, {"fallback_message", "later"}, {"fallback_calendar", true}}},
    {"account", {{"agent_id", "a1"}}},
    {"visitor", {{"name", "Ada"}, {"job_title", "CTO"}, {"email", "a@x.io"}, {"crm_status", "Lead"}}},
    {"activity", {{"type", "visited_webpage"}, {"at", 1700000000000}, {"details", {{"url", "https://x.io"}}}}},
};

json random_value(std::mt19937& random, int depth = 0) {
    switch (std::uniform_int_distribution<int>(0, depth > 3 ? 6 : 9)(random)) {
        case 0: return nullptr;
        case 1: return std::uniform_int_distribution<int>(0, 1)(random) == 1;
        case 2: return std::uniform_int_distribution<std::int64_t>(INT64_MIN, INT64_MAX)(random);
        case 3: return json::parse("18446744073709551615");
        case 4: return std::uniform_real_distribution<double>(-1e300, 1e300)(random);
        case 5: return std::string(std::uniform_int_distribution<std::size_t>(0, 5000)(random), 'x');
        case 6: {
            static constexpr char text[] = "nul \0 controls \x01\x1f line sep \u2028 emoji \U0001F600";
            return std::string(text, sizeof text - 1);
        }
        case 7: {
            json array = json::array();
            for (int i = std::uniform_int_distribution<int>(0, 3)(random); i > 0; --i)
                array.push_back(random_value(random, depth + 1));
            return array;
        }
        case 8: {
            json object = json::object();
            for (int i = std::uniform_int_distribution<int>(0, 3)(random); i > 0; --i)
                object["k" + std::to_string(i)] = random_value(random, depth + 1);
            return object;
        }
        default: {
            json nested = 1;  // deeper than any limit allows
            for (int i = 0; i < 40; ++i) nested = json::array({nested});
            return nested;
        }
    }
}

// A JSON-level mutation: one member (at the top or one level down) replaced, deleted or added.
json mutate_json(json value, std::mt19937& random) {
    if (!value.is_object() || value.empty()) return random_value(random);
    auto it = value.begin();
    std::advance(it, std::uniform_int_distribution<std::ptrdiff_t>(0, static_cast<std::ptrdiff_t>(value.size()) - 1)(random));
    switch (std::uniform_int_distribution<int>(0, 3)(random)) {
        case 0: *it = random_value(random); break;
        case 1: value.erase(it); break;
        case 2: value["unknown_" + std::to_string(random() % 100)] = random_value(random); break;
        default: *it = mutate_json(*it, random); break;
    }
    return value;
}

// A byte-level mutation of the serialized text.
std::string mutate_bytes(std::string text, std::mt19937& random) {
    auto position = [&] { return std::uniform_int_distribution<std::size_t>(0, text.empty() ? 0 : text.size() - 1)(random); };
    for (int edits = std::uniform_int_distribution<int>(1, 4)(random); edits > 0 && !text.empty(); --edits) {
        switch (std::uniform_int_distribution<int>(0, 4)(random)) {
            case 0: text[position()] = static_cast<char>(random() & 0xff); break;
            case 1: text.insert(position(), 1, "{}[]\",:\\0 \x80\xff"[random() % 13]); break;
            case 2: text.erase(position(), std::uniform_int_distribution<std::size_t>(1, 8)(random)); break;
            case 3: text.resize(position()); break;
            default: {
                const auto from = position();
                text.insert(position(), text.substr(from, std::uniform_int_distribution<std::size_t>(1, 16)(random)));
            }
        }
    }
    return text;
}

std::string mutated(const json& valid, std::mt19937& random) {
    return std::uniform_int_distribution<int>(0, 1)(random) == 0 ? mutate_json(valid, random).dump()
                                                                 : mutate_bytes(valid.dump(), random);
}

// Returns whether the input was accepted; a refusal must carry a known code and a bounded reply id.
template <typename T>
bool check_outcome(const parse_result<T>& result, const std::string& input) {
    if (result.ok()) return true;
    INFO(input.substr(0, 300));
    const auto& error = result.error();
    CHECK_FALSE(error.message.empty());
    CHECK((error.code == error_code::bad_request || error.code == error_code::unknown_type ||
           error.code == error_code::too_large || error.code == error_code::forbidden));
    if (error.re) CHECK(error.re->size() <= 64);
    return false;
}

// Parses with one admin parser and checks the outcome; true when accepted.
template <auto parse>
bool parse_and_check(const std::string& input) {
    return check_outcome(parse(input, limits{}), input);
}

struct admin_parser {
    std::string_view kind;  // as in admin_bodies
    bool (*check)(const std::string& input);
};

const admin_parser admin_parsers[] = {
    {"agent", parse_and_check<admin::parse_agent_body>},
    {"route", parse_and_check<admin::parse_route_body>},
    {"account", parse_and_check<admin::parse_account_body>},
    {"visitor", parse_and_check<admin::parse_visitor_profile_body>},
    {"activity", parse_and_check<admin::parse_activity_body>},
};

}  // namespace

TEST_CASE("mutated client frames decode to a value or a protocol error, never an exception", "[proto][random]") {
    std::mt19937 random(20261126);
    const limits bounds{};
    int refused = 0;
    constexpr int rounds = 20000;
    for (int round = 0; round < rounds; ++round) {
        const auto& valid = client_frames[static_cast<std::size_t>(round) % client_frames.size()];
        const auto input = mutated(valid, random);
        for (role sender : {role::visitor, role::agent}) {
            std::optional<parse_result<client_frame>> result;
            REQUIRE_NOTHROW(result.emplace(parse_client_frame(input, sender, bounds)));
            refused += !check_outcome(*result, input);
        }
    }
    // The mutations mostly break frames, not only unknown members: the test exercises refusals.
    CHECK(refused > rounds / 2);
}

TEST_CASE("mutated admin bodies parse to a value or a protocol error, never an exception", "[proto][random]") {
    std::mt19937 random(1126);
    int refused = 0;
    constexpr int rounds = 10000;
    for (int round = 0; round < rounds; ++round) {
        const auto& [kind, valid] = admin_bodies[static_cast<std::size_t>(round) % admin_bodies.size()];
        const auto input = mutated(valid, random);
        INFO(kind);
        const auto parser = std::find_if(std::begin(admin_parsers), std::end(admin_parsers),
                                         [&](const admin_parser& entry) { return entry.kind == kind; });
        REQUIRE(parser != std::end(admin_parsers));
        bool ok = false;
        REQUIRE_NOTHROW(ok = parser->check(input));
        refused += !ok;
    }
    CHECK(refused > rounds / 2);
}
