// The web clients as parleyd serves them (static_files.h), and list_agents,
// the protocol addition the inbox's calendar picker uses, over a real socket.
#include <algorithm>
#include <cctype>
#include <fstream>

#include "e2e_support.h"

using namespace parley::test;
using nlohmann::json;

namespace {

std::string header(const http_reply& reply, std::string name) {
    auto lower = [](std::string s) {
        std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
        return s;
    };
    for (const auto& [key, value] : reply.headers)
        if (lower(key) == lower(name)) return value;
    return {};
}

std::string read_source(const std::string& relative) {
    std::ifstream in(source_dir() / relative, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("the inbox, widget and demo page are served from the binary with validators and a strict CSP", "[web]") {
    chat_server server;
    const auto port = server.port();

    auto inbox = http_request(port, "GET", "/inbox/");
    REQUIRE(inbox.status == 200);
    CHECK(inbox.body == read_source("web/inbox/index.html"));
    CHECK(header(inbox, "Content-Type") == "text/html; charset=utf-8");
    CHECK(header(inbox, "X-Content-Type-Options") == "nosniff");
    CHECK(header(inbox, "Cache-Control") == "no-cache");
    const auto csp = header(inbox, "Content-Security-Policy");
    CHECK_THAT(csp, Catch::Contains("script-src 'self';"));
    CHECK_THAT(csp, Catch::Contains("style-src 'self';"));
    CHECK_THAT(csp, Catch::Contains("frame-ancestors 'none'"));
    // No public_url: the WebSocket origins are the request's Host (the test client sends no port).
    CHECK_THAT(csp, Catch::Contains("connect-src 'self' ws://127.0.0.1 wss://127.0.0.1;"));
    CHECK_THAT(csp, !Catch::Contains("unsafe-inline"));
    CHECK(header(inbox, "X-Frame-Options") == "DENY");

    SECTION("ETag: If-None-Match gives 304 without a body; POST is refused") {
        const auto etag = header(inbox, "ETag");
        REQUIRE(etag.size() == 34);
        auto again = http_request(port, "GET", "/inbox/", {}, {{"If-None-Match", etag}});
        CHECK(again.status == 304);
        CHECK(again.body.empty());
        auto changed = http_request(port, "GET", "/inbox/", {}, {{"If-None-Match", "\"other\""}});
        CHECK(changed.status == 200);
        // HEAD (length without a body) is checked by web/tests/chat.test.mjs: this client cannot read it.
        CHECK(http_request(port, "POST", "/inbox/app.js").status == 405);
    }
    SECTION("the widget may be loaded by any site; the demo page embeds it") {
        auto widget = http_request(port, "GET", "/widget.js");
        REQUIRE(widget.status == 200);
        CHECK(widget.body == read_source("web/widget/widget.js"));
        CHECK(header(widget, "Access-Control-Allow-Origin") == "*");
        CHECK(header(widget, "Cross-Origin-Resource-Policy") == "cross-origin");
        auto demo = http_request(port, "GET", "/demo/");
        REQUIRE(demo.status == 200);
        CHECK_THAT(demo.body, Catch::Contains("src=\"/widget.js\""));
        CHECK(header(http_request(port, "GET", "/demo/demo.css"), "Content-Type") == "text/css; charset=utf-8");
    }
    SECTION("/ leads to the inbox; unknown files and escapes from the web root are 404") {
        auto root = http_request(port, "GET", "/");
        CHECK(root.status == 302);
        CHECK(header(root, "Location") == "/inbox/");
        for (const char* path : {"/inbox/nope.js", "/inbox/../../etc/passwd", "/inbox/%2e%2e/x", "/inbox//app.js",
                                 "/inbox/.hidden", "/demo/.."}) {
            INFO(path);
            CHECK(http_request(port, "GET", path).status == 404);
        }
        CHECK(http_request(port, "GET", "/healthz").status == 200);  // the API is untouched
    }
}

TEST_CASE("with server.public_url, the CSP's connect-src names its WebSocket origin", "[web]") {
    temp_dir dir;
    daemon_process daemon(dir.path(), with_keys_in(test_config(dir.path()), "server",
                                                   "public_url = \"https://chat.example.com/parley\"\n"));
    auto inbox = http_request(daemon.port(), "GET", "/inbox/");
    REQUIRE(inbox.status == 200);
    CHECK_THAT(header(inbox, "Content-Security-Policy"), Catch::Contains("connect-src 'self' wss://chat.example.com;"));
}

TEST_CASE("[web] enabled = false serves nothing; directory serves an operator's files instead", "[web]") {
    SECTION("off") {
        chat_server server("[web]\nenabled = false\n");
        CHECK(http_request(server.port(), "GET", "/inbox/").status == 404);
        CHECK(http_request(server.port(), "GET", "/widget.js").status == 404);
        CHECK(http_request(server.port(), "GET", "/healthz").status == 200);
    }
    SECTION("directory") {
        temp_dir branding;
        std::filesystem::create_directories(branding.path() / "inbox");
        std::ofstream(branding.path() / "inbox/index.html") << "<p>ACME inbox</p>";
        std::ofstream(branding.path() / "secret.txt") << "not for the web";
        chat_server server("[web]\ndirectory = \"" + branding.path().string() + "\"\n");
        auto inbox = http_request(server.port(), "GET", "/inbox/");
        CHECK(inbox.status == 200);
        CHECK(inbox.body == "<p>ACME inbox</p>");
        CHECK(http_request(server.port(), "GET", "/inbox/../secret.txt").status == 404);
        CHECK(http_request(server.port(), "GET", "/widget.js").status == 404);  // not in that directory
    }
}

TEST_CASE("list_agents: the tenant's agents for the calendar picker, sorted by name, only this tenant's", "[web][e2e]") {
    chat_server server;
    server.put_agent("a1", {{"name", "Zoe"}, {"calendar_url", "https://cal.example/zoe"},
                            {"avatar_url", "https://img.example/zoe.png"}, {"email", "zoe@t1.example"}});
    server.put_agent("a2", {{"name", "Bo"}});
    server.put_agent("other", {{"name", "Other tenant"}}, "t2");

    auto agent = server.connect_agent("a2", false);
    auto reply = agent->request({{"type", "list_agents"}, {"id", "la"}});
    INFO(reply.dump());
    CHECK(reply == json{{"type", "ok"},
                        {"re", "la"},
                        {"agents",
                         {{{"id", "a2"}, {"name", "Bo"}, {"avatar_url", nullptr}, {"has_calendar", false}},
                          {{"id", "a1"}, {"name", "Zoe"}, {"avatar_url", "https://img.example/zoe.png"},
                           {"has_calendar", true}}}}});

    auto visitor = server.connect_visitor();
    auto refused = visitor->request({{"type", "list_agents"}, {"id", "v"}});
    CHECK(refused["type"] == "error");
    CHECK(refused["code"] == "forbidden");
}
