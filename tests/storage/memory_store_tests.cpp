// What only the memory store has: its test controls (an outage on command,
// read replies held and released), and its database object. The contract it
// shares with the SQL backends is store_contract_tests.cpp.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "parley/storage/memory_store.h"
#include "test_database.h"

using namespace parley::storage;
using namespace std::chrono_literals;
using parley::storage::test::numbered_message;
using parley::storage::test::wait_for;

namespace {

constexpr millis now = 1'750'000'000'000;

std::unique_ptr<memory_store> make_ok(store_options options = {}, std::shared_ptr<memory_database> database = nullptr) {
    auto made = make_memory_store(options, std::move(database));
    INFO((made.ok() ? std::string() : made.failure().message));
    REQUIRE(made.ok());
    return std::move(made).value();
}

conversation_record open_conversation(const std::string& id) {
    conversation_record c;
    c.tenant_id = "acme";
    c.id = id;
    c.visitor_id = "v1";
    c.route = "sales";
    c.state = conversation_state::active;
    c.agent_id = "a1";
    c.started_at = now;
    return c;
}


// An outcome that arrives later, from a storage thread.
template <class T>
struct pending {
    std::shared_ptr<std::promise<result<T>>> promise = std::make_shared<std::promise<result<T>>>();
    std::shared_future<result<T>> future = promise->get_future().share();
    callback<T> done() {
        return [promise = promise](result<T> r) { promise->set_value(std::move(r)); };
    }
    bool arrived() const { return future.wait_for(0s) == std::future_status::ready; }
    result<T> get() const {
        REQUIRE(future.wait_for(10s) == std::future_status::ready);
        return future.get();
    }
};

std::vector<std::int64_t> stored_seqs(memory_store& s) {
    auto stored =
        wait_for<std::vector<message_record>>([&](auto done) { s.messages_after("acme", "c1", 0, 100, now, done); });
    REQUIRE(stored.ok());
    std::vector<std::int64_t> seqs;
    for (const auto& m : stored.value()) seqs.push_back(m.seq);
    return seqs;
}

}  // namespace

TEST_CASE("memory store: its name and schema version; options are checked as open_store checks them",
          "[storage][memory]") {
    auto s = make_ok();
    CHECK(s->backend_name() == "memory");
    CHECK(s->ready());
    auto version = s->schema_version();
    REQUIRE(version.ok());
    CHECK(version.value() == binary_schema_version());

    store_options bad;
    bad.batch_max = 0;
    auto refused = make_memory_store(bad);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.failure().kind == error_kind::bad_request);
    CHECK_THAT(refused.failure().message, Catch::Contains("batch_max"));
}

TEST_CASE("memory store away: writes wait in order, waiting messages expire, reads fail; all made once it is back",
          "[storage][memory][outage]") {
    store_options options;
    options.unavailable_after = 200ms;
    auto s = make_ok(options);
    REQUIRE(wait_for<void>([&](auto done) { s->save_conversation(open_conversation("c1"), done); }).ok());
    REQUIRE(wait_for<append_outcome>([&](auto done) { s->append_message(numbered_message(now, 1), done); }).ok());

    s->set_reachable(false);
    CHECK_FALSE(s->ready());
    const auto went_away = std::chrono::steady_clock::now();
    pending<append_outcome> waiting_message;
    s->append_message(numbered_message(now, 2, "m-2"), waiting_message.done());
    std::mutex order_mutex;
    std::vector<std::string> order;
    auto in_order = [&](std::string name) {
        return [&, name](status r) {  // on a storage thread: noted, checked below
            std::lock_guard lock(order_mutex);
            order.push_back(r.ok() ? name : name + " failed");
        };
    };
    agent_record agent{"acme", "a1", "Ann", std::nullopt, 10, {}, nullptr, std::nullopt, std::nullopt};
    s->put_agent(agent, in_order("agent"));
    auto ended = open_conversation("c1");
    ended.state = conversation_state::ended;
    ended.ended_at = now + 10;
    s->save_conversation(ended, in_order("conversation"));
    s->append_activity({"acme", "v1", "chat_ended", now + 10, "c1", nullptr, 0}, in_order("activity"));

    // Reads and the synchronous calls fail at once.
    CHECK(wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "v1", done); }).kind() ==
          error_kind::unavailable);
    CHECK(wait_for<message_page>([&](auto done) { s->get_transcript("acme", "c1", 0, 10, now, done); }).kind() ==
          error_kind::unavailable);
    CHECK(s->load_open_state(std::string("acme"), now).kind() == error_kind::unavailable);
    CHECK(s->prune(now).kind() == error_kind::unavailable);
    CHECK(s->schema_version().kind() == error_kind::unavailable);
    CHECK_FALSE(s->flush_within(50ms));

    // The message whose sender waits is answered after unavailable_after; the state writes wait on.
    auto expired = waiting_message.get();
    CHECK(expired.kind() == error_kind::unavailable);
    CHECK(std::chrono::steady_clock::now() - went_away >= options.unavailable_after);
    std::this_thread::sleep_for(options.unavailable_after);
    auto stats = s->stats();
    CHECK(stats.expired_unavailable == 1);
    CHECK(stats.queue_depth == 3);
    CHECK(stats.state_writes_waiting == 3);
    CHECK(stats.reconnects == 0);
    {
        std::lock_guard lock(order_mutex);
        CHECK(order.empty());
    }

    s->set_reachable(true);
    s->flush();
    CHECK(s->ready());
    CHECK(order == std::vector<std::string>{"agent", "conversation", "activity"});
    stats = s->stats();
    CHECK(stats.reconnects == 1);
    CHECK(stats.queue_depth == 0);
    CHECK(stats.state_writes_waiting == 0);
    CHECK(stored_seqs(*s) == std::vector<std::int64_t>{1});  // the expired message was not stored
    auto conversation = wait_for<conversation_record>([&](auto done) { s->get_conversation("acme", "c1", done); });
    REQUIRE(conversation.ok());
    CHECK(conversation->state == conversation_state::ended);
    // Its sender retries, by client_msg_id: stored now, under the same seq.
    auto retried = wait_for<append_outcome>([&](auto done) { s->append_message(numbered_message(now, 2, "m-2"), done); });
    REQUIRE(retried.ok());
    CHECK_FALSE(retried->duplicate);
    CHECK(stored_seqs(*s) == std::vector<std::int64_t>{1, 2});
}

TEST_CASE("memory store away under durability relaxed: messages acknowledged at once, stored once it is back",
          "[storage][memory][outage]") {
    store_options options;
    options.durability = durability::relaxed;
    options.unavailable_after = 100ms;
    auto s = make_ok(options);
    REQUIRE(wait_for<void>([&](auto done) { s->save_conversation(open_conversation("c1"), done); }).ok());
    s->set_reachable(false);
    std::optional<result<append_outcome>> acknowledged;
    s->append_message(numbered_message(now, 1), [&](result<append_outcome> r) { acknowledged = std::move(r); });
    REQUIRE(acknowledged.has_value());  // before append_message returned
    REQUIRE(acknowledged->ok());
    CHECK_FALSE(acknowledged->value().durable);
    std::this_thread::sleep_for(3 * options.unavailable_after);
    CHECK(s->stats().expired_unavailable == 0);  // nobody waits for it: it waits for the database
    CHECK(s->stats().queue_depth == 1);
    s->set_reachable(true);
    s->flush();
    CHECK(stored_seqs(*s) == std::vector<std::int64_t>{1});
}

TEST_CASE("memory store: the queue bounds hold while it is away, twice as much for state writes",
          "[storage][memory][outage][backpressure]") {
    store_options options;
    options.queue_max = 4;
    options.unavailable_after = 10s;  // nothing expires during the test
    auto s = make_ok(options);
    s->set_reachable(false);
    std::atomic<int> refused{0}, other{0};
    for (int seq = 1; seq <= 5; ++seq)
        s->append_message(numbered_message(now, seq), [&](result<append_outcome> r) {
            if (r.ok())
                ++other;
            else if (r.kind() == error_kind::unavailable)
                ++refused;
        });
    CHECK(refused == 1);  // the fifth: refused at once, on this thread
    for (int i = 0; i < 5; ++i)
        s->append_activity({"acme", "v1", "visited_webpage", now + i, std::nullopt, nullptr, 0}, [&](status r) {
            if (r.kind() == error_kind::unavailable) ++refused;
        });
    CHECK(refused == 2);  // 4 messages and 4 state writes fill twice queue_max
    CHECK(s->stats().rejected_queue_full == 2);
    s->set_reachable(true);
    s->flush();
    CHECK(s->stats().writes_committed == 8);
    CHECK(other == 4);
}

TEST_CASE("memory store: held read replies run in their turn and answer on release, in order", "[storage][memory]") {
    store_options options;
    options.reader_threads = 1;  // so the order the reads ran in is the order they were submitted
    auto s = make_ok(options);
    REQUIRE(wait_for<void>([&](auto done) { s->save_conversation(open_conversation("c1"), done); }).ok());
    for (int seq = 1; seq <= 2; ++seq)
        REQUIRE(wait_for<append_outcome>([&](auto done) { s->append_message(numbered_message(now, seq), done); }).ok());

    s->hold_read_replies();
    std::mutex order_mutex;
    std::vector<std::string> order;
    std::vector<std::thread::id> threads;
    auto note = [&](const std::string& name) {
        std::lock_guard lock(order_mutex);
        order.push_back(name);
        threads.push_back(std::this_thread::get_id());
    };
    std::size_t replayed = 0;
    s->messages_after("acme", "c1", 0, 100, now, [&](result<std::vector<message_record>> r) {
        replayed = r.ok() ? r->size() : 0;
        note("messages");
    });
    s->get_conversation("acme", "c1", [&](result<conversation_record> r) { note(r.ok() ? "conversation" : "failed"); });
    for (int i = 0; i < 1000 && s->held_read_replies() < 2; ++i) std::this_thread::sleep_for(1ms);
    REQUIRE(s->held_read_replies() == 2);

    // A write between the reads and their answers: the reads saw the data before it.
    REQUIRE(wait_for<append_outcome>([&](auto done) { s->append_message(numbered_message(now, 3), done); }).ok());
    {
        std::lock_guard lock(order_mutex);
        CHECK(order.empty());
    }
    s->release_read_replies();
    for (int i = 0; i < 1000; ++i) {
        {
            std::lock_guard lock(order_mutex);
            if (order.size() == 2) break;
        }
        std::this_thread::sleep_for(1ms);
    }
    std::lock_guard lock(order_mutex);
    CHECK(order == std::vector<std::string>{"messages", "conversation"});
    CHECK(replayed == 2);
    for (auto id : threads) CHECK(id != std::this_thread::get_id());  // on a storage thread
    CHECK(s->held_read_replies() == 0);
    CHECK(stored_seqs(*s) == std::vector<std::int64_t>{1, 2, 3});  // no longer held
}

TEST_CASE("memory stores made on one database share it; a store's end commits what it queued, or fails it if away",
          "[storage][memory]") {
    auto database = make_memory_database();
    store_options slow;
    slow.batch_delay = 10s;  // everything waits in the queue until the store ends
    std::optional<status> saved;
    std::optional<result<append_outcome>> appended;
    {
        auto first = make_ok(slow, database);
        first->save_conversation(open_conversation("c1"), [&](status r) { saved = r; });
        first->append_message(numbered_message(now, 1), [&](result<append_outcome> r) { appended = std::move(r); });
        CHECK_FALSE(saved.has_value());
    }
    REQUIRE(saved.has_value());
    CHECK(saved->ok());
    REQUIRE(appended.has_value());
    CHECK(appended->ok());

    auto second = make_ok({}, database);
    CHECK(stored_seqs(*second) == std::vector<std::int64_t>{1});
    auto elsewhere = make_ok();  // a database of its own
    CHECK(wait_for<conversation_record>([&](auto done) { elsewhere->get_conversation("acme", "c1", done); }).kind() ==
          error_kind::not_found);

    std::optional<result<append_outcome>> lost;
    {
        auto away = make_ok({}, database);
        away->set_reachable(false);
        away->append_message(numbered_message(now, 2), [&](result<append_outcome> r) { lost = std::move(r); });
    }
    REQUIRE(lost.has_value());
    CHECK(lost->kind() == error_kind::unavailable);
    CHECK(stored_seqs(*second) == std::vector<std::int64_t>{1});
}
