// Operators' surface of the real daemon: the admin API of protocol.md section
// 6 (each endpoint, bad input, other tenants' tokens), applied to the running
// routing core at once, and /metrics counters that move with the traffic.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <sstream>
#include <thread>

#include "e2e_support.h"
#include "parley/storage/store.h"

using namespace parley::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// Every sample of a /metrics scrape, keyed by series (name plus labels).
std::map<std::string, double> scrape(std::uint16_t port) {
    auto reply = http_request(port, "GET", "/metrics");
    REQUIRE(reply.status == 200);
    CHECK(reply.headers["Content-Type"].rfind("text/plain; version=0.0.4", 0) == 0);
    std::map<std::string, double> samples;
    std::istringstream lines(reply.body);
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#') continue;
        auto space = line.rfind(' ');
        REQUIRE(space != std::string::npos);
        samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
    return samples;
}

template <class T, class Start>
parley::storage::result<T> wait_for_store(Start start) {
    auto promise = std::make_shared<std::promise<parley::storage::result<T>>>();
    auto future = promise->get_future();
    start(parley::storage::callback<T>([promise](parley::storage::result<T> r) { promise->set_value(std::move(r)); }));
    REQUIRE(future.wait_for(30s) == std::future_status::ready);
    return future.get();
}

std::unique_ptr<parley::storage::store> open_store_ok(const std::string& url) {
    auto opened = parley::storage::open_store(url);
    INFO((opened ? std::string() : opened.failure().message));
    REQUIRE(opened.ok());
    return std::move(opened).value();
}

// Waits (up to 5 s) for a gauge to reach `value`, which it does a moment after the work it counts.
bool await_gauge(std::uint16_t port, const std::string& series, double value) {
    for (int i = 0; i < 100; ++i) {
        if (scrape(port)[series] == value) return true;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

TEST_CASE("admin API: agents", "[ops]") {
    chat_server server;
    auto created = server.admin("PUT", "/agents/a1",
                                {{"name", "Ann"}, {"email", "ann@acme.io"}, {"max_chats", 3}, {"teams", {"sales"}},
                                 {"schedule", {{"tz", "Europe/Paris"}, {"blocks", {{{"day", "mon"}, {"start", "08:00"}, {"end", "12:00"}}}}}},
                                 {"calendar_url", "https://cal.example/ann"}});
    INFO(created.body);
    CHECK(created.status == 201);
    CHECK(created.json()["name"] == "Ann");
    CHECK(server.admin("PUT", "/agents/a1", {{"name", "Ann B."}, {"max_chats", 3}}).status == 200);

    auto list = server.admin("GET", "/agents");
    REQUIRE(list.status == 200);
    REQUIRE(list.json()["agents"].size() == 1);
    CHECK(list.json()["agents"][0]["id"] == "a1");
    CHECK(list.json()["agents"][0]["name"] == "Ann B.");
    CHECK(list.json()["agents"][0]["max_chats"] == 3);
    CHECK(list.json()["agents"][0]["connected"] == false);

    // Bad input: 400 with a reason naming the field; nothing stored.
    struct bad_case {
        json body;
        const char* field;
    };
    for (const auto& c : std::vector<bad_case>{
             {json::object(), "name"},
             {{{"name", "X"}, {"max_chats", 0}}, "max_chats"},
             {{{"name", "X"}, {"max_chats", "ten"}}, "max_chats"},
             {{{"name", "X"}, {"email", "not-an-email"}}, "email"},
             {{{"name", "X"}, {"schedule", {{"tz", "Mars/Olympus"}, {"blocks", json::array()}}}}, "schedule"},
             {{{"name", "X"}, {"schedule", {{"blocks", {{{"day", "mon"}, {"start", "10:00"}, {"end", "09:00"}}}}}}}, "schedule"},
             {{{"name", "X"}, {"calendar_url", "javascript:alert(1)"}}, "calendar_url"},
         }) {
        INFO(c.body.dump());
        auto reply = server.admin("PUT", "/agents/bad", c.body);
        CHECK(reply.status == 400);
        CHECK(reply.json()["code"] == "bad_request");
        CHECK(reply.json()["message"].get<std::string>().find(c.field) != std::string::npos);
    }
    CHECK(server.admin("GET", "/agents").json()["agents"].size() == 1);

    // Credentials.
    CHECK(http_request(server.port(), "GET", "/v1/tenants/t1/agents").status == 401);
    CHECK(server.admin("GET", "/agents", nullptr, "t1", "t2").status == 403);
    CHECK(server.admin("PUT", "/agents/a9", {{"name", "Spy"}}, "t1", "t2").status == 403);
    CHECK(server.admin("GET", "/agents", nullptr, "t2").json()["agents"] == json::array());
    auto agent_token_on_admin = http_request(server.port(), "GET", "/v1/tenants/t1/agents", "",
                                             {{"Authorization", "Bearer " + chat_server::agent_token("a1")}});
    CHECK(agent_token_on_admin.status == 403);

    // Deleting an agent closes its sessions; it can no longer sign in.
    auto session = server.connect_agent("a1");
    CHECK(server.admin("DELETE", "/agents/a1").status == 204);
    CHECK(session->wait_closed() == 4401);
    CHECK(server.admin("DELETE", "/agents/a1").status == 404);
    ws_client again(server.port(), "/v1/agent");
    again.send_json({{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("a1")}});
    CHECK(again.wait_closed() == 4401);
}

TEST_CASE("admin API: routes and accounts apply to the running router at once", "[ops]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_agent("owner", {{"name", "Owner"}});
    auto a1 = server.connect_agent("a1");
    auto owner = server.connect_agent("owner");

    CHECK(server.admin("PUT", "/routes/sales", {{"type", "round_robin"}}).status == 201);
    CHECK(server.admin("PUT", "/routes/sales", {{"type", "round_robin"}, {"offer_timeout_s", 30}}).status == 200);
    for (const auto& bad : std::vector<json>{
             json::object(),
             {{"type", "carrier_pigeon"}},
             {{"type", "team"}},
             {{"type", "round_robin"}, {"offer_timeout_s", 0}},
             {{"type", "round_robin"}, {"fallback_route", "nowhere"}},
             {{"type", "rules"}, {"rules", {{{"priority", 1}, {"when", {{"field", "shoe_size"}, {"op", "equals"}, {"value", "9"}}}, {"agents", {"a1"}}}}}},
         }) {
        INFO(bad.dump());
        auto reply = server.admin("PUT", "/routes/broken", bad);
        CHECK(reply.status == 400);
        CHECK(reply.json()["code"] == "bad_request");
    }
    // A fallback chain must not loop back.
    CHECK(server.admin("PUT", "/routes/b", {{"type", "round_robin"}, {"fallback_route", "sales"}}).status == 201);
    auto cycle = server.admin("PUT", "/routes/sales", {{"type", "round_robin"}, {"fallback_route", "b"}});
    CHECK(cycle.status == 400);
    CHECK(cycle.json()["message"].get<std::string>().find("cycle") != std::string::npos);
    // A stored route whose fallback_route is null ends the chain; following it
    // used to throw on the I/O thread and take the daemon down.
    CHECK(server.admin("PUT", "/routes/null_fallback", {{"type", "round_robin"}, {"fallback_route", nullptr}}).status == 201);
    CHECK(server.admin("PUT", "/routes/to_null", {{"type", "round_robin"}, {"fallback_route", "null_fallback"}}).status == 201);
    CHECK(server.admin("PUT", "/routes/to_to_null", {{"type", "round_robin"}, {"fallback_route", "to_null"}}).status == 201);

    // Account routing: bigco.com visitors go to their owner, checked before round robin.
    CHECK(server.admin("PUT", "/accounts/bigco.com", {{"agent_id", "ghost"}}).status == 400);
    CHECK(server.admin("PUT", "/accounts/bigco.com", {{"agent_id", "owner"}}).status == 200);
    CHECK(server.admin("PUT", "/routes/web", {{"type", "account"}}).status == 201);
    for (int i = 0; i < 3; ++i) {
        auto visitor = server.connect_visitor({{"name", "V"}, {"email", "v" + std::to_string(i) + "@BigCo.com"}});
        auto id = chat_server::request_agent(visitor, "web", "k" + std::to_string(i));
        CHECK(owner->expect("offer")["conversation_id"] == id);
        REQUIRE(visitor->request({{"type", "end_chat"}, {"id", "e"}, {"conversation_id", id}})["type"] == "ok");
    }
    CHECK_FALSE(a1->receive(200ms).has_value());
    CHECK(server.admin("DELETE", "/accounts/bigco.com").status == 204);
    CHECK(server.admin("DELETE", "/accounts/bigco.com").status == 404);

    // Deleting a route: new requests on it are refused.
    CHECK(server.admin("DELETE", "/routes/b").status == 204);
    auto visitor = server.connect_visitor();
    auto refused = visitor->request({{"type", "request_agent"}, {"id", "q"}, {"route", "b"}});
    CHECK(refused["code"] == "not_found");
    CHECK(server.admin("DELETE", "/routes/b").status == 404);
    CHECK(server.admin("PUT", "/routes/x", {{"type", "round_robin"}}, "t1", "t2").status == 403);
}

TEST_CASE("admin API: ids in the path must be valid UTF-8 once percent-decoded", "[ops]") {
    chat_server server;
    server.put_agent("owner", {{"name", "Owner"}});
    // Each of these used to be stored, answered with a dropped connection, and
    // from then on break every listing of its kind, restarts included.
    struct bad_case {
        const char* path;
        json body;
    };
    for (const auto& c : std::vector<bad_case>{
             {"/agents/a%FF", {{"name", "Ann"}}},
             {"/agents/a%C3", {{"name", "Ann"}}},
             {"/agents/%ED%A0%80", {{"name", "Ann"}}},  // an encoded surrogate
             {"/visitors/v%C3", {{"name", "Lin"}}},
             {"/accounts/x%FF.com", {{"agent_id", "owner"}}},
         }) {
        INFO(c.path);
        auto reply = server.admin("PUT", c.path, c.body);
        CHECK(reply.status == 400);
        REQUIRE(!reply.body.empty());
        CHECK(reply.json()["code"] == "bad_request");
        CHECK(reply.json()["message"].get<std::string>().find("UTF-8") != std::string::npos);
    }
    CHECK(server.admin("POST", "/visitors/v%FF/activities", {{"type", "opened_email"}, {"at", 1}}).status == 400);
    CHECK(server.admin("DELETE", "/agents/a%FF").status == 400);
    CHECK(http_request(server.port(), "GET", "/v1/tenants/t%FF/agents").status == 400);
    // Account domains follow the rules of ids: no control characters.
    auto control = server.admin("PUT", "/accounts/%00%0a", {{"agent_id", "owner"}});
    CHECK(control.status == 400);
    CHECK(control.json()["message"] == "bad account domain");

    auto list = server.admin("GET", "/agents");
    REQUIRE(list.status == 200);
    REQUIRE(list.json()["agents"].size() == 1);
    CHECK(list.json()["agents"][0]["id"] == "owner");

    // Well-formed non-ASCII ids are fine.
    CHECK(server.admin("PUT", "/agents/%C3%A9lodie", {{"name", "Elodie"}}).status == 201);
    CHECK(server.admin("PUT", "/accounts/b%C3%BCcher.de", {{"agent_id", "owner"}}).status == 200);
    list = server.admin("GET", "/agents");
    REQUIRE(list.status == 200);
    REQUIRE(list.json()["agents"].size() == 2);
    CHECK(list.json()["agents"][1]["id"] == "\xC3\xA9lodie");
}

TEST_CASE("admin API: an id stored with bytes that are not UTF-8 does not break the agent list", "[ops]") {
    // Written before the daemon checked ids, straight into its database.
    temp_dir dir;
    const std::string url = "sqlite://" + (dir.path() / "seeded.db").string();
    {
        auto store = open_store_ok(url);
        REQUIRE(wait_for_store<void>([&](auto done) { store->put_tenant({"t1", {{"name", "t1"}}}, done); }).ok());
        parley::storage::agent_record agent;
        agent.tenant_id = "t1";
        agent.id = "a\xFF";
        agent.name = "Ann";
        agent.max_chats = 10;
        REQUIRE(wait_for_store<void>([&](auto done) { store->put_agent(agent, done); }).ok());
    }
    chat_server server({}, url);
    auto list = server.admin("GET", "/agents");
    INFO(list.body);
    REQUIRE(list.status == 200);
    REQUIRE(list.json()["agents"].size() == 1);
    CHECK(list.json()["agents"][0]["id"] == "a\xEF\xBF\xBD");  // U+FFFD in place of the stray byte
    CHECK(list.json()["agents"][0]["name"] == "Ann");
}

TEST_CASE("admin API: a route is stored as its normalised form, unknown fields dropped", "[ops]") {
    chat_server server;
    json body{{"type", "round_robin"}, {"offer_timeout_s", 30}, {"fallback_message", "Later"}, {"team", nullptr},
              {"junk", std::string(10'000, 'x')}, {"more_junk", {{"a", json::array({1, 2, 3})}}}};
    auto put = server.admin("PUT", "/routes/sales", body);
    INFO(put.body);
    REQUIRE(put.status == 201);
    const json normalised{{"name", "sales"},         {"type", "round_robin"},       {"offer_timeout_s", 30},
                          {"queue_wait_s", 0},       {"fallback_message", "Later"}, {"fallback_calendar", false}};
    CHECK(put.json() == normalised);
    auto rules = server.admin("PUT", "/routes/vip",
                              {{"type", "rules"}, {"x", 1},
                               {"rules", {{{"priority", 1}, {"y", 2},
                                           {"when", {{"field", "company"}, {"op", "equals"}, {"value", "BigCo"}, {"z", 3}}},
                                           {"agents", {"a1"}}}}}});
    INFO(rules.body);
    REQUIRE(rules.status == 201);
    CHECK(rules.json() == json{{"name", "vip"},
                               {"type", "rules"},
                               {"rules", {{{"priority", 1},
                                           {"when", {{"field", "company"}, {"op", "equals"}, {"value", "BigCo"}}},
                                           {"agents", {"a1"}}}}},
                               {"queue_wait_s", 0},
                               {"fallback_calendar", false}});

    // Storage holds the same, without the name; max_attempts stays absent so the configured default applies.
    auto store = open_store_ok("sqlite://" + (server.dir().path() / "parley.db").string());
    auto stored = wait_for_store<std::vector<parley::storage::route_record>>(
        [&](auto done) { store->list_routes("t1", done); });
    REQUIRE(stored.ok());
    REQUIRE(stored->size() == 2);
    for (const auto& route : stored.value()) {
        INFO(route.name << ": " << route.config.dump());
        auto expected = route.name == "sales" ? normalised : rules.json();
        expected.erase("name");
        CHECK(route.config == expected);
    }
}

TEST_CASE("admin API: routes stored raw by older versions are rewritten normalised at start; GET routes lists them", "[ops]") {
    // Written as versions before normalisation stored PUT bodies, straight into the database.
    temp_dir dir;
    const std::string url = "sqlite://" + (dir.path() / "seeded.db").string();
    const json clean{{"type", "round_robin"}, {"queue_wait_s", 0}, {"fallback_calendar", false}};
    const json clean_rules{
        {"type", "rules"},
        {"rules", {{{"priority", 1}, {"when", {{"field", "company"}, {"op", "equals"}, {"value", "BigCo"}}}, {"agents", {"a1"}}}}},
        {"max_attempts", 3},
        {"queue_wait_s", 60},
        {"fallback_route", "clean"},
        {"fallback_message", "Later"},
        {"fallback_calendar", true}};
    {
        auto store = open_store_ok(url);
        REQUIRE(wait_for_store<void>([&](auto done) { store->put_tenant({"t1", {{"name", "t1"}}}, done); }).ok());
        for (const auto& [name, config] : std::vector<std::pair<std::string, json>>{
                 // Mostly an unknown field (older builds stored what the 1 MiB HTTP body limit let through).
                 {"legacy", {{"type", "round_robin"}, {"offer_timeout_s", 30}, {"team", nullptr},
                             {"fallback_route", nullptr}, {"junk", std::string(100'000, 'x')}}},
                 {"small", {{"type", "team"}, {"team", "sales"}, {"x", {{"y", 1}}}}},
                 {"clean", clean},
                 {"clean_rules", clean_rules},
                 {"dangling", {{"type", "round_robin"}, {"fallback_route", "gone"}}},
                 {"broken", {{"type", "nope"}, {"junk", 1}}},
             }) {
            REQUIRE(wait_for_store<void>([&](auto done) { store->put_route({"t1", name, config}, done); }).ok());
        }
    }
    chat_server server({}, url);
    const auto log = server.daemon().log();
    INFO(log);
    CHECK(log.find("3 stored route(s) rewritten in normalised form, unknown fields dropped: dangling, legacy, small") !=
          std::string::npos);
    CHECK(log.find("route dangling: fallback_route gone does not exist") != std::string::npos);
    CHECK(log.find("stored route broken is invalid and skipped") != std::string::npos);

    const json legacy{{"type", "round_robin"}, {"offer_timeout_s", 30}, {"queue_wait_s", 0}, {"fallback_calendar", false}};
    const json small{{"type", "team"}, {"team", "sales"}, {"queue_wait_s", 0}, {"fallback_calendar", false}};
    const json dangling{{"type", "round_robin"}, {"queue_wait_s", 0}, {"fallback_route", "gone"}, {"fallback_calendar", false}};
    // Storage holds the normalised form; the invalid row is left as it was (not in effect, not listed).
    auto store = open_store_ok(url);
    auto stored = wait_for_store<std::vector<parley::storage::route_record>>(
        [&](auto done) { store->list_routes("t1", done); });
    REQUIRE(stored.ok());
    std::map<std::string, json> rows;
    for (const auto& route : stored.value()) rows[route.name] = route.config;
    CHECK(rows == std::map<std::string, json>{{"broken", {{"type", "nope"}, {"junk", 1}}},
                                              {"clean", clean},
                                              {"clean_rules", clean_rules},
                                              {"dangling", dangling},
                                              {"legacy", legacy},
                                              {"small", small}});

    auto listed = server.admin("GET", "/routes");
    INFO(listed.body);
    REQUIRE(listed.status == 200);
    auto named = [](json route, const std::string& name) {
        route["name"] = name;
        return route;
    };
    CHECK(listed.json() == json{{"routes", {named(clean, "clean"), named(clean_rules, "clean_rules"), named(dangling, "dangling"),
                                            named(legacy, "legacy"), named(small, "small")}}});
    CHECK(server.admin("PUT", "/routes", clean).status == 405);
    // Still in effect, now without its 100 KB of junk.
    auto visitor = server.connect_visitor();
    CHECK(visitor->request({{"type", "request_agent"}, {"id", "q"}, {"route", "legacy"}})["type"] == "ok");
}

TEST_CASE("admin API: a tenant's agents, routes and accounts are capped by the limits", "[ops]") {
    chat_server server("[limits]\nmax_agents_per_tenant = 2\nmax_routes_per_tenant = 2\nmax_accounts_per_tenant = 1\n");
    auto refused = [](const http_reply& reply, const std::string& key) {
        INFO(reply.body);
        CHECK(reply.status == 400);
        REQUIRE(!reply.body.empty());
        CHECK(reply.json()["code"] == "capacity");
        CHECK(reply.json()["message"].get<std::string>().find(key) != std::string::npos);
    };

    CHECK(server.admin("PUT", "/agents/a1", {{"name", "Ann"}}).status == 201);
    CHECK(server.admin("PUT", "/agents/a2", {{"name", "Bo"}}).status == 201);
    refused(server.admin("PUT", "/agents/a3", {{"name", "Cy"}}), "limits.max_agents_per_tenant");
    CHECK(server.admin("PUT", "/agents/a2", {{"name", "Bo B."}}).status == 200);  // updates are not creations
    CHECK(server.admin("GET", "/agents").json()["agents"].size() == 2);
    CHECK(server.admin("DELETE", "/agents/a2").status == 204);
    CHECK(server.admin("PUT", "/agents/a3", {{"name", "Cy"}}).status == 201);

    CHECK(server.admin("PUT", "/routes/r1", {{"type", "round_robin"}}).status == 201);
    CHECK(server.admin("PUT", "/routes/r2", {{"type", "round_robin"}}).status == 201);
    refused(server.admin("PUT", "/routes/r3", {{"type", "round_robin"}}), "limits.max_routes_per_tenant");
    CHECK(server.admin("PUT", "/routes/r2", {{"type", "round_robin"}, {"queue_wait_s", 5}}).status == 200);
    CHECK(server.admin("DELETE", "/routes/r2").status == 204);
    CHECK(server.admin("PUT", "/routes/r3", {{"type", "round_robin"}}).status == 201);
    auto visitor = server.connect_visitor();
    CHECK(visitor->request({{"type", "request_agent"}, {"id", "q"}, {"route", "r2"}})["code"] == "not_found");

    CHECK(server.admin("PUT", "/accounts/bigco.com", {{"agent_id", "a1"}}).status == 200);
    refused(server.admin("PUT", "/accounts/other.com", {{"agent_id", "a1"}}), "limits.max_accounts_per_tenant");
    CHECK(server.admin("PUT", "/accounts/BigCo.com", {{"agent_id", "a3"}}).status == 200);  // the same account
    CHECK(server.admin("DELETE", "/accounts/bigco.com").status == 204);
    CHECK(server.admin("PUT", "/accounts/other.com", {{"agent_id", "a1"}}).status == 200);

    // Per tenant: t2 has its own allowance.
    CHECK(server.admin("PUT", "/routes/r9", {{"type", "round_robin"}}, "t2").status == 201);
    CHECK(server.admin("PUT", "/agents/a9", {{"name", "Di"}}, "t2").status == 201);
}

TEST_CASE("admin API: a route another route falls back to cannot be deleted", "[ops]") {
    chat_server server;
    server.put_route("r1", {{"type", "round_robin"}});
    server.put_route("r2", {{"type", "round_robin"}, {"fallback_route", "r1"}});
    server.put_route("r3", {{"type", "round_robin"}, {"fallback_route", "r1"}});
    auto refused = server.admin("DELETE", "/routes/r1");
    INFO(refused.body);
    CHECK(refused.status == 409);
    REQUIRE(!refused.body.empty());
    CHECK(refused.json()["code"] == "conflict");
    auto message = refused.json()["message"].get<std::string>();
    CHECK(message.find("r2") != std::string::npos);
    CHECK(message.find("r3") != std::string::npos);
    // Still there and still routable.
    auto visitor = server.connect_visitor();
    CHECK(visitor->request({{"type", "request_agent"}, {"id", "q"}, {"route", "r1"}})["type"] == "ok");

    CHECK(server.admin("DELETE", "/routes/r2").status == 204);
    server.put_route("r3", {{"type", "round_robin"}});  // no longer falls back to r1
    CHECK(server.admin("DELETE", "/routes/r1").status == 204);
    CHECK(server.admin("DELETE", "/routes/r3").status == 204);
}

TEST_CASE("admin API: visitor profiles and activities feed the agent's visitor card and history", "[ops]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    auto agent = server.connect_agent("a1");

    auto put = server.admin("PUT", "/visitors/crm-7",
                            {{"name", "Lin"}, {"job_title", "CFO"}, {"email", "lin@x.io"}, {"crm_status", "Opportunity"}});
    INFO(put.body);
    CHECK(put.status == 200);
    CHECK(server.admin("PUT", "/visitors/crm-7", {{"email", "nope"}}).status == 400);
    auto card = agent->request({{"type", "get_visitor"}, {"id", "g"}, {"visitor_id", "crm-7"}});
    CHECK(card["name"] == "Lin");
    CHECK(card["job_title"] == "CFO");
    CHECK(card["crm_status"] == "Opportunity");
    CHECK(card["phone"].is_null());
    // The body is the whole card: what it leaves out is cleared, in storage and for connected agents.
    CHECK(server.admin("PUT", "/visitors/crm-7", {{"name", "Lin"}, {"crm_status", "Customer"}}).status == 200);
    card = agent->request({{"type", "get_visitor"}, {"id", "g1"}, {"visitor_id", "crm-7"}});
    CHECK(card["name"] == "Lin");
    CHECK(card["crm_status"] == "Customer");
    CHECK(card["job_title"].is_null());
    CHECK(card["email"].is_null());

    const auto now = now_ms();
    CHECK(server.admin("POST", "/visitors/crm-7/activities",
                       {{"type", "visited_webpage"}, {"at", now - 60'000}, {"details", {{"url", "https://x.io/pricing"}}}})
              .status == 201);
    CHECK(server.admin("POST", "/visitors/crm-7/activities", {{"type", "opened_email"}, {"at", now - 30'000}}).status == 201);
    // Older than 90 days: stored but never returned.
    CHECK(server.admin("POST", "/visitors/crm-7/activities",
                       {{"type", "filled_out_form"}, {"at", now - 91LL * 86'400'000}})
              .status == 201);
    CHECK(server.admin("POST", "/visitors/crm-7/activities", {{"type", "chat_ended"}, {"at", now}}).status == 400);
    CHECK(server.admin("POST", "/visitors/crm-7/activities", {{"type", "Bad Type!"}, {"at", now}}).status == 400);
    CHECK(server.admin("POST", "/visitors/crm-7/activities", {{"type", "x"}}).status == 400);

    auto history = agent->request({{"type", "get_activity"}, {"id", "a"}, {"visitor_id", "crm-7"}, {"limit", 1}});
    REQUIRE(history["activities"].size() == 1);
    CHECK(history["activities"][0]["type"] == "opened_email");
    REQUIRE(history["next_cursor"].is_string());
    auto page2 = agent->request(
        {{"type", "get_activity"}, {"id", "b"}, {"visitor_id", "crm-7"}, {"limit", 10}, {"cursor", history["next_cursor"]}});
    REQUIRE(page2["activities"].size() == 1);
    CHECK(page2["activities"][0]["type"] == "visited_webpage");
    CHECK(page2["activities"][0]["details"]["url"] == "https://x.io/pricing");
    CHECK(page2["next_cursor"].is_null());

    // Details come back as they were posted, an empty object included; absent ones are null.
    CHECK(server.admin("POST", "/visitors/crm-8/activities", {{"type", "opened_email"}, {"at", now - 2}, {"details", json::object()}})
              .status == 201);
    CHECK(server.admin("POST", "/visitors/crm-8/activities", {{"type", "visited_webpage"}, {"at", now - 1}}).status == 201);
    auto crm8 = agent->request({{"type", "get_activity"}, {"id", "c8"}, {"visitor_id", "crm-8"}});
    REQUIRE(crm8["activities"].size() == 2);
    CHECK(crm8["activities"][0]["details"].is_null());
    CHECK(crm8["activities"][1]["details"] == json::object());

    // Another tenant's agent sees none of it.
    server.put_agent("a1", {{"name", "Other"}}, "t2");
    auto other = server.connect_agent("a1", true, "t2");
    CHECK(other->request({{"type", "get_visitor"}, {"id", "g"}, {"visitor_id", "crm-7"}})["code"] == "not_found");
    CHECK(other->request({{"type", "get_activity"}, {"id", "a"}, {"visitor_id", "crm-7"}})["activities"] == json::array());
}

TEST_CASE("/metrics counters and gauges move with the traffic", "[ops]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}, {"offer_timeout_s", 1}});
    auto before = scrape(server.port());
    CHECK(before["parley_connections{kind=\"agent\"}"] == 0);
    CHECK(before.count("parley_chats_total{outcome=\"requested\"}") == 1);
    CHECK(before["parley_storage_ready"] == 1);

    auto agent = server.connect_agent("a1");
    auto visitor = server.connect_visitor();
    auto id = chat_server::request_agent(visitor, "sales");
    agent->expect("offer");
    CHECK(agent->expect("offer_withdrawn", 3s)["reason"] == "expired");
    visitor->expect("ended", 3s);  // max_attempts 2 but only one agent: fallback
    auto second = chat_server::request_agent(visitor, "sales", "k-2");
    chat_server::accept_next_offer(agent);
    for (int i = 0; i < 5; ++i) chat_server::send_text(*visitor.ws, second, "hi", "m-" + std::to_string(i));

    std::map<std::string, double> after;
    // Gauges are published once a second.
    for (int i = 0; i < 30; ++i) {
        after = scrape(server.port());
        if (after["parley_capacity_in_use"] == 1) break;
        std::this_thread::sleep_for(100ms);
    }
    CHECK(after["parley_connections{kind=\"agent\"}"] == 1);
    CHECK(after["parley_connections{kind=\"visitor\"}"] == 1);
    CHECK(after["parley_chats_total{outcome=\"requested\"}"] - before["parley_chats_total{outcome=\"requested\"}"] == 2);
    CHECK(after["parley_chats_total{outcome=\"offered\"}"] - before["parley_chats_total{outcome=\"offered\"}"] == 2);
    CHECK(after["parley_chats_total{outcome=\"expired\"}"] - before["parley_chats_total{outcome=\"expired\"}"] == 1);
    CHECK(after["parley_chats_total{outcome=\"accepted\"}"] - before["parley_chats_total{outcome=\"accepted\"}"] == 1);
    CHECK(after["parley_chats_total{outcome=\"fallback\"}"] - before["parley_chats_total{outcome=\"fallback\"}"] == 1);
    CHECK(after["parley_frames_in_total"] > before["parley_frames_in_total"]);
    CHECK(after["parley_frames_out_total"] > before["parley_frames_out_total"]);
    CHECK(after["parley_capacity_in_use"] == 1);
    CHECK(after["parley_agents_available"] == 1);
    CHECK(after["parley_offer_to_accept_seconds_count"] == 1);
    CHECK(after["parley_send_ack_seconds_count"] == 5);
    CHECK(after["parley_storage_batches_total"] > before["parley_storage_batches_total"]);
    CHECK(after["parley_storage_writes_total"] >= after["parley_storage_batches_total"]);
    CHECK(after["parley_storage_batch_seconds_count"] == after["parley_storage_batches_total"]);
    CHECK(after["parley_send_ack_seconds_bucket{le=\"+Inf\"}"] == 5);
}

TEST_CASE("SIGTERM reaches every connection: 1001 before hello too, 503 to an upgrade during the drain", "[ops]") {
    chat_server server;
    ws_client silent(server.port(), "/v1/visitor");  // upgraded, never says hello
    // An HTTP keep-alive connection opened before the signal, which asks for an upgrade after it.
    int fd = connect_loopback(server.port(), timeval{5, 0});
    auto exchange = [fd](const std::string& request) {
        REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
        char reply[2048];
        auto got = ::recv(fd, reply, sizeof reply, 0);
        return got > 0 ? std::string(reply, static_cast<std::size_t>(got)) : std::string();
    };
    CHECK(exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").rfind("HTTP/1.1 200", 0) == 0);
    auto metrics = scrape(server.port());
    CHECK(metrics["parley_open_connections"] >= 2);  // the silent one and this one (and the scrape's own)

    server.daemon().signal(SIGTERM);
    CHECK(silent.wait_closed() == 1001);
    const auto refused = exchange(
        "GET /v1/visitor HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    INFO(refused);
    CHECK(refused.rfind("HTTP/1.1 503", 0) == 0);
    CHECK(refused.find("Retry-After: 1") != std::string::npos);
    CHECK(refused.find("\"code\":\"unavailable\"") != std::string::npos);
    ::close(fd);
    CHECK(server.daemon().wait_exit(15s) == std::optional<int>(0));
}

TEST_CASE("a GET without upgrade on a WebSocket endpoint is told to upgrade", "[ops]") {
    chat_server server;
    auto reply = http_request(server.port(), "GET", "/v1/agent");
    CHECK(reply.status == 426);
    CHECK(reply.headers["Upgrade"] == "websocket");
    CHECK(json::parse(reply.body)["code"] == "bad_request");
}

TEST_CASE("SIGTERM drains: clients get 1001, acknowledged messages survive, exit 0", "[ops]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, id] = server.start_chat(agent, "sales");
    // Sent without waiting: some are still in flight when the signal arrives.
    for (int i = 0; i < 30; ++i)
        visitor->send_json({{"type", "send"}, {"id", "s" + std::to_string(i)}, {"conversation_id", id},
                            {"text", "m" + std::to_string(i)}, {"client_msg_id", "c" + std::to_string(i)}});
    int acknowledged = visitor->expect("ok")["re"] == "s0";
    server.daemon().signal(SIGTERM);
    while (auto frame = visitor->receive(5s)) {
        auto reply = json::parse(*frame);
        acknowledged += reply["type"] == "ok";
        if (reply["type"] == "error") CHECK(reply["code"] == "unavailable");  // refused during the drain: resend later
    }
    CHECK(visitor->close_code() == 1001);
    CHECK(agent->wait_closed() == 1001);
    CHECK(server.daemon().wait_exit(15s) == std::optional<int>(0));
    INFO(server.daemon().log());
    CHECK(server.daemon().log().find("SIGTERM: shutting down") != std::string::npos);

    // Everything acknowledged is there after a restart on the same database.
    daemon_process again(server.dir().path(), test_config(server.dir().path()));
    auto reader = std::make_unique<ws_client>(again.port(), "/v1/agent");
    REQUIRE(reader->request({{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("a1")}})["type"] == "ok");
    auto transcript = reader->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", id}});
    REQUIRE(transcript["type"] == "ok");
    CHECK(acknowledged > 0);
    CHECK(static_cast<int>(transcript["messages"].size()) >= acknowledged);
    for (std::size_t i = 0; i < transcript["messages"].size(); ++i) CHECK(transcript["messages"][i]["seq"] == i + 1);
}

// Connections closed by a shutdown are not visitors leaving (routing.visitor_grace_s): like agents'
// sessions, they change nothing, and the waiting chats are there after the restart.
TEST_CASE("SIGTERM ends no waiting chat: visitor connections closed by the shutdown do not count as leaving",
          "[ops]") {
    chat_server server("[routing]\nvisitor_grace_s = 0\n");  // a visitor who leaves ends its chat at once
    server.put_agent("a1", {{"name", "Ann"}, {"max_chats", 1}});
    server.put_route("support", {{"type", "round_robin"}, {"queue_wait_s", 300}});
    auto agent = server.connect_agent("a1");
    auto offered = server.connect_visitor();
    const auto offered_id = chat_server::request_agent(offered, "support", "k-1");
    CHECK(agent->expect("offer")["conversation_id"] == offered_id);
    auto leaver = server.connect_visitor();
    chat_server::request_agent(leaver, "support", "k-2");
    auto queued = server.connect_visitor();
    const auto queued_id = chat_server::request_agent(queued, "support", "k-3");
    CHECK(queued->expect("queued")["position"] == 2);
    // A visitor who closes the page leaves the line at once...
    leaver->close();
    CHECK(queued->expect("queued")["position"] == 1);

    // ...but the shutdown closing every connection ends nothing.
    server.daemon().signal(SIGTERM);
    CHECK(offered->wait_closed() == 1001);
    CHECK(queued->wait_closed() == 1001);
    CHECK(agent->wait_closed() == 1001);
    CHECK(server.daemon().wait_exit(15s) == std::optional<int>(0));

    // Both waiting chats are open after a restart on the same database, for their visitors to return to.
    daemon_process again(server.dir().path(),
                         test_config(server.dir().path(), {}, "[routing]\nvisitor_grace_s = 60\n"));
    for (const auto& [visitor, conversation_id] : {std::pair{&offered, offered_id}, std::pair{&queued, queued_id}}) {
        ws_client back(again.port(), "/v1/visitor");
        auto hello = back.request({{"type", "hello"}, {"id", "h"}, {"tenant", "t1"}, {"resume_token", visitor->resume_token}});
        INFO(hello.dump());
        REQUIRE(hello["type"] == "ok");
        REQUIRE(hello["conversation"].is_object());
        CHECK(hello["conversation"]["id"] == conversation_id);
        CHECK(hello["conversation"]["state"] != "ended");
    }
}

namespace {

// A masked client frame (RFC 6455 5.3), payload under 126 bytes.
std::string client_frame(unsigned char opcode, const std::string& payload) {
    std::string frame;
    frame += static_cast<char>(0x80 | opcode);
    frame += static_cast<char>(0x80 | payload.size());
    const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    frame.append(reinterpret_cast<const char*>(mask), 4);
    for (std::size_t i = 0; i < payload.size(); ++i) frame += static_cast<char>(payload[i] ^ mask[i % 4]);
    return frame;
}

}  // namespace

// A binary frame makes the server close (1003) while the client's own close
// frame is already on its way: the two closes cross. Beast 1.81 can then park
// its read and close operations on each other's locks for good, and with them
// the session object. Every session
// object must still be released.
TEST_CASE("crossing closes leave no session object behind", "[ops]") {
    chat_server server;
    const std::string upgrade =
        "GET /v1/visitor HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const std::string binary_then_close = client_frame(0x2, "x") + client_frame(0x8, std::string("\x03\xe8", 2));
    // One at a time: upgrade, send both frames at once, read what the server
    // sends (its close), close the socket. The crossing that parks Beast's
    // operations comes up in about one connection in four this way.
    constexpr int connections = 200;
    for (int i = 0; i < connections; ++i) {
        int fd = connect_loopback(server.port(), timeval{0, 200'000});
        REQUIRE(::send(fd, upgrade.data(), upgrade.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(upgrade.size()));
        std::string reply;
        char chunk[1024];
        while (reply.find("\r\n\r\n") == std::string::npos) {
            auto got = ::recv(fd, chunk, sizeof chunk, 0);
            REQUIRE(got > 0);
            reply.append(chunk, static_cast<std::size_t>(got));
        }
        REQUIRE(reply.rfind("HTTP/1.1 101", 0) == 0);
        REQUIRE(::send(fd, binary_then_close.data(), binary_then_close.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(binary_then_close.size()));
        (void)::recv(fd, chunk, sizeof chunk, 0);
        ::close(fd);
    }

    // close_grace (5 s) plus the release a second later, with room for a loaded machine.
    // The previous scrape's connection may still count for a moment.
    double alive = -1, connected = -1;
    for (int i = 0; i < 150; ++i) {
        auto metrics = scrape(server.port());
        alive = metrics["parley_websocket_session_objects"];
        connected = metrics["parley_open_connections"];
        if (alive == 0 && connected == 1) break;
        std::this_thread::sleep_for(100ms);
    }
    CHECK(alive == 0);
    CHECK(connected == 1);  // the scrape itself
}

TEST_CASE("a conversation holds at most limits.max_messages_per_conversation messages, also after a restart", "[ops]") {
    temp_dir dir;
    const std::string url = "sqlite://" + (dir.path() / "capped.db").string();
    const std::string limits = "[limits]\nmax_messages_per_conversation = 5\n";
    std::string conversation_id, resume_token;
    auto refused = [](const json& reply) {
        INFO(reply.dump());
        CHECK(reply["type"] == "error");
        CHECK(reply["code"] == "capacity");
        CHECK_THAT(reply["message"].get<std::string>(),
                   Catch::Contains("5 messages") && Catch::Contains("limits.max_messages_per_conversation"));
    };
    {
        chat_server server(limits, url);
        server.put_agent("a1", {{"name", "Ann"}, {"calendar_url", "https://cal.example/ann"}});
        server.put_route("sales", {{"type", "round_robin"}});
        auto agent = server.connect_agent("a1");
        auto chat = server.start_chat(agent, "sales");
        conversation_id = chat.conversation_id;
        resume_token = chat.visitor.resume_token;
        for (int i = 1; i <= 4; ++i)
            REQUIRE(chat_server::send_text(*chat.visitor.ws, conversation_id, "m " + std::to_string(i),
                                           "m-" + std::to_string(i))["seq"] == i);
        REQUIRE(chat_server::send_text(*agent.ws, conversation_id, "a 5", "a-5")["seq"] == 5);

        // The sixth is refused, whoever sends it and whatever it is; nothing of it is stored.
        refused(chat_server::send_text(*chat.visitor.ws, conversation_id, "one too many", "m-6"));
        refused(chat_server::send_text(*agent.ws, conversation_id, "me neither", "a-6"));
        refused(agent->request({{"type", "share_calendar"}, {"id", "k"}, {"conversation_id", conversation_id},
                                {"agent_id", "a1"}}));
        // A resend of a stored message still gets its seq.
        CHECK(chat_server::send_text(*chat.visitor.ws, conversation_id, "m 3", "m-3")["seq"] == 3);

        auto transcript = agent->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", conversation_id}});
        REQUIRE(transcript["type"] == "ok");
        REQUIRE(transcript["messages"].size() == 5);
        CHECK(transcript["messages"][4]["text"] == "a 5");
        auto activity = agent->request({{"type", "get_activity"}, {"id", "ac"}, {"visitor_id", chat.visitor.visitor_id}});
        for (const auto& a : activity["activities"]) CHECK(a["type"] != "calendar_shared");
        CHECK(scrape(server.port())["parley_message_cap_refusals_total"] == 3);
        CHECK(server.daemon().log().find("reached 5 messages (limits.max_messages_per_conversation)") !=
              std::string::npos);

        // Other conversations are not affected.
        auto other = server.start_chat(agent, "sales");
        CHECK(chat_server::send_text(*other.visitor.ws, other.conversation_id, "hello", "m-1")["seq"] == 1);
    }
    // A restarted server knows the count from the stored seqs.
    chat_server server(limits, url);
    auto visitor = server.connect_visitor(nullptr, resume_token);
    REQUIRE(visitor.hello_reply["conversation"]["id"] == conversation_id);
    CHECK(visitor.hello_reply["conversation"]["last_seq"] == 5);
    refused(chat_server::send_text(*visitor.ws, conversation_id, "after the restart", "m-7"));
}

TEST_CASE("transcript.txt of a long conversation comes in chunks, every message once and in order", "[ops]") {
    chat_server server("[limits]\nframes_per_second = 100000\nframe_burst = 100000\n");
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    auto agent = server.connect_agent("a1");
    auto [visitor, conversation_id] = server.start_chat(agent, "sales");
    constexpr int sent = 450;  // more than two of the pages it is read in
    chat_server::send_numbered(*visitor.ws, conversation_id, sent, "line", "m-");

    auto check_complete = [&](http_reply text) {
        INFO(text.body.substr(0, 300));
        REQUIRE(text.status == 200);
        CHECK(text.headers.count("Content-Length") == 0);
        CHECK(text.headers["Transfer-Encoding"] == "chunked");
        CHECK(text.headers["Content-Type"].rfind("text/plain", 0) == 0);
        std::istringstream lines(text.body);
        int expected = 1;
        for (std::string line; std::getline(lines, line); ++expected) {
            INFO(line);
            REQUIRE(expected <= sent);
            CHECK(line.find("] #" + std::to_string(expected) + " visitor: line " + std::to_string(expected)) !=
                  std::string::npos);
        }
        CHECK(expected - 1 == sent);
    };
    check_complete(server.admin("GET", "/conversations/" + conversation_id + "/transcript.txt"));
    check_complete(http_request(server.port(), "GET", "/v1/tenants/t1/conversations/" + conversation_id + "/transcript.txt",
                                "", {{"Authorization", "Bearer " + chat_server::agent_token("a1")}}));
    CHECK(await_gauge(server.port(), "parley_transcript_reads", 0));  // every download gives its place back

    // HTTP/1.0 has no chunks: refused rather than cut short by the connection's end.
    int fd = connect_loopback(server.port(), timeval{5, 0});
    const std::string request = "GET /v1/tenants/t1/conversations/" + conversation_id +
                                "/transcript.txt HTTP/1.0\r\nAuthorization: Bearer " + admin_token_of("t1") + "\r\n\r\n";
    REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
    std::string reply;
    char chunk[4096];
    for (ssize_t got; (got = ::recv(fd, chunk, sizeof chunk, 0)) > 0;) reply.append(chunk, static_cast<std::size_t>(got));
    ::close(fd);
    CHECK(reply.rfind("HTTP/1.0 505", 0) == 0);
    CHECK(reply.find("HTTP/1.1") != std::string::npos);
}

TEST_CASE("transcript reads in progress are bounded per tenant; over the bound: rate_limited and 503", "[ops]") {
    // A conversation of 12 MB, more than the socket buffers between the daemon and a client that does not read.
    temp_dir dir;
    const std::string url = "sqlite://" + (dir.path() / "long.db").string();
    constexpr int messages = 3000;
    {
        auto store = open_store_ok(url);
        REQUIRE(wait_for_store<void>([&](auto done) { store->put_tenant({"t1", {{"name", "t1"}}}, done); }).ok());
        parley::storage::conversation_record c;
        c.tenant_id = "t1";
        c.id = "c_long";
        c.visitor_id = "v_1";
        c.route = "sales";
        c.state = parley::storage::conversation_state::ended;
        c.started_at = now_ms() - 60'000;
        c.ended_at = now_ms();
        REQUIRE(wait_for_store<void>([&](auto done) { store->save_conversation(c, done); }).ok());
        std::vector<std::future<parley::storage::result<parley::storage::append_outcome>>> written;
        for (int seq = 1; seq <= messages; ++seq) {
            parley::storage::message_record m;
            m.tenant_id = "t1";
            m.conversation_id = "c_long";
            m.seq = seq;
            m.body = std::string(4000, static_cast<char>('a' + seq % 26));
            m.at = c.started_at + seq;
            auto promise = std::make_shared<std::promise<parley::storage::result<parley::storage::append_outcome>>>();
            written.push_back(promise->get_future());
            store->append_message(std::move(m), [promise](auto r) { promise->set_value(std::move(r)); });
        }
        for (auto& w : written) REQUIRE(w.get().ok());
    }
    chat_server server("[limits]\nmax_transcript_reads_per_tenant = 1\n", url);
    server.put_agent("a1", {{"name", "Ann"}});
    auto agent = server.connect_agent("a1");

    // A download whose client reads the head and then nothing: it keeps t1's one place.
    int stalled = connect_loopback(server.port(), timeval{5, 0}, 4096);
    const std::string request = "GET /v1/tenants/t1/conversations/c_long/transcript.txt HTTP/1.1\r\nHost: x\r\n"
                                "Authorization: Bearer " + admin_token_of("t1") + "\r\n\r\n";
    REQUIRE(::send(stalled, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
    std::string head;
    char byte;
    while (head.find("\r\n\r\n") == std::string::npos && ::recv(stalled, &byte, 1, 0) == 1) head += byte;
    INFO(head);
    REQUIRE(head.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(head.find("Transfer-Encoding: chunked") != std::string::npos);

    auto busy = server.admin("GET", "/conversations/c_long/transcript.txt");
    INFO(busy.body);
    CHECK(busy.status == 503);
    CHECK(busy.headers["Retry-After"] == "1");
    CHECK(busy.json()["code"] == "rate_limited");
    CHECK_THAT(busy.json()["message"].get<std::string>(), Catch::Contains("limits.max_transcript_reads_per_tenant"));
    auto refused = agent->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", "c_long"}, {"limit", 1}});
    CHECK(refused["code"] == "rate_limited");
    CHECK_FALSE(agent->closed());
    // Per tenant: t2 reads on (its conversation does not exist).
    CHECK(server.admin("GET", "/conversations/c_long/transcript.txt", nullptr, "t2").status == 404);
    CHECK(await_gauge(server.port(), "parley_transcript_reads", 1));  // t2's read gives its place back at once
    CHECK(scrape(server.port())["parley_transcript_reads_refused_total"] == 2);

    // The download ends when its client goes; then the place is free again.
    ::close(stalled);
    REQUIRE(await_gauge(server.port(), "parley_transcript_reads", 0));
    auto page = agent->request({{"type", "get_transcript"}, {"id", "t2"}, {"conversation_id", "c_long"}, {"limit", 2}});
    REQUIRE(page["type"] == "ok");
    CHECK(page["messages"].size() == 2);
    CHECK(page["next_after_seq"] == 2);
}
