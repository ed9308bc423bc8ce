#pragma once
// parley::storage: one storage interface, two backends.
//
//   auto opened = open_store("postgresql://user@host:5432/db", options);  // production
//   auto opened = open_store("sqlite:///var/lib/parley/parley.db", options); // embedded, WAL
//
// Threads. Writes are queued to one writer thread per store and group-committed
// (everything queued, up to batch_max, in one transaction). Reads run on a small
// pool of reader threads with their own connections, so they never wait behind
// a write batch. Completion callbacks are invoked on those storage threads (the
// server posts them to the owning strand); they must not block. The one
// exception: with durability relaxed, append_message's callback runs on the
// caller's thread, right after the message was queued, before append_message
// returns. No lock of the library is held while a callback runs, so a callback
// may submit further operations.
//
// Outages. When the database cannot be reached, ready() turns false, the writer
// reconnects with exponential backoff and keeps queued writes, in order. A
// message whose sender waits (durability commit) and is still not committed
// after `unavailable_after` completes with `unavailable`; every other write
// (state: conversations, offers, activities, admin changes; and relaxed
// messages, already acknowledged) waits for the database however long it
// takes, repeated saves of one conversation row collapsing into the last. A
// message submitted while the queue holds queue_max items, or a state write
// while it holds twice that, is refused at once with `unavailable`. Nothing
// reported ok is ever lost. A batch whose COMMIT was sent but not answered
// (connection lost) may have landed: it is retried so that it stores nothing
// twice (a message finding its own row is a success), and its messages are
// not expired; their senders wait for the outcome. While the database is
// reachable but silent, the writer's batch waits for its reply up to the
// URL's tcp_user_timeout; a message write queued behind it whose sender waits
// (durability commit) still completes with `unavailable` after
// `unavailable_after`, and the other writes wait for the writer.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "parley/storage/records.h"
#include "parley/storage/result.h"

namespace parley::storage {

template <class T>
using callback = std::function<void(result<T>)>;

enum class durability {
    commit,   // append_message completes after its transaction committed
    relaxed,  // append_message completes once the message is queued
};

struct store_options {
    enum durability durability = durability::commit;
    std::size_t batch_max = 1000;  // writes per transaction
    // How long the writer waits for a batch to fill, counted from the moment
    // the oldest queued write arrived (writes that queued up while the previous
    // batch committed go out at once).
    std::chrono::microseconds batch_delay{2000};
    std::size_t queue_max = 100'000;  // queued writes; beyond it writes fail with unavailable
    std::chrono::milliseconds unavailable_after{5000};  // bound on waiting for a down database
    std::size_t reader_threads = 2;
    std::size_t reader_queue_max = 10'000;
    int retention_days = 90;  // reads never return messages/activities older than this
    std::size_t prune_batch = 5000;  // rows per delete transaction
    bool migrate_on_open = true;  // false: refuse to open a database with an older schema
    std::chrono::milliseconds reconnect_backoff_min{100};
    std::chrono::milliseconds reconnect_backoff_max{5000};
    std::chrono::milliseconds health_check_interval{1000};  // idle ping so ready() notices outages
    // Called on the writer thread after each committed batch (for metrics); must be cheap.
    std::function<void(std::size_t writes, std::chrono::microseconds took)> on_batch_committed;
};

struct store_stats {
    std::uint64_t transactions_committed = 0;  // write transactions (batches) committed
    std::uint64_t writes_committed = 0;        // individual writes in them
    std::uint64_t largest_batch = 0;
    std::uint64_t rejected_queue_full = 0;
    std::uint64_t expired_unavailable = 0;  // writes failed after unavailable_after
    std::uint64_t reconnects = 0;            // successful reconnections after an outage
    std::size_t queue_depth = 0;
    // State writes (conversation saves, offers, activities, admin changes) queued: in an
    // outage they wait for the database instead of expiring.
    std::size_t state_writes_waiting = 0;
    std::uint64_t coalesced_saves = 0;  // conversation saves merged into one already queued
};

class store {
public:
    virtual ~store() = default;

    // --- writes: queued, group-committed, completed on the writer thread ---

    // The server assigns seq. A client_msg_id already stored for the
    // conversation stores nothing and returns the stored seq (duplicate=true);
    // a seq already taken by a different message is a conflict.
    virtual void append_message(message_record message, callback<append_outcome> done) = 0;
    virtual void put_tenant(tenant_record tenant, callback<void> done) = 0;
    virtual void put_agent(agent_record agent, callback<void> done) = 0;
    virtual void delete_agent(std::string tenant_id, std::string agent_id, callback<void> done) = 0;
    virtual void put_route(route_record route, callback<void> done) = 0;
    virtual void delete_route(std::string tenant_id, std::string name, callback<void> done) = 0;
    virtual void put_account(account_record account, callback<void> done) = 0;
    virtual void delete_account(std::string tenant_id, std::string domain, callback<void> done) = 0;
    // Upsert; a field left std::nullopt keeps its stored value (a widget's hello may carry part of a profile).
    virtual void put_visitor(visitor_record visitor, callback<void> done) = 0;
    // Upsert of the whole card: a field left std::nullopt is cleared (the admin API's PUT, CRM sync).
    virtual void replace_visitor(visitor_record visitor, callback<void> done) = 0;
    // Insert or replace the whole conversation row (state, agent, times, score, end reason, tried agents).
    virtual void save_conversation(conversation_record conversation, callback<void> done) = 0;
    virtual void put_offer(offer_record offer, callback<void> done) = 0;
    // pending -> outcome. not_found for an unknown offer, conflict if no longer pending.
    virtual void resolve_offer(std::string tenant_id, std::string offer_id, offer_outcome outcome,
                               millis at, callback<void> done) = 0;
    virtual void append_activity(activity_record activity, callback<void> done) = 0;
    virtual void set_override(availability_override value, callback<void> done) = 0;
    virtual void clear_override(std::string tenant_id, std::string agent_id, callback<void> done) = 0;

    // --- reads: reader threads, never behind writes ---

    virtual void list_tenants(callback<std::vector<tenant_record>> done) = 0;
    virtual void list_agents(std::string tenant_id, callback<std::vector<agent_record>> done) = 0;
    virtual void list_routes(std::string tenant_id, callback<std::vector<route_record>> done) = 0;
    virtual void list_accounts(std::string tenant_id, callback<std::vector<account_record>> done) = 0;
    virtual void get_visitor(std::string tenant_id, std::string visitor_id, callback<visitor_record> done) = 0;
    virtual void get_conversation(std::string tenant_id, std::string conversation_id,
                                  callback<conversation_record> done) = 0;
    virtual void list_conversations(conversation_query query, callback<conversation_page> done) = 0;
    virtual void get_activity(activity_query query, callback<activity_page> done) = 0;
    // One page of the conversation's messages: seq > after_seq in seq order, at
    // most `limit` (1..max_message_page, else bad_request), inside the retention
    // window measured back from `now`; next_after_seq says whether more follow.
    // not_found for an unknown conversation. A whole transcript is read page by
    // page: a conversation may hold more than anyone should load at once.
    virtual void get_transcript(std::string tenant_id, std::string conversation_id, std::int64_t after_seq,
                                int limit, millis now, callback<message_page> done) = 0;
    // For resume: messages with seq > after_seq in order, at most `limit`.
    virtual void messages_after(std::string tenant_id, std::string conversation_id, std::int64_t after_seq,
                                int limit, millis now, callback<std::vector<message_record>> done) = 0;

    // --- synchronous: start-up, CLI and jobs; they block the calling thread ---

    // Open state of one tenant, or of all tenants when tenant_id is nullopt.
    virtual result<open_state> load_open_state(std::optional<std::string> tenant_id, millis now) = 0;
    // Deletes messages, activities, ended conversations and resolved offers
    // older than retention_days before `now`, prune_batch rows per transaction,
    // on the calling thread with a connection of its own (never a reader's).
    // `stop_requested`, when given, is asked before each batch: a shutdown
    // need not wait for a long prune.
    virtual result<prune_report> prune(millis now, std::function<bool()> stop_requested) = 0;
    result<prune_report> prune(millis now) { return prune(now, {}); }
    virtual result<int> schema_version() = 0;
    // Blocks until every write submitted before the call has completed.
    virtual void flush() = 0;
    // The same, for at most `limit`: false when some of those writes were still
    // pending then (a database that stopped answering).
    virtual bool flush_within(std::chrono::milliseconds limit) = 0;

    // Database reachable and schema current (drives /readyz).
    virtual bool ready() const = 0;
    virtual store_stats stats() const = 0;
    // "postgresql" or "sqlite".
    virtual std::string backend_name() const = 0;
};

// Opens a store by URL: postgresql://... or postgres://... (libpq URI), or
// sqlite:///absolute/path. Connects, applies missing migrations (unless
// options.migrate_on_open is false), and refuses a database whose schema is
// newer than this binary. Errors: bad_request for a bad URL or options,
// unavailable when the database cannot be reached, internal for schema trouble.
result<std::unique_ptr<store>> open_store(const std::string& url, const store_options& options = {});

// One connection attempt to a PostgreSQL URL that its caller can abandon: ok
// once the server accepted a connection (closed again at once), unavailable
// when the attempt failed, did not finish within the URL's connect_timeout, or
// `stop_requested` (asked every 50 ms) turned true. open_store() blocks for as
// long as its connection attempt takes; this lets `serve` wait for a database
// behind a silent link and still stop at once. Not PostgreSQL: ok at once.
status probe_reachable(const std::string& url, const std::function<bool()>& stop_requested);

// `parleyd migrate`: applies missing migrations, returns the schema version.
result<int> migrate(const std::string& url);

// The newest schema version this binary knows.
int binary_schema_version();

}  // namespace parley::storage
