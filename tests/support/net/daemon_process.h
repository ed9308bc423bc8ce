#pragma once
// The real parleyd binary as a child process, for integration tests: started on
// port 0 with a config written to a temp dir; its stderr goes to a log file the
// test can read when it fails.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "support/test_env.h"

namespace parley::test {

class daemon_process {
public:
    // Writes `config_toml` to <dir>/parley.toml, starts `parleyd serve` with it on
    // port 0 and waits (up to `startup_timeout`) until it reports its port.
    // Without `wait_for_port` it returns at once and port() stays 0 (for tests
    // of what happens before the daemon serves).
    daemon_process(const std::filesystem::path& dir, const std::string& config_toml,
                   std::vector<std::string> extra_args = {},
                   std::chrono::milliseconds startup_timeout = std::chrono::seconds(30), bool wait_for_port = true);
    ~daemon_process();  // SIGKILLs the process if still running
    daemon_process(const daemon_process&) = delete;
    daemon_process& operator=(const daemon_process&) = delete;

    std::uint16_t port() const { return port_; }
    pid_t pid() const { return pid_; }

    void signal(int signal_number) const;
    // Waits for exit; returns the exit status (or 128+signal), nullopt on timeout.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout);
    std::string log() const;  // everything the daemon wrote to stdout/stderr
    bool reported_port() const;  // whether it ever wrote its port file (started serving)

private:
    std::filesystem::path log_path_;
    std::filesystem::path port_file_;
    pid_t pid_ = -1;
    std::uint16_t port_ = 0;
    std::optional<int> exit_status_;
};

// Runs parleyd with `args` to completion; returns exit status and combined output.
struct command_result {
    int exit_status;
    std::string output;
};
command_result run_parleyd(const std::vector<std::string>& args, std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A minimal valid configuration for tests: one tenant `t1` (and `t2` when
// asked), SQLite store in `dir`, short timeouts where tests need them.
std::string test_config(const std::filesystem::path& dir, const std::string& storage_url = {},
                        const std::string& extra_toml = {});

// `config` with `keys` ("k = v\n" lines) added to its [table]: TOML forbids
// opening a table twice, so extra keys of test_config()'s tables go in here.
std::string with_keys_in(std::string config, const std::string& table, const std::string& keys);

}  // namespace parley::test
