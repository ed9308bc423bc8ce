#include "parley/server/app.h"

#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <csignal>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "tenant/blocking.h"
#include "app/dispatcher.h"
#include "app/http_api.h"
#include "net/listener.h"
#include "base/metrics.h"
#include "net/net.h"
#include "app/reload.h"
#include "parley/server/logging.h"
#include "app/shared_state.h"
#include "app/static_files.h"
#include "tenant/tenant_hub.h"

namespace parley::server {

storage::store_options store_options_from(const config::config& cfg) {
    storage::store_options o;
    o.durability = cfg.storage.durability == config::durability::relaxed ? storage::durability::relaxed
                                                                         : storage::durability::commit;
    o.batch_max = cfg.storage.batch_max;
    o.batch_delay = std::chrono::duration_cast<std::chrono::microseconds>(cfg.storage.batch_delay);
    o.queue_max = cfg.storage.queue_max;
    o.unavailable_after = cfg.storage.unavailable_after;
    o.retention_days = static_cast<int>(cfg.storage.retention_days);
    o.on_batch_committed = [](std::size_t writes, std::chrono::microseconds took) {
        auto& m = global_metrics();
        m.storage_batches++;
        m.storage_writes += writes;
        m.storage_batch_seconds.observe(std::chrono::duration<double>(took).count());
    };
    return o;
}

namespace {

// The quick start's demo tenant gets two agents (so that an offer nobody
// accepts moves on to the second) and two routes, each only when missing.
void seed_demo(storage::store& store) {
    auto agents = wait_for<std::vector<storage::agent_record>>([&](auto done) { store.list_agents("demo", done); });
    if (!agents) return;
    const bool first_seeding = agents->empty();
    auto seed_agent = [&](const std::string& id, const std::string& name) {
        for (const auto& existing : agents.value())
            if (existing.id == id) return;
        storage::agent_record agent;
        agent.tenant_id = "demo";
        agent.id = id;
        agent.name = name;
        agent.email = id + "@demo.example";
        agent.calendar_url = "https://calendar.example.com/" + id;
        wait_for<void>([&](auto done) { store.put_agent(agent, done); });
        logger("main")->info("demo tenant seeded: agent {}", id);
    };
    seed_agent("demo-agent", "Demo Agent");
    seed_agent("demo-agent-2", "Second Agent");
    if (!first_seeding) return;
    storage::route_record sales{"demo", "sales",
                                {{"type", "round_robin"},
                                 {"fallback_message", "Nobody is free right now; book a call instead."},
                                 {"fallback_calendar", true}}};
    wait_for<void>([&](auto done) { store.put_route(sales, done); });
    storage::route_record support{"demo", "support", {{"type", "round_robin"}, {"queue_wait_s", 300}}};
    wait_for<void>([&](auto done) { store.put_route(support, done); });
    logger("main")->info("demo tenant seeded: routes sales and support");
}

// The retention job. store::prune() blocks until every batch of deletes is
// done, so it gets a thread of its own (and the store a connection of its own
// for it) and never runs on an I/O or reader thread. Runs every `interval`;
// the first run comes after at most a minute, so a daemon restarted more
// often than the interval still prunes. stop() wakes the thread and joins it;
// a prune running then stops after its current batch (a short transaction of
// storage.prune_batch rows) and the next start finishes it.
class retention_job {
public:
    retention_job(std::shared_ptr<storage::store> store, std::chrono::seconds interval, int retention_days)
        : store_(std::move(store)), interval_(interval), retention_days_(retention_days) {
        thread_ = std::thread([this] { run(); });
    }
    ~retention_job() { stop(); }
    retention_job(const retention_job&) = delete;
    retention_job& operator=(const retention_job&) = delete;

    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

private:
    void run() {
        auto log = logger("store");
        log->info("retention job: every {} s, deleting data older than {} day(s)", interval_.count(), retention_days_);
        std::chrono::seconds delay = std::min(interval_, std::chrono::seconds(60));
        std::unique_lock lock(mutex_);
        for (;;) {
            if (wake_.wait_for(lock, delay, [this] { return stopping_; })) return;
            delay = interval_;
            lock.unlock();
            prune_once(*log);
            lock.lock();
        }
    }

    void prune_once(spdlog::logger& log) {
        const auto started = std::chrono::steady_clock::now();
        const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        auto report = store_->prune(now, [this] {
            std::lock_guard lock(mutex_);
            return stopping_;
        });
        const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
        if (!report) {
            // Typically the database is down; the next run tries again.
            log.warn("retention job: prune failed after {} ms: {}", took.count(), report.failure().message);
            return;
        }
        const auto& r = report.value();
        const bool deleted_something = r.messages + r.activities + r.conversations + r.offers + r.visitors > 0;
        log.log(deleted_something ? spdlog::level::info : spdlog::level::debug,
                "retention job: pruned {} message(s), {} activit(ies), {} conversation(s), {} offer(s), "
                "{} visitor card(s) in {} batch(es), {} ms{}",
                r.messages, r.activities, r.conversations, r.offers, r.visitors, r.batches, took.count(),
                r.stopped ? "; stopped for shutdown, the next run goes on" : "");
    }

    std::shared_ptr<storage::store> store_;
    const std::chrono::seconds interval_;
    const int retention_days_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;  // started in the constructor body, once every member above is initialised
};

}  // namespace

struct app::impl {
    impl(config::config cfg, app_options opts)
        : options(std::move(opts)),
          state(std::make_shared<shared_state>(std::move(cfg))),
          thread_count(state->cfg.server.threads != 0 ? state->cfg.server.threads
                                                      : std::max(1u, std::thread::hardware_concurrency())),
          ioc(static_cast<int>(thread_count)),
          signals(ioc, SIGINT, SIGTERM),
          reload_signals(ioc, SIGHUP),
          drain_timer(ioc),
          watchdog_timer(ioc) {}

    // SIGTERM: stop accepting; refuse new hellos and requests; let the message
    // writes in flight finish and their `ok`s go out; then tell every client
    // 1001 (after what is queued for it) and wait for the connections to go.
    // A quarter of shutdown_timeout bounds the writes, half of it the whole
    // drain. Storage writes still queued then are committed by run() after the
    // loop ends (their `ok`s are lost; a resend is recognised by client_msg_id).
    void begin_shutdown(const char* why) {
        if (state->draining.exchange(true)) return;
        logger("main")->info("{}: shutting down, {} connection(s) open", why, state->open_connections.load());
        sd_notify(0, "STOPPING=1");
        if (server_listener) server_listener->stop();
        reload_signals.cancel();
        for (auto& session : state->websockets.snapshot())
            session->close_unless_authenticated(websocket::close_code::going_away, "server shutting down");
        for (auto& [id, hub] : *state->hubs()) hub->shutdown(websocket::close_code::going_away, "server shutting down");
        // Hubs of removed tenants are shut down already; the drain's bound covers them too.
        retiring = [&] {
            std::lock_guard lock(state->retiring_mutex);
            return state->retiring_hubs;
        }();
        const auto now = std::chrono::steady_clock::now();
        shutdown_began = now;
        writes_deadline = now + state->cfg.server.shutdown_timeout / 4;
        drain_deadline = now + state->cfg.server.shutdown_timeout / 2;
        wait_for_drain();
    }

    void wait_for_drain() {
        if (!sessions_forced_closed && std::chrono::steady_clock::now() >= writes_deadline) {
            sessions_forced_closed = true;
            for (auto& [id, hub] : *state->hubs()) hub->close_sessions_now();
            for (auto& hub : retiring) hub->close_sessions_now();
        }
        if (state->open_connections.load() <= 0 || std::chrono::steady_clock::now() >= drain_deadline) {
            watchdog_timer.cancel();
            work_guard.reset();
            ioc.stop();
            return;
        }
        drain_timer.expires_after(std::chrono::milliseconds(20));
        drain_timer.async_wait([this](error_code ec) {
            if (!ec) wait_for_drain();
        });
    }

    // A PostgreSQL still starting, or briefly unreachable, when parleyd starts is
    // waited for (storage.start_wait_s, with backoff): a boot-order race or a short
    // outage must not use up systemd's restart budget. SIGTERM ends the wait at
    // once, also in the middle of a connection attempt that hangs on a silent
    // link (each attempt is a probe_reachable() that asks between polls; only a
    // server that answered gets the blocking open_store()).
    // SQLite, and any failure but `unavailable`, fail at once.
    storage::result<std::unique_ptr<storage::store>> open_storage_waiting(const config::config& cfg) {
        auto log = logger("main");
        const auto store_options = store_options_from(cfg);
        const bool networked = cfg.storage.url.rfind("sqlite:", 0) != 0;
        if (!networked || cfg.storage.start_wait.count() == 0) return storage::open_store(cfg.storage.url, store_options);
        signals.async_wait([this](error_code ec, int signal_number) {
            if (!ec) stop_signal_at_start = signal_number;
        });
        // Nothing else runs the loop yet: polling it runs the handler above when a signal came.
        auto stop_requested = [this] {
            ioc.restart();
            ioc.poll();
            return stop_signal_at_start != 0;
        };
        auto attempt = [&]() -> storage::result<std::unique_ptr<storage::store>> {
            auto reachable = storage::probe_reachable(cfg.storage.url, stop_requested);
            if (!reachable)
                return storage::error{storage::error_kind::unavailable,
                                      "cannot connect to postgresql storage: " + reachable.failure().message};
            return storage::open_store(cfg.storage.url, store_options);
        };
        auto opened = attempt();
        const auto give_up_at = std::chrono::steady_clock::now() + cfg.storage.start_wait;
        std::chrono::milliseconds backoff{250};
        while (!opened && opened.failure().kind == storage::error_kind::unavailable && stop_signal_at_start == 0) {
            const auto left = give_up_at - std::chrono::steady_clock::now();
            if (left <= std::chrono::milliseconds::zero()) {
                log->error("storage: gave up after storage.start_wait_s = {} s", cfg.storage.start_wait.count());
                break;
            }
            backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
            const auto wait = std::min<std::chrono::steady_clock::duration>(backoff, left);
            log->warn("storage not reachable yet, retrying in {} ms: {}",
                      std::chrono::duration_cast<std::chrono::milliseconds>(wait).count(), opened.failure().message);
            sd_notify(0, "STATUS=waiting for storage");
            ioc.restart();
            ioc.run_for(wait);  // returns early when a stop signal arrives
            if (stop_signal_at_start == 0) opened = attempt();
        }
        // The wait's signal handler must not take the signal the running server waits for.
        signals.cancel();
        ioc.restart();
        ioc.poll();
        ioc.restart();
        if (opened) sd_notify(0, "STATUS=");
        return opened;
    }

    void wait_for_reload_signal() {
        reload_signals.async_wait([this](error_code ec, int) {
            if (ec || state->draining.load()) return;
            reloader->request();
            wait_for_reload_signal();
        });
    }

    void watchdog() {
        std::uint64_t usec = 0;
        if (sd_watchdog_enabled(0, &usec) <= 0) return;
        sd_notify(0, "WATCHDOG=1");
        // Only while the event loop turns: a stuck loop stops the pings and systemd restarts us.
        watchdog_timer.expires_after(std::chrono::microseconds(usec / 3));
        watchdog_timer.async_wait([this](error_code ec) {
            if (!ec) watchdog();
        });
    }

    app_options options;
    std::shared_ptr<shared_state> state;
    unsigned thread_count;
    asio::io_context ioc;
    asio::signal_set signals;
    asio::signal_set reload_signals;
    std::unique_ptr<config_reloader> reloader;
    asio::steady_timer drain_timer;
    asio::steady_timer watchdog_timer;
    std::chrono::steady_clock::time_point writes_deadline;
    std::chrono::steady_clock::time_point drain_deadline;
    bool sessions_forced_closed = false;
    std::optional<std::chrono::steady_clock::time_point> shutdown_began;
    int stop_signal_at_start = 0;  // SIGTERM or SIGINT while waiting for storage
    std::vector<std::shared_ptr<tenant_hub>> retiring;  // removed by reloads, at the shutdown
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_guard;
    std::shared_ptr<listener> server_listener;
};

app::app(config::config cfg, app_options options) : impl_(std::make_unique<impl>(std::move(cfg), std::move(options))) {}

app::~app() = default;

void app::request_stop() {
    asio::post(impl_->ioc, [this] { impl_->begin_shutdown("stop requested"); });
}

namespace {

// limits.max_connections is only as good as the open-files limit: raise the
// soft limit to what it needs (up to the hard one), and say so when that is
// not enough, rather than fail accepts later with EMFILE.
void check_open_files_limit(const config::config& cfg) {
    constexpr rlim_t reserve = 100;  // storage connections, log, listener, timers
    const rlim_t needed = static_cast<rlim_t>(cfg.limits.max_connections) + reserve;
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return;
    if (files.rlim_cur < needed && files.rlim_cur != RLIM_INFINITY) {
        rlimit raised = files;
        raised.rlim_cur = files.rlim_max == RLIM_INFINITY ? needed : std::min(needed, files.rlim_max);
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) files = raised;
    }
    if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < needed)
        logger("main")->warn("{}: limits.max_connections = {} needs about {} open files, but this process may open "
                             "{} (LimitNOFILE, ulimit -n): connections past about {} will be refused",
                             cfg.source_file, cfg.limits.max_connections, needed, files.rlim_cur,
                             files.rlim_cur > reserve ? files.rlim_cur - reserve : 0);
}

}  // namespace

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

    check_open_files_limit(cfg);

    // Storage first: nothing is served before the schema is current and the open state is back.
    auto opened = s.open_storage_waiting(cfg);
    if (s.stop_signal_at_start != 0) {
        log->info("{}: stopped while waiting for storage, never served",
                  s.stop_signal_at_start == SIGTERM ? "SIGTERM" : "SIGINT");
        return 0;
    }
    if (!opened) {
        log->critical("storage {}: {}", cfg.storage.url.substr(0, cfg.storage.url.find(':')), opened.failure().message);
        return 1;
    }
    std::shared_ptr<storage::store> store = std::move(opened.value());
    s.state->store = store;
    if (s.options.seed_demo && cfg.tenants.count("demo") != 0) seed_demo(*store);

    auto hubs = std::make_shared<hub_map>();
    for (const auto& [id, tenant] : cfg.tenants) {
        std::string error;
        auto hub = tenant_hub::open(s.ioc, {s.state, s.state->cfg.routing}, tenant, store, error);
        if (!hub) {
            log->critical("{}", error);
            return 1;
        }
        (*hubs)[id] = std::move(hub);
    }
    s.state->set_hubs(hubs);
    s.state->websocket_handler = std::make_shared<dispatcher>(*s.state);
    s.state->http = std::make_shared<http_api>(*s.state);
    s.state->web_files = static_files::from_config(s.state->cfg);
    s.state->ready = true;
    retention_job retention(store, cfg.storage.prune_interval, static_cast<int>(cfg.storage.retention_days));

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
    s.reloader = std::make_unique<config_reloader>(s.ioc, s.state, store, s.options.port_from_command_line);
    s.wait_for_reload_signal();
    s.work_guard.emplace(s.ioc.get_executor());

    log->info("parleyd {} listening on {}:{} with {} I/O thread(s), storage {}, {} tenant(s)", PARLEY_VERSION,
              cfg.server.listen_address, port, s.thread_count, store->backend_name(), hubs->size());
    if (!cfg.server.public_url.empty())
        log->info("clients reach it at {} (widgets: /v1/visitor, agents: /v1/agent)", cfg.server.public_url);
    if (!s.options.port_file.empty()) {
        // Written to a temp name and renamed, so a reader never sees half a number.
        std::string temp = s.options.port_file + ".tmp";
        std::ofstream(temp) << port << "\n";
        std::rename(temp.c_str(), s.options.port_file.c_str());
    }
    sd_notify(0, "READY=1");
    s.watchdog();

    // A handler that throws is a bug, but it must not take every tenant down with
    // it: the exception is logged and counted, and the thread goes back to work.
    auto run_io = [&s, log] {
        for (;;) {
            try {
                s.ioc.run();
                return;
            } catch (const std::exception& e) {
                global_metrics().handler_exceptions++;
                log->error("a handler threw, carrying on: {}", e.what());
            }
        }
    };
    std::vector<std::thread> threads;
    threads.reserve(s.thread_count - 1);
    for (unsigned i = 1; i < s.thread_count; ++i) threads.emplace_back(run_io);
    run_io();
    for (auto& t : threads) t.join();
    s.reloader->stop();
    retention.stop();

    // Every write queued before the stop is committed before we exit, within what
    // is left of shutdown_timeout: a database that stopped answering must not hold
    // the exit until systemd kills us without a word (TimeoutStopSec). Exiting
    // without them loses no acknowledged message under durability commit: their
    // senders got no `ok` and resend. The store's threads may be blocked on the
    // database, so nothing waits for them.
    const auto flush_deadline = s.shutdown_began.value_or(std::chrono::steady_clock::now()) + cfg.server.shutdown_timeout;
    const auto flush_left = std::max<std::chrono::steady_clock::duration>(
        flush_deadline - std::chrono::steady_clock::now(), std::chrono::milliseconds(100));
    if (!store->flush_within(std::chrono::duration_cast<std::chrono::milliseconds>(flush_left))) {
        log->error("storage: writes still not committed when shutdown_timeout_s = {} s ran out ({} queued); "
                   "exiting without them",
                   cfg.server.shutdown_timeout.count(), store->stats().queue_depth);
        spdlog::shutdown();
        std::_Exit(1);
    }
    s.retiring.clear();
    s.state->retiring_hubs.clear();
    s.state->set_hubs(std::make_shared<hub_map>());
    log->info("stopped");
    return 0;
}

}  // namespace parley::server
