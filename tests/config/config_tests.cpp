#include <catch2/catch.hpp>

#include <cctype>
#include <fstream>
#include <set>
#include <vector>

#include "parley/config/config.h"
#include "parley/storage/store.h"
#include "parley/storage/url.h"
#include "support/test_env.h"

using parley::config::parse_text;

namespace {

const std::string tenant_block =
    "[tenants.acme]\nadmin_token = \"admin-token-0123456789\"\n"
    "agent_secret = \"agent-secret-0123456789\"\nwidget_secret = \"widget-secret-0123456789\"\n";

bool has_problem(const parley::config::parse_result& r, const std::string& key, const std::string& reason_part) {
    for (const auto& p : r.problems)
        if (p.key == key && p.reason.find(reason_part) != std::string::npos && p.file == "test.toml") return true;
    return false;
}

}  // namespace

TEST_CASE("a minimal config takes every default", "[config]") {
    auto r = parse_text(tenant_block, "test.toml", {});
    REQUIRE(r.ok());
    CHECK(r.value.server.port == 8080);
    CHECK(r.value.storage.url == "sqlite:///var/lib/parley/parley.db");
    CHECK(r.value.storage.durability == parley::config::durability::commit);
    CHECK(r.value.limits.max_frame_bytes == 65536);
    CHECK(r.value.limits.max_text_chars == 4000);
    CHECK(r.value.limits.hello_timeout == std::chrono::seconds(10));
    CHECK(r.value.routing.offer_timeout == std::chrono::seconds(45));
    CHECK(r.value.routing.max_attempts == 2);
    CHECK(r.value.storage.retention_days == 90);
    CHECK(r.value.storage.unavailable_after == std::chrono::seconds(5));
    REQUIRE(r.value.tenants.count("acme") == 1);
    CHECK(r.value.tenants.at("acme").agent_secret == "agent-secret-0123456789");
}

TEST_CASE("the example config in deploy/ is valid once its placeholder secrets are replaced", "[config]") {
    const auto path = (parley::test::source_dir() / "deploy/parley.toml").string();
    SECTION("as shipped: refused, naming each placeholder") {
        auto r = parley::config::parse_file(path, {});
        CHECK_FALSE(r.ok());
        CHECK(r.problems.size() == 3);
        for (const auto& problem : r.problems) {
            CHECK(problem.file == path);
            CHECK(problem.reason.find("placeholder") != std::string::npos);
        }
        std::set<std::string> keys;
        for (const auto& problem : r.problems) keys.insert(problem.key);
        CHECK(keys == std::set<std::string>{"tenants.acme.admin_token", "tenants.acme.agent_secret",
                                            "tenants.acme.widget_secret"});
    }
    SECTION("with the secrets from the environment: valid") {
        auto r = parley::config::parse_file(path, {{"PARLEY_TENANT_ACME_ADMIN_TOKEN", "k3Q9vXr2LmT8wYp4Zs1N"},
                                                   {"PARLEY_TENANT_ACME_AGENT_SECRET", "Hb7Jd2Kq9Rt4Vx6Mz8Pw"},
                                                   {"PARLEY_TENANT_ACME_WIDGET_SECRET", "Ny5Gc3Fs8Lh1Qe7Uw2Ti"}});
        for (const auto& p : r.problems) UNSCOPED_INFO(p.to_string());
        CHECK(r.ok());
    }
}

TEST_CASE("every problem is reported at once with file and key", "[config]") {
    auto r = parse_text("[server]\nport = 70000\nthred = 3\n[storage]\ndurability = \"sometimes\"\n"
                        "url = \"mysql://x\"\n[limits]\nmax_frame_bytes = \"big\"\n[unknown_section]\n" +
                            tenant_block,
                        "test.toml", {});
    CHECK_FALSE(r.ok());
    CHECK(has_problem(r, "server.port", "between 0 and 65535"));
    CHECK(has_problem(r, "server.thred", "unknown key"));
    CHECK(has_problem(r, "storage.durability", "one of commit, relaxed"));
    CHECK(has_problem(r, "storage.url", "must start with"));
    CHECK(has_problem(r, "limits.max_frame_bytes", "integer"));
    CHECK(has_problem(r, "unknown_section", "unknown"));
    CHECK(r.problems.size() == 6);
    CHECK(has_problem(parse_text("[storage]\nunavailable_after_s = 0\n" + tenant_block, "test.toml", {}),
                      "storage.unavailable_after_s", "between 1 and 300"));
}

TEST_CASE("routing.visitor_grace_s: 30 s by default, 0..3600, a bad value names key and file", "[config]") {
    CHECK(parse_text(tenant_block, "test.toml", {}).value.routing.visitor_grace == std::chrono::seconds(30));
    for (const int seconds : {0, 1, 3600}) {
        auto r = parse_text("[routing]\nvisitor_grace_s = " + std::to_string(seconds) + "\n" + tenant_block,
                            "test.toml", {});
        REQUIRE(r.ok());
        CHECK(r.value.routing.visitor_grace == std::chrono::seconds(seconds));
    }
    auto too_long = parse_text("[routing]\nvisitor_grace_s = 3601\n" + tenant_block, "test.toml", {});
    CHECK(has_problem(too_long, "routing.visitor_grace_s", "must be between 0 and 3600, got 3601"));
    auto negative = parse_text("[routing]\nvisitor_grace_s = -1\n" + tenant_block, "test.toml", {});
    CHECK(has_problem(negative, "routing.visitor_grace_s", "must be between 0 and 3600"));
    auto text = parse_text("[routing]\nvisitor_grace_s = \"30s\"\n" + tenant_block, "test.toml", {});
    CHECK(has_problem(text, "routing.visitor_grace_s", "must be an integer"));
}

TEST_CASE("syntax errors name the file", "[config]") {
    auto r = parse_text("[server\nport = 1\n", "test.toml", {});
    REQUIRE(r.problems.size() == 1);
    CHECK(r.problems[0].file == "test.toml");
    CHECK(r.problems[0].key == "(syntax)");
}

TEST_CASE("secrets are required, and the environment supplies or overrides them", "[config]") {
    const std::string no_secrets = "[tenants.my-shop]\nname = \"Shop\"\nadmin_token = \"file-admin-token-0123\"\n";
    auto missing = parse_text(no_secrets, "test.toml", {});
    CHECK(has_problem(missing, "tenants.my-shop.agent_secret", "PARLEY_TENANT_MY_SHOP_AGENT_SECRET"));
    CHECK(has_problem(missing, "tenants.my-shop.widget_secret", "at least 16"));

    auto supplied = parse_text(no_secrets, "test.toml",
                               {{"PARLEY_TENANT_MY_SHOP_AGENT_SECRET", "env-agent-secret-0123456"},
                                {"PARLEY_TENANT_MY_SHOP_WIDGET_SECRET", "env-widget-secret-0123456"},
                                {"PARLEY_TENANT_MY_SHOP_ADMIN_TOKEN", "env-admin-token-0123456"},
                                {"PARLEY_STORAGE_URL", "postgresql://u:p@db/parley"}});
    REQUIRE(supplied.ok());
    const auto& t = supplied.value.tenants.at("my-shop");
    CHECK(t.name == "Shop");
    CHECK(t.admin_token == "env-admin-token-0123456");
    CHECK(t.agent_secret == "env-agent-secret-0123456");
    CHECK(supplied.value.storage.url == "postgresql://u:p@db/parley");
}

TEST_CASE("a config without tenants is refused", "[config]") {
    auto r = parse_text("[server]\nport = 1\n", "test.toml", {});
    CHECK(has_problem(r, "tenants", "at least one"));
}

TEST_CASE("bad tenant ids and cross-field limits are refused", "[config]") {
    auto r = parse_text("[tenants.\"bad id!\"]\nname = \"x\"\n[limits]\nping_interval_s = 30\npeer_silence_timeout_s = 20\n",
                        "test.toml", {});
    CHECK(has_problem(r, "tenants.bad id!", "tenant id"));
    CHECK(has_problem(r, "limits.peer_silence_timeout_s", "longer than ping_interval_s"));
}

TEST_CASE("a missing file is a clear error", "[config]") {
    auto r = parley::config::parse_file("/nonexistent/parley.toml", {});
    REQUIRE(r.problems.size() == 1);
    CHECK(r.problems[0].file == "/nonexistent/parley.toml");
    CHECK(r.problems[0].reason == "cannot be read");
}

namespace {

std::string tenant_toml(const std::string& id, const std::string& agent_secret, const std::string& widget_secret) {
    return "[tenants." + id + "]\nadmin_token = \"" + id + "-admin-token-0123456789\"\nagent_secret = \"" +
           agent_secret + "\"\nwidget_secret = \"" + widget_secret + "\"\n";
}

bool mentions(const parley::config::problem& p, std::initializer_list<std::string> parts) {
    for (const auto& part : parts)
        if (p.reason.find(part) == std::string::npos) return false;
    return true;
}

}  // namespace

TEST_CASE("tenant ids that read the same environment variables are refused, naming both", "[config]") {
    SECTION("'-' against '_'") {
        auto r = parse_text(tenant_toml("a-b", "ab-dash-agent-secret-01", "ab-dash-widget-secret-01") +
                                tenant_toml("a_b", "ab-under-agent-secret-01", "ab-under-widget-secret-01"),
                            "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.a_b", "PARLEY_TENANT_A_B_"));
        CHECK(mentions(r.problems[0], {"\"a-b\"", "\"a_b\""}));
    }
    SECTION("upper against lower case") {
        auto r = parse_text(tenant_toml("Acme", "Acme-agent-secret-0123", "Acme-widget-secret-0123") +
                                tenant_toml("acme", "acme-agent-secret-0123", "acme-widget-secret-0123"),
                            "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.acme", "PARLEY_TENANT_ACME_"));
        CHECK(mentions(r.problems[0], {"\"Acme\"", "\"acme\""}));
    }
    SECTION("ids that only look alike are fine") {
        auto r = parse_text(tenant_toml("a-b", "ab-dash-agent-secret-01", "ab-dash-widget-secret-01") +
                                tenant_toml("a-bc", "abc-agent-secret-0123", "abc-widget-secret-0123"),
                            "test.toml", {});
        for (const auto& p : r.problems) UNSCOPED_INFO(p.to_string());
        CHECK(r.ok());
    }
}

TEST_CASE("a tenant's agent_secret must differ from its widget_secret", "[config]") {
    SECTION("both in the file") {
        auto r = parse_text(tenant_toml("acme", "one-secret-for-both-0123", "one-secret-for-both-0123"), "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.acme.agent_secret", "must differ from tenants.acme.widget_secret"));
        CHECK(r.problems[0].reason.find("one-secret-for-both") == std::string::npos);  // never print a secret
    }
    SECTION("one from the environment") {
        auto r = parse_text(tenant_toml("acme", "file-agent-secret-0123", "shared-by-env-secret-0123"), "test.toml",
                            {{"PARLEY_TENANT_ACME_AGENT_SECRET", "shared-by-env-secret-0123"}});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.acme.agent_secret", "from PARLEY_TENANT_ACME_AGENT_SECRET"));
        CHECK(has_problem(r, "tenants.acme.agent_secret", "widget_secret from the file"));
    }
}

TEST_CASE("an admin_token is nobody else's secret", "[config]") {
    SECTION("the same admin_token for two tenants, one from the environment") {
        auto r = parse_text(tenant_toml("t1", "t1-agent-secret-0123", "t1-widget-secret-0123") +
                                tenant_toml("t2", "t2-agent-secret-0123", "t2-widget-secret-0123"),
                            "test.toml", {{"PARLEY_TENANT_T2_ADMIN_TOKEN", "t1-admin-token-0123456789"}});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.t2.admin_token", "same secret as tenants.t1.admin_token"));
        CHECK(has_problem(r, "tenants.t2.admin_token", "this one from PARLEY_TENANT_T2_ADMIN_TOKEN"));
        CHECK(r.problems[0].reason.find("t1-admin-token") == std::string::npos);  // never print a secret
    }
    SECTION("a tenant's admin_token equal to its widget_secret") {
        auto r = parse_text(tenant_toml("acme", "acme-agent-secret-0123", "acme-admin-token-0123456789"), "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.acme.admin_token", "must differ from tenants.acme.widget_secret"));
        CHECK(has_problem(r, "tenants.acme.admin_token", "whoever signs visitor tokens could call the admin API"));
    }
    SECTION("another tenant's agent_secret as admin_token") {
        auto r = parse_text(tenant_toml("t1", "t2-admin-token-0123456789", "t1-widget-secret-0123") +
                                tenant_toml("t2", "t2-agent-secret-0123", "t2-widget-secret-0123"),
                            "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.t2.admin_token", "same secret as tenants.t1.agent_secret"));
    }
}

TEST_CASE("two tenants may not share an agent_secret or a widget_secret", "[config]") {
    SECTION("the same agent_secret") {
        auto r = parse_text(tenant_toml("t1", "shared-agent-secret-0123", "t1-widget-secret-0123") +
                                tenant_toml("t2", "shared-agent-secret-0123", "t2-widget-secret-0123"),
                            "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.t2.agent_secret", "same secret as tenants.t1.agent_secret"));
        CHECK(mentions(r.problems[0], {"\"t1\"", "\"t2\""}));
    }
    SECTION("the same widget_secret, one of them from the environment") {
        auto r = parse_text(tenant_toml("t1", "t1-agent-secret-0123", "shared-widget-secret-0123") +
                                tenant_toml("t2", "t2-agent-secret-0123", "t2-widget-secret-0123"),
                            "test.toml", {{"PARLEY_TENANT_T2_WIDGET_SECRET", "shared-widget-secret-0123"}});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.t2.widget_secret", "same secret as tenants.t1.widget_secret"));
        CHECK(has_problem(r, "tenants.t2.widget_secret", "this one from PARLEY_TENANT_T2_WIDGET_SECRET"));
    }
    SECTION("one tenant's widget_secret as another's agent_secret") {
        auto r = parse_text(tenant_toml("t1", "t1-agent-secret-0123", "crossed-secret-0123456") +
                                tenant_toml("t2", "crossed-secret-0123456", "t2-widget-secret-0123"),
                            "test.toml", {});
        REQUIRE(r.problems.size() == 1);
        CHECK(has_problem(r, "tenants.t2.agent_secret", "same secret as tenants.t1.widget_secret"));
    }
    SECTION("every repetition is reported") {
        auto r = parse_text(tenant_toml("t1", "shared-agent-secret-0123", "t1-widget-secret-0123") +
                                tenant_toml("t2", "shared-agent-secret-0123", "t2-widget-secret-0123") +
                                tenant_toml("t3", "shared-agent-secret-0123", "t3-widget-secret-0123"),
                            "test.toml", {});
        CHECK(r.problems.size() == 2);
        CHECK(has_problem(r, "tenants.t2.agent_secret", "tenants.t1.agent_secret"));
        CHECK(has_problem(r, "tenants.t3.agent_secret", "tenants.t1.agent_secret"));
    }
}

namespace {

// Every problem the parse reported, as one text, to check what it does not say.
std::string all_problems(const parley::config::parse_result& r) {
    std::string text;
    for (const auto& p : r.problems) text += p.to_string() + "\n";
    return text;
}

}  // namespace

TEST_CASE("a storage.url that storage would refuse is refused, without quoting the URL or its password",
          "[config][storage-url]") {
    // libpq's own parse message quotes the bad part: `invalid percent-encoded token: "Sup3r%Secret"`.
    const std::vector<std::string> refused{
        "postgresql://parley:Sup3r%Secret@db.example/parley",       // bare '%'
        "postgres://parley@db.example/parley?password=Sup3r%Secret",  // the same in a parameter
        "postgresql://parley:Sup3r/Secret@db.example/parley",       // bare '/': "Sup3r" would be the port
        "postgresql://parley:Sup3r@Secret@db.example/parley",       // bare '@': "Secret@db.example" the host
        "postgresql://parley@db.example/parley?no_such_option=Sup3rSecret",
    };
    for (const auto& url : refused) {
        INFO(url);
        auto from_env = parse_text(tenant_block, "test.toml", {{"PARLEY_STORAGE_URL", url}});
        CHECK(has_problem(from_env, "storage.url", "from PARLEY_STORAGE_URL: not a valid PostgreSQL connection URI"));
        CHECK(from_env.problems.size() == 1);
        CHECK_THAT(all_problems(from_env), !Catch::Contains("Sup3r") && !Catch::Contains("Secret"));

        auto from_file = parse_text("[storage]\nurl = \"" + url + "\"\n" + tenant_block, "test.toml", {});
        CHECK(has_problem(from_file, "storage.url", "from the file: not a valid PostgreSQL connection URI"));
        CHECK_THAT(all_problems(from_file), !Catch::Contains("Sup3r") && !Catch::Contains("Secret"));
    }
    // SQLite: a relative path, or query parameters.
    auto relative = parse_text(tenant_block, "test.toml", {{"PARLEY_STORAGE_URL", "sqlite://parley.db"}});
    CHECK(has_problem(relative, "storage.url", "from PARLEY_STORAGE_URL: SQLite needs an absolute path"));
    auto query = parse_text("[storage]\nurl = \"sqlite:///var/lib/parley/parley.db?mode=ro\"\n" + tenant_block,
                            "test.toml", {});
    CHECK(has_problem(query, "storage.url", "from the file: query parameters are not supported"));
}

TEST_CASE("well-formed storage URLs pass, percent-encoded passwords included", "[config][storage-url]") {
    for (const std::string url : {"postgresql://parley:Sup3r%25Secret%40x%2Fy@db.example:5432/parley?sslmode=require",
                                  "postgres://parley@db-1:5432,db-2:5433/parley?target_session_attrs=read-write",
                                  "postgresql:///parley?host=/var/run/postgresql", "postgresql://[::1]/parley",
                                  "sqlite:///var/lib/parley/parley.db", "sqlite:///nonexistent-dir/parley.db"}) {
        INFO(url);
        auto r = parse_text(tenant_block, "test.toml", {{"PARLEY_STORAGE_URL", url}});
        for (const auto& p : r.problems) UNSCOPED_INFO(p.to_string());
        CHECK(r.ok());
    }
}

// config checks storage.url with storage's parse_url, and open_store checks
// every URL with it first: config must refuse exactly what open_store refuses,
// with the same reason, or check-config says ok to a URL that `serve` then
// refuses. (One deliberate difference, not exercised here: open_store also
// needs a SQLite database's directory to exist, which systemd creates only
// when the service starts.)
TEST_CASE("config refuses exactly the storage URLs that open_store refuses as bad, with storage's reason",
          "[config][storage-url]") {
    parley::test::temp_dir dir;
    const std::string sqlite_dir = dir.path().string();
    // Valid PostgreSQL URLs point where nobody listens: open_store fails, but as unavailable.
    const std::vector<std::string> urls{
        "postgresql://parley:Sup3r%Secret@127.0.0.1:1/db",
        "postgresql://parley:Sup3r%25Secret@127.0.0.1:1/db?connect_timeout=2",
        "postgresql://parley:Sup3r/Secret@127.0.0.1:1/db",
        "postgresql://parley:Sup3r@Secret@127.0.0.1:1/db",
        "postgresql://parley@127.0.0.1:1,127.0.0.1:2/db?connect_timeout=2",
        "postgresql://parley@127.0.0.1:x1/db",
        "postgres://parley@127.0.0.1:1/db?no_such_option=1",
        "postgres://parley@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
        "postgresql:///db?host=" + sqlite_dir + "/no-socket-here",
        "sqlite://relative.db",
        "sqlite://",
        "sqlite://" + sqlite_dir + "/parley.db",
        "sqlite://" + sqlite_dir + "/parley.db?mode=ro",
        "mysql://parley@127.0.0.1/db",
        "",
    };
    for (const auto& url : urls) {
        INFO(url);
        auto checked = parse_text(tenant_block, "test.toml", {{"PARLEY_STORAGE_URL", url}});
        auto opened = parley::storage::open_store(url);
        const bool refused_by_storage =
            !opened.ok() && opened.failure().kind == parley::storage::error_kind::bad_request;
        if (!opened.ok()) UNSCOPED_INFO("open_store: " << opened.failure().message);
        CHECK(checked.ok() == !refused_by_storage);

        const auto parsed = parley::storage::parse_url(url);
        CHECK(parsed.ok() == !refused_by_storage);
        if (!parsed.ok() && !opened.ok()) {
            CHECK(has_problem(checked, "storage.url", "from PARLEY_STORAGE_URL: " + parsed.failure().message));
            CHECK(opened.failure().message == "bad storage URL: " + parsed.failure().message);
        }
    }
}

TEST_CASE("server.listen_address must be an IP address", "[config]") {
    for (const std::string address : {"0.0.0.0", "127.0.0.1", "::", "::1", "fe80::1%eth0", "2001:db8::10"}) {
        INFO(address);
        CHECK(parse_text("[server]\nlisten_address = \"" + address + "\"\n" + tenant_block, "test.toml", {}).ok());
    }
    for (const std::string address : {"localhost", "chat.example.com", "256.0.0.1", "127.0.0.1 ", "1.2.3", "",
                                      "::1%", "[::1]", "127.0.0.1:8080"}) {
        INFO(address);
        auto r = parse_text("[server]\nlisten_address = \"" + address + "\"\n" + tenant_block, "test.toml", {});
        CHECK(has_problem(r, "server.listen_address", "must be an IPv4 or IPv6 address"));
    }
}

TEST_CASE("server.trusted_proxies lists addresses and networks", "[config]") {
    auto good = parse_text("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\", \"::1\"]\n" +
                               tenant_block,
                           "test.toml", {});
    REQUIRE(good.ok());
    CHECK(good.value.server.trusted_proxies == std::vector<std::string>{"10.0.0.0/8", "127.0.0.1", "fd00::/8", "::1"});
    CHECK(parse_text(tenant_block, "test.toml", {}).value.server.trusted_proxies.empty());
    for (const std::string entry : {"proxy.local", "10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/8x", "10.0.0.0/-1", ""}) {
        INFO(entry);
        auto r = parse_text("[server]\ntrusted_proxies = [\"127.0.0.1\", \"" + entry + "\"]\n" + tenant_block, "test.toml", {});
        CHECK(has_problem(r, "server.trusted_proxies", "\"" + entry + "\" is neither"));
    }
    CHECK(has_problem(parse_text("[server]\ntrusted_proxies = \"10.0.0.0/8\"\n" + tenant_block, "test.toml", {}),
                      "server.trusted_proxies", "must be an array of strings"));
    CHECK(has_problem(parse_text("[server]\ntrusted_proxies = [8]\n" + tenant_block, "test.toml", {}),
                      "server.trusted_proxies", "must be an array of strings"));
}

TEST_CASE("limits.max_connections stays below the open-file limit", "[config]") {
    auto at_ceiling = parse_text("[limits]\nmax_connections = 19500\n" + tenant_block, "test.toml", {});
    CHECK(at_ceiling.ok());
    CHECK(at_ceiling.value.limits.max_connections == 19500);
    for (const std::string value : {"19501", "20000", "10000000"}) {
        auto r = parse_text("[limits]\nmax_connections = " + value + "\n" + tenant_block, "test.toml", {});
        CHECK(has_problem(r, "limits.max_connections", "must be between 1 and 19500, got " + value));
        CHECK(has_problem(r, "limits.max_connections", "LimitNOFILE"));
    }
}

TEST_CASE("limits.max_messages_per_conversation and max_transcript_reads_per_tenant", "[config]") {
    auto defaults = parse_text(tenant_block, "test.toml", {});
    REQUIRE(defaults.ok());
    CHECK(defaults.value.limits.max_messages_per_conversation == 10'000);
    CHECK(defaults.value.limits.max_transcript_reads_per_tenant == 16);
    auto set = parse_text("[limits]\nmax_messages_per_conversation = 1\nmax_transcript_reads_per_tenant = 10000\n" +
                              tenant_block,
                          "test.toml", {});
    REQUIRE(set.ok());
    CHECK(set.value.limits.max_messages_per_conversation == 1);
    CHECK(set.value.limits.max_transcript_reads_per_tenant == 10'000);
    auto refused = parse_text("[limits]\nmax_messages_per_conversation = 0\nmax_transcript_reads_per_tenant = 10001\n" +
                                  tenant_block,
                              "test.toml", {});
    CHECK(has_problem(refused, "limits.max_messages_per_conversation", "between 1 and 1000000, got 0"));
    CHECK(has_problem(refused, "limits.max_transcript_reads_per_tenant", "between 1 and 10000, got 10001"));
    CHECK(refused.problems.size() == 2);
    auto mistyped = parse_text("[limits]\nmax_messages_per_conversation = \"lots\"\n" + tenant_block, "test.toml", {});
    CHECK(has_problem(mistyped, "limits.max_messages_per_conversation", "integer"));
}

TEST_CASE("server.public_url is empty or an http(s) or ws(s) URL", "[config]") {
    for (const std::string url : {"", "wss://chat.example.com", "ws://127.0.0.1:8080", "https://chat.example.com/widget",
                                  "http://[::1]:8080/"}) {
        INFO(url);
        CHECK(parse_text("[server]\npublic_url = \"" + url + "\"\n" + tenant_block, "test.toml", {}).ok());
    }
    for (const std::string url : {"chat.example.com", "ftp://chat.example.com", "wss://", "wss:///path", "wss://:8080",
                                  "wss://user:pw@chat.example.com", "wss://chat example.com", "WSS://chat.example.com"}) {
        INFO(url);
        auto r = parse_text("[server]\npublic_url = \"" + url + "\"\n" + tenant_block, "test.toml", {});
        CHECK(has_problem(r, "server.public_url", "must be empty or an http://, https://, ws:// or wss:// URL"));
    }
}

// The unit's comments tell operators which config keys its settings bound;
// a key named there must exist (it once said server.max_connections).
TEST_CASE("every config key the systemd unit's comments name is in the example config", "[config][deploy]") {
    const auto deploy = parley::test::source_dir() / "deploy";
    std::set<std::string> example_keys;
    {
        std::ifstream toml(deploy / "parley.toml");
        REQUIRE(toml);
        std::string line, section;
        while (std::getline(toml, line)) {
            if (line.rfind('[', 0) == 0) section = line.substr(1, line.find(']') - 1);
            else if (const auto eq = line.find(" = "); eq != std::string::npos && line[0] != '#' && line[0] != ' ')
                example_keys.insert(section + "." + line.substr(0, eq));
        }
    }
    REQUIRE(example_keys.count("limits.max_connections") == 1);
    std::ifstream unit(deploy / "parleyd.service");
    REQUIRE(unit);
    const std::set<std::string> sections{"server", "log", "storage", "limits", "routing"};
    std::string line;
    int named = 0;
    while (std::getline(unit, line)) {
        if (line.rfind('#', 0) != 0) continue;
        for (std::size_t at = 0; (at = line.find('.', at)) != std::string::npos; ++at) {
            auto start = at;
            while (start > 0 && (std::islower(static_cast<unsigned char>(line[start - 1])) != 0)) --start;
            auto end = at + 1;
            while (end < line.size() && (std::islower(static_cast<unsigned char>(line[end])) != 0 || line[end] == '_'))
                ++end;
            if (sections.count(line.substr(start, at - start)) == 0 || end == at + 1) continue;
            const auto key = line.substr(start, end - start);
            INFO("deploy/parleyd.service names " << key);
            CHECK(example_keys.count(key) == 1);
            ++named;
        }
    }
    CHECK(named >= 2);  // the shutdown timeout and the connection limit, at least
}

TEST_CASE("[web]: clients on by default; a directory must be an absolute, existing directory", "[config]") {
    auto defaults = parse_text(tenant_block, "test.toml", {});
    REQUIRE(defaults.ok());
    CHECK(defaults.value.web.enabled);
    CHECK(defaults.value.web.directory.empty());

    auto off = parse_text("[web]\nenabled = false\n" + tenant_block, "test.toml", {});
    REQUIRE(off.ok());
    CHECK_FALSE(off.value.web.enabled);

    const auto existing = parley::test::source_dir() / "web";
    auto own = parse_text("[web]\ndirectory = \"" + existing.string() + "\"\n" + tenant_block, "test.toml", {});
    REQUIRE(own.ok());
    CHECK(own.value.web.directory == existing.string());

    auto bad = parse_text("[web]\nenabled = \"yes\"\ndirectory = \"web\"\ncolour = 1\n" + tenant_block, "test.toml", {});
    CHECK(has_problem(bad, "web.enabled", "true or false"));
    CHECK(has_problem(bad, "web.directory", "absolute path"));
    CHECK(has_problem(bad, "web.colour", "unknown key"));

    auto missing = parse_text("[web]\ndirectory = \"/nonexistent/parley-web\"\n" + tenant_block, "test.toml", {});
    CHECK(has_problem(missing, "web.directory", "not a directory"));
}

TEST_CASE("limits.max_connections_per_ip has a safe default and can be lifted", "[config]") {
    auto defaults = parse_text(tenant_block, "test.toml", {});
    REQUIRE(defaults.ok());
    // One address may not take every connection slot unless the operator says so.
    CHECK(defaults.value.limits.max_connections_per_ip == 1000);
    CHECK(defaults.value.limits.max_connections_per_ip < defaults.value.limits.max_connections);
    auto lifted = parse_text("[limits]\nmax_connections_per_ip = 0\n" + tenant_block, "test.toml", {});
    REQUIRE(lifted.ok());
    CHECK(lifted.value.limits.max_connections_per_ip == 0);
}
