// Protocol v1 end to end: the real parleyd on port 0 (SQLite store), several
// real WebSocket clients at once, short offer timeouts set through routes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include "e2e_support.h"
#include "signed_token.h"

using namespace parley::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A TCP connection to the daemon on 127.0.0.1 from `source` (127.0.0.x: another client
// address), sends `request`, reads replies for up to 5 s each.
int connect_from(const char* source, std::uint16_t port, const std::string& request) {
    int fd = connect_loopback(port, timeval{5, 0}, 0, source);
    (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    return fd;
}

// Every `message` event the client has received (so far, including skipped ones), by seq.
std::vector<std::int64_t> seqs_of(const std::vector<json>& messages) {
    std::vector<std::int64_t> seqs;
    for (const auto& m : messages) seqs.push_back(m["seq"].get<std::int64_t>());
    return seqs;
}

// One sample of the daemon's /metrics (first series with that name).
double metric_value(std::uint16_t port, const std::string& name) {
    auto reply = http_request(port, "GET", "/metrics");
    REQUIRE(reply.status == 200);
    std::istringstream lines(reply.body);
    for (std::string line; std::getline(lines, line);)
        if (line.rfind(name + " ", 0) == 0 || line.rfind(name + "{", 0) == 0)
            return std::stod(line.substr(line.rfind(' ') + 1));
    FAIL("no metric " << name);
    return 0;
}

}  // namespace

TEST_CASE("happy path: request, offer, accept, chat, calendar, score, inbox queries, end", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}, {"calendar_url", "https://cal.example/ann"},
                            {"avatar_url", "https://img.example/ann.png"}, {"teams", {"sales"}}});
    server.put_agent("a2", {{"name", "Bo"}, {"calendar_url", "https://cal.example/bo"}});
    server.put_route("sales", {{"type", "team"}, {"team", "sales"}});

    auto agent = server.connect_agent("a1");
    CHECK(agent.hello_reply["agent"]["id"] == "a1");
    CHECK(agent.hello_reply["agent"]["name"] == "Ann");
    CHECK(agent.hello_reply["agent"]["max_chats"] == 10);
    CHECK(agent.hello_reply["agent"]["teams"] == json::array({"sales"}));
    CHECK(agent.hello_reply["active"] == json::array());
    CHECK(agent.hello_reply["offers"] == json::array());
    // No schedule: available by schedule. The toggle overrides it until local midnight (UTC here).
    CHECK(agent.hello_reply["availability"] == json({{"available", true}, {"source", "schedule"}, {"until_at", nullptr}}));
    REQUIRE(agent->request({{"type", "set_availability"}, {"id", "off"}, {"available", false}})["type"] == "ok");
    auto availability = agent->expect("availability");
    CHECK(availability["available"] == false);
    CHECK(availability["source"] == "override");
    REQUIRE(availability["until_at"].is_number_integer());
    const auto until = availability["until_at"].get<std::int64_t>();
    CHECK(until % 86'400'000 == 0);
    CHECK(until > now_ms());
    CHECK(until - now_ms() <= 86'400'000);
    REQUIRE(agent->request({{"type", "set_availability"}, {"id", "on"}, {"available", true}})["type"] == "ok");
    availability = agent->expect("availability");
    CHECK(availability["available"] == true);
    CHECK(availability["source"] == "schedule");

    auto visitor = server.connect_visitor({{"name", "Ada"}, {"job_title", "CTO"}, {"email", "ada@x.io"}});
    CHECK(visitor.hello_reply["conversation"].is_null());
    CHECK(visitor.visitor_id.rfind("v_", 0) == 0);
    CHECK_FALSE(visitor.resume_token.empty());

    const auto requested_at = now_ms();
    auto request = visitor->request({{"type", "request_agent"}, {"id", "q"}, {"route", "sales"}, {"client_key", "k-1"}});
    REQUIRE(request["type"] == "ok");
    CHECK(request["state"] == "routing");
    const std::string conversation_id = request["conversation_id"];
    CHECK(conversation_id.rfind("c_", 0) == 0);

    // Idempotent: the same client_key, or any request while one is open, returns the same conversation.
    auto again = visitor->request({{"type", "request_agent"}, {"id", "q2"}, {"route", "sales"}, {"client_key", "k-1"}});
    CHECK(again["conversation_id"] == conversation_id);
    auto other_key =
        visitor->request({{"type", "request_agent"}, {"id", "q3"}, {"route", "sales"}, {"client_key", "k-2"}});
    CHECK(other_key["conversation_id"] == conversation_id);

    auto offer = agent->expect("offer");
    CHECK(offer["conversation_id"] == conversation_id);
    CHECK(offer["route"] == "sales");
    CHECK(offer["visitor"]["id"] == visitor.visitor_id);
    CHECK(offer["visitor"]["name"] == "Ada");
    CHECK(offer["visitor"]["job_title"] == "CTO");
    CHECK(offer["visitor"]["phone"].is_null());
    // Default offer timeout: 45 s from the offer.
    const auto expires_in = offer["expires_at"].get<std::int64_t>() - requested_at;
    CHECK(expires_in >= 44'000);
    CHECK(expires_in <= 46'000);

    auto accepted = agent->request({{"type", "accept"}, {"id", "a"}, {"offer_id", offer["offer_id"]}});
    REQUIRE(accepted["type"] == "ok");
    CHECK(accepted["conversation"]["id"] == conversation_id);
    CHECK(accepted["conversation"]["state"] == "active");
    CHECK(accepted["conversation"]["agent_id"] == "a1");
    CHECK(accepted["messages"] == json::array());
    // Accepting twice is a conflict: the offer is gone.
    auto twice = agent->request({{"type", "accept"}, {"id", "a2"}, {"offer_id", offer["offer_id"]}});
    CHECK(twice["code"] == "conflict");

    auto joined = visitor->expect("agent_joined");
    CHECK(joined["conversation_id"] == conversation_id);
    CHECK(joined["agent"]["id"] == "a1");
    CHECK(joined["agent"]["name"] == "Ann");
    CHECK(joined["agent"]["avatar_url"] == "https://img.example/ann.png");

    // Messages both ways, numbered 1, 2, 3 without gaps.
    auto s1 = chat_server::send_text(*visitor.ws, conversation_id, "hello, anyone?", "m-1");
    REQUIRE(s1["type"] == "ok");
    CHECK(s1["seq"] == 1);
    CHECK(s1["at"].is_number_integer());
    auto m1 = agent->expect("message");
    CHECK(m1["conversation_id"] == conversation_id);
    CHECK(m1["seq"] == 1);
    CHECK(m1["from"] == "visitor");
    CHECK(m1["kind"] == "text");
    CHECK(m1["text"] == "hello, anyone?");
    CHECK(m1["agent_id"].is_null());

    auto s2 = chat_server::send_text(*agent.ws, conversation_id, "Hi Ada, Ann here.", "a-1");
    CHECK(s2["seq"] == 2);
    auto m2 = visitor->expect("message");
    CHECK(m2["seq"] == 2);
    CHECK(m2["from"] == "agent");
    CHECK(m2["agent_id"] == "a1");
    CHECK(m2["text"] == "Hi Ada, Ann here.");

    // Resending a client_msg_id returns the same seq and stores nothing twice.
    auto dup = chat_server::send_text(*visitor.ws, conversation_id, "hello, anyone?", "m-1");
    CHECK(dup["seq"] == 1);

    // Typing is relayed, not stored.
    REQUIRE(visitor->request({{"type", "typing"}, {"id", "t"}, {"conversation_id", conversation_id}, {"on", true}})["type"] ==
            "ok");
    auto typing = agent->expect("typing");
    CHECK(typing["from"] == "visitor");
    CHECK(typing["on"] == true);

    // The agent shares a colleague's calendar: a calendar message to the visitor.
    auto shared = agent->request(
        {{"type", "share_calendar"}, {"id", "k"}, {"conversation_id", conversation_id}, {"agent_id", "a2"}});
    REQUIRE(shared["type"] == "ok");
    CHECK(shared["seq"] == 3);
    auto calendar = visitor->expect("message");
    CHECK(calendar["seq"] == 3);
    CHECK(calendar["kind"] == "calendar");
    CHECK(calendar["calendar"]["agent_id"] == "a2");
    CHECK(calendar["calendar"]["agent_name"] == "Bo");
    CHECK(calendar["calendar"]["booking_url"] == "https://cal.example/bo");
    auto own = agent->request(
        {{"type", "share_calendar"}, {"id", "k2"}, {"conversation_id", conversation_id}, {"agent_id", "a1"}});
    CHECK(own["seq"] == 4);
    CHECK(visitor->expect("message")["calendar"]["booking_url"] == "https://cal.example/ann");
    auto nobody = agent->request(
        {{"type", "share_calendar"}, {"id", "k3"}, {"conversation_id", conversation_id}, {"agent_id", "zz"}});
    CHECK(nobody["code"] == "not_found");

    auto booked = visitor->request({{"type", "meeting_booked"}, {"id", "b"}, {"conversation_id", conversation_id},
                                    {"agent_id", "a2"}, {"start_at", now_ms() + 86'400'000}});
    CHECK(booked["type"] == "ok");
    // Only about one's own conversation, with an agent that exists.
    auto stranger = server.connect_visitor();
    CHECK(stranger->request({{"type", "meeting_booked"}, {"id", "b2"}, {"conversation_id", conversation_id},
                             {"agent_id", "a2"}, {"start_at", now_ms()}})["code"] == "not_found");
    CHECK(visitor->request({{"type", "meeting_booked"}, {"id", "b3"}, {"conversation_id", conversation_id},
                            {"agent_id", "zz"}, {"start_at", now_ms()}})["code"] == "not_found");
    CHECK(visitor->request({{"type", "meeting_booked"}, {"id", "b4"}, {"conversation_id", "c_nope"},
                            {"agent_id", "a2"}, {"start_at", now_ms()}})["code"] == "not_found");

    CHECK(agent->request({{"type", "set_score"}, {"id", "sc"}, {"conversation_id", conversation_id}, {"score", 3}})["type"] ==
          "ok");
    CHECK(agent->request({{"type", "set_score"}, {"id", "sc2"}, {"conversation_id", conversation_id}, {"score", 4}})["code"] ==
          "bad_request");

    // Inbox queries.
    auto active = agent->request({{"type", "list_conversations"}, {"id", "l"}, {"filter", "active"}});
    REQUIRE(active["type"] == "ok");
    REQUIRE(active["conversations"].size() == 1);
    CHECK(active["conversations"][0]["id"] == conversation_id);
    CHECK(active["conversations"][0]["state"] == "active");
    CHECK(active["conversations"][0]["agent_id"] == "a1");
    CHECK(active["conversations"][0]["visitor"]["name"] == "Ada");
    CHECK(active["conversations"][0]["last_message"]["seq"] == 4);
    CHECK(active["next_cursor"].is_null());

    auto card = agent->request({{"type", "get_visitor"}, {"id", "g"}, {"visitor_id", visitor.visitor_id}});
    REQUIRE(card["type"] == "ok");
    CHECK(card["id"] == visitor.visitor_id);
    CHECK(card["name"] == "Ada");
    CHECK(card["job_title"] == "CTO");
    CHECK(card["email"] == "ada@x.io");
    CHECK(card["phone"].is_null());
    CHECK(card["crm_status"].is_null());
    CHECK(agent->request({{"type", "get_visitor"}, {"id", "g2"}, {"visitor_id", "v_nobody"}})["code"] == "not_found");

    auto transcript = agent->request({{"type", "get_transcript"}, {"id", "tr"}, {"conversation_id", conversation_id}});
    REQUIRE(transcript["type"] == "ok");
    REQUIRE(transcript["messages"].size() == 4);
    CHECK(seqs_of(transcript["messages"]) == std::vector<std::int64_t>{1, 2, 3, 4});

    // The visitor ends the chat: both sides are told.
    CHECK(visitor->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", conversation_id}})["type"] == "ok");
    CHECK(visitor->expect("ended")["reason"] == "visitor_ended");
    CHECK(agent->expect("ended")["reason"] == "visitor_ended");
    // The chat has ended: its participants hear conflict, anybody else not_found.
    CHECK(visitor->request({{"type", "end_chat"}, {"id", "e2"}, {"conversation_id", conversation_id}})["code"] ==
          "conflict");
    auto late = chat_server::send_text(*visitor.ws, conversation_id, "still there?", "m-9");
    CHECK(late["code"] == "conflict");
    CHECK(chat_server::send_text(*agent.ws, conversation_id, "bye", "a-9")["code"] == "conflict");
    auto outsider = server.connect_visitor();
    CHECK(outsider->request({{"type", "end_chat"}, {"id", "e3"}, {"conversation_id", conversation_id}})["code"] ==
          "not_found");
    CHECK(chat_server::send_text(*outsider.ws, conversation_id, "hi", "s-1")["code"] == "not_found");

    // Activity history, newest first, recorded by the server itself.
    auto activity = agent->request({{"type", "get_activity"}, {"id", "ac"}, {"visitor_id", visitor.visitor_id}});
    REQUIRE(activity["type"] == "ok");
    std::multiset<std::string> types;
    std::int64_t previous_at = INT64_MAX;
    for (const auto& a : activity["activities"]) {
        types.insert(a["type"].get<std::string>());
        CHECK(a["at"].get<std::int64_t>() <= previous_at);
        previous_at = a["at"];
    }
    for (const char* t : {"chat_requested", "agent_engaged", "calendar_shared", "meeting_booked", "chat_ended"})
        CHECK(types.count(t) >= 1);

    auto all = agent->request({{"type", "list_conversations"}, {"id", "l2"}, {"filter", "all"}});
    REQUIRE(all["conversations"].size() == 1);
    CHECK(all["conversations"][0]["state"] == "ended");
    CHECK(all["conversations"][0]["ended_at"].is_number_integer());
    CHECK(agent->request({{"type", "list_conversations"}, {"id", "l3"}, {"filter", "active"}})["conversations"] ==
          json::array());

    // Transcript download over HTTP, with the admin token or the agent's.
    auto text = server.admin("GET", "/conversations/" + conversation_id + "/transcript.txt");
    CHECK(text.status == 200);
    CHECK(text.headers["Content-Type"].rfind("text/plain", 0) == 0);
    CHECK(text.body.find("hello, anyone?") != std::string::npos);
    CHECK(text.body.find("Hi Ada, Ann here.") != std::string::npos);
    CHECK(text.body.find("https://cal.example/bo") != std::string::npos);
    auto by_agent = http_request(server.port(), "GET", "/v1/tenants/t1/conversations/" + conversation_id + "/transcript.txt",
                                 "", {{"Authorization", "Bearer " + chat_server::agent_token("a1")}});
    CHECK(by_agent.status == 200);
    CHECK(by_agent.body == text.body);
    CHECK(server.admin("GET", "/conversations/c_nope/transcript.txt").status == 404);
    CHECK(http_request(server.port(), "GET", "/v1/tenants/t1/conversations/" + conversation_id + "/transcript.txt")
              .status == 401);
}

// Offer expiry and re-offer, fallback_route and fallback, the 10-chat limit, two tabs racing to
// accept, and the agent's grace period are rules of the tenant core: tests/server/tenant/.

TEST_CASE("visitor reconnects with its resume token and resumes without gaps or duplicates", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales", {{"name", "Ada"}});

    for (int i = 1; i <= 5; ++i) {
        REQUIRE(chat_server::send_text(*visitor.ws, conversation_id, "v" + std::to_string(i), "v-" + std::to_string(i))["type"] == "ok");
        REQUIRE(chat_server::send_text(*agent.ws, conversation_id, "a" + std::to_string(i), "a-" + std::to_string(i))["type"] == "ok");
    }
    for (int i = 0; i < 5; ++i) visitor->expect("message");
    const std::string resume_token = visitor.resume_token;
    const std::string visitor_id = visitor.visitor_id;
    visitor->close();
    visitor.ws.reset();

    // While the visitor is away, the agent writes on.
    for (int i = 6; i <= 8; ++i)
        REQUIRE(chat_server::send_text(*agent.ws, conversation_id, "a" + std::to_string(i), "a-" + std::to_string(i))["seq"] ==
                i + 5);

    auto back = server.connect_visitor(nullptr, resume_token);
    CHECK(back.visitor_id == visitor_id);
    REQUIRE(back.hello_reply["conversation"].is_object());
    CHECK(back.hello_reply["conversation"]["id"] == conversation_id);
    CHECK(back.hello_reply["conversation"]["state"] == "active");
    CHECK(back.hello_reply["conversation"]["last_seq"] == 13);

    // The visitor had seen seq 1..6 (its own and the agent's interleaved); it asks for the rest.
    auto resume = json{{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 6}};
    back->send_json(resume);
    std::vector<json> replayed;
    for (;;) {
        auto frame = back->receive(5s);
        REQUIRE(frame);
        auto j = json::parse(*frame);
        if (j["type"] == "message") replayed.push_back(j);
        else if (j["type"] == "ok" && j["re"] == "r") break;
    }
    CHECK(seqs_of(replayed) == std::vector<std::int64_t>{7, 8, 9, 10, 11, 12, 13});
    CHECK(replayed.back()["text"] == "a8");

    // Live messages continue after the replay; an old client_msg_id is not stored twice.
    CHECK(chat_server::send_text(*back.ws, conversation_id, "v1", "v-1")["seq"] == 1);
    CHECK(chat_server::send_text(*back.ws, conversation_id, "back", "v-6")["seq"] == 14);
    auto transcript = agent->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", conversation_id}});
    std::vector<std::int64_t> expected(14);
    std::iota(expected.begin(), expected.end(), 1);
    CHECK(seqs_of(transcript["messages"]) == expected);

    // A forged resume token is refused: error unauthorized, then close 4401.
    ws_client forged(server.port(), "/v1/visitor");
    auto refused = forged.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t1"}, {"resume_token", resume_token + "x"}});
    CHECK(refused["code"] == "unauthorized");
    CHECK(forged.wait_closed() == 4401);
}

TEST_CASE("a second tenant sees nothing of the first", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    server.put_agent("a1", {{"name", "Other Ann"}}, "t2");
    server.put_route("sales", {{"type", "round_robin"}}, "t2");

    auto agent = server.connect_agent("a1");
    auto visitor = server.connect_visitor({{"name", "Ada"}, {"email", "ada@x.io"}});
    const auto conversation_id = chat_server::request_agent(visitor, "sales");
    auto offer = agent->expect("offer");
    auto intruder = server.connect_agent("a1", true, "t2");
    CHECK(intruder.hello_reply["agent"]["name"] == "Other Ann");
    // An offer of another tenant is unknown to this one: the same answer as an offer that is gone.
    CHECK(intruder->request({{"type", "accept"}, {"id", "x"}, {"offer_id", offer["offer_id"]}})["code"] == "conflict");
    REQUIRE(agent->request({{"type", "accept"}, {"id", "a"}, {"offer_id", offer["offer_id"]}})["type"] == "ok");
    chat_server::send_text(*visitor.ws, conversation_id, "secret", "m-1");
    CHECK(agent->expect("message")["text"] == "secret");

    CHECK(intruder->request({{"type", "list_conversations"}, {"id", "l"}, {"filter", "all"}})["conversations"] ==
          json::array());
    CHECK(intruder->request({{"type", "get_visitor"}, {"id", "g"}, {"visitor_id", visitor.visitor_id}})["code"] ==
          "not_found");
    CHECK(intruder->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", conversation_id}})["code"] ==
          "not_found");
    CHECK(intruder->request({{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}})["code"] ==
          "not_found");
    CHECK(chat_server::send_text(*intruder.ws, conversation_id, "hi", "x")["code"] == "not_found");
    auto activity = intruder->request({{"type", "get_activity"}, {"id", "ac"}, {"visitor_id", visitor.visitor_id}});
    CHECK(activity["activities"] == json::array());
    CHECK_FALSE(intruder->receive(300ms).has_value());

    // Admin API and transcript download with the other tenant's credentials.
    CHECK(server.admin("GET", "/agents", nullptr, "t1", "t2").status == 403);
    CHECK(server.admin("GET", "/conversations/" + conversation_id + "/transcript.txt", nullptr, "t1", "t2").status == 403);
    CHECK(server.admin("GET", "/conversations/" + conversation_id + "/transcript.txt", nullptr, "t2").status == 404);
    auto with_t2_agent = http_request(server.port(), "GET", "/v1/tenants/t1/conversations/" + conversation_id + "/transcript.txt",
                                      "", {{"Authorization", "Bearer " + chat_server::agent_token("a1", "t2")}});
    CHECK(with_t2_agent.status == 403);

    // A t2 visitor on route "sales" reaches t2's agent only.
    auto other_visitor = server.connect_visitor(nullptr, {}, "t2");
    chat_server::request_agent(other_visitor, "sales");
    CHECK(intruder->expect("offer")["visitor"]["id"] == other_visitor.visitor_id);
    CHECK_FALSE(agent->receive(300ms).has_value());
    // A t1 resume token does not open a t2 session as that visitor.
    ws_client cross(server.port(), "/v1/visitor");
    auto refused =
        cross.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t2"}, {"resume_token", visitor.resume_token}});
    CHECK(refused["code"] == "unauthorized");
    CHECK(cross.wait_closed() == 4401);
}

TEST_CASE("authentication: bad tokens close 4401, no hello closes 4408, binary 1003, oversized 1009", "[e2e]") {
    chat_server server("[limits]\nhello_timeout_s = 1\n");
    server.put_agent("a1", {{"name", "Ann"}});

    {
        ws_client c(server.port(), "/v1/agent");
        c.send_json({{"type", "hello"}, {"id", "h"}, {"token", "not-a-jwt"}});
        CHECK(c.wait_closed() == 4401);
    }
    {
        ws_client c(server.port(), "/v1/agent");  // signed with another tenant's secret
        c.send_json({{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("a1", "t1", agent_secret_of("t2"))}});
        CHECK(c.wait_closed() == 4401);
    }
    {
        ws_client c(server.port(), "/v1/agent");  // expired
        auto expired = parley::server::mint_agent_token(agent_secret_of("t1"), "t1", "a1", std::chrono::seconds(1),
                                                        std::chrono::system_clock::now() - std::chrono::hours(2));
        c.send_json({{"type", "hello"}, {"id", "h"}, {"token", expired}});
        CHECK(c.wait_closed() == 4401);
    }
    {
        ws_client c(server.port(), "/v1/agent");  // valid token, unknown agent
        c.send_json({{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("ghost")}});
        CHECK(c.wait_closed() == 4401);
    }
    {
        ws_client c(server.port(), "/v1/visitor");  // unknown tenant
        c.send_json({{"type", "hello"}, {"id", "h"}, {"tenant", "nope"}});
        auto code = c.wait_closed();
        CHECK((code == 4401 || code == 1008));
    }
    {
        ws_client c(server.port(), "/v1/visitor");
        CHECK(c.wait_closed(5s) == 4408);
    }
    {
        ws_client c(server.port(), "/v1/visitor");
        c.send_binary("\x01\x02");
        CHECK(c.wait_closed() == 1003);
    }
    {
        ws_client c(server.port(), "/v1/visitor");
        c.send_text(std::string(70'000, 'x'));
        CHECK(c.wait_closed() == 1009);
    }
    {
        // A request before hello is refused, but the connection stays for the hello.
        ws_client c(server.port(), "/v1/agent");
        auto early = c.request({{"type", "list_conversations"}, {"id", "l"}});
        CHECK(early["type"] == "error");
        CHECK(early["code"] == "unauthorized");
        auto hello = c.request({{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("a1")}});
        CHECK(hello["type"] == "ok");
    }
}

TEST_CASE("bad frames get the right error code and the connection survives", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");

    struct bad_case {
        const char* frame;
        const char* code;
        bool has_re;
    };
    const std::vector<bad_case> visitor_cases{
        {"{not json", "bad_request", false},
        {"[1,2,3]", "bad_request", false},
        {R"({"id":"r1"})", "bad_request", true},
        {R"({"type":42,"id":"r1"})", "bad_request", true},
        {R"({"type":"fly","id":"r1"})", "unknown_type", true},
        {R"({"type":"accept","id":"r1","offer_id":"o"})", "forbidden", true},
        {R"({"type":"send","id":"r1","conversation_id":"c"})", "bad_request", true},
        {R"({"type":"send","id":"r1","conversation_id":42,"text":"x"})", "bad_request", true},
        {R"({"type":"send","id":"r1","conversation_id":"c","text":""})", "bad_request", true},
        {R"({"type":"typing","id":"r1","conversation_id":"c","on":"yes"})", "bad_request", true},
        {R"({"type":"resume","id":"r1","conversation_id":"c","after_seq":-1})", "bad_request", true},
        {R"({"type":"request_agent","id":"r1","route":"bad route!"})", "bad_request", true},
        {R"({"type":"hello","id":"r1","tenant":"t1"})", "bad_request", true},
        {R"({"type":"send","id":"r1","conversation_id":"c_nope","text":"x"})", "not_found", true},
    };
    for (const auto& c : visitor_cases) {
        INFO(c.frame);
        visitor->send_text(c.frame);
        auto reply = visitor->expect("error");
        CHECK(reply["code"] == c.code);
        CHECK(reply["message"].is_string());
        CHECK(reply.contains("re") == c.has_re);
    }
    auto too_long = chat_server::send_text(*visitor.ws, conversation_id, std::string(4001, 'x'), "big");
    CHECK(too_long["code"] == "too_large");
    const std::vector<bad_case> agent_cases{
        {R"({"type":"request_agent","id":"r1","route":"sales"})", "forbidden", true},
        {R"({"type":"set_score","id":"r1","conversation_id":"c","score":9})", "bad_request", true},
        {R"({"type":"list_conversations","id":"r1","limit":1000})", "bad_request", true},
        {R"({"type":"list_conversations","id":"r1","filter":"some"})", "bad_request", true},
        {R"({"type":"accept","id":"r1","offer_id":"o_nope"})", "conflict", true},
        {R"({"type":"get_transcript","id":"r1"})", "bad_request", true},
    };
    for (const auto& c : agent_cases) {
        INFO(c.frame);
        agent->send_text(c.frame);
        CHECK(agent->expect("error")["code"] == c.code);
    }
    // Both connections still work.
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, "still here", "m-1")["seq"] == 1);
    CHECK(agent->expect("message")["text"] == "still here");
    CHECK_FALSE(visitor->closed());
    CHECK_FALSE(agent->closed());
}

TEST_CASE("rate limit: frames past the burst get rate_limited, sustained abuse closes 1008", "[e2e]") {
    chat_server server("[limits]\nframes_per_second = 1\nframe_burst = 5\nabuse_close_after = 20\n");
    auto visitor = server.connect_visitor();  // hello used one token
    int limited = 0;
    for (int i = 0; i < 8; ++i) {
        auto reply = visitor->request({{"type", "typing"}, {"id", "t" + std::to_string(i)}, {"conversation_id", "c"}, {"on", true}});
        limited += reply["code"] == "rate_limited";
    }
    CHECK(limited >= 3);
    CHECK_FALSE(visitor->closed());
    for (int i = 0; i < 40; ++i) visitor->send_json({{"type", "typing"}, {"conversation_id", "c"}, {"on", true}});
    CHECK(visitor->wait_closed() == 1008);
}

// Messages stored while a resume replays pages from storage must neither overtake the replay nor
// come twice: the client sees every seq exactly once, in order.
TEST_CASE("messages sent during a long resume follow the replay in seq order, none twice", "[e2e]") {
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");
    const std::string resume_token = visitor.resume_token;
    visitor->close();
    visitor.ws.reset();

    // Five pages of replay (200 messages each) are waiting when the visitor comes back.
    constexpr int stored_before = 1000, sent_during = 100;
    chat_server::send_numbered(*agent.ws, conversation_id, stored_before, "before", "b-");

    auto back = server.connect_visitor(nullptr, resume_token);
    back->send_json({{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    // The agent writes on at once, while the replay runs.
    for (int i = 1; i <= sent_during; ++i)
        agent->send_json({{"type", "send"}, {"id", "d" + std::to_string(i)}, {"conversation_id", conversation_id},
                          {"text", "during " + std::to_string(i)}, {"client_msg_id", "d-" + std::to_string(i)}});
    REQUIRE(agent->expect("ok", 10s, "d" + std::to_string(sent_during))["seq"] == stored_before + sent_during);

    std::vector<std::int64_t> seen;
    bool ok_seen = false;
    while (seen.size() < static_cast<std::size_t>(stored_before + sent_during)) {
        auto frame = back->receive(10s);
        REQUIRE(frame);
        auto j = json::parse(*frame);
        if (j["type"] == "ok" && j["re"] == "r") ok_seen = true;
        if (j["type"] == "message") seen.push_back(j["seq"].get<std::int64_t>());
    }
    std::vector<std::int64_t> expected(stored_before + sent_during);
    std::iota(expected.begin(), expected.end(), 1);
    CHECK(seen == expected);
    if (!ok_seen) CHECK(back->expect("ok", 10s, "r")["re"] == "r");
    CHECK_FALSE(back->receive(300ms).has_value());  // and nothing after: no duplicates
}

TEST_CASE("several resumes on one session each replay in full and each get their ok", "[e2e]") {
    // A small outbound queue, so each replay page waits in the session for room.
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\noutbound_max_frames = 16\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto first = server.start_chat(agent, "sales");
    auto second = server.start_chat(agent, "sales");

    // Three pages of history in each chat, written by the visitors.
    constexpr int stored = 600;
    for (auto* chat : {&first, &second})
        chat_server::send_numbered(*chat->visitor.ws, chat->conversation_id, stored, "m", "m-");

    // A second tab of the agent resumes both chats at once, the first one twice.
    auto tab = server.connect_agent("a1", false);
    tab->send_json({{"type", "resume"}, {"id", "r1"}, {"conversation_id", first.conversation_id}, {"after_seq", 0}});
    tab->send_json({{"type", "resume"}, {"id", "r2"}, {"conversation_id", second.conversation_id}, {"after_seq", 0}});
    tab->send_json({{"type", "resume"}, {"id", "r3"}, {"conversation_id", first.conversation_id}, {"after_seq", 500}});

    std::map<std::string, std::vector<std::int64_t>> seen;
    std::set<std::string> oks;
    while (oks.size() < 3) {
        auto frame = tab->receive(10s);
        REQUIRE(frame);
        auto j = json::parse(*frame);
        if (j["type"] == "ok") oks.insert(j["re"].get<std::string>());
        if (j["type"] == "message") seen[j["conversation_id"].get<std::string>()].push_back(j["seq"].get<std::int64_t>());
    }
    std::vector<std::int64_t> all(stored), tail(stored - 500);
    std::iota(all.begin(), all.end(), 1);
    std::iota(tail.begin(), tail.end(), 501);
    auto expected_first = all;
    expected_first.insert(expected_first.end(), tail.begin(), tail.end());
    CHECK(seen[second.conversation_id] == all);
    CHECK(seen[first.conversation_id] == expected_first);
    CHECK_FALSE(tab->receive(300ms).has_value());
}

TEST_CASE("resumes answer in the order they came, also those that check a past chat in storage", "[e2e]") {
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto past = server.start_chat(agent, "sales");
    auto open = server.start_chat(agent, "sales");
    constexpr int stored = 50;
    for (auto* chat : {&past, &open})
        chat_server::send_numbered(*chat->visitor.ws, chat->conversation_id, stored, "m", "m-");
    REQUIRE(past.visitor->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", past.conversation_id}})
                ["type"] == "ok");
    agent->expect("ended");

    auto tab = server.connect_agent("a1", false);
    tab->send_json({{"type", "resume"}, {"id", "r-past"}, {"conversation_id", past.conversation_id}, {"after_seq", 0}});
    tab->send_json({{"type", "resume"}, {"id", "r-none"}, {"conversation_id", "c_nope"}, {"after_seq", 0}});
    tab->send_json({{"type", "resume"}, {"id", "r-open"}, {"conversation_id", open.conversation_id}, {"after_seq", 0}});
    std::vector<std::string> order;  // each reply, and each run of one chat's messages
    while (order.empty() || order.back() != "r-open") {
        auto frame = tab->receive(10s);
        REQUIRE(frame);
        auto j = json::parse(*frame);
        if (j["type"] == "message") {
            const auto chat = j["conversation_id"].get<std::string>() == past.conversation_id ? "past" : "open";
            if (order.empty() || order.back() != chat) order.push_back(chat);
        } else if (j.contains("re")) {
            order.push_back(j["re"].get<std::string>());
            if (j["re"] == "r-none") CHECK(j["code"] == "not_found");
        }
    }
    CHECK(order == std::vector<std::string>{"past", "r-past", "r-none", "open", "r-open"});
}

TEST_CASE("a slow consumer is closed with 1013 and resumes without losing anything", "[e2e]") {
    chat_server server(
        "[limits]\nframes_per_second = 100000\nframe_burst = 100000\noutbound_max_bytes = 65536\n"
        "outbound_max_frames = 64\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");

    visitor->pause_reading();
    const std::string text(3900, 'z');
    std::int64_t last_seq = 0;
    // The kernel's socket buffers absorb a few MB first; then the server's queue fills and it
    // closes the visitor (metrics say when; the close frame waits behind what the kernel holds).
    bool closed_by_server = false;
    for (int i = 0; i < 6000 && !closed_by_server; ++i) {
        auto ok = chat_server::send_text(*agent.ws, conversation_id, text, "a-" + std::to_string(i));
        REQUIRE(ok["type"] == "ok");
        last_seq = ok["seq"];
        if (i % 50 == 49) closed_by_server = metric_value(server.port(), "parley_slow_consumer_closes_total") >= 1;
    }
    REQUIRE(closed_by_server);
    auto code = visitor->wait_closed(10s);
    CHECK(code == 1013);
    CHECK_FALSE(agent->closed());
    // The agent is unaffected and writes on while the visitor is away.
    for (int i = 0; i < 3; ++i)
        last_seq = chat_server::send_text(*agent.ws, conversation_id, "after", "b-" + std::to_string(i))["seq"];

    auto back = server.connect_visitor(nullptr, visitor.resume_token);
    back->send_json({{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    std::int64_t expected = 1;
    for (;;) {
        auto frame = back->receive(10s);
        REQUIRE(frame);
        auto j = json::parse(*frame);
        if (j["type"] == "ok" && j["re"] == "r") break;
        if (j["type"] != "message") continue;
        REQUIRE(j["seq"] == expected);
        ++expected;
    }
    CHECK(expected - 1 == last_seq);
}

TEST_CASE("visitor_token: a tenant-signed visitor whose claims win over the widget's profile", "[e2e]") {
    chat_server server(
        "[tenants.t3]\nallow_anonymous = false\nadmin_token = \"t3-admin-token-0123456789\"\n"
        "agent_secret = \"t3-agent-secret-0123456789\"\nwidget_secret = \"t3-widget-secret-0123456789\"\n");
    server.put_agent("a1", {{"name", "Ann"}}, "t3");
    server.put_route("sales", {{"type", "round_robin"}}, "t3");
    auto agent = server.connect_agent("a1", true, "t3");

    auto token = parley::server::mint_visitor_token("t3-widget-secret-0123456789", "t3", "crm-42",
                                                    {{"name", "Grace Hopper"}, {"crm_status", "Customer"}},
                                                    std::chrono::hours(1), std::chrono::system_clock::now());
    ws_client widget(server.port(), "/v1/visitor");
    auto hello = widget.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t3"}, {"visitor_token", token},
                                 {"profile", {{"name", "Somebody Else"}, {"email", "grace@navy.mil"}}}});
    REQUIRE(hello["type"] == "ok");
    CHECK(hello["visitor_id"] == "crm-42");
    // On a tenant that requires visitor tokens, the resume token ends when the visitor token
    // does (an hour), not 30 days later; resuming with it does not extend it either.
    const auto token_expires = std::chrono::duration_cast<std::chrono::seconds>(
                                   (std::chrono::system_clock::now() + std::chrono::hours(1)).time_since_epoch())
                                   .count();
    auto resume = parley::server::verify_resume_token("t3-widget-secret-0123456789", "t3", hello["resume_token"],
                                                      std::chrono::system_clock::now());
    REQUIRE(resume);
    CHECK(resume->expires_at_s <= token_expires);
    CHECK(resume->expires_at_s >= token_expires - 60);
    {
        ws_client back(server.port(), "/v1/visitor");
        auto again = back.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t3"}, {"resume_token", hello["resume_token"]}});
        REQUIRE(again["type"] == "ok");
        auto renewed = parley::server::verify_resume_token("t3-widget-secret-0123456789", "t3", again["resume_token"],
                                                           std::chrono::system_clock::now());
        REQUIRE(renewed);
        CHECK(renewed->expires_at_s <= resume->expires_at_s);
    }
    auto request = widget.request({{"type", "request_agent"}, {"id", "q"}, {"route", "sales"}});
    REQUIRE(request["type"] == "ok");
    auto offer = agent->expect("offer");
    CHECK(offer["visitor"]["id"] == "crm-42");
    CHECK(offer["visitor"]["name"] == "Grace Hopper");
    CHECK(offer["visitor"]["crm_status"] == "Customer");
    CHECK(offer["visitor"]["email"] == "grace@navy.mil");

    // The same tenant refuses anonymous widgets and tokens signed with another key.
    ws_client anonymous(server.port(), "/v1/visitor");
    CHECK(anonymous.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t3"}})["code"] == "unauthorized");
    CHECK(anonymous.wait_closed() == 4401);
    ws_client forged(server.port(), "/v1/visitor");
    auto wrong_key = parley::server::mint_visitor_token("t1-widget-secret-0123456789", "t3", "crm-42", {},
                                                        std::chrono::hours(1), std::chrono::system_clock::now());
    forged.send_json({{"type", "hello"}, {"id", "h"}, {"tenant", "t3"}, {"visitor_token", wrong_key}});
    CHECK(forged.wait_closed() == 4401);

    // A visitor token must say when it expires and which tenant it is for (#17): one without
    // either is refused, however well signed.
    const auto in_an_hour = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
        (std::chrono::system_clock::now() + std::chrono::hours(1)).time_since_epoch()).count());
    for (const auto& [claims, why] : std::vector<std::pair<std::string, std::string>>{
             {R"({"sub":"crm-42","tenant":"t3"})", "token lacks sub, tenant or exp"},
             {R"({"sub":"crm-42","exp":)" + in_an_hour + "}", "visitor_token: the tenant claim is required"}}) {
        ws_client careless(server.port(), "/v1/visitor");
        auto refused = careless.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t3"},
                                         {"visitor_token", signed_token(claims.c_str(), JWT_ALG_HS256, "t3-widget-secret-0123456789")}});
        INFO(claims);
        CHECK(refused["code"] == "unauthorized");
        CHECK(refused["message"].get<std::string>().find(why) != std::string::npos);
        CHECK(careless.wait_closed() == 4401);
    }
    ws_client careful(server.port(), "/v1/visitor");
    CHECK(careful.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t3"},
                           {"visitor_token", signed_token((R"({"sub":"crm-42","tenant":"t3","exp":)" + in_an_hour + "}").c_str(),
                                                          JWT_ALG_HS256, "t3-widget-secret-0123456789")}})["type"] == "ok");
}

TEST_CASE("a queue route: FIFO with live positions, drained the moment capacity frees", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}, {"max_chats", 1}});
    server.put_route("support", {{"type", "round_robin"}, {"queue_wait_s", 300}});
    auto agent = server.connect_agent("a1");
    auto first = server.connect_visitor();
    const auto first_id = chat_server::request_agent(first, "support");
    chat_server::accept_next_offer(agent);
    first->expect("agent_joined");

    auto second = server.connect_visitor();
    auto second_reply = second->request({{"type", "request_agent"}, {"id", "q"}, {"route", "support"}});
    CHECK(second_reply["state"] == "queued");
    CHECK(second->expect("queued")["position"] == 1);
    auto third = server.connect_visitor();
    chat_server::request_agent(third, "support");
    CHECK(third->expect("queued")["position"] == 2);
    CHECK(agent->request({{"type", "list_conversations"}, {"id", "l"}})["conversations"].size() == 1);
    CHECK(parley::test::http_request(server.port(), "GET", "/metrics").body.find("parley_queue_depth") !=
          std::string::npos);

    // a1 ends the first chat: the second is offered at once, the third moves up.
    REQUIRE(agent->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", first_id}})["type"] == "ok");
    auto offer = agent->expect("offer", 2s);
    CHECK(offer["conversation_id"] == second_reply["conversation_id"]);
    CHECK(third->expect("queued", 2s)["position"] == 1);
}

// routing.visitor_grace_s: a waiting visitor whose last connection closes keeps its place for the
// grace (a page navigation, a second tab), then stops holding it: the queue moves up, an offer
// made for it is withdrawn with visitor_left.
TEST_CASE("a peer that stops answering pings is dropped; one that reads stays", "[e2e]") {
    chat_server server("[limits]\nping_interval_s = 1\npeer_silence_timeout_s = 3\n");
    server.put_agent("a1", {{"name", "Ann"}});
    auto silent = server.connect_agent("a1");
    auto alive = server.connect_visitor();
    silent->pause_reading();  // no reads: pings go unanswered
    // The live client keeps reading (and so answering pings) for 5 s.
    CHECK_FALSE(alive->receive(5s).has_value());
    CHECK_FALSE(alive->closed());
    silent->resume_reading();
    CHECK_FALSE(silent->receive(2s).has_value());
    CHECK(silent->closed());
}

TEST_CASE("HTTP limits: oversized body 413, bad admin input 400 with a reason", "[e2e]") {
    chat_server server("[limits]\nhttp_body_max_bytes = 1024\n");
    auto big = server.admin("PUT", "/agents/a1", {{"name", std::string(2000, 'x')}});
    CHECK(big.status == 413);
    auto bad = server.admin("PUT", "/agents/a1", {{"name", "Ann"}, {"max_chats", 11}});
    CHECK(bad.status == 400);
    CHECK(bad.json()["code"] == "bad_request");
    CHECK(bad.json()["message"].get<std::string>().find("max_chats") != std::string::npos);
    auto garbage = http_request(server.port(), "PUT", "/v1/tenants/t1/routes/r", "{nope",
                                {{"Authorization", "Bearer " + admin_token_of("t1")}});
    CHECK(garbage.status == 400);
    CHECK(server.admin("PUT", "/routes/r", {{"type", "team"}}).status == 400);
    CHECK(http_request(server.port(), "GET", "/v1/tenants/t1/agents").status == 401);
    CHECK(http_request(server.port(), "GET", "/v1/tenants/t1/agents", "", {{"Authorization", "Bearer wrong"}}).status ==
          401);
    CHECK(server.admin("DELETE", "/agents/ghost").status == 404);
    CHECK(http_request(server.port(), "GET", "/healthz").status == 200);
}

TEST_CASE("list_conversations pages through the tenant's history, newest first; visitor_left withdraws an offer",
          "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
        auto [visitor, id] = server.start_chat(agent, "sales");
        ids.push_back(id);
        REQUIRE(visitor->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", id}})["type"] == "ok");
        std::this_thread::sleep_for(5ms);  // distinct started_at
    }
    std::vector<std::string> listed;
    json cursor = nullptr;
    for (int page = 0; page < 10; ++page) {
        json request{{"type", "list_conversations"}, {"id", "l" + std::to_string(page)}, {"filter", "all"}, {"limit", 2}};
        if (!cursor.is_null()) request["cursor"] = cursor;
        auto reply = agent->request(request);
        REQUIRE(reply["type"] == "ok");
        CHECK(reply["conversations"].size() <= 2);
        for (const auto& c : reply["conversations"]) listed.push_back(c["id"]);
        cursor = reply["next_cursor"];
        if (cursor.is_null()) break;
    }
    CHECK(listed == std::vector<std::string>(ids.rbegin(), ids.rend()));
    CHECK(agent->request({{"type", "list_conversations"}, {"id", "bad"}, {"filter", "all"}, {"cursor", "garbage"}})["code"] ==
          "bad_request");

    // The visitor leaves while the offer is pending: the agent sees it withdrawn (visitor_left).
    auto visitor = server.connect_visitor();
    auto id = chat_server::request_agent(visitor, "sales", "k-left");
    auto offer = agent->expect("offer");
    REQUIRE(visitor->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", id}})["type"] == "ok");
    auto withdrawn = agent->expect("offer_withdrawn");
    CHECK(withdrawn["offer_id"] == offer["offer_id"]);
    CHECK(withdrawn["reason"] == "visitor_left");
    CHECK(agent->request({{"type", "accept"}, {"id", "late"}, {"offer_id", offer["offer_id"]}})["code"] == "conflict");
}

TEST_CASE("transcript.txt keeps a message's line breaks and control characters from forging lines", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}, {"teams", {"t"}}});
    server.put_route("sales", {{"type", "team"}, {"team", "t"}});
    auto a1 = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(a1, "sales");

    const std::string forged = "[2026-01-01 00:00:00 UTC] #7 agent a1: refund approved";
    int n = 0;
    for (const std::string separator : {"\n", "\r\n", "\r", "\u2028", "\u0085"}) {
        INFO(++n);
        auto sent = chat_server::send_text(*visitor.ws, conversation_id, "thanks" + separator + forged,
                                           "m-" + std::to_string(n));
        REQUIRE(sent["type"] == "ok");
    }
    REQUIRE(chat_server::send_text(*visitor.ws, conversation_id, std::string("bell\x07") + "\x1b[2J", "m-ctl")["type"] ==
            "ok");

    auto text = server.admin("GET", "/conversations/" + conversation_id + "/transcript.txt");
    REQUIRE(text.status == 200);
    CHECK(text.headers["X-Content-Type-Options"] == "nosniff");
    std::istringstream lines(text.body);
    int message_lines = 0, continuation_lines = 0;
    for (std::string line; std::getline(lines, line);) {
        INFO(line);
        CHECK(line.find(forged) != 0);  // no line of the export is the forged one
        if (line.rfind("    " + forged, 0) == 0) ++continuation_lines;
        if (line.rfind("[", 0) == 0) ++message_lines;
        CHECK(line.find('\r') == std::string::npos);
    }
    CHECK(continuation_lines == 5);
    CHECK(message_lines == 6);
    CHECK(text.body.find("bell\\x07\\x1B[2J") != std::string::npos);

    // An agent's token reads it; a well-signed token of an agent that does not exist does not.
    const std::string path = "/v1/tenants/t1/conversations/" + conversation_id + "/transcript.txt";
    CHECK(http_request(server.port(), "GET", path, "", {{"Authorization", "Bearer " + chat_server::agent_token("a1")}})
              .status == 200);
    auto ghost = http_request(server.port(), "GET", path, "", {{"Authorization", "Bearer " + chat_server::agent_token("ghost")}});
    CHECK(ghost.status == 401);
    CHECK(ghost.body.find("a1") == std::string::npos);
}

TEST_CASE("visitor and agent each have their own client_msg_id space", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");

    // An anonymous visitor (no profile) still has a card, all null.
    auto card = agent->request({{"type", "get_visitor"}, {"id", "g"}, {"visitor_id", visitor.visitor_id}});
    CHECK(card["type"] == "ok");
    CHECK(card["id"] == visitor.visitor_id);
    CHECK(card["name"].is_null());
    CHECK(card["email"].is_null());

    auto from_visitor = chat_server::send_text(*visitor.ws, conversation_id, "from the visitor", "m-1");
    REQUIRE(from_visitor["type"] == "ok");
    CHECK(agent->expect("message")["text"] == "from the visitor");
    // The agent's own m-1 is a new message, not the visitor's.
    auto from_agent = chat_server::send_text(*agent.ws, conversation_id, "from the agent", "m-1");
    REQUIRE(from_agent["type"] == "ok");
    CHECK(from_agent["seq"] == from_visitor["seq"].get<std::int64_t>() + 1);
    CHECK(visitor->expect("message")["text"] == "from the agent");
    // Resends still return each sender's own seq and store nothing.
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, "from the visitor", "m-1")["seq"] == from_visitor["seq"]);
    CHECK(chat_server::send_text(*agent.ws, conversation_id, "from the agent", "m-1")["seq"] == from_agent["seq"]);
    auto transcript = agent->request({{"type", "get_transcript"}, {"id", "tr"}, {"conversation_id", conversation_id}});
    REQUIRE(transcript["messages"].size() == 2);
    CHECK_FALSE(visitor->receive(200ms).has_value());
}

TEST_CASE("a resend of an old client_msg_id, past what the server keeps in memory, still returns its seq", "[e2e]") {
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");
    constexpr int sent = 1100;  // more than the 1024 ids a conversation keeps in memory
    chat_server::send_numbered(*visitor.ws, conversation_id, sent, "m", "m-");
    auto resent = chat_server::send_text(*visitor.ws, conversation_id, "m 1", "m-1");
    REQUIRE(resent["type"] == "ok");
    CHECK(resent["seq"] == 1);
    auto next = chat_server::send_text(*visitor.ws, conversation_id, "new", "m-new");
    CHECK(next["seq"] == sent + 1);  // the resend took no seq
}

TEST_CASE("a transcript longer than one frame neither closes the agent's session nor is cut silently", "[e2e]") {
    chat_server server("[limits]\noutbound_max_bytes = 8192\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto visitor = server.connect_visitor();
    auto conversation_id = chat_server::request_agent(visitor, "sales");
    // The visitor writes 10 kB while the offer waits.
    for (int i = 1; i <= 10; ++i)
        REQUIRE(chat_server::send_text(*visitor.ws, conversation_id, std::string(1000, 'a' + i), "m-" + std::to_string(i))
                    ["type"] == "ok");

    auto accepted = chat_server::accept_next_offer(agent);
    auto messages = accepted["messages"];
    REQUIRE_FALSE(messages.empty());
    CHECK(messages.size() < 10);
    CHECK(messages.back()["seq"] == 10);  // the latest ones
    CHECK(messages.front()["seq"].get<std::int64_t>() > 1);

    auto transcript = agent->request({{"type", "get_transcript"}, {"id", "tr"}, {"conversation_id", conversation_id}});
    CHECK(transcript["type"] == "error");
    CHECK(transcript["code"] == "too_large");
    CHECK_THAT(transcript["message"].get<std::string>(), Catch::Contains("limit"));
    // Still connected; pages read all of it, each page within half the session's queue (4096 bytes).
    std::vector<std::int64_t> paged;
    std::int64_t after_seq = 0;
    for (int page = 0; page < 20; ++page) {
        auto reply = agent->request({{"type", "get_transcript"}, {"id", "p" + std::to_string(page)},
                                     {"conversation_id", conversation_id}, {"after_seq", after_seq}, {"limit", 100}});
        INFO(reply.dump());
        REQUIRE(reply["type"] == "ok");
        CHECK(reply.dump().size() <= 4096);
        REQUIRE_FALSE(reply["messages"].empty());
        for (const auto& m : reply["messages"]) paged.push_back(m["seq"]);
        if (reply["next_after_seq"].is_null()) break;
        CHECK(reply["messages"].size() < 10);  // cut by size, not by the limit
        CHECK(reply["next_after_seq"] == paged.back());
        after_seq = reply["next_after_seq"];
    }
    CHECK(paged == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
    // And resume reads all of it.
    agent->send_json({{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    std::vector<std::int64_t> seen;
    for (;;) {
        auto frame = agent->receive(10s);
        REQUIRE(frame);
        auto j = json::parse(*frame);
        if (j["type"] == "ok") break;
        if (j["type"] == "message") seen.push_back(j["seq"]);
    }
    CHECK(seen == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

TEST_CASE("get_transcript pages: after_seq and limit, in order, no gaps, next_after_seq null at the end", "[e2e]") {
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");
    constexpr int sent = 25;
    chat_server::send_numbered(*visitor.ws, conversation_id, sent, "m", "m-");
    std::vector<std::int64_t> all(sent);
    std::iota(all.begin(), all.end(), 1);

    int request_number = 0;
    auto page = [&](std::int64_t after_seq, int limit) {
        auto reply = agent->request({{"type", "get_transcript"}, {"id", "t" + std::to_string(++request_number)},
                                     {"conversation_id", conversation_id}, {"after_seq", after_seq}, {"limit", limit}});
        INFO(reply.dump());
        REQUIRE(reply["type"] == "ok");
        REQUIRE(reply.contains("next_after_seq"));
        return reply;
    };
    // Reads every page from the start; returns the seqs in the order they came and the page count.
    auto read_all = [&](int limit) {
        std::vector<std::int64_t> seen;
        int pages = 0;
        std::int64_t after_seq = 0;
        for (;;) {
            auto reply = page(after_seq, limit);
            ++pages;
            REQUIRE(reply["messages"].size() <= static_cast<std::size_t>(limit));
            for (const auto& m : reply["messages"]) {
                CHECK(m["text"] == "m " + std::to_string(m["seq"].get<std::int64_t>()));
                seen.push_back(m["seq"]);
            }
            if (reply["next_after_seq"].is_null()) break;
            REQUIRE(reply["next_after_seq"] == seen.back());
            after_seq = reply["next_after_seq"];
        }
        return std::pair{seen, pages};
    };
    CHECK(read_all(10) == std::pair{all, 3});
    CHECK(read_all(5) == std::pair{all, 5});  // the page that ends the transcript says so: no empty page after it
    CHECK(read_all(1000) == std::pair{all, 1});

    auto tail = page(20, 100);
    CHECK(seqs_of(tail["messages"]) == std::vector<std::int64_t>{21, 22, 23, 24, 25});
    CHECK(tail["next_after_seq"].is_null());
    auto past_the_end = page(25, 10);
    CHECK(past_the_end["messages"] == json::array());
    CHECK(past_the_end["next_after_seq"].is_null());

    // Without limit, as protocol v1 was first written: all of it (after after_seq), complete.
    auto whole = agent->request({{"type", "get_transcript"}, {"id", "w"}, {"conversation_id", conversation_id}});
    REQUIRE(whole["type"] == "ok");
    CHECK(seqs_of(whole["messages"]) == all);
    CHECK(whole["next_after_seq"].is_null());
    auto rest = agent->request(
        {{"type", "get_transcript"}, {"id", "w2"}, {"conversation_id", conversation_id}, {"after_seq", 23}});
    CHECK(seqs_of(rest["messages"]) == std::vector<std::int64_t>{24, 25});

    auto too_many = agent->request(
        {{"type", "get_transcript"}, {"id", "x"}, {"conversation_id", conversation_id}, {"limit", 1001}});
    CHECK(too_many["code"] == "bad_request");
    auto unknown = agent->request({{"type", "get_transcript"}, {"id", "u"}, {"conversation_id", "c_nope"}, {"limit", 10}});
    CHECK(unknown["code"] == "not_found");
}

TEST_CASE("get_transcript replies to a client that reads nothing wait their turn instead of closing it", "[e2e]") {
    // Each reply is about 32 kB, half of the session's queue; 300 of them are more than the
    // socket buffers hold, so the replies queue up in the server while the client does not read.
    chat_server server(
        "[limits]\nframes_per_second = 100000\nframe_burst = 100000\noutbound_max_bytes = 65536\n"
        "max_transcript_reads_per_tenant = 1000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");
    for (int i = 1; i <= 8; ++i)
        REQUIRE(chat_server::send_text(*visitor.ws, conversation_id, std::string(3800, 'a' + i), "m-" + std::to_string(i))
                    ["type"] == "ok");

    auto tab = server.connect_agent("a1", false);
    tab->pause_reading();
    constexpr int requests = 300;
    for (int i = 0; i < requests; ++i)
        tab->send_json({{"type", "get_transcript"}, {"id", "t" + std::to_string(i)}, {"conversation_id", conversation_id}});
    tab->resume_reading();
    std::set<std::string> answered;
    while (answered.size() < requests) {
        auto frame = tab->receive(20s);
        if (!frame) break;
        auto j = json::parse(*frame);
        if (!j.contains("re")) continue;
        INFO(j.dump().substr(0, 200));
        REQUIRE(j["type"] == "ok");
        REQUIRE(j["messages"].size() == 8);
        answered.insert(j["re"].get<std::string>());
    }
    CHECK(answered.size() == requests);
    CHECK_FALSE(tab->closed());
}

TEST_CASE("frames sent right behind a returning visitor's hello wait for it and see the stored card", "[e2e]") {
    chat_server server;
    server.put_agent("vip", {{"name", "Vi"}});
    server.put_agent("other", {{"name", "Ot"}});
    server.put_route("web", {{"type", "rules"},
                             {"rules", {{{"priority", 1},
                                         {"when", {{"field", "crm_status"}, {"op", "equals"}, {"value", "Customer"}}},
                                         {"agents", {"vip"}}},
                                        {{"priority", 2},
                                         {"when", {{"field", "crm_status"}, {"op", "not_equals"}, {"value", "Customer"}}},
                                         {"agents", {"other"}}}}}});
    auto vip = server.connect_agent("vip");
    auto other = server.connect_agent("other");

    std::string resume_token;
    {
        auto first = server.connect_visitor({{"name", "Ada"}, {"crm_status", "Customer"}});
        resume_token = first.resume_token;
        first->close();
    }
    for (int round = 0; round < 5; ++round) {
        INFO(round);
        // The server forgets the card of a visitor that left, on the hub's strand, where it also
        // counts the connection gone: wait for that count, then the card can only come from storage.
        bool visitor_gone = false;
        for (int i = 0; i < 100 && !visitor_gone; ++i) {
            visitor_gone = metric_value(server.port(), "parley_connections") == 0;  // kind="visitor" comes first
            if (!visitor_gone) std::this_thread::sleep_for(20ms);
        }
        REQUIRE(visitor_gone);
        ws_client back(server.port(), "/v1/visitor");
        back.send_json({{"type", "hello"}, {"id", "h"}, {"tenant", "t1"}, {"resume_token", resume_token}});
        back.send_json({{"type", "request_agent"}, {"id", "q"}, {"route", "web"}, {"client_key", "k" + std::to_string(round)}});
        auto hello = json::parse(back.receive().value());
        CHECK(hello["re"] == "h");  // the hello's ok comes first
        auto requested = json::parse(back.receive().value());
        CHECK(requested["re"] == "q");
        // Routed with the stored card: crm_status Customer goes to vip.
        auto offer = vip->expect("offer");
        CHECK(offer["conversation_id"] == requested["conversation_id"]);
        CHECK(vip->request({{"type", "decline"}, {"id", "d"}, {"offer_id", offer["offer_id"]}})["type"] == "ok");
        back.expect("fallback");  // vip was the only agent for it
        back.close();
    }
    CHECK_FALSE(other->receive(200ms).has_value());
}

TEST_CASE("messages sent while an agent accepts come after the accept's ok, none twice, none lost", "[e2e]") {
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    for (int round = 0; round < 4; ++round) {
        INFO(round);
        // In the last rounds the visitor ends the chat right behind its messages: the agent
        // still gets every one of them, then `ended`.
        const bool end_right_away = round >= 2;
        auto visitor = server.connect_visitor();
        auto conversation_id = chat_server::request_agent(visitor, "sales", "k" + std::to_string(round));
        auto offer = agent->expect("offer");
        constexpr int sent = 200;
        for (int i = 1; i <= sent / 2; ++i)
            visitor->send_json({{"type", "send"}, {"id", "p" + std::to_string(i)}, {"conversation_id", conversation_id},
                                {"text", "m " + std::to_string(i)}, {"client_msg_id", "m-" + std::to_string(i)}});
        agent->send_json({{"type", "accept"}, {"id", "acc"}, {"offer_id", offer["offer_id"]}});
        for (int i = sent / 2 + 1; i <= sent; ++i)
            visitor->send_json({{"type", "send"}, {"id", "p" + std::to_string(i)}, {"conversation_id", conversation_id},
                                {"text", "m " + std::to_string(i)}, {"client_msg_id", "m-" + std::to_string(i)}});
        visitor->send_json({{"type", "typing"}, {"conversation_id", conversation_id}, {"on", true}});
        if (end_right_away) visitor->send_json({{"type", "end_chat"}, {"conversation_id", conversation_id}});

        std::vector<std::int64_t> seen;
        bool accepted = false;
        bool ended = false;
        while (seen.size() < static_cast<std::size_t>(sent) || !accepted || (end_right_away && !ended)) {
            auto frame = agent->receive(10s);
            REQUIRE(frame);
            auto j = json::parse(*frame);
            if (j["type"] == "ok" && j["re"] == "acc") {
                accepted = true;
                for (const auto& m : j["messages"]) seen.push_back(m["seq"]);
            } else if (j["type"] == "message") {
                CHECK(accepted);  // never before the ok
                seen.push_back(j["seq"]);
            } else if (j["type"] == "typing") {
                CHECK(accepted);  // nothing about the chat before the ok
            } else if (j["type"] == "ended") {
                CHECK(accepted);
                CHECK(seen.size() == static_cast<std::size_t>(sent));  // the last words first
                ended = true;
            }
        }
        std::vector<std::int64_t> expected(sent);
        std::iota(expected.begin(), expected.end(), 1);
        CHECK(seen == expected);
        if (!end_right_away) {
            visitor->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", conversation_id}});
            agent->expect("ended");
        }
    }
}

TEST_CASE("an offer that an agent's connection makes possible is announced once, as an event after the hello", "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("support", {{"type", "round_robin"}, {"queue_wait_s", 300}});
    {
        auto agent = server.connect_agent("a1");  // available from now on
        agent->close();
    }
    // Wait until the server has seen the agent go.
    bool agent_gone = false;
    for (int i = 0; i < 50 && !agent_gone; ++i) {
        auto agents = server.admin("GET", "/agents").json()["agents"];
        agent_gone = !agents.empty() && agents[0]["connected"] == false;
        if (!agent_gone) std::this_thread::sleep_for(100ms);
    }
    REQUIRE(agent_gone);
    auto visitor = server.connect_visitor();
    auto reply = visitor->request({{"type", "request_agent"}, {"id", "q"}, {"route", "support"}});
    REQUIRE(reply["state"] == "queued");

    auto agent = server.connect_agent("a1", false);
    int announced = static_cast<int>(agent.hello_reply["offers"].size());
    while (auto frame = agent->receive(500ms)) {
        auto j = json::parse(*frame);
        if (j["type"] == "offer") {
            CHECK(j["conversation_id"] == reply["conversation_id"]);
            ++announced;
        }
    }
    CHECK(announced == 1);
}

TEST_CASE("a flood of refused hellos is counted in full and logged at a bounded rate", "[e2e]") {
    chat_server server;
    constexpr int refused = 60;
    const auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < refused; ++i) {
        ws_client bad(server.port(), "/v1/agent");
        CHECK(bad.request({{"type", "hello"}, {"id", "h"}, {"token", "not-a-token"}})["code"] == "unauthorized");
        CHECK(bad.wait_closed() == 4401);
    }
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    auto metrics = parley::test::http_request(server.port(), "GET", "/metrics").body;
    CHECK(metrics.find("parley_hello_refusals_total " + std::to_string(refused) + "\n") != std::string::npos);
    // At most 10 lines per started second of the flood.
    std::size_t logged = 0;
    const auto log = server.daemon().log();
    for (auto at = log.find("hello refused:"); at != std::string::npos; at = log.find("hello refused:", at + 1)) ++logged;
    INFO("logged " << logged << " in " << seconds << " s");
    CHECK(logged >= 10);
    CHECK(logged <= 10 * (static_cast<std::size_t>(seconds) + 2));
}

TEST_CASE("limits.max_connections_per_ip refuses one address's extra connections, and frees them as they close", "[e2e]") {
    chat_server server("[limits]\nmax_connections_per_ip = 3\n");
    // One HTTP exchange from `source`; the reply, or "" when the connection was cut at once.
    auto exchange_from = [&server](const char* source, const std::string& target) {
        int fd = connect_from(source, server.port(), "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        std::string reply;
        char chunk[4096];
        for (ssize_t got; (got = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) reply.append(chunk, static_cast<std::size_t>(got));
        ::close(fd);
        return reply;
    };
    // Waits until the server counts `n` open connections besides the asking one, which comes
    // from 127.0.0.2 so that it never takes one of 127.0.0.1's places.
    auto wait_until_open = [&](int n) {
        std::string line;
        for (int i = 0; i < 100; ++i) {
            const auto metrics = exchange_from("127.0.0.2", "/metrics");
            const auto at = metrics.find("\nparley_open_connections ");
            REQUIRE(at != std::string::npos);
            line = metrics.substr(at + 1, metrics.find('\n', at + 1) - at - 1);
            if (line == "parley_open_connections " + std::to_string(n + 1)) return;
            std::this_thread::sleep_for(50ms);
        }
        FAIL("still " << line << ", waiting for " << n << " + 1");
    };
    wait_until_open(0);  // the set-up's HTTP calls are gone
    std::vector<std::unique_ptr<ws_client>> open;
    for (int i = 0; i < 3; ++i) open.push_back(std::make_unique<ws_client>(server.port(), "/v1/visitor"));
    CHECK(exchange_from("127.0.0.1", "/healthz").empty());  // the fourth is cut
    CHECK_FALSE(exchange_from("127.0.0.2", "/healthz").empty());  // another address is not
    // A closed connection frees its place once the server has seen the close.
    open.pop_back();
    wait_until_open(2);
    ws_client again(server.port(), "/v1/visitor");
    CHECK(again.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t1"}})["type"] == "ok");
}

TEST_CASE("behind a trusted proxy, max_connections_per_ip counts each client's own address", "[e2e]") {
    temp_dir dir;
    // 127.0.0.1 plays the proxy; 127.0.0.2 a client that reaches parleyd directly.
    daemon_process daemon(dir.path(), with_keys_in(test_config(dir.path()) + "[limits]\nmax_connections_per_ip = 2\n",
                                                   "server", "trusted_proxies = [\"127.0.0.1/32\", \"fd00::/8\"]\n"));
    std::vector<int> open;
    // A WebSocket upgrade from `source` with `forwarded` as X-Forwarded-For (none when empty):
    // its status line; a socket that upgraded stays open.
    auto upgrade_from = [&](const char* source, const std::string& forwarded) {
        int fd = connect_from(source, daemon.port(),
                              "GET /v1/visitor HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
                                  (forwarded.empty() ? "" : "X-Forwarded-For: " + forwarded + "\r\n") + "\r\n");
        std::string reply;
        char chunk[1024];
        while (reply.find("\r\n\r\n") == std::string::npos) {
            auto got = ::recv(fd, chunk, sizeof chunk, 0);
            if (got <= 0) break;
            reply.append(chunk, static_cast<std::size_t>(got));
        }
        const auto status = reply.substr(0, reply.find("\r\n"));
        if (status.find(" 101 ") != std::string::npos) open.push_back(fd);
        else ::close(fd);
        return status;
    };
    const std::string switching = "HTTP/1.1 101 Switching Protocols";
    const std::string refused = "HTTP/1.1 429 Too Many Requests";

    // Two clients of one address through the proxy, then a third is refused, with a reason.
    CHECK(upgrade_from("127.0.0.1", "203.0.113.5") == switching);
    CHECK(upgrade_from("127.0.0.1", "203.0.113.5") == switching);
    CHECK(upgrade_from("127.0.0.1", "203.0.113.5") == refused);
    // Only what the proxy appended counts: a client's own (forged) entries to the left do not,
    // and nor do other trusted hops to the right.
    CHECK(upgrade_from("127.0.0.1", "198.51.100.1, 203.0.113.5") == refused);
    CHECK(upgrade_from("127.0.0.1", "203.0.113.5, 127.0.0.1") == refused);
    CHECK(upgrade_from("127.0.0.1", "203.0.113.5:4711") == refused);
    // Other clients behind the same proxy are not held back by it: the proxy's own address
    // already carries more than 2 connections.
    CHECK(upgrade_from("127.0.0.1", "203.0.113.6") == switching);
    CHECK(upgrade_from("127.0.0.1", "198.51.100.1,203.0.113.7") == switching);
    CHECK(upgrade_from("127.0.0.1", "") == switching);  // no header: the proxy's own
    CHECK(upgrade_from("127.0.0.1", "not-an-address") == switching);  // counted as the proxy
    // A client that is not a trusted proxy cannot choose its address by the header: it is
    // counted as itself, and cut at accept like before.
    CHECK(upgrade_from("127.0.0.2", "203.0.113.8") == switching);
    CHECK(upgrade_from("127.0.0.2", "203.0.113.9") == switching);
    CHECK(upgrade_from("127.0.0.2", "203.0.113.10").empty());
    for (int fd : open) ::close(fd);
}

TEST_CASE("limits.max_sessions_per_identity bounds one visitor's and one agent's open sessions", "[e2e]") {
    chat_server server("[limits]\nmax_sessions_per_identity = 2\n");
    server.put_agent("a1", {{"name", "Ann"}});

    // A third hello of one identity: capacity, then close 1013; the first two are untouched.
    auto refused_hello = [](ws_client& client, const nlohmann::json& hello) {
        auto reply = client.request(hello);
        INFO(reply.dump());
        CHECK(reply["type"] == "error");
        CHECK(reply["code"] == "capacity");
        CHECK(reply.value("message", "").find("limits.max_sessions_per_identity") != std::string::npos);
        CHECK(client.wait_closed() == 1013);
    };

    auto first_agent = server.connect_agent("a1", false);
    auto second_agent = server.connect_agent("a1", false);
    ws_client third_agent(server.port(), "/v1/agent");
    refused_hello(third_agent, {{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("a1")}});
    CHECK(second_agent->request({{"type", "set_availability"}, {"id", "av"}, {"available", true}})["type"] == "ok");
    // Another agent is not held back by a1's sessions.
    server.put_agent("a2", {{"name", "Bo"}});
    auto other_agent = server.connect_agent("a2", false);

    auto first_tab = server.connect_visitor();
    auto second_tab = server.connect_visitor(nullptr, first_tab.resume_token);
    CHECK(second_tab.visitor_id == first_tab.visitor_id);
    ws_client third_tab(server.port(), "/v1/visitor");
    refused_hello(third_tab, {{"type", "hello"}, {"id", "h"}, {"tenant", "t1"}, {"resume_token", first_tab.resume_token}});

    // A closed session frees its place once the server has seen the close.
    first_tab->close();
    bool reopened = false;
    for (int attempt = 0; attempt < 50 && !reopened; ++attempt) {
        ws_client again(server.port(), "/v1/visitor");
        auto reply = again.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t1"}, {"resume_token", first_tab.resume_token}});
        reopened = reply["type"] == "ok";
        if (!reopened) std::this_thread::sleep_for(50ms);
    }
    CHECK(reopened);
}

TEST_CASE("list_conversations and get_activity pages fit the reply's share of the outbound bound", "[e2e]") {
    // Half of 32 KiB for a reply: 8 conversations with a 3,900-character last message, or 8
    // activities with 15,000 bytes of details, do not fit one page of limit 100.
    chat_server server("[limits]\noutbound_max_bytes = 32768\n");
    server.put_agent("a1", {{"name", "Ann"}, {"teams", {"sales"}}});
    server.put_route("sales", {{"type", "team"}, {"team", "sales"}});
    auto agent = server.connect_agent("a1");
    const std::string long_text(3900, 'x');
    std::set<std::string> started;
    std::string visitor_id;
    for (int i = 0; i < 8; ++i) {
        auto c = server.start_chat(agent, "sales");
        REQUIRE(chat_server::send_text(*c.visitor.ws, c.conversation_id, long_text, "m")["type"] == "ok");
        REQUIRE(agent->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", c.conversation_id}})["type"] == "ok");
        started.insert(c.conversation_id);
        if (i == 0) visitor_id = c.visitor.visitor_id;
    }
    const auto base_ms = now_ms() - 60'000;
    for (int i = 0; i < 8; ++i) {
        auto posted = server.admin("POST", "/visitors/" + visitor_id + "/activities",
                                   {{"type", "visited_webpage"}, {"at", base_ms + i}, {"details", {{"blob", std::string(15000, 'y')}}}});
        INFO(posted.body);
        REQUIRE(posted.status == 201);
    }

    // Follows next_cursor to the end: every reply within the share, nothing twice, nothing missed.
    auto read_all = [&](json query, const char* list_field, auto key_of) {
        std::multiset<std::string> seen;
        int pages = 0;
        for (json cursor = nullptr; pages == 0 || !cursor.is_null(); ++pages) {
            REQUIRE(pages < 30);
            query["id"] = "p" + std::to_string(pages);
            if (!cursor.is_null()) query["cursor"] = cursor;
            auto reply = agent->request(query);
            INFO(reply.dump().substr(0, 300));
            REQUIRE(reply["type"] == "ok");
            CHECK(reply.dump().size() <= 16384);
            REQUIRE_FALSE(reply[list_field].empty());
            for (const auto& entry : reply[list_field]) seen.insert(key_of(entry));
            cursor = reply["next_cursor"];
        }
        CHECK(pages > 1);
        return seen;
    };
    auto listed = read_all({{"type", "list_conversations"}, {"filter", "all"}, {"limit", 100}}, "conversations",
                           [](const json& c) { return c["id"].get<std::string>(); });
    CHECK(listed == std::multiset<std::string>(started.begin(), started.end()));

    auto activities = read_all({{"type", "get_activity"}, {"visitor_id", visitor_id}, {"limit", 100}}, "activities",
                               [](const json& a) { return a["type"].get<std::string>() + "@" + a["at"].dump(); });
    std::multiset<std::string> posted;
    for (int i = 0; i < 8; ++i) posted.insert("visited_webpage@" + std::to_string(base_ms + i));
    std::multiset<std::string> pages_of_posted;
    for (const auto& a : activities)
        if (a.rfind("visited_webpage@", 0) == 0) pages_of_posted.insert(a);
    CHECK(pages_of_posted == posted);
    CHECK(agent->request({{"type", "get_visitor"}, {"id", "still-open"}, {"visitor_id", visitor_id}})["type"] == "ok");
}

TEST_CASE("an agent session ends when its token does, after a warning; reauth with a fresh token keeps it open",
          "[e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_agent("a2", {{"name", "Bo"}});
    // Tokens whose exp plus the 60 s leeway ends 3 s from now (exp counts whole seconds).
    const auto ends_at = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now() + 3s);
    auto short_token = [&](const std::string& agent) {
        return parley::server::mint_agent_token(agent_secret_of("t1"), "t1", agent, std::chrono::hours(1),
                                                ends_at - 60s - std::chrono::hours(1));
    };
    const auto ends_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(ends_at.time_since_epoch()).count();

    ws_client renewing(server.port(), "/v1/agent");
    REQUIRE(renewing.request({{"type", "hello"}, {"id", "h"}, {"token", short_token("a1")}})["type"] == "ok");
    ws_client lapsing(server.port(), "/v1/agent");
    REQUIRE(lapsing.request({{"type", "hello"}, {"id", "h"}, {"token", short_token("a2")}})["type"] == "ok");
    // Less than the warning lead (60 s) is left: the warning comes at once, naming the end.
    for (auto* client : {&renewing, &lapsing}) {
        auto warning = client->expect("credentials_expiring", 2s);
        CHECK(warning["expires_at"].get<std::int64_t>() == ends_at_ms);
    }

    // Refused renewals change nothing: another agent's token, a token of the wrong secret, garbage.
    CHECK(renewing.request({{"type", "reauth"}, {"id", "r1"}, {"token", chat_server::agent_token("a2")}})["code"] ==
          "unauthorized");
    CHECK(renewing.request({{"type", "reauth"}, {"id", "r2"},
                            {"token", chat_server::agent_token("a1", "t1", "not-the-agent-secret-0123456789")}})["code"] ==
          "unauthorized");
    CHECK(renewing.request({{"type", "reauth"}, {"id", "r3"}, {"token", "x.y.z"}})["code"] == "unauthorized");
    // A fresh token for the same agent: the session now ends an hour (and the leeway) later.
    auto renewed = renewing.request({{"type", "reauth"}, {"id", "r4"}, {"token", chat_server::agent_token("a1")}});
    REQUIRE(renewed["type"] == "ok");
    CHECK(renewed["expires_at"].get<std::int64_t>() > ends_at_ms + 3'500'000);

    // The session that did not renew closes with 4401 when its token ends, not before.
    CHECK(lapsing.wait_closed() == 4401);
    CHECK(std::chrono::system_clock::now() >= ends_at - 100ms);
    // The renewed one is still served after that.
    std::this_thread::sleep_for(500ms);
    CHECK(renewing.request({{"type", "list_agents"}, {"id", "la"}})["type"] == "ok");
}
