// parley_load: a load generator for parleyd (and, for comparison, any
// WebSocket echo server). See tests/load/README.md.
//
// The parent process configures the tenant through the admin API, forks one
// worker per ~18,000 connections (a process may hold 20,000 open files), starts
// them together, samples the server's CPU time and RSS from /proc around the
// measured window, merges the workers' histograms and counters, and prints a
// table (and one JSON line with --json).
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>
#include <fstream>

#include <CLI/CLI.hpp>

#include "histogram.h"
#include "load.h"
#include "load_client.h"
#include "proc_stats.h"

namespace parley::load {
namespace {

using json = nlohmann::json;

struct worker_handle {
    pid_t pid = -1;
    int from_worker = -1;  // "ready\n", then the result line
    int to_worker = -1;    // "go\n"
    std::string pending;
};

// Reads one line from `fd`, waiting at most `timeout_s`; false on EOF or timeout.
bool read_line(worker_handle& w, std::string& line, double timeout_s) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (true) {
        auto nl = w.pending.find('\n');
        if (nl != std::string::npos) {
            line = w.pending.substr(0, nl);
            w.pending.erase(0, nl + 1);
            return true;
        }
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{w.from_worker, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 1000))) <= 0) continue;
        char buffer[65536];
        auto n = ::read(w.from_worker, buffer, sizeof buffer);
        if (n <= 0) return false;
        w.pending.append(buffer, static_cast<std::size_t>(n));
    }
}

void admin_put(const options& opt, const tcp::endpoint& server, const std::string& path, const json& body) {
    auto reply = http_call(server, "PUT", "/v1/tenants/" + opt.tenant + path, body.dump(), opt.admin_token);
    if (reply.status != 200 && reply.status != 201)
        throw std::runtime_error("PUT " + path + " answered " + std::to_string(reply.status) + ": " + reply.body);
}

// Agents and routes: process p's conversations go through route load-p<p> to
// team lp<p>, whose agents live in process p, so a message never crosses processes.
void configure_tenant(const options& opt) {
    tcp::endpoint server(asio::ip::make_address(opt.host), opt.port);
    for (int p = 0; p < opt.process_count; ++p) {
        int agents = opt.scenario == "storm" ? std::max(1, share_of(opt.agents, p, opt.process_count))
                                             : agents_for(share_of(opt.conversations, p, opt.process_count));
        for (int a = 0; a < agents; ++a)
            admin_put(opt, server, "/agents/" + agent_id_of(opt, p, a),
                      {{"name", "Load agent " + std::to_string(a)}, {"max_chats", 10}, {"teams", {team_of(opt, p)}}});
        admin_put(opt, server, "/routes/" + route_of(opt, p), {{"type", "team"}, {"team", team_of(opt, p)}, {"offer_timeout_s", 30}});
    }
}

std::string fixed(double v, int digits = 1) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(digits) << v;
    return s.str();
}

std::string latency_row(const json& s) {
    return "p50 " + fixed(s.value("p50", 0.0)) + "  p99 " + fixed(s.value("p99", 0.0)) + "  p99.9 " +
           fixed(s.value("p99_9", 0.0)) + "  max " + fixed(s.value("max", 0.0)) + "  (n=" +
           std::to_string(s.value("count", 0ull)) + ")";
}

void print_table(const json& r) {
    auto& out = std::cout;
    out << "\n== parley_load " << r["scenario"].get<std::string>();
    if (!r["label"].get<std::string>().empty()) out << " [" << r["label"].get<std::string>() << "]";
    out << "  mode=" << r["mode"].get<std::string>() << "  processes=" << r["processes"] << "  threads=" << r["threads"]
        << "\n";
    auto row = [&](const std::string& name, const std::string& value) {
        out << "  " << std::left << std::setw(26) << name << value << "\n";
    };
    row("measured", fixed(r["duration_s"].get<double>(), 2) + " s");
    row("throughput", fixed(r["throughput_per_s"].get<double>(), 0) + " " + r["unit"].get<std::string>());
    for (auto& [name, s] : r["latency_us"].items()) row(name + " (us)", latency_row(s));
    std::string errors;
    for (auto& [name, v] : r["errors"].items()) errors += name + "=" + v.dump() + " ";
    row("errors", errors);
    for (auto& [name, v] : r["details"].items()) row(name, v.is_number_float() ? fixed(v.get<double>(), 2) : v.dump());
    const auto& s = r["server"];
    if (s.value("pid", 0) > 0) {
        row("server cpu", fixed(100.0 * s["cpu_utilization"].get<double>(), 1) + " % of one core (" +
                              fixed(s["cpu_seconds"].get<double>(), 2) + " s)");
        row("server rss (MiB)", "before " + fixed(s["rss_before_kib"].get<double>() / 1024) + "  at start " +
                                    fixed(s["rss_start_kib"].get<double>() / 1024) + "  end " +
                                    fixed(s["rss_end_kib"].get<double>() / 1024) + "  max " +
                                    fixed(s["rss_max_kib"].get<double>() / 1024));
        if (s.contains("rss_per_connection_kib"))
            row("server rss / connection", fixed(s["rss_per_connection_kib"].get<double>(), 1) + " KiB");
    }
    out.flush();
}

int run_parent(options opt) {
    if (opt.smoke) {
        opt.duration_s = std::min(opt.duration_s, 2.0);
        opt.warmup_s = std::min(opt.warmup_s, 0.5);
        opt.conversations = std::min(opt.conversations, 20);
        opt.connections = std::min(opt.connections, 200);
        opt.agents = std::min(opt.agents, 4);
        if (opt.scenario == "storm" && opt.rate <= 0) opt.rate = 20;
        if (opt.rate > 0) opt.rate = std::min(opt.rate, opt.scenario == "storm" ? 50.0 : 200.0);
    }
    if (opt.scenario == "idle" || opt.scenario == "reconnect") opt.warmup_s = 0;
    {
        std::ostringstream tag;
        tag << std::hex << ((static_cast<std::uint64_t>(::time(nullptr)) << 16) ^ static_cast<std::uint64_t>(::getpid()));
        opt.run_tag = tag.str();
    }
    int needed = connections_needed(opt);
    opt.process_count = opt.processes > 0
                            ? opt.processes
                            : std::max(1, (needed + opt.per_process_connections - 1) / opt.per_process_connections);
    if (opt.scenario != "echo" && opt.scenario != "idle") configure_tenant(opt);

    auto before = sample_process(opt.server_pid);
    std::vector<worker_handle> workers(static_cast<std::size_t>(opt.process_count));
    for (int p = 0; p < opt.process_count; ++p) {
        int up[2], down[2];
        if (::pipe(up) != 0 || ::pipe(down) != 0) throw std::runtime_error("pipe failed");
        std::cout.flush();
        pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed");
        if (pid == 0) {
            ::close(up[0]);
            ::close(down[1]);
            for (int q = 0; q < p; ++q) ::close(workers[static_cast<std::size_t>(q)].from_worker), ::close(workers[static_cast<std::size_t>(q)].to_worker);
            return run_worker(opt, p, up[1], down[0]);
        }
        ::close(up[1]);
        ::close(down[0]);
        workers[static_cast<std::size_t>(p)] = {pid, up[0], down[1], {}};
    }
    int exit_status = 0;
    std::vector<json> results;
    bool all_ready = true;
    for (auto& w : workers) {
        std::string line;
        if (!read_line(w, line, 600) || line != "ready") {
            if (!line.empty() && line != "ready") results.push_back(json::parse(line, nullptr, false));
            all_ready = false;
        }
    }
    auto at_ready = sample_process(opt.server_pid);
    if (all_ready)
        for (auto& w : workers) (void)!::write(w.to_worker, "go\n", 3);
    for (auto& w : workers) ::close(w.to_worker);

    std::this_thread::sleep_for(std::chrono::duration<double>(opt.warmup_s));
    auto start = sample_process(opt.server_pid);
    auto started = std::chrono::steady_clock::now();
    // Sample RSS every 100 ms while the workers run: the maximum matters for slow consumers.
    std::atomic<bool> sampling{true};
    std::atomic<std::uint64_t> rss_max{std::max(start.rss_kib, at_ready.rss_kib)};
    std::thread sampler([&] {
        while (sampling) {
            auto s = sample_process(opt.server_pid);
            if (s.rss_kib > rss_max) rss_max = s.rss_kib;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    });
    for (auto& w : workers) {
        std::string line;
        if (all_ready && read_line(w, line, opt.duration_s + 600)) {
            auto parsed = json::parse(line, nullptr, false);
            results.push_back(parsed.is_discarded() ? json{{"ok", false}, {"error", "bad worker output"}} : parsed);
        } else if (all_ready) {
            results.push_back({{"ok", false}, {"error", "worker gave no result"}});
        }
    }
    auto end = sample_process(opt.server_pid);
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    sampling = false;
    sampler.join();
    for (auto& w : workers) {
        int status = 0;
        ::waitpid(w.pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) exit_status = 1;
        ::close(w.from_worker);
    }

    // Merge.
    std::map<std::string, latency_histogram> histograms;
    std::map<std::string, std::uint64_t> counters;
    json details = json::object();
    double throughput = 0, duration = 0;
    std::vector<std::string> failures;
    for (const auto& r : results) {
        if (!r.is_object() || !r.value("ok", false)) {
            failures.push_back(r.is_object() ? r.value("error", "worker failed") : "worker failed");
            continue;
        }
        for (auto& [name, h] : r["histograms"].items()) histograms[name].merge(latency_histogram::from_json(h));
        for (auto& [name, n] : r["counters"].items()) counters[name] += n.get<std::uint64_t>();
        for (auto& [name, v] : r["extra"].items()) {
            if (!v.is_number()) continue;
            details[name] = details.value(name, 0.0) + v.get<double>();
        }
        double d = r["duration_s"].get<double>();
        duration = std::max(duration, d);
        if (d > 0) throughput += static_cast<double>(r["counters"].value("delivered", 0ull)) / d;
    }
    if (results.size() < workers.size() || !all_ready) failures.push_back("not every worker finished its setup");
    for (auto& f : failures) std::cerr << "parley_load: " << f << "\n";

    json report{{"scenario", opt.scenario},
                {"label", opt.label},
                {"mode", opt.rate > 0 ? "rate " + fixed(opt.rate, 0) + "/s" : (opt.scenario == "slow" ? "rate 10/s per conversation" : "max")},
                {"processes", opt.process_count},
                {"threads", opt.threads},
                {"size", opt.size},
                {"conversations", opt.conversations},
                {"connections", needed},
                {"duration_s", duration},
                {"throughput_per_s", throughput}};
    const std::map<std::string, std::string> units{{"storm", "chats/s"}, {"reconnect", "reconnect+resume/s"},
                                                   {"idle", "(idle)"}, {"echo", "echoes/s"}};
    report["unit"] = units.count(opt.scenario) ? units.at(opt.scenario) : "messages delivered/s";
    json latency = json::object();
    for (auto& [name, h] : histograms) if (h.count()) latency[name] = h.summary_us();
    report["latency_us"] = latency;
    std::uint64_t setup_failures = static_cast<std::uint64_t>(details.value("setup_failures", 0.0));
    json errors{{"protocol_errors", counters["protocol_errors"]},
                {"error_replies", counters["error_replies"]},
                {"unexpected_closes", counters["unexpected_closes"]},
                {"connect_failures", counters["connect_failures"]},
                {"setup_failures", setup_failures}};
    report["errors"] = errors;
    for (auto& [name, n] : counters)
        if (!errors.contains(name) && name != "delivered") details[name] = n;
    details.erase("setup_failures");
    report["details"] = details;
    double cpu = end.cpu_seconds - start.cpu_seconds;
    json server{{"pid", opt.server_pid},
                {"cpu_seconds", cpu},
                {"cpu_utilization", wall > 0 ? cpu / wall : 0.0},
                {"rss_before_kib", before.rss_kib},
                {"rss_start_kib", start.rss_kib},
                {"rss_end_kib", end.rss_kib},
                {"rss_max_kib", rss_max.load()}};
    if (opt.scenario == "idle" && details.value("connections", 0.0) > 0)
        server["rss_per_connection_kib"] =
            (static_cast<double>(at_ready.rss_kib) - static_cast<double>(before.rss_kib)) / details["connections"].get<double>();
    report["server"] = server;
    report["failures"] = failures;
    print_table(report);
    if (!opt.json_path.empty()) {
        std::ofstream out(opt.json_path, std::ios::app);
        out << report.dump() << "\n";
    }

    bool traffic = opt.scenario != "idle";
    if (!failures.empty() || counters["protocol_errors"] || counters["error_replies"] || setup_failures ||
        (traffic && throughput <= 0) || (opt.scenario == "idle" && details.value("connections", 0.0) <= 0))
        exit_status = exit_status ? exit_status : 2;
    return exit_status;
}

}  // namespace
}  // namespace parley::load

int main(int argc, char** argv) {
    using parley::load::options;
    options opt;
    CLI::App app{"parley_load: load generator and benchmarks for parleyd"};
    app.require_subcommand(1);
    std::string pid_text;
    auto add_common = [&](CLI::App* sub) {
        sub->add_option("--host", opt.host, "server address");
        sub->add_option("--port", opt.port, "server port")->required();
        sub->add_option("--tenant", opt.tenant, "tenant id");
        sub->add_option("--admin-token", opt.admin_token, "the tenant's admin token (agents and routes are PUT with it)");
        sub->add_option("--agent-secret", opt.agent_secret, "the tenant's agent_secret (agent tokens are minted with it)");
        sub->add_option("--server-pid", opt.server_pid, "report this process's CPU and RSS from /proc");
        sub->add_option("--duration", opt.duration_s, "measured seconds");
        sub->add_option("--warmup", opt.warmup_s, "seconds of traffic before measuring");
        sub->add_option("--threads", opt.threads, "io threads per process");
        sub->add_option("--processes", opt.processes, "worker processes (default: one per --per-process connections)");
        sub->add_option("--per-process", opt.per_process_connections, "connections per worker process");
        sub->add_option("--per-source", opt.connections_per_source, "connections per loopback source address (127.0.0.x)");
        sub->add_option("--concurrency", opt.concurrency, "connection setups in flight");
        sub->add_option("--size", opt.size, "message text characters");
        sub->add_flag("--smoke", opt.smoke, "a short run with few connections (CI)");
        sub->add_option("--label", opt.label, "free text stored in the JSON result");
        sub->add_option("--json", opt.json_path, "append the result as one JSON line to this file");
    };
    struct command {
        const char* name;
        const char* help;
    };
    const command commands[] = {
        {"relay", "N conversations exchanging messages visitor <-> agent (as fast as possible, or --rate)"},
        {"durable", "relay, named for a server on PostgreSQL with durability commit"},
        {"idle", "connected idle visitors: server RSS per connection"},
        {"storm", "chat requests at --rate per second, agents accepting: request->offer, accept->agent_joined"},
        {"reconnect", "every visitor drops and reconnects with resume at once"},
        {"slow", "relay at a fixed rate while a fraction of visitors stop reading"},
        {"echo", "the relay's traffic pattern against a plain WebSocket echo server"},
    };
    for (const auto& c : commands) {
        auto* sub = app.add_subcommand(c.name, c.help);
        add_common(sub);
        sub->callback([&opt, name = std::string(c.name)] { opt.scenario = name; });
        std::string what = c.name;
        if (what == "idle") {
            sub->add_option("--connections", opt.connections, "idle visitors");
        } else if (what == "storm") {
            sub->add_option("--agents", opt.agents, "agents accepting chats (10 chats each)");
            sub->add_option("--rate", opt.rate, "chat requests per second");
        } else {
            sub->add_option(what == "echo" ? "--connections,--conversations" : "--conversations", opt.conversations,
                            what == "echo" ? "echo connections, one message in flight each" : "active conversations");
            if (what != "reconnect" && what != "echo")
                sub->add_option("--rate", opt.rate, "visitor messages per second in total, each answered (0: as fast as possible)");
            sub->add_flag("!--no-ack-id", opt.with_ack_id, "send without an id: the server sends no ok");
        }
        if (what == "echo") sub->add_option("--path", opt.path, "WebSocket path of the echo server");
        if (what == "slow") {
            sub->add_option("--slow-fraction", opt.slow_fraction, "share of visitors that stop reading");
            sub->add_option("--flood-bytes", opt.flood_max_bytes, "bytes sent to each slow consumer at most");
        }
        if (what == "reconnect") sub->add_option("--resume-messages", opt.resume_messages, "messages sent while visitors are away");
    }
    CLI11_PARSE(app, argc, argv);
    if (opt.scenario != "echo" && opt.scenario != "idle" && (opt.admin_token.empty() || opt.agent_secret.empty())) {
        std::cerr << "parley_load: --admin-token and --agent-secret are required for " << opt.scenario << "\n";
        return 64;
    }
    try {
        return parley::load::run_parent(opt);
    } catch (const std::exception& e) {
        std::cerr << "parley_load: " << e.what() << "\n";
        return 1;
    }
}
