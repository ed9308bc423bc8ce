#pragma once
// The small SQL layer both backends implement. Queries are written once, in
// queries.cpp, with $1..$n placeholders (PostgreSQL binds them positionally,
// SQLite by name). Values travel as text or integers; booleans are 0/1.
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "parley/storage/records.h"
#include "parley/storage/result.h"

namespace parley::storage::detail {

using sql_value = std::variant<std::monostate, std::int64_t, std::string>;
using sql_params = std::vector<sql_value>;

sql_value nullable(const std::optional<std::string>& value);
sql_value nullable(const std::optional<std::int64_t>& value);

struct sql_row {
    std::vector<std::optional<std::string>> cells;

    bool is_null(std::size_t column) const { return !cells.at(column).has_value(); }
    const std::string& text(std::size_t column) const;
    std::optional<std::string> opt_text(std::size_t column) const { return cells.at(column); }
    std::int64_t integer(std::size_t column) const;
    std::optional<std::int64_t> opt_integer(std::size_t column) const;
};

struct sql_result {
    std::vector<sql_row> rows;
    std::int64_t affected = 0;
};

// A logical error raised by the library itself (not by a driver).
class storage_error : public std::runtime_error {
public:
    storage_error(error_kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    error_kind kind() const { return kind_; }

private:
    error_kind kind_;
};

enum class dialect { postgresql, sqlite };

// One database connection, used by one thread at a time. Methods throw (driver
// exceptions or storage_error); the engine turns them into results with classify().
class sql_connection {
public:
    virtual ~sql_connection() = default;

    virtual dialect kind() const = 0;
    // Prepared once per connection and cached. Outside begin()/commit() each
    // statement runs in its own implicit transaction.
    virtual sql_result exec(const std::string& sql, const sql_params& params = {}) = 0;
    // Several statements without parameters (migrations).
    virtual void exec_script(const std::string& sql) = 0;
    virtual void begin() = 0;
    // A transaction that excludes other migrators (advisory lock / BEGIN IMMEDIATE).
    virtual void begin_exclusive() = 0;
    virtual void commit() = 0;
    virtual void rollback() noexcept = 0;
    virtual void ping() = 0;
    // From now on, a call that waits longer than the connection's reply limit
    // for the database fails with `unavailable` and leaves the connection
    // broken (PostgreSQL: the URL's tcp_user_timeout, see reply_watchdog.h).
    // The store's writer, readers and prune do this; migrations, which may
    // legitimately run for minutes, do not. SQLite has no network to wait on.
    virtual void limit_reply_wait() {}
    // Inserts a run of messages inside the current transaction; one outcome per
    // message, in order. The default runs one statement per message.
    virtual std::vector<result<append_outcome>> append_messages(std::span<const message_record* const> messages);
    // Turns an exception thrown by this connection into an error. `unavailable`
    // means the connection is unusable and must be replaced.
    virtual error classify(std::exception_ptr failure) const = 0;
    // Schema migrations of this dialect; migration i+1 is element i.
    virtual const std::vector<std::string>& migrations() const = 0;
};

// Opens a new connection (throws on failure).
using connection_factory = std::function<std::unique_ptr<sql_connection>()>;

class reply_watchdog;
// `watchdog` enforces the reply limit of connections that ask for one (limit_reply_wait).
std::unique_ptr<sql_connection> open_postgres_connection(const std::string& url,
                                                         std::shared_ptr<reply_watchdog> watchdog);
// The connection parameters a PostgreSQL URL sets (keyword -> value), or
// nullopt when libpq cannot parse it.
std::optional<std::map<std::string, std::string>> conninfo_options(const std::string& url);
// The URL's tcp_user_timeout (after with_network_timeouts), or zero when it sets 0 (none).
std::chrono::milliseconds reply_limit_of(const std::string& url);
// `url` with libpq's TCP timeouts (connect_timeout, keepalives, tcp_user_timeout)
// added where it sets none: a database behind a silently dropping network must
// turn into errors within about a minute, not a writer blocked for many.
std::string with_network_timeouts(const std::string& url);
std::unique_ptr<sql_connection> open_sqlite_connection(const std::string& path, bool durable_commit);

// Conversion of a failure seen by a caller that has no connection (connect failed).
error classify_connect_failure(std::exception_ptr failure);

}  // namespace parley::storage::detail
