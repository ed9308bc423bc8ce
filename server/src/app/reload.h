#pragma once
// SIGHUP: re-reads the configuration file and applies what may change while
// running: log level, limits, tenants (added, removed, secrets or settings
// rotated). Everything else is compared and logged as needing a restart. A
// file with problems changes nothing (each problem is logged with file and key).
//
// Reloads run on a thread of their own: a new tenant's hub loads from storage,
// which blocks, and an I/O thread never waits.
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "net/net.h"
#include "parley/config/config.h"
#include "parley/storage/store.h"
#include "app/shared_state.h"

namespace parley::server {

class config_reloader {
public:
    // `port_from_command_line`: --port overrode server.port; the file's value is then ignored.
    config_reloader(asio::io_context& ioc, std::shared_ptr<shared_state> state, std::shared_ptr<storage::store> store,
                    bool port_from_command_line);
    ~config_reloader();
    config_reloader(const config_reloader&) = delete;
    config_reloader& operator=(const config_reloader&) = delete;

    // Thread-safe; requests arriving during a reload coalesce into one more.
    void request();
    // Lets a running reload finish, then joins the thread.
    void stop();

private:
    void run();
    void reload_once();
    void end_rotated_agent_sessions(const std::string& tenant_id);

    asio::io_context& ioc_;
    std::shared_ptr<shared_state> state_;
    std::shared_ptr<storage::store> store_;
    config::config applied_;  // what the last reload (or start-up) put in force
    const bool port_from_command_line_;

    std::mutex mutex_;
    std::condition_variable wake_;
    bool requested_ = false;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace parley::server
