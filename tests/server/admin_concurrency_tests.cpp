// Admin API requests of one tenant that cross inside the real daemon: each on a
// connection of its own, written back to back (support/net/http_batch.h). A
// mutation checks its invariants (fallback_route exists and forms no cycle, a
// route another falls back to is not deleted, the per-tenant caps) and only
// then stores and applies; two mutations in flight together could both pass
// their checks against the state neither had changed yet.
#include <signal.h>
#include <sqlite3.h>

#include <fstream>
#include <set>

#include "e2e_support.h"
#include "support/net/http_batch.h"

using namespace parley::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

std::map<std::string, std::string> admin_auth(const std::string& tenant = "t1") {
    return {{"Authorization", "Bearer " + admin_token_of(tenant)}};
}

bool succeeded(const http_reply& reply) { return reply.status == 200 || reply.status == 201 || reply.status == 204; }

// Route name -> its fallback_route ("" for none), as GET routes lists them.
std::map<std::string, std::string> route_fallbacks(chat_server& server) {
    auto list = server.admin("GET", "/routes");
    INFO(list.body);
    REQUIRE(list.status == 200);
    std::map<std::string, std::string> routes;
    const auto body = list.json();
    for (const auto& route : body["routes"])
        routes[route["name"].get<std::string>()] = route.value("fallback_route", std::string());
    return routes;
}

// Every fallback_route names a route that exists, and no chain of them comes back on itself.
void check_fallback_chains(const std::map<std::string, std::string>& routes) {
    for (const auto& [name, fallback] : routes) {
        std::set<std::string> seen{name};
        for (std::string next = fallback; !next.empty(); next = routes.at(next)) {
            INFO("route " << name << " falls back through " << next);
            REQUIRE(routes.count(next) == 1);   // dangling
            REQUIRE(seen.insert(next).second);  // a cycle
        }
    }
}

// SQLite's write lock on the daemon's database, held until release(): the
// daemon's storage writer waits behind it (its busy_timeout is 5 s), so the
// admin write it is doing stays in flight. Readers are not held up (WAL).
class sqlite_write_lock {
public:
    explicit sqlite_write_lock(const std::filesystem::path& database) {
        REQUIRE(sqlite3_open(database.c_str(), &db_) == SQLITE_OK);
        sqlite3_busy_timeout(db_, 5000);
        REQUIRE(sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
    }
    ~sqlite_write_lock() { release(); }
    sqlite_write_lock(const sqlite_write_lock&) = delete;
    sqlite_write_lock& operator=(const sqlite_write_lock&) = delete;
    void release() {
        if (db_ == nullptr) return;
        sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        sqlite3_close(db_);
        db_ = nullptr;
    }

private:
    sqlite3* db_ = nullptr;
};

constexpr std::size_t max_waiting = 64;  // admin mutations waiting per tenant (proto/README.md)

// With the storage writer held up by `lock`: one agent PUT in flight, max_waiting
// waiting behind it and one more, which is refused at once. Returns the batch once
// that refusal arrived (so every request has reached the tenant).
std::unique_ptr<http_batch> fill_admin_queue(chat_server& server) {
    auto batch = std::make_unique<http_batch>(server.port());
    for (std::size_t i = 0; i < max_waiting + 2; ++i)
        batch->add("PUT", "/v1/tenants/t1/agents/q" + std::to_string(i), json{{"name", "Q"}}.dump(), admin_auth());
    batch->send_all();
    auto first = batch->next_reply(4s);
    REQUIRE(first);
    const auto& refused = batch->reply(*first);
    INFO(refused.body);
    CHECK(refused.status == 429);
    REQUIRE(!refused.body.empty());
    CHECK(refused.json()["code"] == "rate_limited");
    CHECK(refused.headers.count("Retry-After") == 1);
    return batch;
}

}  // namespace

TEST_CASE("admin API: crossing route mutations never both pass their checks", "[ops][admin]") {
    chat_server server;
    const json plain{{"type", "round_robin"}};
    auto falling_back_to = [](const std::string& route) {
        return json{{"type", "round_robin"}, {"fallback_route", route}}.dump();
    };
    constexpr int rounds = 50;

    // PUT r2 {fallback_route: r1} || DELETE r1: the one that goes second sees the first.
    int put_first = 0;
    for (int round = 0; round < rounds; ++round) {
        server.put_route("r1", plain);
        server.put_route("r2", plain);
        http_batch batch(server.port());
        auto put = batch.add("PUT", "/v1/tenants/t1/routes/r2", falling_back_to("r1"), admin_auth());
        auto del = batch.add("DELETE", "/v1/tenants/t1/routes/r1", {}, admin_auth());
        batch.send_all();
        batch.wait_all();
        const auto& p = batch.reply(put);
        const auto& d = batch.reply(del);
        INFO("round " << round << ": PUT r2 -> " << p.status << " " << p.body << "; DELETE r1 -> " << d.status << " "
                      << d.body);
        REQUIRE(succeeded(p) != succeeded(d));
        if (succeeded(p)) {
            CHECK(d.status == 409);
            ++put_first;
        } else {
            CHECK(p.status == 400);
            CHECK(p.json()["message"] == "fallback_route: no route named r1");
        }
        check_fallback_chains(route_fallbacks(server));
    }
    INFO("the PUT went first in " << put_first << " of " << rounds << " rounds");

    // PUT r1 {fallback_route: r2} || PUT r2 {fallback_route: r1}: one of them closes a cycle.
    for (int round = 0; round < rounds; ++round) {
        server.put_route("r1", plain);
        server.put_route("r2", plain);
        http_batch batch(server.port());
        auto one = batch.add("PUT", "/v1/tenants/t1/routes/r1", falling_back_to("r2"), admin_auth());
        auto two = batch.add("PUT", "/v1/tenants/t1/routes/r2", falling_back_to("r1"), admin_auth());
        batch.send_all();
        batch.wait_all();
        const auto& a = batch.reply(one);
        const auto& b = batch.reply(two);
        INFO("round " << round << ": PUT r1 -> " << a.status << " " << a.body << "; PUT r2 -> " << b.status << " "
                      << b.body);
        REQUIRE(succeeded(a) != succeeded(b));
        const auto& refused = succeeded(a) ? b : a;
        CHECK(refused.status == 400);
        CHECK(refused.json()["message"] == "fallback_route forms a cycle");
        check_fallback_chains(route_fallbacks(server));
    }
}

TEST_CASE("admin API: creations that cross stop exactly at the per-tenant caps", "[ops][admin]") {
    chat_server server("[limits]\nmax_agents_per_tenant = 3\nmax_routes_per_tenant = 3\nmax_accounts_per_tenant = 3\n");
    server.put_agent("a0", {{"name", "Ann"}});
    struct kind {
        std::string path;
        json body;
        std::string list;  // GET path listing them, "" when there is none
    };
    // a0 is one of the 3 agents already.
    for (const auto& k : std::vector<kind>{{"/agents/n", {{"name", "N"}}, "/agents"},
                                           {"/routes/n", {{"type", "round_robin"}}, "/routes"},
                                           {"/accounts/n", {{"agent_id", "a0"}}, ""}}) {
        INFO(k.path);
        http_batch batch(server.port());
        for (int i = 0; i < 8; ++i)
            batch.add("PUT", "/v1/tenants/t1" + k.path + std::to_string(i) + (k.list.empty() ? ".com" : ""),
                      k.body.dump(), admin_auth());
        batch.send_all();
        batch.wait_all();
        std::size_t created = 0;
        for (std::size_t i = 0; i < batch.size(); ++i) {
            const auto& reply = batch.reply(i);
            INFO(reply.status << " " << reply.body);
            if (succeeded(reply)) {
                ++created;
            } else {
                CHECK(reply.status == 400);
                CHECK(reply.json()["code"] == "capacity");
            }
        }
        CHECK(created == (k.path == "/agents/n" ? 2u : 3u));
        if (!k.list.empty()) {
            auto list = server.admin("GET", k.list).json();
            CHECK(list.begin().value().size() == 3);
        }
    }
}

TEST_CASE("admin API: a tenant's mutations wait in a bounded queue and reads do not wait", "[ops][admin]") {
    chat_server server;
    server.put_agent("a0", {{"name", "Ann"}});
    sqlite_write_lock lock(server.dir().path() / "parley.db");
    auto batch = fill_admin_queue(server);

    // Reads do not queue: the agent list is answered while the writes wait. (GET routes reads
    // storage, which first lets the writes submitted before it finish: read-your-writes.)
    auto agents = server.admin("GET", "/agents");
    CHECK(agents.status == 200);
    CHECK(agents.json()["agents"].size() == 1);
    // Another tenant has a queue of its own: t1's is full, t2's PUT waits only for storage.
    http_batch other(server.port());
    auto t2_put = other.add("PUT", "/v1/tenants/t2/agents/b1", json{{"name", "Bo"}}.dump(), admin_auth("t2"));
    other.send_all();

    lock.release();
    batch->wait_all();
    std::size_t created = 0;
    std::string others;  // what the rest got: one 429
    for (std::size_t i = 0; i < batch->size(); ++i) {
        const auto& reply = batch->reply(i);
        if (reply.status == 201)
            ++created;
        else
            others += std::to_string(reply.status) + " " + reply.body + "\n";
    }
    INFO(others);
    CHECK(created == max_waiting + 1);
    other.wait_all();
    CHECK(other.reply(t2_put).status == 201);
    CHECK(server.admin("GET", "/agents").json()["agents"].size() == max_waiting + 2);
    // The queue is empty again.
    CHECK(server.admin("PUT", "/agents/a0", {{"name", "Ann B."}}).status == 200);
}

TEST_CASE("admin API: mutations waiting when their tenant stops are answered 503 and not left hanging", "[ops][admin]") {
    chat_server server;
    auto& daemon = server.daemon();
    sqlite_write_lock lock(server.dir().path() / "parley.db");
    auto batch = fill_admin_queue(server);

    std::string expected_message;
    bool shutting_down = false;
    SECTION("the tenant is removed by a reload") {
        std::string next = test_config(server.dir().path());
        next.erase(next.find("[tenants.t1]"), next.find("[tenants.t2]") - next.find("[tenants.t1]"));
        std::ofstream(server.dir().path() / "parley.toml") << next;
        daemon.signal(SIGHUP);
        expected_message = "tenant removed";
    }
    SECTION("the server shuts down") {
        daemon.signal(SIGTERM);
        expected_message = "server shutting down";
        shutting_down = true;
    }
    // The waiting ones are answered while the write in flight still waits for the lock.
    for (std::size_t i = 0; i < max_waiting; ++i) {
        auto index = batch->next_reply(4s);
        REQUIRE(index);
        const auto& reply = batch->reply(*index);
        INFO(reply.body);
        CHECK(reply.status == 503);
        REQUIRE(!reply.body.empty());
        CHECK(reply.json()["code"] == "unavailable");
        CHECK(reply.json()["message"].get<std::string>().find(expected_message) != std::string::npos);
    }
    // The one in flight completes once storage takes it.
    lock.release();
    auto last = batch->next_reply(10s);
    REQUIRE(last);
    INFO(batch->reply(*last).body);
    CHECK(batch->reply(*last).status == 201);
    if (shutting_down) {
        batch.reset();  // the connection refused first is still open (keep-alive)
        CHECK(daemon.wait_exit(15s) == 0);
    }
}
