// PostgreSQL faults below the store that a stopped server does not show: a
// COMMIT whose reply is lost (the proxy lets it through and cuts the link when
// the answer comes), and a server that turns read-only (a standby after
// failover, or default_transaction_read_only).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <future>
#include <map>
#include <thread>

#include "parley/storage/store.h"
#include "support/net/tcp_proxy.h"
#include "support/test_env.h"
#include "test_database.h"

using namespace parley::storage;
using parley::storage::test::make_test_database;
using parley::storage::test::numbered_message;
using parley::storage::test::wait_for;
using parley::test::tcp_proxy;
using namespace std::chrono_literals;

namespace {

constexpr millis now = 1'750'000'000'000;

std::uint16_t port_of(const std::string& url) {
    const auto port_start = url.find("127.0.0.1:") + std::string_view("127.0.0.1:").size();
    return static_cast<std::uint16_t>(std::stoi(url.substr(port_start, url.find('/', port_start) - port_start)));
}

// `url` with the proxy's port and `parameters` as its query string.
std::string via_proxy(const std::string& url, const tcp_proxy& proxy, const std::string& parameters) {
    const auto port_start = url.find("127.0.0.1:") + std::string_view("127.0.0.1:").size();
    const auto port_end = url.find('/', port_start);
    return url.substr(0, port_start) + std::to_string(proxy.port()) + url.substr(port_end) + "?" + parameters;
}

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (predicate()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return predicate();
}


conversation_record conversation(conversation_state state) {
    conversation_record c;
    c.tenant_id = "acme";
    c.id = "c1";
    c.visitor_id = "v1";
    c.route = "sales";
    c.state = state;
    c.agent_id = "a1";
    c.started_at = now;
    if (state == conversation_state::ended) {
        c.ended_at = now + 1000;
        c.end_reason = "agent_ended";
    }
    return c;
}

result<append_outcome> append(store& s, const message_record& m) {
    return wait_for<append_outcome>([&](auto done) { s.append_message(m, done); });
}

std::size_t activities_of(store& s, const std::string& visitor) {
    auto page = wait_for<activity_page>([&](auto done) { s.get_activity({"acme", visitor, 100, std::nullopt, now}, done); });
    REQUIRE(page.ok());
    return page->activities.size();
}

// Runs SQL as the cluster's superuser, in a session of its own that is never read-only.
int run_sql(const std::string& sql) {
    auto env = parley::test::shared_pg_cluster_env();
    std::string prefix = ::geteuid() == 0 ? "runuser -u postgres -- " : "";
    std::string command = "PGOPTIONS='-c default_transaction_read_only=off' " + prefix + env.at("PG_BIN") +
                          "/psql -X -q -h 127.0.0.1 -p " + env.at("PG_PORT") + " -U parley -d postgres -c \"" + sql +
                          "\" >/dev/null 2>&1";
    return std::system(command.c_str());
}

}  // namespace

TEST_CASE("PostgreSQL COMMIT reply lost: the retry finds its own rows, nothing stored twice, nothing refused",
          "[storage][pg][faults][commit-reply]") {
    auto db = make_test_database("commit_reply");
    tcp_proxy proxy(port_of(db.url));
    store_options options;
    options.unavailable_after = 500ms;
    options.reconnect_backoff_min = 20ms;
    options.reconnect_backoff_max = 200ms;
    options.batch_delay = std::chrono::microseconds(0);
    auto opened = open_store(via_proxy(db.url, proxy, "connect_timeout=2"), options);
    INFO((opened.ok() ? std::string() : opened.failure().message));
    REQUIRE(opened.ok());
    auto s = std::move(opened).value();
    REQUIRE(wait_for<void>([&](auto done) { s->save_conversation(conversation(conversation_state::active), done); }).ok());
    REQUIRE(append(*s, numbered_message(now, 1, "k1")).ok());

    // A message with a client_msg_id: old code answered it as a duplicate of itself.
    proxy.drop_next_commit_replies(1);
    auto second = append(*s, numbered_message(now, 2, "k2"));
    REQUIRE(proxy.commit_replies_dropped() == 1);
    REQUIRE(second.ok());
    CHECK(second->seq == 2);
    CHECK_FALSE(second->duplicate);

    // Without a client_msg_id: old code answered conflict ("seq already taken").
    proxy.drop_next_commit_replies(1);
    auto third = append(*s, numbered_message(now, 3, std::nullopt));
    REQUIRE(proxy.commit_replies_dropped() == 2);
    INFO((third.ok() ? std::string() : third.failure().message));
    REQUIRE(third.ok());
    CHECK(third->seq == 3);
    CHECK_FALSE(third->duplicate);

    // An activity, a plain insert: stored once, not twice.
    activity_record activity;
    activity.tenant_id = "acme";
    activity.visitor_id = "v1";
    activity.type = "chat_ended";
    activity.at = now + 10;
    activity.conversation_id = "c1";
    activity.details = {{"reason", "agent_ended"}};
    proxy.drop_next_commit_replies(1);
    REQUIRE(wait_for<void>([&](auto done) { s->append_activity(activity, done); }).ok());
    REQUIRE(proxy.commit_replies_dropped() == 3);
    CHECK(activities_of(*s, "v1") == 1);

    // An offer resolution: the retry finds it resolved by its own first run, not a conflict.
    offer_record offer{"acme", "o1", "c1", "a1", now, now + 45'000, offer_outcome::pending, std::nullopt};
    REQUIRE(wait_for<void>([&](auto done) { s->put_offer(offer, done); }).ok());
    proxy.drop_next_commit_replies(1);
    auto resolved = wait_for<void>(
        [&](auto done) { s->resolve_offer("acme", "o1", offer_outcome::accepted, now + 20, done); });
    REQUIRE(proxy.commit_replies_dropped() == 4);
    INFO((resolved.ok() ? std::string() : resolved.failure().message));
    CHECK(resolved.ok());

    // The link stays down past unavailable_after after the lost reply: the message may be
    // stored, so it is not answered `unavailable` (old code did, and the server gave its seq
    // back); it is answered once the outcome is known.
    proxy.drop_next_commit_replies(1, /*then_blackhole=*/true);
    std::promise<result<append_outcome>> fourth;
    s->append_message(numbered_message(now, 4, "k4"), [&](result<append_outcome> r) { fourth.set_value(std::move(r)); });
    auto fourth_outcome = fourth.get_future();
    REQUIRE(eventually([&] { return proxy.commit_replies_dropped() == 5; }, 10s));
    CHECK(fourth_outcome.wait_for(4 * options.unavailable_after) == std::future_status::timeout);
    proxy.set_blackhole(false);
    REQUIRE(fourth_outcome.wait_for(30s) == std::future_status::ready);
    auto settled = fourth_outcome.get();
    INFO((settled.ok() ? std::string() : settled.failure().message));
    REQUIRE(settled.ok());
    CHECK(settled->seq == 4);
    CHECK_FALSE(settled->duplicate);

    auto stored = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "c1", 0, 100, now, done); });
    REQUIRE(stored.ok());
    REQUIRE(stored->size() == 4);
    for (std::size_t i = 0; i < stored->size(); ++i) CHECK(stored->at(i).seq == static_cast<std::int64_t>(i + 1));
    CHECK(activities_of(*s, "v1") == 1);
}

TEST_CASE("PostgreSQL turned read-only (failover to a standby): unavailable, not ready, reconnects to a writable "
          "server, state writes wait and land",
          "[storage][pg][faults][read-only]") {
    struct read_only_guard {
        ~read_only_guard() {
            run_sql("ALTER SYSTEM RESET default_transaction_read_only");
            run_sql("SELECT pg_reload_conf()");
        }
    } guard;
    auto db = make_test_database("read_only");
    store_options options;
    options.unavailable_after = 1s;
    options.reconnect_backoff_min = 20ms;
    options.reconnect_backoff_max = 200ms;
    options.health_check_interval = 100ms;
    auto opened = open_store(db.url, options);
    REQUIRE(opened.ok());
    auto s = std::move(opened).value();
    REQUIRE(wait_for<void>([&](auto done) { s->save_conversation(conversation(conversation_state::active), done); }).ok());
    REQUIRE(append(*s, numbered_message(now, 1, "k1")).ok());
    REQUIRE(s->ready());

    // Every session of the cluster, the writer's open one included, becomes read-only.
    REQUIRE(run_sql("ALTER SYSTEM SET default_transaction_read_only = on") == 0);
    REQUIRE(run_sql("SELECT pg_reload_conf()") == 0);
    std::this_thread::sleep_for(300ms);  // backends apply the reload before their next command

    // A message write is refused `unavailable` (retry), never `internal`.
    auto refused = append(*s, numbered_message(now, 2, "k2"));
    REQUIRE_FALSE(refused.ok());
    INFO(refused.failure().message);
    CHECK(refused.kind() == error_kind::unavailable);
    CHECK(eventually([&] { return !s->ready(); }, 10s));

    // A state write made meanwhile waits for a writable server instead of failing.
    std::promise<status> ended;
    s->save_conversation(conversation(conversation_state::ended), [&](status r) { ended.set_value(std::move(r)); });
    auto ended_outcome = ended.get_future();
    CHECK(ended_outcome.wait_for(3 * options.unavailable_after) == std::future_status::timeout);
    CHECK(s->stats().state_writes_waiting >= 1);

    // The primary is writable again: the store reconnects by itself.
    REQUIRE(run_sql("ALTER SYSTEM RESET default_transaction_read_only") == 0);
    REQUIRE(run_sql("SELECT pg_reload_conf()") == 0);
    CHECK(eventually([&] { return s->ready(); }, 15s));
    REQUIRE(ended_outcome.wait_for(15s) == std::future_status::ready);
    CHECK(ended_outcome.get().ok());
    auto stored = wait_for<conversation_record>([&](auto done) { s->get_conversation("acme", "c1", done); });
    REQUIRE(stored.ok());
    CHECK(stored->state == conversation_state::ended);
    auto resent = append(*s, numbered_message(now, 2, "k2"));
    REQUIRE(resent.ok());
    CHECK(resent->seq == 2);
    CHECK(s->stats().state_writes_waiting == 0);
}
