// PostgreSQL outage at library level: the test cluster is stopped mid-run
// with pg_ctl and started again on the same port. Other tests share the
// cluster, so a guard restarts it however this test ends.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "parley/storage/store.h"
#include "support/test_env.h"
#include "test_database.h"

using namespace parley::storage;
using parley::storage::test::make_test_database;
using parley::storage::test::wait_for;

namespace {

// Starts and stops the shared cluster exactly as tests/support/pg_cluster.sh does.
class cluster_control {
public:
    cluster_control() : env_(parley::test::shared_pg_cluster_env()) {}
    ~cluster_control() {
        if (stopped_) start();  // never leave the shared cluster down
    }
    cluster_control(const cluster_control&) = delete;
    cluster_control& operator=(const cluster_control&) = delete;

    void stop() {
        stopped_ = true;
        REQUIRE(run(pg_ctl() + " -m fast -w stop") == 0);
    }

    int start() {
        const auto& dir = env_.at("PG_DIR");
        int rc = run(pg_ctl() + " -l " + dir + "/postgres.log -w -t 30 -o \"-p " + env_.at("PG_PORT") + " -k " + dir +
                     " -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB\" start");
        if (rc == 0) stopped_ = false;
        return rc;
    }

private:
    std::string pg_ctl() const {
        std::string prefix = ::geteuid() == 0 ? "runuser -u postgres -- " : "";
        return prefix + env_.at("PG_BIN") + "/pg_ctl -D " + env_.at("PG_DIR") + "/data";
    }
    static int run(const std::string& command) { return std::system((command + " >/dev/null 2>&1").c_str()); }

    std::map<std::string, std::string> env_;
    bool stopped_ = false;
};

message_record numbered(std::int64_t seq) {
    message_record m;
    m.tenant_id = "acme";
    m.conversation_id = "c1";
    m.seq = seq;
    m.body = "during outage " + std::to_string(seq);
    m.client_msg_id = "k" + std::to_string(seq);
    m.at = 1'750'000'000'000;
    return m;
}

template <class Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (predicate()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return predicate();
}

}  // namespace

TEST_CASE("PostgreSQL outage: not ready, writes wait within the bound or fail unavailable, reconnect, nothing lost",
          "[storage][pg][outage]") {
    auto db = make_test_database("outage");
    store_options options;
    options.unavailable_after = std::chrono::milliseconds(1500);
    options.reconnect_backoff_min = std::chrono::milliseconds(50);
    options.reconnect_backoff_max = std::chrono::milliseconds(400);
    options.health_check_interval = std::chrono::milliseconds(100);
    auto opened = open_store(db.url, options);
    REQUIRE(opened.ok());
    auto s = std::move(opened).value();
    // A second store on the same database whose writes wait a minute: its writes made
    // during the outage must wait for the restart however long pg_ctl takes, where the
    // first store's expire after 1.5 s. A clock window would make the test depend on that.
    store_options patient_options = options;
    patient_options.unavailable_after = std::chrono::seconds(60);
    auto patient_opened = open_store(db.url, patient_options);
    REQUIRE(patient_opened.ok());
    auto patient = std::move(patient_opened).value();

    conversation_record c;
    c.tenant_id = "acme";
    c.id = "c1";
    c.visitor_id = "v1";
    c.route = "sales";
    c.state = conversation_state::active;
    c.agent_id = "a1";
    c.started_at = 1'750'000'000'000;
    REQUIRE(wait_for<void>([&](auto done) { s->save_conversation(c, done); }).ok());
    for (int seq = 1; seq <= 10; ++seq) REQUIRE(wait_for<append_outcome>([&](auto done) { s->append_message(numbered(seq), done); }).ok());
    REQUIRE(s->ready());
    // Reads in parallel, so every reader thread holds a connection that the outage will break.
    auto parallel_reads = [&](int count) {
        std::vector<std::future<result<std::vector<message_record>>>> reads;
        for (int i = 0; i < count; ++i)
            reads.push_back(std::async(std::launch::async, [&] {
                return wait_for<std::vector<message_record>>(
                    [&](auto done) { s->messages_after("acme", "c1", 0, 100, 1'750'000'000'000, done); });
            }));
        int ok = 0;
        for (auto& r : reads) ok += r.get().ok() ? 1 : 0;
        return ok;
    };
    REQUIRE(parallel_reads(8) == 8);

    std::mutex mutex;
    std::vector<std::int64_t> acknowledged;
    int unavailable = 0, other = 0;
    auto record = [&](std::int64_t seq) {
        return [&, seq](result<append_outcome> r) {
            std::lock_guard lock(mutex);
            if (r.ok())
                acknowledged.push_back(seq);
            else if (r.kind() == error_kind::unavailable)
                ++unavailable;
            else
                ++other;
        };
    };

    {
        cluster_control cluster;
        cluster.stop();
        CHECK(eventually([&] { return !s->ready(); }, std::chrono::seconds(5)));

        // Reads fail fast while the database is down.
        auto read = wait_for<std::vector<message_record>>(
            [&](auto done) { s->messages_after("acme", "c1", 0, 100, 1'750'000'000'000, done); });
        CHECK(read.kind() == error_kind::unavailable);

        // Writes older than unavailable_after fail with unavailable.
        for (int seq = 11; seq <= 20; ++seq) s->append_message(numbered(seq), record(seq));
        CHECK(eventually([&] { std::lock_guard lock(mutex); return unavailable == 10; }, std::chrono::seconds(10)));

        // Writes within unavailable_after of the database's return wait for it and succeed.
        CHECK(eventually([&] { return !patient->ready(); }, std::chrono::seconds(5)));
        for (int seq = 11; seq <= 30; ++seq) patient->append_message(numbered(seq), record(seq));
        REQUIRE(cluster.start() == 0);
        patient->flush();
        CHECK(eventually([&] { return s->ready() && patient->ready(); }, std::chrono::seconds(10)));
    }
    {
        std::lock_guard lock(mutex);
        CHECK(other == 0);
        CHECK(unavailable == 10);
        CHECK(acknowledged.size() == 20);
    }
    // Reader connections that sat idle through the outage are replaced on their next read:
    // no read fails once the database is back.
    CHECK(parallel_reads(8) == 8);
    CHECK(s->stats().reconnects >= 1);
    CHECK(s->stats().expired_unavailable == 10);

    // Everything acknowledged is stored, exactly once, in order.
    auto stored = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "c1", 0, 100, 1'750'000'000'000, done); });
    REQUIRE(stored.ok());
    REQUIRE(stored->size() == 30);
    for (std::size_t i = 0; i < stored->size(); ++i) CHECK(stored->at(i).seq == static_cast<std::int64_t>(i + 1));

    // And new writes flow again.
    CHECK(wait_for<append_outcome>([&](auto done) { s->append_message(numbered(31), done); }).ok());
}
