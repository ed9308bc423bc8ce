#include "parley/server/app.h"

#include <csignal>
#include <fstream>
#include <thread>
#include <vector>

#include "listener.h"
#include "net.h"
#include "parley/server/logging.h"
#include "shared_state.h"

namespace parley::server {

struct app::impl {
    impl(config::config cfg, app_options opts)
        : options(std::move(opts)),
          state(std::make_shared<shared_state>(std::move(cfg))),
          thread_count(state->cfg.server.threads != 0 ? state->cfg.server.threads
                                                      : std::max(1u, std::thread::hardware_concurrency())),
          ioc(static_cast<int>(thread_count)),
          signals(ioc, SIGINT, SIGTERM) {}

    void begin_shutdown(const char* why) {
        if (state->draining.exchange(true)) return;
        logger("main")->info("{}: shutting down", why);
        if (server_listener) server_listener->stop();
        // Sessions notice `draining` and close; the io_context runs out of work.
        work_guard.reset();
        ioc.stop();
    }

    app_options options;
    std::shared_ptr<shared_state> state;
    unsigned thread_count;
    asio::io_context ioc;
    asio::signal_set signals;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_guard;
    std::shared_ptr<listener> server_listener;
};

app::app(config::config cfg, app_options options) : impl_(std::make_unique<impl>(std::move(cfg), std::move(options))) {}

app::~app() = default;

void app::request_stop() {
    asio::post(impl_->ioc, [this] { impl_->begin_shutdown("stop requested"); });
}

int app::run() {
    auto& s = *impl_;
    const auto& cfg = s.state->cfg;
    auto log = logger("main");

    error_code ec;
    auto address = asio::ip::make_address(cfg.server.listen_address, ec);
    if (ec) {
        log->critical("{}: server.listen_address: not an IP address: {}", cfg.source_file, cfg.server.listen_address);
        return 2;
    }
    try {
        s.server_listener = std::make_shared<listener>(s.ioc, tcp::endpoint{address, cfg.server.port}, s.state);
    } catch (const boost::system::system_error& e) {
        log->critical("cannot listen on {}:{}: {}", cfg.server.listen_address, cfg.server.port, e.code().message());
        return 1;
    }
    s.server_listener->run();
    const auto port = s.server_listener->port();

    s.signals.async_wait([&s](error_code wait_ec, int signal_number) {
        if (!wait_ec) s.begin_shutdown(signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    });
    s.work_guard.emplace(s.ioc.get_executor());

    log->info("parleyd {} listening on {}:{} with {} I/O thread(s)", PARLEY_VERSION, cfg.server.listen_address, port,
              s.thread_count);
    if (!s.options.port_file.empty()) {
        // Written to a temp name and renamed, so a reader never sees half a number.
        std::string temp = s.options.port_file + ".tmp";
        std::ofstream(temp) << port << "\n";
        std::rename(temp.c_str(), s.options.port_file.c_str());
    }

    std::vector<std::thread> threads;
    threads.reserve(s.thread_count - 1);
    for (unsigned i = 1; i < s.thread_count; ++i) threads.emplace_back([&s] { s.ioc.run(); });
    s.ioc.run();
    for (auto& t : threads) t.join();
    log->info("stopped");
    return 0;
}

}  // namespace parley::server
