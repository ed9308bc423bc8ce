// The tenant core's rules, driven without sockets on manual time and the memory
// store (tenant_core.h): offers, expiry, re-offer and fallback, the 10-chat cap,
// two tabs racing, agent and visitor grace, restore after a restart, the message
// cap, replies while the database is unreachable, and resume holds. The e2e
// suites cover the same rules over real sockets and the daemon's wiring.
#include "tenant_core.h"

using namespace parley::server::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

TEST_CASE("offer, accept, messages in gap-free seq to both sides, end", "[tenant]") {
    tenant_core core;
    core.put_ann_and_sales();
    auto agent = core.connect_agent("a1");
    CHECK(agent.hello_reply["agent"]["id"] == "a1");
    CHECK(agent.hello_reply["active"] == json::array());
    auto visitor = core.connect_visitor("v1", {{"name", "Ada"}});
    const auto conversation_id = core.request_agent(visitor, "sales");

    auto offer = core.expect(agent, "offer");
    CHECK(offer["conversation_id"] == conversation_id);
    CHECK(offer["visitor"]["name"] == "Ada");
    auto accepted = core.request(agent, {{"type", "accept"}, {"id", "acc"}, {"offer_id", offer["offer_id"]}});
    REQUIRE(accepted["type"] == "ok");
    CHECK(core.expect(visitor, "agent_joined")["agent"]["id"] == "a1");

    for (int i = 1; i <= 3; ++i) {
        auto ok = core.request(visitor, {{"type", "send"}, {"id", "s" + std::to_string(i)},
                                         {"conversation_id", conversation_id}, {"text", "hi " + std::to_string(i)}});
        CHECK(ok["seq"] == i);
        auto event = core.expect(agent, "message");
        CHECK(event["seq"] == i);
        CHECK(event["text"] == "hi " + std::to_string(i));
    }
    CHECK_FALSE(core.received(visitor, "message"));  // the sender's own session gets its ok, not the event

    REQUIRE(core.request(agent, {{"type", "end_chat"}, {"id", "e"}, {"conversation_id", conversation_id}})["type"] ==
            "ok");
    CHECK(core.expect(visitor, "ended")["reason"] == "agent_ended");
    auto again = core.request(visitor, {{"type", "send"}, {"id", "late"}, {"conversation_id", conversation_id},
                                        {"text", "still there?"}});
    CHECK(again["code"] == "conflict");
}

TEST_CASE("an offer expires on the clock, goes to the next agent, then fallback with the first agent's calendar",
          "[tenant]") {
    tenant_core core;
    core.put_agent("a1", {{"name", "Ann"}, {"calendar_url", "https://cal.example/ann"}});
    core.put_agent("a2", {{"name", "Bo"}, {"calendar_url", "https://cal.example/bo"}});
    core.put_route("sales", {{"type", "round_robin"},
                             {"offer_timeout_s", 1},
                             {"max_attempts", 2},
                             {"fallback_message", "Nobody is free; book a call."},
                             {"fallback_calendar", true}});
    auto a1 = core.connect_agent("a1");
    auto a2 = core.connect_agent("a2");
    auto visitor = core.connect_visitor("v1");
    const auto conversation_id = core.request_agent(visitor, "sales");

    core.settle();
    const bool a1_first = a1->count("offer") == 1;
    auto& first = a1_first ? a1 : a2;
    auto& second = a1_first ? a2 : a1;
    auto first_offer = core.expect(first, "offer");
    CHECK(first_offer["conversation_id"] == conversation_id);
    CHECK(first_offer["expires_at"].get<std::int64_t>() - core.now_ms() <= 1'000);
    CHECK_FALSE(core.received(second, "offer"));

    // Nothing happens before the offer's timeout, however long real time takes.
    core.advance(999ms);
    CHECK_FALSE(core.received(first, "offer_withdrawn"));
    core.advance(1ms);
    auto withdrawn = core.expect(first, "offer_withdrawn");
    CHECK(withdrawn["offer_id"] == first_offer["offer_id"]);
    CHECK(withdrawn["reason"] == "expired");

    auto second_offer = core.expect(second, "offer");
    CHECK(second_offer["conversation_id"] == conversation_id);
    CHECK(second_offer["offer_id"] != first_offer["offer_id"]);
    core.advance(1s);
    CHECK(core.expect(second, "offer_withdrawn")["reason"] == "expired");

    auto fallback = core.expect(visitor, "fallback");
    CHECK(fallback["conversation_id"] == conversation_id);
    CHECK(fallback["message"] == "Nobody is free; book a call.");
    REQUIRE(fallback["calendar"].is_object());
    CHECK(fallback["calendar"]["agent_id"] == first.principal);
    CHECK(fallback["calendar"]["booking_url"] ==
          "https://cal.example/" + std::string(first.principal == "a1" ? "ann" : "bo"));
    CHECK(core.expect(visitor, "ended")["reason"] == "no_agent");

    // Neither agent saw a third offer; the visitor may ask again and gets a new conversation.
    CHECK_FALSE(core.received(first, "offer"));
    auto again = core.request(visitor, {{"type", "request_agent"}, {"id", "q9"}, {"route", "sales"}, {"client_key", "k-9"}});
    CHECK(again["conversation_id"] != conversation_id);

    // Missed chats are in the visitor's activity history.
    auto activity = core.request(a1, {{"type", "get_activity"}, {"id", "ac"}, {"visitor_id", "v1"}});
    int missed = 0;
    for (const auto& a : activity["activities"]) missed += a["type"] == "chat_missed";
    CHECK(missed == 2);
}

TEST_CASE("no eligible agent: fallback_route, a decline, then fallback without calendar", "[tenant]") {
    tenant_core core;
    core.put_agent("a1", {{"name", "Ann"}, {"teams", {"support"}}});
    core.put_agent("a2", {{"name", "Bo"}, {"teams", {"billing"}}});
    core.put_route("support", {{"type", "team"}, {"team", "support"}, {"offer_timeout_s", 1}});
    core.put_route("billing", {{"type", "team"}, {"team", "billing"}, {"fallback_route", "support"},
                               {"fallback_message", "Try later"}});
    auto a1 = core.connect_agent("a1");
    auto visitor = core.connect_visitor("v1");
    const auto conversation_id = core.request_agent(visitor, "billing");
    auto offer = core.expect(a1, "offer");
    CHECK(offer["conversation_id"] == conversation_id);
    CHECK(offer["route"] == "support");
    REQUIRE(core.request(a1, {{"type", "decline"}, {"id", "d"}, {"offer_id", offer["offer_id"]}})["type"] == "ok");
    CHECK(core.request(a1, {{"type", "decline"}, {"id", "d2"}, {"offer_id", offer["offer_id"]}})["code"] ==
          "conflict");
    CHECK(core.expect(visitor, "fallback")["calendar"].is_null());
    CHECK(core.expect(visitor, "ended")["reason"] == "no_agent");
    auto unknown = core.request(visitor, {{"type", "request_agent"}, {"id", "q"}, {"route", "nope"}});
    CHECK(unknown["type"] == "error");
    CHECK(unknown["code"] == "not_found");
}

TEST_CASE("the 10-chat cap: the 11th chat never goes to the full agent, who gets chats again once one ends", "[tenant]") {
    tenant_core core;
    core.put_agent("a1", {{"name", "Ann"}});
    core.put_agent("a2", {{"name", "Bo"}});
    core.put_route("sales", {{"type", "round_robin"}, {"offer_timeout_s", 30}, {"fallback_message", "full"}});
    auto a1 = core.connect_agent("a1");
    std::vector<connected> visitors;
    std::vector<std::string> conversations;
    for (int i = 0; i < 10; ++i) {
        visitors.push_back(core.connect_visitor("v" + std::to_string(i)));
        conversations.push_back(core.request_agent(visitors.back(), "sales"));
        core.accept_next_offer(a1);
        core.expect(visitors.back(), "agent_joined");
    }
    auto listed = core.request(a1, {{"type", "list_conversations"}, {"id", "l"}, {"filter", "active"}, {"limit", 100}});
    CHECK(listed["conversations"].size() == 10);

    // Nobody else online: the 11th falls back at once, and a1 sees no offer.
    visitors.push_back(core.connect_visitor("v10"));
    core.request_agent(visitors.back(), "sales");
    CHECK(core.expect(visitors.back(), "fallback")["message"] == "full");
    CHECK_FALSE(core.received(a1, "offer"));

    // With a2 online, the 12th goes to a2.
    auto a2 = core.connect_agent("a2");
    visitors.push_back(core.connect_visitor("v11"));
    const auto twelfth = core.request_agent(visitors.back(), "sales");
    auto offer = core.expect(a2, "offer");
    CHECK(offer["conversation_id"] == twelfth);
    CHECK_FALSE(core.received(a1, "offer"));

    // a1 ends one chat: it has room again and gets the next one.
    REQUIRE(core.request(a1, {{"type", "end_chat"}, {"id", "e"}, {"conversation_id", conversations[0]}})["type"] ==
            "ok");
    CHECK(core.expect(visitors[0], "ended")["reason"] == "agent_ended");
    REQUIRE(core.request(a2, {{"type", "accept"}, {"id", "acc"}, {"offer_id", offer["offer_id"]}})["type"] == "ok");
    REQUIRE(core.request(a2, {{"type", "set_availability"}, {"id", "off"}, {"available", false}})["type"] == "ok");
    visitors.push_back(core.connect_visitor("v12"));
    const auto thirteenth = core.request_agent(visitors.back(), "sales");
    CHECK(core.expect(a1, "offer")["conversation_id"] == thirteenth);
}

TEST_CASE("two tabs of one agent race to accept: exactly one wins, the other sees it taken", "[tenant]") {
    tenant_core core;
    core.put_ann_and_sales();
    auto tab1 = core.connect_agent("a1");
    auto tab2 = core.connect_agent("a1");
    for (int round = 0; round < 5; ++round) {
        auto visitor = core.connect_visitor("v" + std::to_string(round));
        const auto conversation_id = core.request_agent(visitor, "sales", "k-" + std::to_string(round));
        auto offer1 = core.expect(tab1, "offer");
        auto offer2 = core.expect(tab2, "offer");
        REQUIRE(offer1["offer_id"] == offer2["offer_id"]);
        // Both are queued on the strand before either is handled.
        core.send(tab1, {{"type", "accept"}, {"id", "x1"}, {"offer_id", offer1["offer_id"]}});
        core.send(tab2, {{"type", "accept"}, {"id", "x2"}, {"offer_id", offer2["offer_id"]}});
        auto r1 = core.reply_to(tab1, "x1");
        auto r2 = core.reply_to(tab2, "x2");
        INFO(r1.dump() << " / " << r2.dump());
        CHECK(((r1["type"] == "ok") != (r2["type"] == "ok")));
        auto& loser = r1["type"] == "ok" ? tab2 : tab1;
        CHECK((r1["type"] == "ok" ? r2 : r1)["code"] == "conflict");
        // The losing tab sees the offer gone (taken).
        auto taken = core.expect(loser, "offer_withdrawn");
        CHECK(taken["offer_id"] == offer1["offer_id"]);
        CHECK(taken["reason"] == "taken");
        CHECK(core.expect(visitor, "agent_joined")["agent"]["id"] == "a1");
        // Both tabs see the chat's messages.
        REQUIRE(core.request(visitor, {{"type", "send"}, {"id", "m"}, {"conversation_id", conversation_id},
                                       {"text", "hi"}, {"client_msg_id", "m"}})["type"] == "ok");
        CHECK(core.expect(tab1, "message")["conversation_id"] == conversation_id);
        CHECK(core.expect(tab2, "message")["conversation_id"] == conversation_id);
        REQUIRE(core.request(visitor, {{"type", "end_chat"}, {"id", "e"}, {"conversation_id", conversation_id}})["type"] ==
                "ok");
        core.expect(tab1, "ended");
        core.expect(tab2, "ended");
    }
}

TEST_CASE("agent disconnects: offers withdrawn and re-routed, chats kept for the grace period, then routed again",
          "[tenant]") {
    tenant_core core([](parley::config::config& c) { c.routing.grace_period = std::chrono::seconds(2); });
    core.put_agent("a1", {{"name", "Ann"}, {"teams", {"t"}}});
    core.put_agent("a2", {{"name", "Bo"}, {"teams", {"t"}}});
    core.put_route("sales", {{"type", "team"}, {"team", "t"}, {"offer_timeout_s", 30}});
    auto a1 = core.connect_agent("a1");
    auto visitor = core.connect_visitor("v1");
    const auto conversation_id = core.request_agent(visitor, "sales");
    core.accept_next_offer(a1);
    core.expect(visitor, "agent_joined");

    // A second chat is only offered to a1 when a1 drops: it goes to a2 at once.
    auto visitor2 = core.connect_visitor("v2");
    const auto pending = core.request_agent(visitor2, "sales");
    CHECK(core.expect(a1, "offer")["conversation_id"] == pending);
    auto a2 = core.connect_agent("a2");
    core.disconnect(a1);
    CHECK(core.expect(a2, "offer")["conversation_id"] == pending);
    CHECK(core.expect(visitor, "agent_away")["conversation_id"] == conversation_id);

    // Grace runs out (2 s): the chat is routed again, never to a1.
    core.advance(1999ms);
    CHECK_FALSE(core.received(a2, "offer"));
    core.advance(1ms);
    auto reoffer = core.expect(a2, "offer");
    CHECK(reoffer["conversation_id"] == conversation_id);
    REQUIRE(core.request(a2, {{"type", "accept"}, {"id", "a"}, {"offer_id", reoffer["offer_id"]}})["type"] == "ok");
    CHECK(core.expect(visitor, "agent_joined")["agent"]["id"] == "a2");
    // a1 comes back: the chat is not its any more.
    auto back = core.connect_agent("a1");
    CHECK(back.hello_reply["active"] == json::array());
}

TEST_CASE("agent reconnects within the grace period: the visitor sees agent_back and the chat stays", "[tenant]") {
    tenant_core core([](parley::config::config& c) { c.routing.grace_period = std::chrono::seconds(5); });
    auto [a1, visitor, conversation_id] = core.start_chat();
    core.disconnect(a1);
    core.expect(visitor, "agent_away");
    core.advance(4999ms);
    auto again = core.connect_agent("a1");
    REQUIRE(again.hello_reply["active"].size() == 1);
    CHECK(again.hello_reply["active"][0]["id"] == conversation_id);
    CHECK(core.expect(visitor, "agent_back")["conversation_id"] == conversation_id);
    CHECK(core.request(again, {{"type", "send"}, {"id", "s"}, {"conversation_id", conversation_id},
                               {"text", "sorry, network"}, {"client_msg_id", "a-1"}})["seq"] == 1);
    CHECK(core.expect(visitor, "message")["text"] == "sorry, network");
}

TEST_CASE("visitor grace: a waiting visitor who goes away keeps its place, then gives it up", "[tenant]") {
    tenant_core core([](parley::config::config& c) { c.routing.visitor_grace = std::chrono::seconds(3); });
    core.put_ann_and_sales({{"offer_timeout_s", 60}});
    auto a1 = core.connect_agent("a1");
    auto visitor = core.connect_visitor("v1");
    const auto conversation_id = core.request_agent(visitor, "sales");
    auto offer = core.expect(a1, "offer");

    // Back within the grace, in another tab: the chat keeps its offer.
    core.disconnect(visitor);
    core.advance(2s);
    auto tab = core.connect_visitor("v1");
    REQUIRE(tab.hello_reply["conversation"].is_object());
    CHECK(tab.hello_reply["conversation"]["id"] == conversation_id);
    core.advance(2s);
    CHECK_FALSE(core.received(a1, "offer_withdrawn"));

    // Gone past the grace: the offer is withdrawn and the chat ends.
    core.disconnect(tab);
    core.advance(2s);
    CHECK_FALSE(core.received(a1, "offer_withdrawn"));
    core.advance(1s);
    auto withdrawn = core.expect(a1, "offer_withdrawn");
    CHECK(withdrawn["offer_id"] == offer["offer_id"]);
}

TEST_CASE("the message cap refuses the next message with capacity; a resend of a stored one still gets its seq",
          "[tenant]") {
    tenant_core core([](parley::config::config& c) { c.limits.max_messages_per_conversation = 3; });
    auto [a1, visitor, conversation_id] = core.start_chat();
    for (int i = 1; i <= 3; ++i)
        CHECK(core.request(visitor, {{"type", "send"}, {"id", "s" + std::to_string(i)},
                                     {"conversation_id", conversation_id}, {"text", "m"},
                                     {"client_msg_id", "c" + std::to_string(i)}})["seq"] == i);
    auto refused = core.request(visitor, {{"type", "send"}, {"id", "s4"}, {"conversation_id", conversation_id},
                                          {"text", "one too many"}, {"client_msg_id", "c4"}});
    CHECK(refused["code"] == "capacity");
    auto resent = core.request(visitor, {{"type", "send"}, {"id", "s2again"}, {"conversation_id", conversation_id},
                                         {"text", "m"}, {"client_msg_id", "c2"}});
    CHECK(resent["type"] == "ok");
    CHECK(resent["seq"] == 2);
}

TEST_CASE("after a restart, open chats come back with their agent and their seq", "[tenant]") {
    tenant_core core;
    auto [a1, visitor, conversation_id] = core.start_chat();
    REQUIRE(core.request(visitor, {{"type", "send"}, {"id", "s"}, {"conversation_id", conversation_id},
                                   {"text", "before"}})["seq"] == 1);

    core.restart();
    auto again = core.connect_agent("a1");
    REQUIRE(again.hello_reply["active"].size() == 1);
    CHECK(again.hello_reply["active"][0]["id"] == conversation_id);
    auto back = core.connect_visitor("v1");
    CHECK(back.hello_reply["conversation"]["id"] == conversation_id);
    CHECK(back.hello_reply["conversation"]["last_seq"] == 1);
    CHECK(core.request(back, {{"type", "send"}, {"id", "s2"}, {"conversation_id", conversation_id},
                              {"text", "after"}})["seq"] == 2);
    CHECK(core.expect(again, "message")["text"] == "after");
}

TEST_CASE("database unreachable: a send gets unavailable after unavailable_after, reaches nobody and uses no seq; "
          "reads get unavailable; all works again once it is back",
          "[tenant][outage]") {
    parley::storage::store_options store_options;
    store_options.unavailable_after = 200ms;
    tenant_core core({}, store_options);
    auto [agent, visitor, conversation_id] = core.start_chat();
    CHECK(core.send_text(visitor, conversation_id, "before", "m-1")["seq"] == 1);
    CHECK(core.expect(agent, "message")["seq"] == 1);

    core.store().set_reachable(false);
    const auto sent_at = std::chrono::steady_clock::now();
    auto refused = core.send_text(visitor, conversation_id, "during", "m-2");
    INFO(refused.dump());
    CHECK(refused["type"] == "error");
    CHECK(refused["code"] == "unavailable");
    CHECK(std::chrono::steady_clock::now() - sent_at >= store_options.unavailable_after);
    CHECK_FALSE(core.received(agent, "message"));

    // Reads fail at once with the protocol's unavailable; so does a resume, which reads.
    const std::vector<json> reads = {
        {{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", conversation_id}},
        {{"type", "list_conversations"}, {"id", "l"}, {"filter", "all"}},
        {{"type", "get_visitor"}, {"id", "g"}, {"visitor_id", "v1"}},
        {{"type", "get_activity"}, {"id", "a"}, {"visitor_id", "v1"}},
    };
    for (const auto& read : reads) {
        auto reply = core.request(agent, read);
        INFO(read.dump() << " -> " << reply.dump());
        CHECK(reply["type"] == "error");
        CHECK(reply["code"] == "unavailable");
    }
    auto resumed =
        core.request(visitor, {{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    CHECK(resumed["code"] == "unavailable");
    CHECK(core.take_messages(visitor).empty());

    // Back: the resend takes the seq the refused send gave back, and the chat goes on gap-free.
    core.store().set_reachable(true);
    CHECK(core.send_text(visitor, conversation_id, "during", "m-2")["seq"] == 2);
    CHECK(core.expect(agent, "message")["seq"] == 2);
    CHECK(core.send_text(agent, conversation_id, "after", "a-1")["seq"] == 3);
    CHECK(core.expect(visitor, "message")["seq"] == 3);
    auto transcript = core.request(agent, {{"type", "get_transcript"}, {"id", "t2"}, {"conversation_id", conversation_id}});
    INFO(transcript.dump());
    REQUIRE(transcript["type"] == "ok");
    std::vector<std::string> texts;
    for (const auto& m : transcript["messages"]) texts.push_back(m["text"]);
    CHECK(texts == std::vector<std::string>{"before", "during", "after"});
    auto listed = core.request(agent, {{"type", "list_conversations"}, {"id", "l2"}, {"filter", "active"}});
    REQUIRE(listed["conversations"].size() == 1);
    CHECK(listed["conversations"][0]["last_message"]["seq"] == 3);
}

namespace {

// What a resuming session was sent, as one line per frame: "m<seq>" for a message,
// "typing", "ok:<re>", or the frame's type.
std::vector<std::string> frame_names(const std::vector<json>& frames) {
    std::vector<std::string> names;
    for (const auto& f : frames) {
        const std::string type = f.value("type", "");
        if (type == "message")
            names.push_back("m" + std::to_string(f["seq"].get<int>()));
        else if (type == "ok")
            names.push_back("ok:" + f.value("re", ""));
        else
            names.push_back(type);
    }
    return names;
}

}  // namespace

TEST_CASE("a visitor's resume holds the chat's live events until its replay is done: the stored messages, "
          "then the live ones in seq order, then ok, each once",
          "[tenant][resume]") {
    tenant_core core;
    auto [agent, visitor, conversation_id] = core.start_chat();
    for (int i = 1; i <= 3; ++i) CHECK(core.send_text(agent, conversation_id, "stored")["seq"] == i);
    CHECK(core.take_messages(visitor).size() == 3);

    // The visitor comes back in a second tab and resumes from the start; its replay has read
    // the stored messages, and the answer is held in storage.
    auto tab = core.connect_visitor("v1");
    core.store().hold_read_replies();
    core.send(tab, {{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    REQUIRE(core.run_until([&] { return core.store().held_read_replies() == 1; }));

    // Meanwhile the agent writes and types: the first tab sees it at once, the resuming one nothing yet.
    CHECK(core.send_text(agent, conversation_id, "live")["seq"] == 4);
    core.send(agent, {{"type", "typing"}, {"conversation_id", conversation_id}, {"on", true}});
    CHECK(core.send_text(agent, conversation_id, "live")["seq"] == 5);
    CHECK(frame_names(core.take_messages(visitor)) == std::vector<std::string>{"m4", "m5"});
    CHECK(core.expect(visitor, "typing")["on"] == true);
    core.settle();
    CHECK(tab->take_all().empty());

    core.store().release_read_replies();
    REQUIRE(core.run_until([&] { return tab->count("ok") == 1; }));
    CHECK(frame_names(tab->take_all()) == std::vector<std::string>{"m1", "m2", "m3", "m4", "typing", "m5", "ok:r"});

    // The hold is over: the next message comes at once.
    CHECK(core.send_text(agent, conversation_id, "after")["seq"] == 6);
    CHECK(frame_names(tab->take_all()) == std::vector<std::string>{"m6"});
}

TEST_CASE("an agent's resumes take turns: each replays every message once, then its ok; live messages a replay "
          "carried are not sent again",
          "[tenant][resume]") {
    tenant_core core;
    auto [agent, visitor, conversation_id] = core.start_chat();
    for (int i = 1; i <= 3; ++i) CHECK(core.send_text(visitor, conversation_id, "stored")["seq"] == i);

    auto tab = core.connect_agent("a1");
    core.store().hold_read_replies();
    core.send(tab, {{"type", "resume"}, {"id", "r1"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    core.send(tab, {{"type", "resume"}, {"id", "r2"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
    REQUIRE(core.run_until([&] { return core.store().held_read_replies() == 1; }));
    core.settle();
    CHECK(core.store().held_read_replies() == 1);  // r2 waits for r1 before it reads

    CHECK(core.send_text(visitor, conversation_id, "live")["seq"] == 4);
    CHECK(core.send_text(visitor, conversation_id, "live")["seq"] == 5);
    core.settle();
    CHECK(tab->take_all().empty());

    // r1 read before the live messages were stored, r2 after: r2's replay carries them, and the
    // events held for the tab meanwhile are not sent on top.
    core.store().release_read_replies();
    REQUIRE(core.run_until([&] { return tab->count("ok") == 2; }));
    CHECK(frame_names(tab->take_all()) ==
          std::vector<std::string>{"m1", "m2", "m3", "ok:r1", "m1", "m2", "m3", "m4", "m5", "ok:r2"});
    CHECK(core.send_text(visitor, conversation_id, "after")["seq"] == 6);
    CHECK(frame_names(tab->take_all()) == std::vector<std::string>{"m6"});
}

TEST_CASE("a conversation idle past the timeout ends with idle_timeout; a message resets the clock", "[tenant]") {
    tenant_core core([](parley::config::config& c) { c.routing.conversation_idle_timeout = std::chrono::seconds(2); });
    auto chat = core.start_chat();
    core.advance(1200ms);
    REQUIRE(core.send_text(chat.visitor, chat.conversation_id, "still deciding", "m-1")["type"] == "ok");
    // 2 s after the message, not after the accept: nothing just before, the end at the deadline.
    core.advance(1900ms);
    CHECK_FALSE(core.received(chat.visitor, "ended"));
    core.advance(100ms);
    CHECK(core.expect(chat.visitor, "ended")["reason"] == "idle_timeout");
    CHECK(core.expect(chat.agent, "ended")["reason"] == "idle_timeout");
}

TEST_CASE("queued visitors who go away keep their places for visitor_grace, then give them up", "[tenant]") {
    tenant_core core([](parley::config::config& c) { c.routing.visitor_grace = std::chrono::seconds(1); });
    core.put_agent("a1", {{"name", "Ann"}, {"max_chats", 1}});
    core.put_route("support", {{"type", "round_robin"}, {"queue_wait_s", 300}, {"offer_timeout_s", 60}});
    auto agent = core.connect_agent("a1");
    auto busy = core.connect_visitor("busy");
    const auto busy_id = core.request_agent(busy, "support");
    core.accept_next_offer(agent);  // a1 is full: the others wait

    auto a = core.connect_visitor("va");
    const auto a_id = core.request_agent(a, "support", "k-a");
    CHECK(core.expect(a, "queued")["position"] == 1);
    // Visitor b has two tabs, both open before the request.
    auto b = core.connect_visitor("vb");
    auto b_tab2 = core.connect_visitor("vb");
    const auto b_id = core.request_agent(b, "support", "k-b");
    CHECK(core.expect(b_tab2, "queued")["position"] == 2);
    auto c = core.connect_visitor("vc");
    const auto c_id = core.request_agent(c, "support", "k-c");
    CHECK(core.expect(c, "queued")["position"] == 3);

    // a navigates to another page and is back at once; b closes one tab.
    core.disconnect(a);
    auto a_back = core.connect_visitor("va");
    REQUIRE(a_back.hello_reply["conversation"].is_object());
    CHECK(a_back.hello_reply["conversation"]["id"] == a_id);
    CHECK(a_back.hello_reply["conversation"]["state"] == "queued");
    core.disconnect(b);
    // Past the grace, nobody moved: a and b kept their places.
    core.advance(1500ms);
    CHECK_FALSE(core.received(c, "queued"));
    CHECK_FALSE(core.received(b_tab2, "queued"));

    // a leaves for good: within the grace nothing changes, then b and c move up.
    core.disconnect(a_back);
    core.advance(900ms);
    CHECK_FALSE(core.received(b_tab2, "queued"));
    core.advance(100ms);
    CHECK(core.expect(b_tab2, "queued")["position"] == 1);
    CHECK(core.expect(c, "queued")["position"] == 2);

    // a1 frees up: b is offered the chat, then its last tab closes; after the grace the offer is
    // withdrawn (visitor_left) and c, behind it, gets a1.
    REQUIRE(core.request(agent, {{"type", "end_chat"}, {"id", "e"}, {"conversation_id", busy_id}})["type"] == "ok");
    auto offer = core.expect(agent, "offer");
    REQUIRE(offer["conversation_id"] == b_id);
    CHECK(core.expect(c, "queued")["position"] == 1);  // b left the line for its offer
    core.disconnect(b_tab2);
    core.advance(900ms);
    CHECK_FALSE(core.received(agent, "offer_withdrawn"));
    core.advance(100ms);
    auto withdrawn = core.expect(agent, "offer_withdrawn");
    CHECK(withdrawn["offer_id"] == offer["offer_id"]);
    CHECK(withdrawn["reason"] == "visitor_left");
    CHECK(core.expect(agent, "offer")["conversation_id"] == c_id);
    CHECK(core.request(agent, {{"type", "accept"}, {"id", "late"}, {"offer_id", offer["offer_id"]}})["code"] ==
          "conflict");

    // a and b have no open conversation any more.
    CHECK(core.connect_visitor("va").hello_reply["conversation"].is_null());
    CHECK(core.connect_visitor("vb").hello_reply["conversation"].is_null());
}
