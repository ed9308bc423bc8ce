#pragma once
// The backend-independent half of a store: one writer thread with a bounded
// queue and group commit, a pool of reader threads, reconnection with backoff.
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "fair_queue.h"
#include "parley/storage/log_throttle.h"
#include "parley/storage/store.h"
#include "sql.h"
#include "write_rules.h"

namespace parley::storage::detail {

class store_engine final : public store {
public:
    // `writer` is the already-connected (and migrated) first connection.
    store_engine(connection_factory factory, std::string backend_name, store_options options,
                 std::unique_ptr<sql_connection> writer);
    ~store_engine() override;
    store_engine(const store_engine&) = delete;
    store_engine& operator=(const store_engine&) = delete;

    void append_message(message_record message, callback<append_outcome> done) override;
    void put_tenant(tenant_record tenant, callback<void> done) override;
    void put_agent(agent_record agent, callback<void> done) override;
    void delete_agent(std::string tenant_id, std::string agent_id, callback<void> done) override;
    void put_route(route_record route, callback<void> done) override;
    void delete_route(std::string tenant_id, std::string name, callback<void> done) override;
    void put_account(account_record account, callback<void> done) override;
    void delete_account(std::string tenant_id, std::string domain, callback<void> done) override;
    void put_visitor(visitor_record visitor, callback<void> done) override;
    void replace_visitor(visitor_record visitor, callback<void> done) override;
    void save_conversation(conversation_record conversation, callback<void> done) override;
    void put_offer(offer_record offer, callback<void> done) override;
    void resolve_offer(std::string tenant_id, std::string offer_id, offer_outcome outcome, millis at,
                       callback<void> done) override;
    void append_activity(activity_record activity, callback<void> done) override;
    void set_override(availability_override value, callback<void> done) override;
    void clear_override(std::string tenant_id, std::string agent_id, callback<void> done) override;

    void list_tenants(callback<std::vector<tenant_record>> done) override;
    void list_agents(std::string tenant_id, callback<std::vector<agent_record>> done) override;
    void list_routes(std::string tenant_id, callback<std::vector<route_record>> done) override;
    void list_accounts(std::string tenant_id, callback<std::vector<account_record>> done) override;
    void get_visitor(std::string tenant_id, std::string visitor_id, callback<visitor_record> done) override;
    void get_conversation(std::string tenant_id, std::string conversation_id,
                          callback<conversation_record> done) override;
    void list_conversations(conversation_query query, callback<conversation_page> done) override;
    void get_activity(activity_query query, callback<activity_page> done) override;
    void get_transcript(std::string tenant_id, std::string conversation_id, std::int64_t after_seq, int limit,
                        millis now, callback<message_page> done) override;
    void messages_after(std::string tenant_id, std::string conversation_id, std::int64_t after_seq, int limit,
                        millis now, callback<std::vector<message_record>> done) override;

    result<open_state> load_open_state(std::optional<std::string> tenant_id, millis now) override;
    using store::prune;
    result<prune_report> prune(millis now, std::function<bool()> stop_requested) override;
    result<int> schema_version() override;
    void flush() override;
    bool flush_within(std::chrono::milliseconds limit) override;

    bool ready() const override;
    store_stats stats() const override;
    std::string backend_name() const override { return backend_name_; }

private:
    using clock = std::chrono::steady_clock;

    // A queued write. Messages are kept as data so runs of them can be
    // inserted with one statement; everything else is a closure.
    // `in_doubt` is true when an earlier attempt's COMMIT was sent and its
    // reply lost: the write may already be stored, and must be made so that a
    // second run stores nothing twice.
    using apply_fn = std::function<std::optional<error>(sql_connection&, bool in_doubt)>;
    // Saves of one conversation row queued behind each other collapse into one
    // job: the last record wins, every caller is told.
    struct coalesced_save {
        std::string key;  // tenant id, NUL, conversation id
        conversation_record record;
        std::vector<callback<void>> done;
    };
    struct write_job {
        std::optional<message_record> message;
        callback<append_outcome> on_message;  // empty once acknowledged (durability relaxed)
        apply_fn apply;
        callback<void> on_done;
        clock::time_point enqueued;
        bool in_doubt = false;
        std::shared_ptr<coalesced_save> save;  // a conversation save (see coalesced_saves_)
    };

    // Runs on a reader thread with that thread's connection: connects when it
    // is null, and resets it when it broke.
    using read_job = std::function<void(std::unique_ptr<sql_connection>& connection)>;

    void submit_write(write_job job);
    void submit_generic(apply_fn apply, callback<void> done);
    // Bookkeeping of a job leaving the queue (mutex_ held).
    void dequeued(const write_job& job);
    // A job entering the queue (mutex_ held).
    void enqueued(const write_job& job);
    // `tenant` is whose read it is: tenants are served round robin (fair_queue).
    template <class T, class Query>
    void submit_read(std::string_view tenant, callback<T> done, Query query);
    template <class T, class Query>
    result<T> run_sync(std::string_view tenant, Query query);

    // A new connection of the writer, a reader or prune: with the reply limit.
    std::unique_ptr<sql_connection> connect() const;
    void writer_loop();
    bool run_batch(std::vector<write_job>& jobs);
    void connection_lost(const error& why);
    void expiry_loop();
    void expire_waiting_messages(clock::time_point now);
    void fail_expired(std::vector<write_job>& expired, const char* why);
    void fail_all_queued(const error& why);
    void complete(write_job& job, result<append_outcome> outcome);
    void complete(write_job& job, std::optional<error> outcome);
    void mark_finished(std::size_t count);
    std::uint64_t writes_submitted() const;
    void wait_for_writes(std::uint64_t target);  // until the writer finished that many writes

    void reader_loop();

    const connection_factory factory_;
    const std::string backend_name_;
    const store_options options_;

    // Writer state. mutex_ guards queue_ and stopping_; writer_ is only
    // touched by the writer thread (and the constructor before it starts).
    mutable std::mutex mutex_;
    std::condition_variable writer_wake_;
    std::condition_variable expiry_wake_;
    std::deque<write_job> queue_;
    // State writes (everything but messages) in queue_: they never expire, they wait for the database.
    std::size_t queued_state_writes_ = 0;
    // Queued conversation saves by tenant and id, while their job is in queue_.
    std::unordered_map<std::string, std::shared_ptr<coalesced_save>> coalesced_saves_;
    bool stopping_ = false;
    std::unique_ptr<sql_connection> writer_;
    std::atomic<bool> ready_{true};

    std::mutex finished_mutex_;
    std::condition_variable finished_changed_;
    std::uint64_t submitted_ = 0;  // guarded by mutex_
    std::uint64_t finished_ = 0;   // guarded by finished_mutex_

    mutable std::mutex stats_mutex_;
    store_stats stats_;

    // A relaxed message that fails after its acknowledgement has nobody left to
    // tell but the log; in an outage that is every message sent, so a few lines
    // a second and a count of the rest.
    log_throttle relaxed_failure_log_{5, relaxed_failures, spdlog::level::err};

    std::mutex readers_mutex_;
    std::condition_variable readers_wake_;
    fair_queue<read_job> read_queue_;
    bool readers_stopping_ = false;

    std::thread writer_thread_;
    std::thread expiry_thread_;
    std::vector<std::thread> reader_threads_;
};

}  // namespace parley::storage::detail
