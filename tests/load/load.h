#pragma once
// parley_load: options shared by the command line (main.cpp) and the worker
// processes that drive the connections (scenarios.cpp).
#include <sys/types.h>

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace parley::load {

struct options {
    std::string scenario;  // relay idle storm durable reconnect slow echo
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    std::string path = "/";  // echo only: the echo server's WebSocket path
    std::string tenant = "t1";
    std::string admin_token;
    std::string agent_secret;
    pid_t server_pid = 0;  // CPU and RSS of this process are reported when given

    int conversations = 100;  // relay, durable, reconnect, slow; echo: connections
    int connections = 1000;   // idle
    int agents = 20;          // storm
    double rate = 0;          // relay/durable/slow: visitor messages per second in total (0 = as fast as possible); storm: chats per second
    int size = 64;            // characters of message text
    double duration_s = 10;
    double warmup_s = 2;
    int threads = 1;              // io threads per process
    int processes = 0;            // 0: one per `per_process_connections`
    int per_process_connections = 18000;  // keep below the 20,000 open files of a process
    int connections_per_source = 25000;   // past this, connect from 127.0.0.2, .3, ...
    int concurrency = 200;        // connection setups in flight
    double slow_fraction = 0.01;  // slow: share of visitors that stop reading
    int flood_chars = 3900;       // slow: text size of the messages sent to slow consumers
    int flood_max_bytes = 24 << 20;  // slow: per slow consumer
    int resume_messages = 5;      // reconnect: messages sent while the visitor is away
    bool with_ack_id = true;      // send frames carry an `id` (the server answers ok)
    bool smoke = false;
    std::string label;            // free text carried into the JSON (e.g. "parley", "beast", "node-ws")
    std::string json_path;        // append the result as one JSON line here

    int process_count = 1;  // derived
    std::string run_tag;    // derived: distinguishes this run's agents and routes
};

// Runs one worker process's share of the scenario. Talks to the parent over
// file descriptors: writes "ready\n" once set up, waits for "go\n", then writes
// one line of JSON with its counters and histograms. Returns the exit status.
int run_worker(const options& opt, int process_index, int ready_fd, int go_fd);

// Total connections one scenario opens (to split them over processes).
int connections_needed(const options& opt);
// Agents a process needs for `conversations` conversations (an agent holds at most 10).
inline int agents_for(int conversations) { return (conversations + 9) / 10; }
// Conversations (or connections) of process `index` out of `total` split over `count`.
inline int share_of(int total, int index, int count) { return total / count + (index < total % count ? 1 : 0); }
// Names carry the run's tag: agents of an earlier run against the same server
// may still hold their chats, so every run routes to agents of its own.
inline std::string route_of(const options& opt, int process_index) {
    return "load-" + opt.run_tag + "-p" + std::to_string(process_index);
}
inline std::string team_of(const options& opt, int process_index) {
    return "lt-" + opt.run_tag + "-p" + std::to_string(process_index);
}
inline std::string agent_id_of(const options& opt, int process_index, int agent_index) {
    return "la-" + opt.run_tag + "-p" + std::to_string(process_index) + "-" + std::to_string(agent_index);
}

}  // namespace parley::load
