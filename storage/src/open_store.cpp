#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "parley/storage/store.h"
#include "parley/storage/testing.h"
#include "parley/storage/url.h"
#include "queries.h"
#include "reply_watchdog.h"
#include "store_engine.h"
#include "store_rules.h"

namespace parley::storage {
namespace {

using detail::connection_factory;

struct backend_choice {
    std::string name;
    connection_factory factory;
};

// parse_url (parley/storage/url.h) checks the URL's form, as config does for
// `parleyd check-config`; only the SQLite directory check is open_store's own.
result<backend_choice> choose_backend(const std::string& url, durability mode) {
    auto parsed = parse_url(url);
    if (!parsed) return error{error_kind::bad_request, "bad storage URL: " + parsed.failure().message};
    if (parsed->backend == backend_kind::postgresql) {
        auto watchdog = std::make_shared<detail::reply_watchdog>();
        return backend_choice{"postgresql", [url, watchdog] { return detail::open_postgres_connection(url, watchdog); }};
    }
    const std::string path = parsed->sqlite_path;
    auto directory = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!std::filesystem::is_directory(directory, ec))
        return error{error_kind::bad_request,
                     "bad storage URL: SQLite database directory " + directory.string() + " does not exist"};
    const bool durable = mode == durability::commit;
    return backend_choice{"sqlite", [path, durable] { return detail::open_sqlite_connection(path, durable); }};
}

// Connects once; errors become results.
template <class T, class F>
result<T> with_connection(const backend_choice& backend, F use) {
    std::unique_ptr<detail::sql_connection> connection;
    try {
        connection = backend.factory();
    } catch (...) {
        auto why = detail::classify_connect_failure(std::current_exception());
        why.message = "cannot connect to " + backend.name + " storage: " + why.message;
        return why;
    }
    try {
        return use(connection);
    } catch (...) {
        return connection->classify(std::current_exception());
    }
}

}  // namespace

int binary_schema_version() { return detail::known_schema_version(); }

result<std::unique_ptr<store>> open_store(const std::string& url, const store_options& options) {
    if (auto bad = detail::check_options(options)) return *bad;
    auto backend = choose_backend(url, options.durability);
    if (!backend) return backend.failure();
    return with_connection<std::unique_ptr<store>>(
        backend.value(), [&](std::unique_ptr<detail::sql_connection>& connection) -> result<std::unique_ptr<store>> {
            const int known = detail::known_schema_version();
            if (options.migrate_on_open) {
                detail::migrate(*connection);
            } else {
                const int version = detail::current_schema_version(*connection);
                if (version > known)
                    return error{error_kind::internal, "database schema version " + std::to_string(version) +
                                                           " is newer than this parleyd supports (" +
                                                           std::to_string(known) + ")"};
                if (version < known)
                    return error{error_kind::internal, "database schema version " + std::to_string(version) +
                                                           " is older than this parleyd needs (" +
                                                           std::to_string(known) + "); run `parleyd migrate`"};
            }
            return std::unique_ptr<store>(std::make_unique<detail::store_engine>(
                backend.value().factory, backend.value().name, options, std::move(connection)));
        });
}

status probe_reachable(const std::string& url, const std::function<bool()>& stop_requested) {
    if (auto parsed = parse_url(url); !parsed || parsed->backend != backend_kind::postgresql) return {};
    const std::string full = detail::with_network_timeouts(url);
    int connect_timeout_s = 10;
    if (const auto given = detail::conninfo_options(full))
        if (const auto found = given->find("connect_timeout"); found != given->end())
            connect_timeout_s = std::atoi(found->second.c_str());
    // libpq treats a connect_timeout below 2 s as 2 s, and 0 as none.
    const auto give_up_at = std::chrono::steady_clock::now() +
                            (connect_timeout_s <= 0 ? std::chrono::hours(24) : std::chrono::seconds(std::max(2, connect_timeout_s)));
    std::unique_ptr<PGconn, void (*)(PGconn*)> connection(PQconnectStart(full.c_str()), PQfinish);
    auto failed = [](std::string why) { return error{error_kind::unavailable, std::move(why)}; };
    if (!connection || PQstatus(connection.get()) == CONNECTION_BAD)
        return failed(connection ? PQerrorMessage(connection.get()) : "out of memory");
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (state != PGRES_POLLING_OK) {
        if (state == PGRES_POLLING_FAILED) return failed(PQerrorMessage(connection.get()));
        if (stop_requested()) return failed("stopped while connecting");
        if (std::chrono::steady_clock::now() >= give_up_at) return failed("timeout expired");
        pollfd watched{PQsocket(connection.get()), static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT),
                       0};
        const int ready = ::poll(&watched, 1, 50);
        if (ready < 0 && errno != EINTR) return failed(std::string("poll: ") + std::strerror(errno));
        if (ready > 0) state = PQconnectPoll(connection.get());
    }
    return {};
}

result<int> migrate(const std::string& url) {
    auto backend = choose_backend(url, durability::commit);
    if (!backend) return backend.failure();
    return with_connection<int>(backend.value(), [](std::unique_ptr<detail::sql_connection>& connection) {
        return detail::migrate(*connection);
    });
}

namespace testing {

status force_schema_version(const std::string& url, int version) {
    auto backend = choose_backend(url, durability::commit);
    if (!backend) return backend.failure();
    auto done = with_connection<int>(backend.value(), [version](std::unique_ptr<detail::sql_connection>& connection) {
        detail::force_schema_version(*connection, version);
        return version;
    });
    if (!done) return done.failure();
    return {};
}

status migrate_to(const std::string& url, int version) {
    auto backend = choose_backend(url, durability::commit);
    if (!backend) return backend.failure();
    auto done = with_connection<int>(backend.value(), [version](std::unique_ptr<detail::sql_connection>& connection) {
        return detail::migrate(*connection, version);
    });
    if (!done) return done.failure();
    return {};
}

status exec_sql(const std::string& url, const std::string& script) {
    auto backend = choose_backend(url, durability::commit);
    if (!backend) return backend.failure();
    auto done = with_connection<int>(backend.value(), [&script](std::unique_ptr<detail::sql_connection>& connection) {
        connection->exec_script(script);
        return 0;
    });
    if (!done) return done.failure();
    return {};
}

}  // namespace testing
}  // namespace parley::storage
