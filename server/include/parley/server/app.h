#pragma once
// The running daemon: io_context and its threads, the listener, signal handling.
#include <memory>
#include <string>

#include "parley/config/config.h"
#include "parley/storage/store.h"

namespace parley::server {

struct app_options {
    // When set, the bound port is written here once listening (tests bind port 0).
    std::string port_file;
    // Creates the demo tenant's agent and route at start-up when missing (quick start).
    bool seed_demo = false;
    bool port_from_command_line = false;  // --port: a reload keeps it
};

// Storage options as the configuration sets them.
storage::store_options store_options_from(const config::config& cfg);

class app {
public:
    app(config::config cfg, app_options options);
    ~app();
    app(const app&) = delete;
    app& operator=(const app&) = delete;

    // Serves until SIGTERM/SIGINT or request_stop(); returns the process exit code.
    int run();
    void request_stop();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace parley::server
