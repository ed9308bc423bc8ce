// Smoke runs of parley_load against a real parleyd, so the benchmark tool keeps
// working: each scenario for about two seconds with a few connections. The tool
// must exit 0 (it fails on protocol errors, error replies, failed setups or
// zero throughput) and its JSON result must say the same.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support/net/daemon_process.h"
#include "support/test_env.h"

namespace {

std::string load_tool() {
    const char* path = std::getenv("PARLEY_LOAD");
    REQUIRE(path != nullptr);
    return path;
}

// Runs a shell command; returns its exit status and output.
std::pair<int, std::string> run(const std::string& command) {
    std::string output;
    FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
    REQUIRE(pipe != nullptr);
    char buffer[4096];
    while (auto n = std::fread(buffer, 1, sizeof buffer, pipe)) output.append(buffer, n);
    int status = ::pclose(pipe);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, output};
}

}  // namespace

TEST_CASE("parley_load smoke: every scenario against a real daemon", "[load][integration]") {
    parley::test::temp_dir dir;
    // The per-connection rate limit is raised as in run.sh: the tool sends as fast as the server answers.
    parley::test::daemon_process daemon(
        dir.path(), parley::test::test_config(dir.path(), {}, "[limits]\nframes_per_second = 100000\nframe_burst = 1000000\n"));
    auto results = dir.path() / "results.jsonl";
    auto common = " --smoke --port " + std::to_string(daemon.port()) +
                  " --admin-token t1-admin-token-0123456789 --agent-secret t1-agent-secret-0123456789"
                  " --server-pid " + std::to_string(daemon.pid()) + " --json " + results.string();
    for (std::string scenario : {"relay", "storm", "reconnect", "slow", "idle"}) {
        auto [status, output] = run(load_tool() + " " + scenario + common);
        INFO(scenario << ":\n" << output << "\ndaemon log tail:\n" << daemon.log().substr(daemon.log().size() > 4000 ? daemon.log().size() - 4000 : 0));
        REQUIRE(status == 0);
    }
    std::ifstream in(results);
    std::string line;
    int count = 0;
    while (std::getline(in, line)) {
        auto r = nlohmann::json::parse(line);
        INFO(line);
        ++count;
        if (r["scenario"] != "idle") CHECK(r["throughput_per_s"].get<double>() > 0);
        CHECK(r["errors"]["protocol_errors"] == 0);
        CHECK(r["errors"]["error_replies"] == 0);
        CHECK(r["errors"]["setup_failures"] == 0);
        // The daemon's CPU time is read from /proc/<pid>/stat: a scenario that relayed
        // messages cost it at least one clock tick, so 0 means the reading is broken.
        if (r["scenario"] == "relay" || r["scenario"] == "storm") CHECK(r["server"]["cpu_seconds"].get<double>() > 0);
        else CHECK(r["server"]["cpu_seconds"].get<double>() >= 0);
        CHECK(r["server"]["rss_end_kib"].get<double>() > 0);
    }
    CHECK(count == 5);
}
