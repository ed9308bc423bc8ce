#include "queries.h"

#include <algorithm>

namespace parley::storage::detail {
namespace {

using nlohmann::json;

std::string to_json_text(const std::vector<std::string>& values) { return json(values).dump(); }

std::vector<std::string> string_list(const std::string& text) {
    auto parsed = json::parse(text, nullptr, false);
    std::vector<std::string> values;
    if (parsed.is_array())
        for (const auto& item : parsed)
            if (item.is_string()) values.push_back(item.get<std::string>());
    return values;
}

json json_value(const std::optional<std::string>& text) {
    if (!text) return nullptr;
    auto parsed = json::parse(*text, nullptr, false);
    return parsed.is_discarded() ? json(nullptr) : parsed;
}

// --- schema -----------------------------------------------------------------

// Version 1. Times are bigint milliseconds; JSON is stored as text; booleans as 0/1.
// Every query of protocol.md section 4 has an index:
//   list_conversations all     -> conversations_by_start (tenant_id, started_at, id)
//   list_conversations active  -> conversations_by_agent (tenant_id, agent_id, state, started_at, id)
//   last_message / transcript / resume -> messages primary key (tenant_id, conversation_id, seq)
//   get_visitor                -> visitors primary key
//   get_activity               -> activities_by_visitor (tenant_id, visitor_id, at, id)
//   load_open_state            -> partial indexes on open conversations and pending offers
//   retention prune            -> messages_by_time, activities_by_time, conversations_by_end, offers_by_creation
// Version 2 drops messages_by_time on SQLite (see schema_v2).
std::string schema_v1(dialect d) {
    const std::string activity_id =
        d == dialect::postgresql ? "id BIGSERIAL PRIMARY KEY" : "id INTEGER PRIMARY KEY AUTOINCREMENT";
    return R"sql(
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE agents (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT,
    max_chats INTEGER NOT NULL,
    teams TEXT NOT NULL DEFAULT '[]',
    schedule TEXT,
    calendar_url TEXT,
    avatar_url TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE availability_overrides (
    tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    available INTEGER NOT NULL,
    until_at BIGINT,
    set_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, agent_id)
);
CREATE TABLE routes (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE accounts (
    tenant_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, domain)
);
CREATE TABLE visitors (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    job_title TEXT,
    email TEXT,
    phone TEXT,
    crm_status TEXT,
    company TEXT,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE conversations (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    route TEXT NOT NULL,
    state TEXT NOT NULL,
    agent_id TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT,
    score INTEGER,
    tried_agents TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX conversations_by_start ON conversations (tenant_id, started_at DESC, id DESC);
CREATE INDEX conversations_by_agent ON conversations (tenant_id, agent_id, state, started_at DESC, id DESC);
CREATE INDEX conversations_by_visitor ON conversations (tenant_id, visitor_id, started_at DESC);
CREATE INDEX conversations_open ON conversations (tenant_id) WHERE state <> 'ended';
CREATE INDEX conversations_by_end ON conversations (ended_at) WHERE ended_at IS NOT NULL;
CREATE TABLE messages (
    tenant_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    sender TEXT NOT NULL,
    agent_id TEXT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    client_msg_id TEXT,
    at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id, seq)
);
CREATE UNIQUE INDEX messages_client_msg_id ON messages (tenant_id, conversation_id, client_msg_id);
CREATE INDEX messages_by_time ON messages (at);
CREATE TABLE offers (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    resolved_at BIGINT,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX offers_pending ON offers (tenant_id) WHERE outcome = 'pending';
CREATE INDEX offers_by_creation ON offers (created_at);
CREATE TABLE activities (
    )sql" + activity_id + R"sql(,
    tenant_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    type TEXT NOT NULL,
    at BIGINT NOT NULL,
    conversation_id TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX activities_by_visitor ON activities (tenant_id, visitor_id, at DESC, id DESC);
CREATE INDEX activities_by_time ON activities (at);
)sql";
}

// --- row mapping ------------------------------------------------------------

const char* const conversation_columns =
    "c.tenant_id, c.id, c.visitor_id, c.route, c.state, c.agent_id, c.started_at, c.ended_at, "
    "c.end_reason, c.score, c.tried_agents";
constexpr std::size_t conversation_column_count = 11;

conversation_record conversation_from(const sql_row& row) {
    conversation_record c;
    c.tenant_id = row.text(0);
    c.id = row.text(1);
    c.visitor_id = row.text(2);
    c.route = row.text(3);
    c.state = parse_conversation_state(row.text(4)).value_or(conversation_state::ended);
    c.agent_id = row.opt_text(5);
    c.started_at = row.integer(6);
    c.ended_at = row.opt_integer(7);
    c.end_reason = row.opt_text(8);
    if (auto score = row.opt_integer(9)) c.score = static_cast<int>(*score);
    c.tried_agents = string_list(row.text(10));
    return c;
}

const char* const message_columns = "tenant_id, conversation_id, seq, sender, agent_id, kind, body, client_msg_id, at";

message_record message_from(const sql_row& row) {
    message_record m;
    m.tenant_id = row.text(0);
    m.conversation_id = row.text(1);
    m.seq = row.integer(2);
    m.sender = parse_sender_kind(row.text(3)).value_or(sender_kind::system);
    m.agent_id = row.opt_text(4);
    m.kind = parse_message_kind(row.text(5)).value_or(message_kind::text);
    m.body = row.text(6);
    m.client_msg_id = row.opt_text(7);
    m.at = row.integer(8);
    return m;
}

std::vector<message_record> messages_from(const sql_result& r) {
    std::vector<message_record> messages;
    messages.reserve(r.rows.size());
    for (const auto& row : r.rows) messages.push_back(message_from(row));
    return messages;
}

offer_record offer_from(const sql_row& row) {
    offer_record o;
    o.tenant_id = row.text(0);
    o.id = row.text(1);
    o.conversation_id = row.text(2);
    o.agent_id = row.text(3);
    o.created_at = row.integer(4);
    o.expires_at = row.integer(5);
    o.outcome = parse_offer_outcome(row.text(6)).value_or(offer_outcome::withdrawn);
    o.resolved_at = row.opt_integer(7);
    return o;
}

availability_override override_from(const sql_row& row) {
    availability_override o;
    o.tenant_id = row.text(0);
    o.agent_id = row.text(1);
    o.available = row.integer(2) != 0;
    o.until_at = row.opt_integer(3);
    o.set_at = row.integer(4);
    return o;
}

bool conversation_exists(sql_connection& c, const std::string& tenant_id, const std::string& conversation_id,
                         millis cutoff) {
    // An ended conversation older than the retention window is gone for readers.
    auto r = c.exec(
        "SELECT 1 FROM conversations WHERE tenant_id = $1 AND id = $2 AND (ended_at IS NULL OR ended_at >= $3)",
        {tenant_id, conversation_id, cutoff});
    return !r.rows.empty();
}

}  // namespace

// Version 2. On SQLite, messages_by_time cost each stored message one more
// B-tree insert and WAL page (about a tenth of the relay's throughput), and
// SQLite does not need it: a rowid table appends in insertion order, which is
// time order, so the prune walks the oldest rows by rowid (see prune). On
// PostgreSQL heap order is not insertion order once space is reused, so the
// index stays; the step is empty there to keep versions aligned.
std::string schema_v2(dialect d) {
    if (d == dialect::sqlite) return "DROP INDEX IF EXISTS messages_by_time;";
    return "SELECT 1;";
}

// Version 3. A client_msg_id is the sender's own: the visitor's "m-1" and an
// agent's "m-1" are different messages. The server stores it scoped by sender
// ("v:" for the visitor, "a:<length of agent id>:<agent id>:" for an agent, as
// ids may hold ':'; see tenant_hub), and this step scopes what earlier versions
// stored raw. The unique index is rebuilt around the rewrite: both databases
// check it row by row, and a half-rewritten table could collide.
std::string schema_v3(dialect) {
    return "DROP INDEX messages_client_msg_id;"
           "UPDATE messages SET client_msg_id = CASE WHEN sender = 'agent' "
           "THEN 'a:' || LENGTH(COALESCE(agent_id, '')) || ':' || COALESCE(agent_id, '') || ':' || client_msg_id "
           "ELSE 'v:' || client_msg_id END WHERE client_msg_id IS NOT NULL;"
           "CREATE UNIQUE INDEX messages_client_msg_id ON messages (tenant_id, conversation_id, client_msg_id);";
}

// Version 4. Visitor cards are personal data and were kept for ever: each now
// records when it was last written, and retention deletes it once it is that
// old and nothing else of the visitor is left. Existing cards count as written
// at the migration, so none goes before a full window has passed.
std::string schema_v4(dialect d) {
    const std::string now_ms = d == dialect::sqlite ? "CAST(strftime('%s', 'now') AS INTEGER) * 1000"
                                                    : "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)";
    return "ALTER TABLE visitors ADD COLUMN seen_at BIGINT NOT NULL DEFAULT 0;"
           "UPDATE visitors SET seen_at = " + now_ms + ";"
           "CREATE INDEX visitors_by_seen ON visitors (seen_at);";
}

int known_schema_version() { return 4; }

std::vector<std::string> migrations_for(dialect d) {
    return {schema_v1(d), schema_v2(d), schema_v3(d), schema_v4(d)};
}

int current_schema_version(sql_connection& c) {
    c.exec_script("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    auto r = c.exec("SELECT COALESCE(MAX(version), 0) FROM schema_version");
    return static_cast<int>(r.rows.at(0).integer(0));
}

int migrate(sql_connection& c, int target) {
    const auto& steps = c.migrations();
    const int known = static_cast<int>(steps.size());
    const int upto = target > 0 ? std::min(target, known) : known;
    c.begin_exclusive();
    try {
        int version = current_schema_version(c);
        if (version > known)
            throw storage_error(error_kind::internal,
                                "database schema version " + std::to_string(version) +
                                    " is newer than this parleyd supports (" + std::to_string(known) +
                                    "); upgrade parleyd or use another database");
        for (; version < upto; ++version) {
            c.exec_script(steps.at(static_cast<std::size_t>(version)));
            c.exec("INSERT INTO schema_version (version) VALUES ($1)", {std::int64_t{version + 1}});
        }
        c.commit();
        return version;
    } catch (...) {
        c.rollback();
        throw;
    }
}

void force_schema_version(sql_connection& c, int version) {
    c.begin_exclusive();
    try {
        current_schema_version(c);
        c.exec("INSERT INTO schema_version (version) VALUES ($1)", {std::int64_t{version}});
        c.commit();
    } catch (...) {
        c.rollback();
        throw;
    }
}

// --- writes -----------------------------------------------------------------

void put_tenant(sql_connection& c, const tenant_record& tenant) {
    c.exec("INSERT INTO tenants (id, settings) VALUES ($1, $2) "
           "ON CONFLICT (id) DO UPDATE SET settings = excluded.settings",
           {tenant.id, tenant.settings.dump()});
}

void put_agent(sql_connection& c, const agent_record& a) {
    c.exec("INSERT INTO agents (tenant_id, id, name, email, max_chats, teams, schedule, calendar_url, avatar_url) "
           "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
           "ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name, email = excluded.email, "
           "max_chats = excluded.max_chats, teams = excluded.teams, schedule = excluded.schedule, "
           "calendar_url = excluded.calendar_url, avatar_url = excluded.avatar_url",
           {a.tenant_id, a.id, a.name, nullable(a.email), std::int64_t{a.max_chats}, to_json_text(a.teams),
            a.schedule.is_null() ? sql_value{} : sql_value{a.schedule.dump()}, nullable(a.calendar_url),
            nullable(a.avatar_url)});
}

bool delete_agent(sql_connection& c, const std::string& tenant_id, const std::string& agent_id) {
    c.exec("DELETE FROM availability_overrides WHERE tenant_id = $1 AND agent_id = $2", {tenant_id, agent_id});
    return c.exec("DELETE FROM agents WHERE tenant_id = $1 AND id = $2", {tenant_id, agent_id}).affected > 0;
}

void put_route(sql_connection& c, const route_record& route) {
    c.exec("INSERT INTO routes (tenant_id, name, config) VALUES ($1, $2, $3) "
           "ON CONFLICT (tenant_id, name) DO UPDATE SET config = excluded.config",
           {route.tenant_id, route.name, route.config.dump()});
}

bool delete_route(sql_connection& c, const std::string& tenant_id, const std::string& name) {
    return c.exec("DELETE FROM routes WHERE tenant_id = $1 AND name = $2", {tenant_id, name}).affected > 0;
}

void put_account(sql_connection& c, const account_record& account) {
    c.exec("INSERT INTO accounts (tenant_id, domain, agent_id) VALUES ($1, $2, $3) "
           "ON CONFLICT (tenant_id, domain) DO UPDATE SET agent_id = excluded.agent_id",
           {account.tenant_id, account.domain, account.agent_id});
}

bool delete_account(sql_connection& c, const std::string& tenant_id, const std::string& domain) {
    return c.exec("DELETE FROM accounts WHERE tenant_id = $1 AND domain = $2", {tenant_id, domain}).affected > 0;
}

namespace {
// One upsert of a visitor card; `on_conflict` says what happens to a stored one.
void upsert_visitor(sql_connection& c, const visitor_record& v, const std::string& on_conflict) {
    c.exec("INSERT INTO visitors (tenant_id, id, name, job_title, email, phone, crm_status, company, seen_at) "
           "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, id) DO UPDATE SET seen_at = "
           "excluded.seen_at, " + on_conflict,
           {v.tenant_id, v.id, nullable(v.name), nullable(v.job_title), nullable(v.email), nullable(v.phone),
            nullable(v.crm_status), nullable(v.company), v.seen_at});
}
}  // namespace

void put_visitor(sql_connection& c, const visitor_record& v) {
    upsert_visitor(c, v,
                   "name = COALESCE(excluded.name, visitors.name), "
                   "job_title = COALESCE(excluded.job_title, visitors.job_title), "
                   "email = COALESCE(excluded.email, visitors.email), "
                   "phone = COALESCE(excluded.phone, visitors.phone), "
                   "crm_status = COALESCE(excluded.crm_status, visitors.crm_status), "
                   "company = COALESCE(excluded.company, visitors.company)");
}

void replace_visitor(sql_connection& c, const visitor_record& v) {
    upsert_visitor(c, v,
                   "name = excluded.name, job_title = excluded.job_title, email = excluded.email, "
                   "phone = excluded.phone, crm_status = excluded.crm_status, company = excluded.company");
}

void save_conversation(sql_connection& c, const conversation_record& r) {
    c.exec("INSERT INTO conversations (tenant_id, id, visitor_id, route, state, agent_id, started_at, ended_at, "
           "end_reason, score, tried_agents) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
           "ON CONFLICT (tenant_id, id) DO UPDATE SET visitor_id = excluded.visitor_id, route = excluded.route, "
           "state = excluded.state, agent_id = excluded.agent_id, started_at = excluded.started_at, "
           "ended_at = excluded.ended_at, end_reason = excluded.end_reason, score = excluded.score, "
           "tried_agents = excluded.tried_agents",
           {r.tenant_id, r.id, r.visitor_id, r.route, std::string(to_string(r.state)), nullable(r.agent_id),
            r.started_at, nullable(r.ended_at), nullable(r.end_reason),
            r.score ? sql_value{std::int64_t{*r.score}} : sql_value{}, to_json_text(r.tried_agents)});
}

void put_offer(sql_connection& c, const offer_record& o) {
    c.exec("INSERT INTO offers (tenant_id, id, conversation_id, agent_id, created_at, expires_at, outcome, "
           "resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
           "ON CONFLICT (tenant_id, id) DO UPDATE SET conversation_id = excluded.conversation_id, "
           "agent_id = excluded.agent_id, created_at = excluded.created_at, expires_at = excluded.expires_at, "
           "outcome = excluded.outcome, resolved_at = excluded.resolved_at",
           {o.tenant_id, o.id, o.conversation_id, o.agent_id, o.created_at, o.expires_at,
            std::string(to_string(o.outcome)), nullable(o.resolved_at)});
}

error_kind resolve_offer(sql_connection& c, const std::string& tenant_id, const std::string& offer_id,
                         offer_outcome outcome, millis at) {
    auto updated = c.exec("UPDATE offers SET outcome = $3, resolved_at = $4 "
                          "WHERE tenant_id = $1 AND id = $2 AND outcome = 'pending'",
                          {tenant_id, offer_id, std::string(to_string(outcome)), at});
    if (updated.affected > 0) return error_kind::ok;
    auto exists = c.exec("SELECT 1 FROM offers WHERE tenant_id = $1 AND id = $2", {tenant_id, offer_id});
    return exists.rows.empty() ? error_kind::not_found : error_kind::conflict;
}

void append_activity(sql_connection& c, const activity_record& a, bool unless_stored) {
    if (!unless_stored) {
        c.exec("INSERT INTO activities (tenant_id, visitor_id, type, at, conversation_id, details) "
               "VALUES ($1, $2, $3, $4, $5, $6)",
               {a.tenant_id, a.visitor_id, a.type, a.at, nullable(a.conversation_id), a.details.dump()});
        return;
    }
    // A retry whose first COMMIT may have landed: an identical row means it did.
    c.exec("INSERT INTO activities (tenant_id, visitor_id, type, at, conversation_id, details) "
           "SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS (SELECT 1 FROM activities WHERE tenant_id = $1 AND "
           "visitor_id = $2 AND at = $4 AND type = $3 AND details = $6 AND "
           "(conversation_id = $5 OR (conversation_id IS NULL AND $5 IS NULL)))",
           {a.tenant_id, a.visitor_id, a.type, a.at, nullable(a.conversation_id), a.details.dump()});
}

void set_override(sql_connection& c, const availability_override& o) {
    c.exec("INSERT INTO availability_overrides (tenant_id, agent_id, available, until_at, set_at) "
           "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, agent_id) DO UPDATE SET "
           "available = excluded.available, until_at = excluded.until_at, set_at = excluded.set_at",
           {o.tenant_id, o.agent_id, std::int64_t{o.available ? 1 : 0}, nullable(o.until_at), o.set_at});
}

bool clear_override(sql_connection& c, const std::string& tenant_id, const std::string& agent_id) {
    return c.exec("DELETE FROM availability_overrides WHERE tenant_id = $1 AND agent_id = $2", {tenant_id, agent_id})
               .affected > 0;
}

// The insert found a row under one of the message's unique keys. Three cases:
//  - the row IS this message: a retry of a batch whose COMMIT landed but whose reply was lost
//    (connection dropped during COMMIT). The write succeeded: not a duplicate, same seq;
//  - the row has the same client_msg_id under another seq: a resend, answered with the first seq;
//  - another message holds the seq: conflict.
result<append_outcome> resolve_message_conflict(sql_connection& c, const message_record& m) {
    auto at_seq = c.exec("SELECT sender, agent_id, kind, body, client_msg_id, at FROM messages "
                         "WHERE tenant_id = $1 AND conversation_id = $2 AND seq = $3",
                         {m.tenant_id, m.conversation_id, m.seq});
    if (!at_seq.rows.empty()) {
        const auto& row = at_seq.rows[0];
        if (row.text(0) == to_string(m.sender) && row.opt_text(1) == m.agent_id && row.text(2) == to_string(m.kind) &&
            row.text(3) == m.body && row.opt_text(4) == m.client_msg_id && row.integer(5) == m.at)
            return append_outcome{m.seq, m.at, false, true};
    }
    if (m.client_msg_id) {
        auto stored = c.exec("SELECT seq, at FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND "
                             "client_msg_id = $3",
                             {m.tenant_id, m.conversation_id, *m.client_msg_id});
        if (!stored.rows.empty())
            return append_outcome{stored.rows[0].integer(0), stored.rows[0].integer(1), true, true};
    }
    return error{error_kind::conflict, "seq " + std::to_string(m.seq) + " of conversation " + m.conversation_id +
                                           " is already taken by another message"};
}

result<append_outcome> append_message_row(sql_connection& c, const message_record& m) {
    auto inserted = c.exec(
        "INSERT INTO messages (tenant_id, conversation_id, seq, sender, agent_id, kind, body, client_msg_id, at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        {m.tenant_id, m.conversation_id, m.seq, std::string(to_string(m.sender)), nullable(m.agent_id),
         std::string(to_string(m.kind)), m.body, nullable(m.client_msg_id), m.at});
    if (inserted.affected > 0) return append_outcome{m.seq, m.at, false, true};
    return resolve_message_conflict(c, m);
}

std::vector<result<append_outcome>> sql_connection::append_messages(std::span<const message_record* const> messages) {
    std::vector<result<append_outcome>> outcomes;
    outcomes.reserve(messages.size());
    for (const auto* m : messages) outcomes.push_back(append_message_row(*this, *m));
    return outcomes;
}

// --- reads ------------------------------------------------------------------

std::vector<tenant_record> list_tenants(sql_connection& c) {
    std::vector<tenant_record> tenants;
    for (const auto& row : c.exec("SELECT id, settings FROM tenants ORDER BY id").rows)
        tenants.push_back({row.text(0), json_value(row.opt_text(1))});
    return tenants;
}

std::vector<agent_record> list_agents(sql_connection& c, const std::string& tenant_id) {
    std::vector<agent_record> agents;
    auto r = c.exec("SELECT tenant_id, id, name, email, max_chats, teams, schedule, calendar_url, avatar_url "
                    "FROM agents WHERE tenant_id = $1 ORDER BY id",
                    {tenant_id});
    for (const auto& row : r.rows) {
        agent_record a;
        a.tenant_id = row.text(0);
        a.id = row.text(1);
        a.name = row.text(2);
        a.email = row.opt_text(3);
        a.max_chats = static_cast<int>(row.integer(4));
        a.teams = string_list(row.text(5));
        a.schedule = json_value(row.opt_text(6));
        a.calendar_url = row.opt_text(7);
        a.avatar_url = row.opt_text(8);
        agents.push_back(std::move(a));
    }
    return agents;
}

std::vector<route_record> list_routes(sql_connection& c, const std::string& tenant_id) {
    std::vector<route_record> routes;
    auto r = c.exec("SELECT tenant_id, name, config FROM routes WHERE tenant_id = $1 ORDER BY name", {tenant_id});
    for (const auto& row : r.rows) routes.push_back({row.text(0), row.text(1), json_value(row.opt_text(2))});
    return routes;
}

std::vector<account_record> list_accounts(sql_connection& c, const std::string& tenant_id) {
    std::vector<account_record> accounts;
    auto r = c.exec("SELECT tenant_id, domain, agent_id FROM accounts WHERE tenant_id = $1 ORDER BY domain",
                    {tenant_id});
    for (const auto& row : r.rows) accounts.push_back({row.text(0), row.text(1), row.text(2)});
    return accounts;
}

namespace {

visitor_record visitor_from(const sql_row& row, std::size_t first) {
    visitor_record v;
    v.tenant_id = row.text(first);
    v.id = row.text(first + 1);
    v.name = row.opt_text(first + 2);
    v.job_title = row.opt_text(first + 3);
    v.email = row.opt_text(first + 4);
    v.phone = row.opt_text(first + 5);
    v.crm_status = row.opt_text(first + 6);
    v.company = row.opt_text(first + 7);
    return v;
}

std::optional<message_record> last_message(sql_connection& c, const std::string& tenant_id,
                                           const std::string& conversation_id, millis cutoff) {
    auto r = c.exec(std::string("SELECT ") + message_columns +
                        " FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND at >= $3 "
                        "ORDER BY seq DESC LIMIT 1",
                    {tenant_id, conversation_id, cutoff});
    if (r.rows.empty()) return std::nullopt;
    return message_from(r.rows[0]);
}

std::int64_t last_seq(sql_connection& c, const std::string& tenant_id, const std::string& conversation_id) {
    auto r = c.exec("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE tenant_id = $1 AND conversation_id = $2",
                    {tenant_id, conversation_id});
    return r.rows.at(0).integer(0);
}

}  // namespace

result<visitor_record> get_visitor(sql_connection& c, const std::string& tenant_id, const std::string& visitor_id) {
    auto r = c.exec("SELECT tenant_id, id, name, job_title, email, phone, crm_status, company FROM visitors "
                    "WHERE tenant_id = $1 AND id = $2",
                    {tenant_id, visitor_id});
    if (r.rows.empty()) return error{error_kind::not_found, "no visitor " + visitor_id};
    return visitor_from(r.rows[0], 0);
}

result<conversation_record> get_conversation(sql_connection& c, const std::string& tenant_id,
                                             const std::string& conversation_id) {
    auto r = c.exec(std::string("SELECT ") + conversation_columns +
                        " FROM conversations c WHERE c.tenant_id = $1 AND c.id = $2",
                    {tenant_id, conversation_id});
    if (r.rows.empty()) return error{error_kind::not_found, "no conversation " + conversation_id};
    auto conversation = conversation_from(r.rows[0]);
    conversation.last_seq = last_seq(c, tenant_id, conversation_id);
    return conversation;
}

result<conversation_page> list_conversations(sql_connection& c, const conversation_query& q, int retention_days) {
    auto position = conversation_page_start(q.limit, q.cursor);
    if (!position) return position.failure();
    const millis cutoff = retention_cutoff(q.now, retention_days);
    const std::string select = std::string("SELECT ") + conversation_columns +
                               ", v.tenant_id, v.id, v.name, v.job_title, v.email, v.phone, v.crm_status, v.company "
                               "FROM conversations c LEFT JOIN visitors v "
                               "ON v.tenant_id = c.tenant_id AND v.id = c.visitor_id ";
    // Fetch one extra row to know whether another page exists.
    sql_result r;
    if (q.filter == conversation_filter::active) {
        r = c.exec(select +
                       "WHERE c.tenant_id = $1 AND c.agent_id = $2 AND c.state = 'active' "
                       "AND (c.started_at, c.id) < ($3, $4) ORDER BY c.started_at DESC, c.id DESC LIMIT $5",
                   {q.tenant_id, q.agent_id, position->time, position->id, std::int64_t{q.limit + 1}});
    } else {
        r = c.exec(select +
                       "WHERE c.tenant_id = $1 AND (c.ended_at IS NULL OR c.ended_at >= $2) "
                       "AND (c.started_at, c.id) < ($3, $4) ORDER BY c.started_at DESC, c.id DESC LIMIT $5",
                   {q.tenant_id, cutoff, position->time, position->id, std::int64_t{q.limit + 1}});
    }
    conversation_page page;
    for (const auto& row : r.rows) {
        if (page.conversations.size() == static_cast<std::size_t>(q.limit)) {
            page.next_cursor = cursor_after(page.conversations.back().conversation);
            break;
        }
        conversation_summary summary;
        summary.conversation = conversation_from(row);
        if (!row.is_null(conversation_column_count)) summary.visitor = visitor_from(row, conversation_column_count);
        summary.last_message = last_message(c, q.tenant_id, summary.conversation.id, cutoff);
        if (summary.last_message) summary.conversation.last_seq = summary.last_message->seq;
        page.conversations.push_back(std::move(summary));
    }
    return page;
}

result<activity_page> get_activity(sql_connection& c, const activity_query& q, int retention_days) {
    auto position = activity_page_start(q.limit, q.cursor);
    if (!position) return position.failure();
    auto r = c.exec("SELECT id, tenant_id, visitor_id, type, at, conversation_id, details FROM activities "
                    "WHERE tenant_id = $1 AND visitor_id = $2 AND at >= $3 AND (at, id) < ($4, $5) "
                    "ORDER BY at DESC, id DESC LIMIT $6",
                    {q.tenant_id, q.visitor_id, retention_cutoff(q.now, retention_days), position->time, position->id,
                     std::int64_t{q.limit + 1}});
    activity_page page;
    for (const auto& row : r.rows) {
        if (page.activities.size() == static_cast<std::size_t>(q.limit)) {
            page.next_cursor = cursor_after(page.activities.back());
            break;
        }
        activity_record a;
        a.id = row.integer(0);
        a.tenant_id = row.text(1);
        a.visitor_id = row.text(2);
        a.type = row.text(3);
        a.at = row.integer(4);
        a.conversation_id = row.opt_text(5);
        a.details = json_value(row.opt_text(6));
        page.activities.push_back(std::move(a));
    }
    return page;
}

// messages_after with one row more than asked for: whether another page
// follows is known without reading an empty one.
result<message_page> get_transcript(sql_connection& c, const std::string& tenant_id,
                                    const std::string& conversation_id, std::int64_t after_seq, int limit, millis now,
                                    int retention_days) {
    if (auto bad = check_transcript_limit(limit)) return *bad;
    auto rows = messages_after(c, tenant_id, conversation_id, after_seq, limit + 1, now, retention_days);
    if (!rows) return rows.failure();
    return transcript_page(std::move(rows.value()), limit);
}

result<std::vector<message_record>> messages_after(sql_connection& c, const std::string& tenant_id,
                                                   const std::string& conversation_id, std::int64_t after_seq,
                                                   int limit, millis now, int retention_days) {
    if (auto bad = check_messages_limit(limit)) return *bad;
    const millis cutoff = retention_cutoff(now, retention_days);
    if (!conversation_exists(c, tenant_id, conversation_id, cutoff))
        return error{error_kind::not_found, "no conversation " + conversation_id};
    return messages_from(c.exec(std::string("SELECT ") + message_columns +
                                    " FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND seq > $3 "
                                    "AND at >= $4 ORDER BY seq LIMIT $5",
                                {tenant_id, conversation_id, after_seq, cutoff, std::int64_t{limit}}));
}

open_state load_open_state(sql_connection& c, const std::optional<std::string>& tenant_id, millis now,
                           int retention_days) {
    // One consistent snapshot of the three tables.
    c.begin();
    try {
        open_state state;
        const std::string open_conversations =
            std::string("SELECT ") + conversation_columns +
            ", (SELECT COALESCE(MAX(m.seq), 0) FROM messages m WHERE m.tenant_id = c.tenant_id AND "
            "m.conversation_id = c.id), v.tenant_id, v.id, v.name, v.job_title, v.email, v.phone, v.crm_status, "
            "v.company FROM conversations c LEFT JOIN visitors v ON v.tenant_id = c.tenant_id AND v.id = c.visitor_id "
            "WHERE c.state <> 'ended'";
        const std::string pending_offers =
            "SELECT tenant_id, id, conversation_id, agent_id, created_at, expires_at, outcome, resolved_at "
            "FROM offers WHERE outcome = 'pending'";
        const std::string overrides =
            "SELECT tenant_id, agent_id, available, until_at, set_at FROM availability_overrides "
            "WHERE (until_at IS NULL OR until_at > $1)";
        sql_result conversations, offers, overridden;
        if (tenant_id) {
            conversations = c.exec(open_conversations + " AND c.tenant_id = $1 ORDER BY c.started_at", {*tenant_id});
            offers = c.exec(pending_offers + " AND tenant_id = $1 ORDER BY created_at", {*tenant_id});
            overridden = c.exec(overrides + " AND tenant_id = $2 ORDER BY agent_id", {now, *tenant_id});
        } else {
            conversations = c.exec(open_conversations + " ORDER BY c.started_at");
            offers = c.exec(pending_offers + " ORDER BY created_at");
            overridden = c.exec(overrides + " ORDER BY tenant_id, agent_id", {now});
        }
        for (const auto& row : conversations.rows) {
            conversation_summary summary;
            summary.conversation = conversation_from(row);
            auto& conversation = summary.conversation;
            conversation.last_seq = row.integer(conversation_column_count);
            if (!row.is_null(conversation_column_count + 1))
                summary.visitor = visitor_from(row, conversation_column_count + 1);
            // As list_conversations shows it: within the retention window.
            if (conversation.last_seq > 0)
                summary.last_message =
                    last_message(c, conversation.tenant_id, conversation.id, retention_cutoff(now, retention_days));
            state.conversations.push_back(std::move(summary));
        }
        for (const auto& row : offers.rows) state.pending_offers.push_back(offer_from(row));
        for (const auto& row : overridden.rows) state.overrides.push_back(override_from(row));
        c.commit();
        return state;
    } catch (...) {
        c.rollback();
        throw;
    }
}

namespace {

// Runs `step` in its own short transaction until it returns false or a stop
// is requested.
template <typename Step>
void in_batches(sql_connection& c, prune_report& report, const std::function<bool()>& stop_requested, Step step) {
    for (bool more = true; more;) {
        if (report.stopped || (stop_requested && stop_requested())) {
            report.stopped = true;
            return;
        }
        c.begin();
        std::int64_t deleted = 0;
        try {
            more = step(deleted);
            c.commit();
        } catch (...) {
            c.rollback();
            throw;
        }
        if (deleted > 0) ++report.batches;
    }
}

// SQLite keeps no index on messages.at (schema_v2). A rowid table appends in
// insertion order, which is time order, so the prune walks windows of `batch`
// rows from the oldest rowid and deletes the expired ones in each, stopping at
// the first window with none. A row stamped in the future (a clock stepped
// back) is skipped rather than holding everything after it; it never needs a
// full scan.
void prune_sqlite_messages(sql_connection& c, millis cutoff, std::size_t batch, prune_report& report,
                           const std::function<bool()>& stop_requested) {
    std::int64_t after = 0;  // rowids are positive
    in_batches(c, report, stop_requested, [&](std::int64_t& deleted) {
        auto window = c.exec("SELECT max(rowid) FROM (SELECT rowid FROM messages WHERE rowid > $1 ORDER BY rowid LIMIT $2)",
                             {after, static_cast<std::int64_t>(batch)});
        auto last = window.rows.at(0).opt_integer(0);
        if (!last) return false;
        deleted = c.exec("DELETE FROM messages WHERE rowid > $1 AND rowid <= $2 AND at < $3", {after, *last, cutoff})
                      .affected;
        report.messages += static_cast<std::uint64_t>(deleted);
        after = *last;
        return deleted > 0;
    });
}

}  // namespace

prune_report prune(sql_connection& c, millis now, int retention_days, std::size_t batch,
                   const std::function<bool()>& stop_requested) {
    // Each batch is its own short transaction, so writers never wait long and a
    // prune interrupted half-way has still made progress.
    const millis cutoff = retention_cutoff(now, retention_days);
    const bool sqlite = c.kind() == dialect::sqlite;
    const std::string row_id = sqlite ? "rowid" : "ctid";
    struct target {
        const char* table;
        const char* condition;
        std::uint64_t prune_report::*counter;
    };
    const target targets[] = {
        {"messages", "at < $1", &prune_report::messages},
        {"activities", "at < $1", &prune_report::activities},
        {"conversations", "ended_at IS NOT NULL AND ended_at < $1", &prune_report::conversations},
        {"offers", "outcome <> 'pending' AND created_at < $1", &prune_report::offers},
        // After conversations and activities: a card goes with the last of them.
        {"visitors",
         "seen_at < $1 AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.tenant_id = visitors.tenant_id AND "
         "c.visitor_id = visitors.id) AND NOT EXISTS (SELECT 1 FROM activities a WHERE a.tenant_id = "
         "visitors.tenant_id AND a.visitor_id = visitors.id)",
         &prune_report::visitors},
    };
    prune_report report;
    for (const auto& t : targets) {
        if (sqlite && t.counter == &prune_report::messages) {
            prune_sqlite_messages(c, cutoff, batch, report, stop_requested);
            continue;
        }
        const std::string sql = "DELETE FROM " + std::string(t.table) + " WHERE " + row_id + " IN (SELECT " + row_id +
                                " FROM " + t.table + " WHERE " + t.condition + " LIMIT $2)";
        in_batches(c, report, stop_requested, [&](std::int64_t& deleted) {
            deleted = c.exec(sql, {cutoff, static_cast<std::int64_t>(batch)}).affected;
            report.*(t.counter) += static_cast<std::uint64_t>(deleted);
            return deleted >= static_cast<std::int64_t>(batch);
        });
    }
    return report;
}

}  // namespace parley::storage::detail
