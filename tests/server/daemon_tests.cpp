// The real parleyd binary, started as a child process on port 0.
#include <signal.h>
#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <optional>
#include <sstream>

#include "support/net/daemon_process.h"
#include "support/net/ws_client.h"
#include "support/test_env.h"

using namespace parley::test;
using namespace std::chrono_literals;

TEST_CASE("parleyd serves /healthz and exits 0 on SIGTERM", "[daemon]") {
    temp_dir dir;
    daemon_process daemon(dir.path(), test_config(dir.path()));
    REQUIRE(daemon.port() != 0);

    auto health = http_request(daemon.port(), "GET", "/healthz");
    CHECK(health.status == 200);
    CHECK(health.body == "ok\n");

    auto missing = http_request(daemon.port(), "GET", "/no/such/thing");
    CHECK(missing.status == 404);
    CHECK(missing.json()["code"] == "not_found");

    daemon.signal(SIGTERM);
    auto status = daemon.wait_exit(15s);
    INFO(daemon.log());
    REQUIRE(status.has_value());
    CHECK(*status == 0);
    CHECK(daemon.log().find("SIGTERM") != std::string::npos);
}

TEST_CASE("parleyd raises its soft open-files limit to what limits.max_connections needs", "[daemon]") {
    rlimit mine{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &mine) == 0);
    // Under a low hard limit the test asks for what fits below it (the daemon
    // reserves 100 files besides the connections), never skips.
    const rlim_t hard = mine.rlim_max == RLIM_INFINITY ? 5100 : std::min<rlim_t>(mine.rlim_max, 5100);
    REQUIRE(hard >= 600);
    const rlim_t connections = hard - 100;
    // The child inherits a low soft limit; the hard one stays, so the test can put its own back.
    rlimit low = mine;
    low.rlim_cur = std::min<rlim_t>(1024, hard / 2);
    REQUIRE(low.rlim_cur < connections);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    temp_dir dir;
    std::optional<daemon_process> daemon;
    daemon.emplace(dir.path(),
                   test_config(dir.path(), {}, "[limits]\nmax_connections = " + std::to_string(connections) + "\n"));
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &mine) == 0);
    std::ifstream limits("/proc/" + std::to_string(daemon->pid()) + "/limits");
    std::string line;
    while (std::getline(limits, line) && line.rfind("Max open files", 0) != 0) {}
    INFO(line);
    std::istringstream fields(line.substr(std::string("Max open files").size()));
    unsigned long soft = 0;
    fields >> soft;
    CHECK(soft >= connections);
    CHECK(daemon->log().find("needs about") == std::string::npos);  // no warning: it could raise it
    daemon->signal(SIGTERM);
    CHECK(daemon->wait_exit(15s) == std::optional<int>(0));
}

TEST_CASE("parleyd exits 0 on SIGINT too", "[daemon]") {
    temp_dir dir;
    daemon_process daemon(dir.path(), test_config(dir.path()));
    daemon.signal(SIGINT);
    auto status = daemon.wait_exit(15s);
    REQUIRE(status.has_value());
    CHECK(*status == 0);
}

TEST_CASE("parleyd check-config reports every problem with file and key", "[daemon]") {
    temp_dir dir;
    auto path = (dir.path() / "bad.toml").string();
    std::ofstream(path) << "[server]\nport = 123456\n[storage]\ndurability = \"maybe\"\nbogus = 1\n";
    auto result = run_parleyd({"check-config", "-c", path});
    CHECK(result.exit_status != 0);
    CHECK(result.output.find(path + ": server.port:") != std::string::npos);
    CHECK(result.output.find(path + ": storage.durability:") != std::string::npos);
    CHECK(result.output.find(path + ": storage.bogus: unknown key") != std::string::npos);
    CHECK(result.output.find(path + ": tenants:") != std::string::npos);

    auto good = (dir.path() / "good.toml").string();
    std::ofstream(good) << test_config(dir.path());
    auto ok = run_parleyd({"check-config", "-c", good});
    INFO(ok.output);
    CHECK(ok.exit_status == 0);
}

TEST_CASE("parleyd serve refuses to start on a bad config", "[daemon]") {
    temp_dir dir;
    auto path = (dir.path() / "bad.toml").string();
    std::ofstream(path) << test_config(dir.path()) << "[limits]\nmax_frame_bytes = -1\n";
    auto result = run_parleyd({"-c", path, "serve", "--port", "0"});
    CHECK(result.exit_status == 2);
    CHECK(result.output.find("limits.max_frame_bytes") != std::string::npos);
}

TEST_CASE("parleyd version, help and token", "[daemon]") {
    auto version = run_parleyd({"version"});
    CHECK(version.exit_status == 0);
    CHECK(version.output.rfind("parleyd ", 0) == 0);

    auto help = run_parleyd({"--help"});
    CHECK(help.exit_status == 0);
    for (const char* sub : {"serve", "check-config", "migrate", "token", "version"})
        CHECK(help.output.find(sub) != std::string::npos);

    temp_dir dir;
    auto path = (dir.path() / "parley.toml").string();
    std::ofstream(path) << test_config(dir.path());
    auto token = run_parleyd({"-c", path, "token", "--tenant", "t1", "--agent", "a_1"});
    CHECK(token.exit_status == 0);
    // A JWT: three base64url parts.
    CHECK(std::count(token.output.begin(), token.output.end(), '.') == 2);

    auto unknown = run_parleyd({"-c", path, "token", "--tenant", "nope", "--agent", "a_1"});
    CHECK(unknown.exit_status != 0);
    CHECK(unknown.output.find("no tenant \"nope\"") != std::string::npos);
}
