// SIGHUP against the real daemon: what may change at runtime changes at once,
// what needs a restart is named in the log, a broken file changes nothing.
#include <signal.h>

#include <fstream>
#include <thread>

#include "e2e_support.h"

using namespace parley::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// Waits until the daemon's log contains `text` (reloads run on their own thread).
bool log_shows(daemon_process& daemon, const std::string& text, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (daemon.log().find(text) != std::string::npos) return true;
        std::this_thread::sleep_for(50ms);
    }
    return false;
}

std::size_t count_of(const std::string& haystack, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
    return n;
}

const char* const t3_toml =
    "[tenants.t3]\nadmin_token = \"t3-admin-token-0123456789\"\n"
    "agent_secret = \"t3-agent-secret-0123456789\"\nwidget_secret = \"t3-widget-secret-0123456789\"\n";

}  // namespace

TEST_CASE("SIGHUP reloads log level, limits and tenants, and names what needs a restart", "[reload]") {
    chat_server server;
    auto& daemon = server.daemon();
    const auto config_path = server.dir().path() / "parley.toml";
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_route("sales", {{"type", "round_robin"}});
    server.put_agent("b1", {{"name", "Bo"}}, "t2");
    auto t2_agent = server.connect_agent("b1", true, "t2");
    auto visitor = server.connect_visitor();
    auto agent = server.connect_agent("a1");
    const auto conversation_id = chat_server::request_agent(visitor, "sales");
    chat_server::accept_next_offer(agent);
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, std::string(100, 'x'), "m-1")["type"] == "ok");

    // New file: debug -> info, smaller text and message limits, t2 removed, t3 added, t1's agent secret rotated,
    // and a routing default (needs a restart).
    std::string next = test_config(server.dir().path());
    next.replace(next.find("level = \"debug\""), 15, "level = \"info\"");
    next = next.substr(0, next.find("[tenants.t2]")) + t3_toml +
           "[limits]\nmax_text_chars = 50\nmax_messages_per_conversation = 3\n[routing]\ngrace_period_s = 5\n"
           "visitor_grace_s = 5\n";
    next.replace(next.find("t1-agent-secret-0123456789"), 26, "t1-agent-secret-rotated-42");
    std::ofstream(config_path) << next;
    daemon.signal(SIGHUP);
    REQUIRE(log_shows(daemon, "reload: done"));
    const auto log = daemon.log();
    INFO(log);
    CHECK(log.find("reload: log.level debug -> info") != std::string::npos);
    CHECK(log.find("reload: applied limits.max_text_chars, limits.max_messages_per_conversation") != std::string::npos);
    CHECK(log.find("reload: tenant t2 removed") != std::string::npos);
    CHECK(log.find("reload: tenant t3 added") != std::string::npos);
    CHECK(log.find("reload: tenant t1 updated: agent_secret") != std::string::npos);
    CHECK(log.find("needs a restart to take effect: routing.grace_period_s") != std::string::npos);
    CHECK(log.find("routing.visitor_grace_s") != std::string::npos);
    CHECK(log.find("server.port") == std::string::npos);  // --port 0 from the command line stays

    // Limits: at once, on open connections too.
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, std::string(100, 'x'), "m-2")["code"] == "too_large");
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, std::string(50, 'x'), "m-3")["type"] == "ok");
    // t2 is gone: its agent was disconnected, its credentials no longer open anything.
    CHECK(t2_agent->wait_closed() == 4401);  // its credentials are no good any more: do not come back
    CHECK(server.admin("GET", "/agents", nullptr, "t2").status == 401);
    // t3 is served.
    CHECK(http_request(server.port(), "GET", "/v1/tenants/t3/agents", "",
                       {{"Authorization", "Bearer t3-admin-token-0123456789"}})
              .status == 200);
    // The rotated secret: old tokens refused, new ones work; the open session stays.
    ws_client old_token(server.port(), "/v1/agent");
    old_token.send_json({{"type", "hello"}, {"id", "h"}, {"token", chat_server::agent_token("a1")}});
    CHECK(old_token.wait_closed() == 4401);
    ws_client new_token(server.port(), "/v1/agent");
    auto hello = new_token.request({{"type", "hello"}, {"id", "h"},
                                    {"token", chat_server::agent_token("a1", "t1", "t1-agent-secret-rotated-42")}});
    CHECK(hello["type"] == "ok");
    CHECK_FALSE(agent->closed());

    // A broken file changes nothing and says why, with file and key.
    std::string broken = next;
    broken.replace(broken.find("max_text_chars = 50"), 19, "max_text_chars = -5");
    std::ofstream(config_path) << broken;
    daemon.signal(SIGHUP);
    REQUIRE(log_shows(daemon, "configuration unchanged"));
    CHECK(daemon.log().find(config_path.string() + ": limits.max_text_chars") != std::string::npos);
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, std::string(50, 'y'), "m-4")["type"] == "ok");
    // The conversation now holds 3 messages, what the reloaded limit allows.
    CHECK(chat_server::send_text(*visitor.ws, conversation_id, "one more", "m-5")["code"] == "capacity");

    // Several signals in a row are fine; the process keeps serving and still stops cleanly.
    std::ofstream(config_path) << next;
    for (int i = 0; i < 3; ++i) daemon.signal(SIGHUP);
    std::this_thread::sleep_for(500ms);
    REQUIRE(log_shows(daemon, "reload: done"));
    CHECK(http_request(server.port(), "GET", "/healthz").status == 200);
    CHECK(count_of(daemon.log(), "reload: done") >= 2);
    // The removed tenant's session was released: two agent sessions are left (a1's two).
    std::string agents_line;
    for (int i = 0; i < 50; ++i) {
        const auto metrics = http_request(server.port(), "GET", "/metrics").body;
        const auto at = metrics.find("parley_connections{kind=\"agent\"} ");
        REQUIRE(at != std::string::npos);
        agents_line = metrics.substr(at, metrics.find('\n', at) - at);
        if (agents_line.ends_with(" 2")) break;
        std::this_thread::sleep_for(100ms);
    }
    CHECK(agents_line == "parley_connections{kind=\"agent\"} 2");
    daemon.signal(SIGTERM);
    CHECK(daemon.wait_exit(15s) == std::optional<int>(0));
}

TEST_CASE("a rotated agent_secret ends its agents' sessions after the grace unless they reauth with the new one",
          "[reload]") {
    chat_server server({}, {}, {}, "secret_rotation_grace_s = 2\n");
    auto& daemon = server.daemon();
    server.put_agent("a1", {{"name", "Ann"}});
    server.put_agent("a2", {{"name", "Bo"}});
    server.put_agent("a1", {{"name", "Ann"}}, "t2");
    auto renewing = server.connect_agent("a1");
    auto lapsing = server.connect_agent("a2");
    auto other_tenant = server.connect_agent("a1", true, "t2");
    // Tokens of an hour: no warning yet.
    CHECK_FALSE(renewing->receive(300ms).has_value());

    std::string next = test_config(server.dir().path());
    next = with_keys_in(next, "server", "secret_rotation_grace_s = 2\n");
    next.replace(next.find("t1-agent-secret-0123456789"), 26, "t1-agent-secret-rotated-42");
    std::ofstream(server.dir().path() / "parley.toml") << next;
    const auto rotated_at = std::chrono::steady_clock::now();
    daemon.signal(SIGHUP);
    REQUIRE(log_shows(daemon, "reload: done"));
    CHECK(daemon.log().find("tenant t1's agent_secret rotated") != std::string::npos);

    // t1's agents are warned that their sessions end in the grace (2 s, under the 60 s lead: at once).
    CHECK(renewing->expect("credentials_expiring", 2s).contains("expires_at"));
    CHECK(lapsing->expect("credentials_expiring", 2s).contains("expires_at"));
    // A token of the old secret does not renew; one of the new secret does.
    CHECK(renewing->request({{"type", "reauth"}, {"id", "r1"}, {"token", chat_server::agent_token("a1")}})["code"] ==
          "unauthorized");
    auto renewed = renewing->request({{"type", "reauth"}, {"id", "r2"},
                                      {"token", chat_server::agent_token("a1", "t1", "t1-agent-secret-rotated-42")}});
    CHECK(renewed["type"] == "ok");

    CHECK(lapsing->wait_closed() == 4401);
    CHECK(std::chrono::steady_clock::now() - rotated_at >= 1500ms);
    std::this_thread::sleep_for(500ms);
    CHECK(renewing->request({{"type", "list_agents"}, {"id", "la"}})["type"] == "ok");
    // Another tenant's agents are not touched.
    CHECK_FALSE(other_tenant->receive(100ms).has_value());
    CHECK(other_tenant->request({{"type", "list_agents"}, {"id", "la"}})["type"] == "ok");
}
