// PostgreSQL through libpqxx 6.4: prepared statements cached per connection,
// and one multi-row INSERT ... SELECT FROM unnest(arrays) per run of messages,
// which is what makes group commit fast (one round trip for a whole batch).
#include <libpq-fe.h>

#include <pqxx/pqxx>
#include <unordered_map>

#include "queries.h"
#include "reply_watchdog.h"
#include "sql.h"

namespace parley::storage::detail {
namespace {

// PostgreSQL array literal of text values: {"a","b\"c",NULL}.
void append_array_element(std::string& out, const std::optional<std::string>& value) {
    if (out.size() > 1) out += ',';
    if (!value) {
        out += "NULL";
        return;
    }
    out += '"';
    for (char ch : *value) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += ch;
    }
    out += '"';
}

class postgres_connection final : public sql_connection {
public:
    postgres_connection(const std::string& url, std::shared_ptr<reply_watchdog> watchdog)
        : connection_(url), watchdog_(std::move(watchdog)), reply_limit_(reply_limit_of(url)) {}

    void limit_reply_wait() override { limited_ = watchdog_ != nullptr && reply_limit_.count() > 0; }

private:
    // Runs `call`, one exchange with the server, under the reply limit once
    // limit_reply_wait() asked for it.
    template <class F>
    decltype(auto) bounded(F&& call) {
        const int fd = limited_ ? connection_.sock() : -1;
        if (fd < 0) return call();
        reply_watchdog::armed guard(*watchdog_, fd, reply_limit_);
        try {
            return call();
        } catch (...) {
            if (guard.fired())
                throw storage_error(error_kind::unavailable,
                                    "no reply from PostgreSQL within " + std::to_string(reply_limit_.count()) +
                                        " ms (the URL's tcp_user_timeout): connection dropped");
            throw;
        }
    }

public:

    dialect kind() const override { return dialect::postgresql; }

    sql_result exec(const std::string& sql, const sql_params& params) override {
        std::vector<std::optional<std::string>> values;
        values.reserve(params.size());
        for (const auto& p : params) {
            if (std::holds_alternative<std::monostate>(p))
                values.emplace_back(std::nullopt);
            else if (const auto* i = std::get_if<std::int64_t>(&p))
                values.emplace_back(std::to_string(*i));
            else
                values.emplace_back(std::get<std::string>(p));
        }
        const std::string& name = prepared(sql);
        pqxx::result r = bounded([&] {
            if (transaction_) return transaction_->exec_prepared(name, pqxx::prepare::make_dynamic_params(values));
            pqxx::nontransaction autocommit(connection_);
            return autocommit.exec_prepared(name, pqxx::prepare::make_dynamic_params(values));
        });
        return convert(r);
    }

    void exec_script(const std::string& sql) override {
        bounded([&] {
            if (transaction_) {
                transaction_->exec(sql);
            } else {
                pqxx::nontransaction autocommit(connection_);
                autocommit.exec(sql);
            }
        });
    }

    void begin() override {
        bounded([&] { transaction_ = std::make_unique<pqxx::work>(connection_); });
    }

    void begin_exclusive() override {
        begin();
        transaction_->exec("SELECT pg_advisory_xact_lock(7243001)");  // serialises concurrent migrators
    }

    void commit() override {
        auto transaction = std::move(transaction_);
        bounded([&] { transaction->commit(); });
    }

    void rollback() noexcept override {
        try {
            if (transaction_) bounded([&] { transaction_->abort(); });
        } catch (...) {
            // The connection is gone; the server rolled back for us.
        }
        transaction_.reset();
    }

    void ping() override {
        bounded([&] {
            pqxx::nontransaction autocommit(connection_);
            autocommit.exec("SELECT 1");
        });
    }

    std::vector<result<append_outcome>> append_messages(std::span<const message_record* const> messages) override {
        if (messages.size() == 1) return sql_connection::append_messages(messages);
        std::string tenants = "{", conversations = "{", seqs = "{", senders = "{", agents = "{", kinds = "{",
                    bodies = "{", client_ids = "{", times = "{";
        for (const auto* m : messages) {
            append_array_element(tenants, m->tenant_id);
            append_array_element(conversations, m->conversation_id);
            append_array_element(seqs, std::to_string(m->seq));
            append_array_element(senders, std::string(to_string(m->sender)));
            append_array_element(agents, m->agent_id);
            append_array_element(kinds, std::string(to_string(m->kind)));
            append_array_element(bodies, m->body);
            append_array_element(client_ids, m->client_msg_id);
            append_array_element(times, std::to_string(m->at));
        }
        for (auto* array : {&tenants, &conversations, &seqs, &senders, &agents, &kinds, &bodies, &client_ids, &times})
            *array += '}';
        auto inserted = exec(
            "INSERT INTO messages (tenant_id, conversation_id, seq, sender, agent_id, kind, body, client_msg_id, at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], "
            "$7::text[], $8::text[], $9::bigint[]) ON CONFLICT DO NOTHING "
            "RETURNING tenant_id, conversation_id, seq",
            {tenants, conversations, seqs, senders, agents, kinds, bodies, client_ids, times});
        std::vector<result<append_outcome>> outcomes;
        outcomes.reserve(messages.size());
        if (inserted.rows.size() == messages.size()) {
            for (const auto* m : messages) outcomes.push_back(append_outcome{m->seq, m->at, false, true});
            return outcomes;
        }
        // Some rows hit a unique index: find which ones went in.
        struct key_hash {
            std::size_t operator()(const std::tuple<std::string, std::string, std::int64_t>& k) const {
                return std::hash<std::string>()(std::get<1>(k)) ^ std::hash<std::int64_t>()(std::get<2>(k));
            }
        };
        std::unordered_map<std::tuple<std::string, std::string, std::int64_t>, int, key_hash> stored;
        for (const auto& row : inserted.rows) stored[{row.text(0), row.text(1), row.integer(2)}] = 1;
        for (const auto* m : messages) {
            auto it = stored.find({m->tenant_id, m->conversation_id, m->seq});
            if (it != stored.end() && it->second == 1) {
                it->second = 0;  // a later message with the same key is the duplicate
                outcomes.push_back(append_outcome{m->seq, m->at, false, true});
            } else {
                outcomes.push_back(resolve_message_conflict(*this, *m));
            }
        }
        return outcomes;
    }

    error classify(std::exception_ptr failure) const override {
        try {
            std::rethrow_exception(failure);
        } catch (const storage_error& e) {
            return {e.kind(), e.what()};
        } catch (const pqxx::broken_connection& e) {
            return {error_kind::unavailable, std::string("database connection lost: ") + e.what()};
        } catch (const pqxx::in_doubt_error& e) {
            return {error_kind::unavailable, std::string("commit outcome unknown: ") + e.what()};
        } catch (const pqxx::unique_violation& e) {
            return {error_kind::conflict, e.what()};
        } catch (const pqxx::sql_error& e) {
            const std::string& state = e.sqlstate();
            // 08: connection exception, 57: operator intervention (shutdown), 53: insufficient resources.
            if (state.rfind("08", 0) == 0 || state.rfind("57", 0) == 0 || state.rfind("53", 0) == 0 ||
                !connection_.is_open())
                return {error_kind::unavailable, e.what()};
            // 25006 read_only_sql_transaction: the server became a standby (failover) or was set read-only.
            // Nothing this connection writes can succeed: drop it; the next one asks for a writable server.
            if (state == "25006")
                return {error_kind::unavailable, std::string("database is read-only (standby or "
                                                             "default_transaction_read_only): ") + e.what()};
            if (state.rfind("22", 0) == 0 || state.rfind("23", 0) == 0) return {error_kind::bad_request, e.what()};
            return {error_kind::internal, e.what()};
        } catch (const std::exception& e) {
            if (!connection_.is_open()) return {error_kind::unavailable, e.what()};
            return {error_kind::internal, e.what()};
        } catch (...) {
            return {error_kind::internal, "unknown error"};
        }
    }

    const std::vector<std::string>& migrations() const override {
        static const std::vector<std::string> steps = migrations_for(dialect::postgresql);
        return steps;
    }

private:
    const std::string& prepared(const std::string& sql) {
        auto it = statements_.find(sql);
        if (it != statements_.end()) return it->second;
        std::string name = "s" + std::to_string(statements_.size());
        connection_.prepare(name, sql);
        return statements_.emplace(sql, std::move(name)).first->second;
    }

    static sql_result convert(const pqxx::result& r) {
        sql_result out;
        out.affected = static_cast<std::int64_t>(r.affected_rows());
        out.rows.reserve(r.size());
        for (const auto& row : r) {
            sql_row converted;
            converted.cells.reserve(row.size());
            for (const auto& field : row) {
                if (field.is_null())
                    converted.cells.emplace_back(std::nullopt);
                else
                    converted.cells.emplace_back(std::string(field.c_str(), field.size()));
            }
            out.rows.push_back(std::move(converted));
        }
        return out;
    }

    mutable pqxx::connection connection_;
    const std::shared_ptr<reply_watchdog> watchdog_;
    const std::chrono::milliseconds reply_limit_;
    bool limited_ = false;
    std::unique_ptr<pqxx::work> transaction_;
    std::unordered_map<std::string, std::string> statements_;
};

}  // namespace

std::optional<std::map<std::string, std::string>> conninfo_options(const std::string& url) {
    PQconninfoOption* parsed = PQconninfoParse(url.c_str(), nullptr);
    if (parsed == nullptr) return std::nullopt;
    std::map<std::string, std::string> given;
    for (const auto* option = parsed; option->keyword != nullptr; ++option)
        if (option->val != nullptr) given.emplace(option->keyword, option->val);
    PQconninfoFree(parsed);
    return given;
}

std::string with_network_timeouts(const std::string& url) {
    const auto given = conninfo_options(url);
    if (!given) return url;  // refused by the connect with its own error
    // Idle 30 s, then 3 probes 10 s apart; unacknowledged sends give up after 30 s.
    // target_session_attrs=read-write: libpq refuses a server whose sessions are read-only (a
    // standby after failover, or default_transaction_read_only) and tries the URL's next host.
    static constexpr std::pair<const char*, const char*> defaults[] = {
        {"connect_timeout", "10"},     {"keepalives", "1"},       {"keepalives_idle", "30"},
        {"keepalives_interval", "10"}, {"keepalives_count", "3"}, {"tcp_user_timeout", "30000"},
        {"target_session_attrs", "read-write"}};
    std::string out = url;
    char separator = url.find('?') == std::string::npos ? '?' : '&';
    for (const auto& [keyword, value] : defaults) {
        if (given->count(keyword) != 0) continue;
        out += separator;
        out += keyword;
        out += '=';
        out += value;
        separator = '&';
    }
    return out;
}

std::chrono::milliseconds reply_limit_of(const std::string& url) {
    const auto given = conninfo_options(url);
    if (!given) return std::chrono::milliseconds::zero();
    const auto found = given->find("tcp_user_timeout");
    if (found == given->end()) return std::chrono::milliseconds::zero();
    try {
        return std::chrono::milliseconds(std::max(0L, std::stol(found->second)));
    } catch (const std::exception&) {
        return std::chrono::milliseconds::zero();  // libpq refuses it when connecting
    }
}

std::unique_ptr<sql_connection> open_postgres_connection(const std::string& url,
                                                         std::shared_ptr<reply_watchdog> watchdog) {
    return std::make_unique<postgres_connection>(with_network_timeouts(url), std::move(watchdog));
}

}  // namespace parley::storage::detail
