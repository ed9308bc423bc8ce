// SQLite: the embedded default. WAL mode so readers never block the writer;
// synchronous=FULL under durability commit (an acknowledged message survives a
// power cut), NORMAL under relaxed (it still survives a crash of the process).
#include <sqlite3.h>

#include <cstdlib>
#include <unordered_map>
#include <vector>

#include "queries.h"
#include "sql.h"

namespace parley::storage::detail {
namespace {

class sqlite_error : public std::runtime_error {
public:
    sqlite_error(int code, const std::string& message) : std::runtime_error(message), code_(code) {}
    int code() const { return code_; }

private:
    int code_;
};

class sqlite_connection final : public sql_connection {
public:
    sqlite_connection(const std::string& path, bool durable_commit) {
        int rc = sqlite3_open_v2(path.c_str(), &db_,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
        if (rc != SQLITE_OK) {
            std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close(db_);
            db_ = nullptr;
            throw sqlite_error(rc, "cannot open SQLite database " + path + ": " + message);
        }
        sqlite3_busy_timeout(db_, 5000);
        exec_script("PRAGMA journal_mode=WAL");
        exec_script(durable_commit ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        exec_script("PRAGMA foreign_keys=OFF");
        // The default 2 MiB page cache cannot hold the index leaves that a
        // thousand live conversations append to, so every group commit re-read
        // them (pread); 64 MiB holds them. It is an upper bound, not an allocation.
        exec_script("PRAGMA cache_size=-65536");
        // A checkpoint copies each page once, however often the WAL rewrote it:
        // checkpointing every 16 MiB instead of 4 MiB copies the same hot leaf
        // pages fewer times (relay +20 %). 64 MiB gained a little more but every
        // read got slower as the WAL grew (storm accept->agent_joined p99 0.13 ->
        // 0.4 ms). The WAL file is cut back to 16 MiB after a checkpoint.
        exec_script("PRAGMA wal_autocheckpoint=4096");
        exec_script("PRAGMA journal_size_limit=16777216");
    }

    ~sqlite_connection() override {
        for (auto& [sql, p] : statements_) sqlite3_finalize(p.statement);
        sqlite3_close(db_);
    }

    sqlite_connection(const sqlite_connection&) = delete;
    sqlite_connection& operator=(const sqlite_connection&) = delete;

    dialect kind() const override { return dialect::sqlite; }

    sql_result exec(const std::string& sql, const sql_params& params) override {
        const prepared_statement& prepared_sql = prepared(sql);
        sqlite3_stmt* statement = prepared_sql.statement;
        sqlite3_reset(statement);
        sqlite3_clear_bindings(statement);
        for (std::size_t i = 0; i < params.size(); ++i) {
            const int index = i < prepared_sql.index_of_param.size() ? prepared_sql.index_of_param[i] : 0;
            if (index == 0) continue;  // the statement does not use this parameter
            const auto& p = params[i];
            int rc = SQLITE_OK;
            if (std::holds_alternative<std::monostate>(p))
                rc = sqlite3_bind_null(statement, index);
            else if (const auto* value = std::get_if<std::int64_t>(&p))
                rc = sqlite3_bind_int64(statement, index, *value);
            else {
                // STATIC: `params` outlives every step of this statement, so SQLite need not copy.
                const auto& text = std::get<std::string>(p);
                rc = sqlite3_bind_text(statement, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
            }
            check(rc);
        }
        sql_result out;
        for (;;) {
            int rc = sqlite3_step(statement);
            if (rc == SQLITE_DONE) break;
            if (rc != SQLITE_ROW) {
                sqlite3_reset(statement);
                sqlite3_clear_bindings(statement);
                check(rc);
            }
            sql_row row;
            const int columns = sqlite3_column_count(statement);
            row.cells.reserve(static_cast<std::size_t>(columns));
            for (int column = 0; column < columns; ++column) {
                if (sqlite3_column_type(statement, column) == SQLITE_NULL) {
                    row.cells.emplace_back(std::nullopt);
                } else {
                    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(statement, column));
                    row.cells.emplace_back(std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(statement, column))));
                }
            }
            out.rows.push_back(std::move(row));
        }
        out.affected = sqlite3_changes(db_);
        sqlite3_reset(statement);
        sqlite3_clear_bindings(statement);  // drop the pointers into `params` (bound STATIC)
        return out;
    }

    void exec_script(const std::string& sql) override {
        char* message = nullptr;
        int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message);
        if (rc != SQLITE_OK) {
            std::string text = message ? message : sqlite3_errstr(rc);
            sqlite3_free(message);
            throw sqlite_error(rc, text);
        }
    }

    // IMMEDIATE takes the write lock up front, so two writers never deadlock
    // upgrading read locks; readers are unaffected in WAL mode.
    void begin() override {
        exec_script("BEGIN IMMEDIATE");
        in_transaction_ = true;
    }
    void begin_exclusive() override { begin(); }

    void commit() override {
        in_transaction_ = false;
        exec_script("COMMIT");
    }

    void rollback() noexcept override {
        if (sqlite3_get_autocommit(db_) == 0) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
        in_transaction_ = false;
    }

    void ping() override { exec("SELECT 1", {}); }

    error classify(std::exception_ptr failure) const override {
        try {
            std::rethrow_exception(failure);
        } catch (const storage_error& e) {
            return {e.kind(), e.what()};
        } catch (const sqlite_error& e) {
            switch (e.code() & 0xff) {
                case SQLITE_BUSY:
                case SQLITE_LOCKED:
                case SQLITE_FULL:
                case SQLITE_IOERR:
                case SQLITE_CANTOPEN:
                    return {error_kind::unavailable, e.what()};
                case SQLITE_CONSTRAINT:
                    return {error_kind::conflict, e.what()};
                default:
                    return {error_kind::internal, e.what()};
            }
        } catch (const std::exception& e) {
            return {error_kind::internal, e.what()};
        } catch (...) {
            return {error_kind::internal, "unknown error"};
        }
    }

    const std::vector<std::string>& migrations() const override {
        static const std::vector<std::string> steps = migrations_for(dialect::sqlite);
        return steps;
    }

private:
    // A prepared statement and, for each parameter $n, its SQLite index (0: not used),
    // so binding does not look parameter names up on every execution.
    struct prepared_statement {
        sqlite3_stmt* statement = nullptr;
        std::vector<int> index_of_param;
    };

    const prepared_statement& prepared(const std::string& sql) {
        auto it = statements_.find(sql);
        if (it != statements_.end()) return it->second;
        prepared_statement p;
        check(sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                 &p.statement, nullptr));
        const int count = sqlite3_bind_parameter_count(p.statement);
        for (int index = 1; index <= count; ++index) {
            const char* name = sqlite3_bind_parameter_name(p.statement, index);
            if (name == nullptr || name[0] != '$') continue;
            const auto n = static_cast<std::size_t>(std::strtoul(name + 1, nullptr, 10));
            if (n == 0) continue;
            if (p.index_of_param.size() < n) p.index_of_param.resize(n, 0);
            p.index_of_param[n - 1] = index;
        }
        return statements_.emplace(sql, std::move(p)).first->second;
    }

    void check(int rc) const {
        if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE)
            throw sqlite_error(sqlite3_extended_errcode(db_), sqlite3_errmsg(db_));
    }

    sqlite3* db_ = nullptr;
    bool in_transaction_ = false;
    std::unordered_map<std::string, prepared_statement> statements_;
};

}  // namespace

std::unique_ptr<sql_connection> open_sqlite_connection(const std::string& path, bool durable_commit) {
    return std::make_unique<sqlite_connection>(path, durable_commit);
}

error classify_connect_failure(std::exception_ptr failure) {
    try {
        std::rethrow_exception(failure);
    } catch (const storage_error& e) {
        return {e.kind(), e.what()};
    } catch (const sqlite_error& e) {
        return {error_kind::unavailable, e.what()};
    } catch (const std::exception& e) {
        // pqxx::broken_connection and friends: the database cannot be reached.
        return {error_kind::unavailable, e.what()};
    } catch (...) {
        return {error_kind::internal, "unknown error"};
    }
}

}  // namespace parley::storage::detail
