// The rules of one conversation's message pipeline, without a hub: seq, one
// write in flight, resend dedupe, the cap, and `ended` held behind writes.
#include <catch2/catch.hpp>

#include "tenant/conversation_pipeline.h"

namespace parley::server::test {

namespace {
pending_write write_from(std::uint64_t session, std::optional<std::string> client_msg_id = std::nullopt) {
    pending_write w;
    w.origin_session = session;
    w.re = "r" + std::to_string(session);
    w.message.client_msg_id = std::move(client_msg_id);
    return w;
}
using kind = conversation_pipeline::step::kind;
constexpr std::size_t no_cap = 100'000;
}  // namespace

TEST_CASE("one write in flight at a time; seq gap-free in the order accepted", "[pipeline]") {
    conversation_pipeline p;
    p.enqueue(write_from(1));
    p.enqueue(write_from(2));
    auto first = p.next(no_cap, 1000);
    REQUIRE(first.what == kind::submit);
    CHECK(first.write.message.seq == 1);
    CHECK(first.write.message.at == 1000);
    CHECK(p.next(no_cap, 1001).what == kind::none);  // the second waits for the first
    CHECK(p.busy());
    CHECK(p.settle(first.write, false, false, 1, 1000));
    auto second = p.next(no_cap, 1002);
    REQUIRE(second.what == kind::submit);
    CHECK(second.write.message.seq == 2);
    CHECK(second.write.origin_session == 2);
    CHECK(p.settle(second.write, false, false, 2, 1002));
    CHECK_FALSE(p.busy());
    CHECK(p.last_seq() == 2);
}

TEST_CASE("a failed or duplicate write gives its seq back", "[pipeline]") {
    conversation_pipeline p(7);  // restored after a restart
    p.enqueue(write_from(1));
    auto w = p.next(no_cap, 0);
    CHECK(w.write.message.seq == 8);
    CHECK_FALSE(p.settle(w.write, true, false, 0, 0));
    CHECK(p.last_seq() == 7);
    p.enqueue(write_from(2, "m-1"));
    auto again = p.next(no_cap, 0);
    CHECK(again.write.message.seq == 8);
    // Storage already had m-1 (at seq 5): answered with it, not fanned out, seq given back.
    CHECK_FALSE(p.settle(again.write, false, true, 5, 50));
    CHECK(p.last_seq() == 7);
    p.enqueue(write_from(3, "m-1"));
    auto resend = p.next(no_cap, 0);
    REQUIRE(resend.what == kind::answer_known);
    CHECK(resend.seq == 5);
    CHECK(resend.at == 50);
}

TEST_CASE("a resend of a stored client_msg_id is answered without a write, even over the cap", "[pipeline]") {
    conversation_pipeline p;
    p.enqueue(write_from(1, "m-1"));
    auto w = p.next(2, 10);
    REQUIRE(p.settle(w.write, false, false, 1, 10));
    REQUIRE(p.stored("m-1"));
    p.enqueue(write_from(2));
    REQUIRE(p.settle(p.next(2, 11).write, false, false, 2, 11));
    CHECK(p.cap_reached(2));
    p.enqueue(write_from(3, "m-1"));
    auto resend = p.next(2, 12);
    CHECK(resend.what == kind::answer_known);
    CHECK(resend.seq == 1);
    p.enqueue(write_from(4));
    CHECK(p.next(2, 13).what == kind::over_cap);  // the cap was lowered after it was accepted
    CHECK(p.last_seq() == 2);
}

TEST_CASE("the cap counts what waits in the outbox; the outbox is bounded", "[pipeline]") {
    conversation_pipeline p(8);
    CHECK_FALSE(p.cap_reached(10));
    p.enqueue(write_from(1));
    CHECK_FALSE(p.cap_reached(10));
    p.enqueue(write_from(2));
    CHECK(p.cap_reached(10));
    conversation_pipeline q;
    for (std::size_t i = 0; i < conversation_pipeline::max_outbox; ++i) q.enqueue(write_from(i));
    CHECK(q.outbox_full());
}

TEST_CASE("remembered client_msg_ids are bounded, oldest forgotten first", "[pipeline]") {
    conversation_pipeline p;
    for (std::size_t i = 0; i <= conversation_pipeline::max_remembered_client_ids; ++i) {
        p.enqueue(write_from(1, "m-" + std::to_string(i)));
        auto w = p.next(no_cap, 0);
        REQUIRE(p.settle(w.write, false, false, w.write.message.seq, 0));
    }
    CHECK_FALSE(p.stored("m-0"));
    CHECK(p.stored("m-1"));
    CHECK(p.stored("m-" + std::to_string(conversation_pipeline::max_remembered_client_ids)));
}

TEST_CASE("ended events wait for the writes accepted before the end", "[pipeline]") {
    conversation_pipeline p;
    p.enqueue(write_from(1));
    auto w = p.next(no_cap, 0);
    p.hold_ended({true, std::make_shared<const std::string>("ended")});
    CHECK(p.take_ended_if_idle().empty());
    p.settle(w.write, false, false, 1, 0);
    auto released = p.take_ended_if_idle();
    REQUIRE(released.size() == 1);
    CHECK(released[0].first);
    CHECK(*released[0].second == "ended");
    CHECK(p.take_ended_if_idle().empty());
}

TEST_CASE("the cap refusal is logged once per conversation", "[pipeline]") {
    conversation_pipeline p;
    CHECK(p.first_cap_refusal());
    CHECK_FALSE(p.first_cap_refusal());
}

}  // namespace parley::server::test
