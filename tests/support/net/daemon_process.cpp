#include "support/net/daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace parley::test {
namespace {

pid_t spawn(const std::vector<std::string>& args, const std::filesystem::path& output_file) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        int fd = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    return pid;
}

std::optional<int> wait_for(pid_t pid, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int status = 0;
        pid_t r = ::waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
            return -1;
        }
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

}  // namespace

daemon_process::daemon_process(const std::filesystem::path& dir, const std::string& config_toml,
                               std::vector<std::string> extra_args, std::chrono::milliseconds startup_timeout,
                               bool wait_for_port)
    : log_path_(dir / "parleyd.log"), port_file_(dir / "port") {
    auto config_path = dir / "parley.toml";
    std::ofstream(config_path) << config_toml;
    const auto& port_file = port_file_;
    std::filesystem::remove(port_file);
    std::vector<std::string> args{parleyd_path().string(), "-c", config_path.string()};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    args.insert(args.end(), {"serve", "--port", "0", "--port-file", port_file.string()});
    pid_ = spawn(args, log_path_);
    REQUIRE(pid_ > 0);
    if (!wait_for_port) return;
    auto deadline = std::chrono::steady_clock::now() + startup_timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (std::filesystem::exists(port_file)) {
            port_ = static_cast<std::uint16_t>(std::stoi(read_file(port_file)));
            return;
        }
        if (auto status = wait_for(pid_, std::chrono::milliseconds(0))) {
            exit_status_ = status;
            FAIL("parleyd exited during start-up with status " << *status << ":\n" << log());
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("parleyd did not report its port within the start-up timeout:\n" << log());
}

daemon_process::~daemon_process() {
    if (pid_ > 0 && !exit_status_) {
        ::kill(pid_, SIGKILL);
        wait_for(pid_, std::chrono::seconds(10));
    }
}

void daemon_process::signal(int signal_number) const { ::kill(pid_, signal_number); }

std::optional<int> daemon_process::wait_exit(std::chrono::milliseconds timeout) {
    if (!exit_status_) exit_status_ = wait_for(pid_, timeout);
    return exit_status_;
}

std::string daemon_process::log() const { return read_file(log_path_); }

bool daemon_process::reported_port() const { return std::filesystem::exists(port_file_); }

command_result run_parleyd(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
    temp_dir dir;
    auto output = dir.path() / "output";
    std::vector<std::string> argv{parleyd_path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_t pid = spawn(argv, output);
    REQUIRE(pid > 0);
    auto status = wait_for(pid, timeout);
    if (!status) {
        ::kill(pid, SIGKILL);
        wait_for(pid, std::chrono::seconds(5));
        FAIL("parleyd did not finish in time: " << read_file(output));
    }
    return {*status, read_file(output)};
}

std::string test_config(const std::filesystem::path& dir, const std::string& storage_url,
                        const std::string& extra_toml) {
    std::string url = storage_url.empty() ? "sqlite://" + (dir / "parley.db").string() : storage_url;
    return "[server]\nlisten_address = \"127.0.0.1\"\nthreads = 2\n"
           "[log]\nlevel = \"debug\"\n"
           "[storage]\nurl = \"" + url + "\"\n"
           "[tenants.t1]\nadmin_token = \"t1-admin-token-0123456789\"\n"
           "agent_secret = \"t1-agent-secret-0123456789\"\nwidget_secret = \"t1-widget-secret-0123456789\"\n"
           "[tenants.t2]\nadmin_token = \"t2-admin-token-0123456789\"\n"
           "agent_secret = \"t2-agent-secret-0123456789\"\nwidget_secret = \"t2-widget-secret-0123456789\"\n" +
           extra_toml;
}

std::string with_keys_in(std::string config, const std::string& table, const std::string& keys) {
    const std::string header = "[" + table + "]\n";
    const auto at = config.find(header);
    if (at == std::string::npos) throw std::invalid_argument("test config has no " + header);
    config.insert(at + header.size(), keys);
    return config;
}

}  // namespace parley::test
