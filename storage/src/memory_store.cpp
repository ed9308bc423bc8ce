// The memory store's engine: store.h's threads, queues and outages around
// memory_tables (the data and its queries). One writer thread takes the queued
// writes in batches (batch_max, batch_delay) and applies each batch under the
// database's lock, so readers see a batch whole or not at all; an expiry
// thread answers waiting messages `unavailable` while the database is away;
// reader threads serve reads round robin by tenant (fair_queue.h) after the
// writes submitted before them (read-your-writes).
#include "parley/storage/memory_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "fair_queue.h"
#include "memory_tables.h"
#include "parley/storage/log_throttle.h"
#include "store_rules.h"
#include "write_rules.h"

namespace parley::storage {

class memory_database {
public:
    // Reads share it; a write batch or a prune batch holds it alone.
    std::shared_mutex lock;
    detail::memory_tables tables;
};

std::shared_ptr<memory_database> make_memory_database() { return std::make_shared<memory_database>(); }

namespace detail {
namespace {

error unavailable(std::string message) { return {error_kind::unavailable, std::move(message)}; }

const char* const database_away = "the database is unreachable (memory store: set_reachable(false))";

class memory_engine final : public memory_store {
public:
    memory_engine(store_options options, std::shared_ptr<memory_database> database);
    ~memory_engine() override;
    memory_engine(const memory_engine&) = delete;
    memory_engine& operator=(const memory_engine&) = delete;

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
    std::string backend_name() const override { return "memory"; }

    void set_reachable(bool reachable) override;
    void hold_read_replies() override;
    void release_read_replies() override;
    std::size_t held_read_replies() const override;

private:
    using clock = std::chrono::steady_clock;
    // What a write other than a message does to the tables: nullopt, or why it failed.
    using apply_fn = std::function<std::optional<error>(memory_tables&)>;

    // Saves of one conversation row queued behind each other collapse into one
    // write: the last record wins, every caller is told (as store_engine does).
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
        std::shared_ptr<coalesced_save> save;
    };

    void submit_write(write_job job);
    void submit_state_write(apply_fn apply, callback<void> done);
    void count_in(const write_job& job);   // mutex_ held
    void count_out(const write_job& job);  // mutex_ held
    void writer_loop();
    void commit(std::vector<write_job>& batch);
    void expiry_loop();
    void fail(std::deque<write_job> jobs, const error& why);
    void complete(write_job& job, result<append_outcome> outcome);
    void complete(write_job& job, std::optional<error> outcome);
    void mark_finished(std::size_t count);
    std::uint64_t writes_submitted() const;

    template <class T, class Query>
    void submit_read(std::string_view tenant, callback<T> done, Query query);
    // After the writes submitted before `writes_before` (or at once while the database is away).
    template <class T, class Query>
    result<T> run_read(std::uint64_t writes_before, Query& query);
    void reply(std::function<void()> answer);
    void reader_loop();

    const store_options options_;
    const std::shared_ptr<memory_database> database_;

    // mutex_ guards the write queue, the counters, reachability and stats_.
    mutable std::mutex mutex_;
    std::condition_variable writer_wake_;
    std::condition_variable expiry_wake_;
    std::condition_variable finished_changed_;  // and reachability changes, for waiting readers
    std::deque<write_job> queue_;
    std::size_t queued_state_writes_ = 0;
    std::unordered_map<std::string, std::shared_ptr<coalesced_save>> coalesced_saves_;  // queued ones
    std::uint64_t submitted_ = 0;
    std::uint64_t finished_ = 0;
    bool reachable_ = true;
    bool stopping_ = false;
    store_stats stats_;

    log_throttle relaxed_failure_log_{5, relaxed_failures, spdlog::level::err};

    // readers_mutex_ guards the read queue, the held replies and the released ones.
    mutable std::mutex readers_mutex_;
    std::condition_variable readers_wake_;
    fair_queue<std::function<void()>> read_queue_;
    bool holding_replies_ = false;
    std::vector<std::function<void()>> held_replies_;
    std::deque<std::function<void()>> released_;  // runs of held replies, ahead of new reads
    bool readers_stopping_ = false;

    std::thread writer_thread_;
    std::thread expiry_thread_;
    std::vector<std::thread> reader_threads_;
};

memory_engine::memory_engine(store_options options, std::shared_ptr<memory_database> database)
    : options_(std::move(options)),
      database_(std::move(database)),
      read_queue_(options_.reader_queue_max, std::max<std::size_t>(1, options_.reader_queue_max / 2)) {
    writer_thread_ = std::thread([this] { writer_loop(); });
    expiry_thread_ = std::thread([this] { expiry_loop(); });
    for (std::size_t i = 0; i < options_.reader_threads; ++i) reader_threads_.emplace_back([this] { reader_loop(); });
}

memory_engine::~memory_engine() {
    // Writes first: everything queued is committed (or failed while the database is away).
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    writer_wake_.notify_all();
    expiry_wake_.notify_all();
    writer_thread_.join();
    expiry_thread_.join();
    release_read_replies();  // nobody is left to release them
    {
        std::lock_guard lock(readers_mutex_);
        readers_stopping_ = true;
    }
    readers_wake_.notify_all();
    for (auto& reader : reader_threads_) reader.join();
    relaxed_failure_log_.report_suppressed(*store_logger());
}

// --- writes -------------------------------------------------------------------

void memory_engine::submit_write(write_job job) {
    job.enqueued = clock::now();
    // Durability relaxed: the sender hears once the message is queued, before this returns.
    callback<append_outcome> acknowledge;
    append_outcome acknowledged;
    {
        std::unique_lock lock(mutex_);
        // State writes have nobody waiting and must survive an outage: they may fill twice the bound.
        const std::size_t bound = queue_bound(options_, job.message.has_value());
        if (stopping_ || queue_.size() >= bound) {
            const bool full = !stopping_;
            if (full) ++stats_.rejected_queue_full;
            lock.unlock();
            complete(job,
                     std::optional<error>(unavailable(full ? "storage queue is full" : "storage is shutting down")));
            return;
        }
        if (job.message && options_.durability == durability::relaxed) {
            acknowledge = std::move(job.on_message);
            acknowledged = {job.message->seq, job.message->at, false, false};
        }
        const bool was_empty = queue_.empty();
        count_in(job);
        queue_.push_back(std::move(job));
        ++submitted_;
        // The writer waits either for a first write or for a full batch.
        if (was_empty || queue_.size() == options_.batch_max) writer_wake_.notify_one();
    }
    if (acknowledge) acknowledge(acknowledged);
}

void memory_engine::count_in(const write_job& job) {
    if (job.message) return;
    ++queued_state_writes_;
    if (job.save) coalesced_saves_.emplace(job.save->key, job.save);
}

void memory_engine::count_out(const write_job& job) {
    if (job.message) return;
    --queued_state_writes_;
    if (job.save) coalesced_saves_.erase(job.save->key);
}

void memory_engine::submit_state_write(apply_fn apply, callback<void> done) {
    write_job job;
    job.apply = std::move(apply);
    job.on_done = std::move(done);
    submit_write(std::move(job));
}

void memory_engine::append_message(message_record message, callback<append_outcome> done) {
    write_job job;
    job.message = std::move(message);
    job.on_message = std::move(done);
    submit_write(std::move(job));
}

// Upserts cannot fail; deletes are not_found when there was nothing to delete.
template <class Write>
std::function<std::optional<error>(memory_tables&)> cannot_fail(Write write) {
    return [write = std::move(write)](memory_tables& tables) -> std::optional<error> {
        write(tables);
        return std::nullopt;
    };
}

void memory_engine::put_tenant(tenant_record tenant, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(tenant)](memory_tables& t) { t.put_tenant(r); }), std::move(done));
}

void memory_engine::put_agent(agent_record agent, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(agent)](memory_tables& t) { t.put_agent(r); }), std::move(done));
}

void memory_engine::delete_agent(std::string tenant_id, std::string agent_id, callback<void> done) {
    submit_state_write(
        [t = std::move(tenant_id), a = std::move(agent_id)](memory_tables& tables) -> std::optional<error> {
            if (tables.delete_agent(t, a)) return std::nullopt;
            return error{error_kind::not_found, "no agent " + a};
        },
        std::move(done));
}

void memory_engine::put_route(route_record route, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(route)](memory_tables& t) { t.put_route(r); }), std::move(done));
}

void memory_engine::delete_route(std::string tenant_id, std::string name, callback<void> done) {
    submit_state_write(
        [t = std::move(tenant_id), n = std::move(name)](memory_tables& tables) -> std::optional<error> {
            if (tables.delete_route(t, n)) return std::nullopt;
            return error{error_kind::not_found, "no route " + n};
        },
        std::move(done));
}

void memory_engine::put_account(account_record account, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(account)](memory_tables& t) { t.put_account(r); }), std::move(done));
}

void memory_engine::delete_account(std::string tenant_id, std::string domain, callback<void> done) {
    submit_state_write(
        [t = std::move(tenant_id), d = std::move(domain)](memory_tables& tables) -> std::optional<error> {
            if (tables.delete_account(t, d)) return std::nullopt;
            return error{error_kind::not_found, "no account " + d};
        },
        std::move(done));
}

void memory_engine::put_visitor(visitor_record visitor, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(visitor)](memory_tables& t) { t.put_visitor(r); }), std::move(done));
}

void memory_engine::replace_visitor(visitor_record visitor, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(visitor)](memory_tables& t) { t.replace_visitor(r); }),
                       std::move(done));
}

void memory_engine::save_conversation(conversation_record conversation, callback<void> done) {
    std::string key = conversation_row_key(conversation);
    {
        std::lock_guard lock(mutex_);
        if (auto queued = coalesced_saves_.find(key); queued != coalesced_saves_.end() && !stopping_) {
            // Not yet taken by the writer: the newer row replaces the queued one.
            queued->second->record = std::move(conversation);
            if (done) queued->second->done.push_back(std::move(done));
            ++stats_.coalesced_saves;
            return;
        }
    }
    auto save = std::make_shared<coalesced_save>();
    save->key = std::move(key);
    save->record = std::move(conversation);
    if (done) save->done.push_back(std::move(done));
    write_job job;
    job.apply = cannot_fail([save](memory_tables& t) { t.save_conversation(save->record); });
    job.on_done = [save](status outcome) {
        for (auto& waiter : save->done) waiter(outcome);
    };
    job.save = std::move(save);
    submit_write(std::move(job));
}

void memory_engine::put_offer(offer_record offer, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(offer)](memory_tables& t) { t.put_offer(r); }), std::move(done));
}

void memory_engine::resolve_offer(std::string tenant_id, std::string offer_id, offer_outcome outcome, millis at,
                                  callback<void> done) {
    submit_state_write(
        [t = std::move(tenant_id), o = std::move(offer_id), outcome,
         at](memory_tables& tables) -> std::optional<error> {
            switch (tables.resolve_offer(t, o, outcome, at)) {
                case error_kind::ok:
                    return std::nullopt;
                case error_kind::not_found:
                    return error{error_kind::not_found, "no offer " + o};
                default:
                    return error{error_kind::conflict, "offer " + o + " is no longer pending"};
            }
        },
        std::move(done));
}

void memory_engine::append_activity(activity_record activity, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(activity)](memory_tables& t) { t.append_activity(r); }),
                       std::move(done));
}

void memory_engine::set_override(availability_override value, callback<void> done) {
    submit_state_write(cannot_fail([r = std::move(value)](memory_tables& t) { t.set_override(r); }), std::move(done));
}

void memory_engine::clear_override(std::string tenant_id, std::string agent_id, callback<void> done) {
    // Clearing an override that does not exist is not an error: the agent is on its schedule either way.
    submit_state_write(cannot_fail([t = std::move(tenant_id), a = std::move(agent_id)](memory_tables& tables) {
                           tables.clear_override(t, a);
                       }),
                       std::move(done));
}

void memory_engine::complete(write_job& job, result<append_outcome> outcome) {
    if (job.on_message) {
        job.on_message(std::move(outcome));
    } else if (!outcome.ok()) {
        log_relaxed_failure(relaxed_failure_log_, *job.message, outcome.failure());
    }
}

void memory_engine::complete(write_job& job, std::optional<error> outcome) {
    if (job.message) {
        if (outcome) return complete(job, result<append_outcome>(std::move(*outcome)));
        return complete(job, result<append_outcome>(append_outcome{job.message->seq, job.message->at, false, true}));
    }
    if (job.on_done) job.on_done(outcome ? status(std::move(*outcome)) : status());
}

void memory_engine::mark_finished(std::size_t count) {
    {
        std::lock_guard lock(mutex_);
        finished_ += count;
    }
    finished_changed_.notify_all();
}

std::uint64_t memory_engine::writes_submitted() const {
    std::lock_guard lock(mutex_);
    return submitted_;
}

// Group commit, as store_engine does it: the writer takes everything queued (up
// to batch_max), waiting at most batch_delay after the oldest write arrived for
// the batch to fill, applies it as one step and only then completes the
// callbacks. While the database is away it takes nothing: the writes wait in
// order, and expiry_loop answers the messages whose senders wait.
void memory_engine::writer_loop() {
    for (;;) {
        std::vector<write_job> batch;
        {
            std::unique_lock lock(mutex_);
            writer_wake_.wait(lock, [this] { return stopping_ || (reachable_ && !queue_.empty()); });
            if (!reachable_) {  // stopping while the database is away
                auto failed = std::exchange(queue_, {});
                queued_state_writes_ = 0;
                coalesced_saves_.clear();
                lock.unlock();
                fail(std::move(failed), unavailable("storage shut down while the database was unreachable"));
                return;
            }
            if (queue_.empty()) return;  // stopping, and everything committed
            if (queue_.size() < options_.batch_max && !stopping_ && options_.batch_delay.count() > 0) {
                writer_wake_.wait_until(lock, queue_.front().enqueued + options_.batch_delay, [this] {
                    return stopping_ || !reachable_ || queue_.size() >= options_.batch_max;
                });
                if (!reachable_ || queue_.empty()) continue;  // went away, or expired, while the batch filled
            }
            const std::size_t take = std::min(queue_.size(), options_.batch_max);
            batch.reserve(take);
            for (std::size_t i = 0; i < take; ++i) {
                count_out(queue_.front());
                batch.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        commit(batch);
    }
}

void memory_engine::commit(std::vector<write_job>& batch) {
    const auto started = clock::now();
    std::vector<std::optional<result<append_outcome>>> message_outcomes(batch.size());
    std::vector<std::optional<error>> other_outcomes(batch.size());
    {
        std::unique_lock data(database_->lock);
        for (std::size_t i = 0; i < batch.size(); ++i) {
            if (batch[i].message)
                message_outcomes[i] = database_->tables.append_message(*batch[i].message);
            else
                other_outcomes[i] = batch[i].apply(database_->tables);
        }
    }
    {
        std::lock_guard lock(mutex_);
        count_batch(stats_, batch.size());
    }
    if (options_.on_batch_committed)
        options_.on_batch_committed(batch.size(),
                                    std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started));
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (batch[i].message)
            complete(batch[i], std::move(*message_outcomes[i]));
        else
            complete(batch[i], std::move(other_outcomes[i]));
    }
    mark_finished(batch.size());
}

// A message whose sender waits for its ok (durability commit) is answered
// `unavailable` once it has waited unavailable_after, as store.h promises, so
// the client can retry (by client_msg_id) instead of hanging. Other writes
// stay queued: nobody waits on them, and they are made once the database is back.
void memory_engine::expiry_loop() {
    const auto poll = expiry_poll(options_);
    std::unique_lock lock(mutex_);
    while (!expiry_wake_.wait_for(lock, poll, [this] { return stopping_; })) {
        const auto now = clock::now();
        std::deque<write_job> expired;
        for (auto it = queue_.begin(); it != queue_.end() && it->enqueued + options_.unavailable_after <= now;) {
            if (it->message && it->on_message) {
                expired.push_back(std::move(*it));
                it = queue_.erase(it);
            } else {
                ++it;
            }
        }
        if (expired.empty()) continue;
        stats_.expired_unavailable += expired.size();
        lock.unlock();
        fail(std::move(expired), unavailable("the database has not answered for a while; write not stored, retry"));
        lock.lock();
    }
}

void memory_engine::fail(std::deque<write_job> jobs, const error& why) {
    for (auto& job : jobs) complete(job, std::optional<error>(why));
    mark_finished(jobs.size());
}

void memory_engine::flush() {
    const auto target = writes_submitted();
    std::unique_lock lock(mutex_);
    finished_changed_.wait(lock, [&] { return finished_ >= target; });
}

bool memory_engine::flush_within(std::chrono::milliseconds limit) {
    const auto target = writes_submitted();
    std::unique_lock lock(mutex_);
    return finished_changed_.wait_for(lock, limit, [&] { return finished_ >= target; });
}

bool memory_engine::ready() const {
    std::lock_guard lock(mutex_);
    return reachable_;
}

store_stats memory_engine::stats() const {
    std::lock_guard lock(mutex_);
    auto copy = stats_;
    copy.queue_depth = queue_.size();
    copy.state_writes_waiting = queued_state_writes_;
    return copy;
}

// --- reads --------------------------------------------------------------------

template <class T, class Query>
result<T> memory_engine::run_read(std::uint64_t writes_before, Query& query) {
    {
        std::unique_lock lock(mutex_);
        finished_changed_.wait(lock, [&] { return finished_ >= writes_before || !reachable_; });
        if (!reachable_) return unavailable(database_away);
    }
    std::shared_lock data(database_->lock);
    return query(static_cast<const memory_tables&>(database_->tables));
}

// Reads see every write submitted before them (read-your-writes): the reader
// first waits until the writer has finished those, at most one batch.
template <class T, class Query>
void memory_engine::submit_read(std::string_view tenant, callback<T> done, Query query) {
    std::function<void()> job = [this, done, query = std::move(query), writes_before = writes_submitted()]() mutable {
        auto outcome = run_read<T>(writes_before, query);
        reply([done, outcome = std::move(outcome)]() mutable {
            if (done) done(std::move(outcome));
        });
    };
    {
        std::unique_lock lock(readers_mutex_);
        if (!readers_stopping_ && read_queue_.push(tenant, job)) {
            lock.unlock();
            readers_wake_.notify_one();
            return;
        }
    }
    if (done) done(result<T>(unavailable("storage read queue is full")));
}

void memory_engine::reply(std::function<void()> answer) {
    {
        std::lock_guard lock(readers_mutex_);
        if (holding_replies_) {
            held_replies_.push_back(std::move(answer));
            return;
        }
    }
    answer();
}

void memory_engine::reader_loop() {
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock lock(readers_mutex_);
            readers_wake_.wait(lock,
                               [this] { return readers_stopping_ || !released_.empty() || !read_queue_.empty(); });
            if (!released_.empty()) {
                job = std::move(released_.front());
                released_.pop_front();
            } else if (!read_queue_.empty()) {
                job = read_queue_.pop();
            } else {
                return;  // stopping, and nothing left to answer
            }
        }
        job();
    }
}

void memory_engine::list_tenants(callback<std::vector<tenant_record>> done) {
    submit_read("", std::move(done), [](const memory_tables& t) { return t.list_tenants(); });
}

void memory_engine::list_agents(std::string tenant_id, callback<std::vector<agent_record>> done) {
    submit_read(tenant_id, std::move(done), [id = tenant_id](const memory_tables& t) { return t.list_agents(id); });
}

void memory_engine::list_routes(std::string tenant_id, callback<std::vector<route_record>> done) {
    submit_read(tenant_id, std::move(done), [id = tenant_id](const memory_tables& t) { return t.list_routes(id); });
}

void memory_engine::list_accounts(std::string tenant_id, callback<std::vector<account_record>> done) {
    submit_read(tenant_id, std::move(done), [id = tenant_id](const memory_tables& t) { return t.list_accounts(id); });
}

void memory_engine::get_visitor(std::string tenant_id, std::string visitor_id, callback<visitor_record> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id, v = std::move(visitor_id)](const memory_tables& tables) {
        return tables.get_visitor(t, v);
    });
}

void memory_engine::get_conversation(std::string tenant_id, std::string conversation_id,
                                     callback<conversation_record> done) {
    submit_read(tenant_id, std::move(done),
                [t = tenant_id, c = std::move(conversation_id)](const memory_tables& tables) {
                    return tables.get_conversation(t, c);
                });
}

void memory_engine::list_conversations(conversation_query query, callback<conversation_page> done) {
    submit_read(query.tenant_id, std::move(done), [q = query, days = options_.retention_days](const memory_tables& t) {
        return t.list_conversations(q, days);
    });
}

void memory_engine::get_activity(activity_query query, callback<activity_page> done) {
    submit_read(query.tenant_id, std::move(done), [q = query, days = options_.retention_days](const memory_tables& t) {
        return t.get_activity(q, days);
    });
}

void memory_engine::get_transcript(std::string tenant_id, std::string conversation_id, std::int64_t after_seq,
                                   int limit, millis now, callback<message_page> done) {
    submit_read(tenant_id, std::move(done),
                [t = tenant_id, c = std::move(conversation_id), after_seq, limit, now, days = options_.retention_days](
                    const memory_tables& tables) { return tables.get_transcript(t, c, after_seq, limit, now, days); });
}

void memory_engine::messages_after(std::string tenant_id, std::string conversation_id, std::int64_t after_seq,
                                   int limit, millis now, callback<std::vector<message_record>> done) {
    submit_read(tenant_id, std::move(done),
                [t = tenant_id, c = std::move(conversation_id), after_seq, limit, now, days = options_.retention_days](
                    const memory_tables& tables) { return tables.messages_after(t, c, after_seq, limit, now, days); });
}

// --- synchronous ----------------------------------------------------------------

result<open_state> memory_engine::load_open_state(std::optional<std::string> tenant_id, millis now) {
    auto query = [&](const memory_tables& t) { return t.load_open_state(tenant_id, now, options_.retention_days); };
    return run_read<open_state>(writes_submitted(), query);
}

// Batches of at most prune_batch rows, each under the lock alone (a short
// transaction), a table after the other until one deletes less than a batch;
// `stop_requested` is asked before each.
result<prune_report> memory_engine::prune(millis now, std::function<bool()> stop_requested) {
    if (!ready()) return unavailable(database_away);
    using prunable = memory_tables::prunable;
    const std::pair<prunable, std::uint64_t prune_report::*> targets[] = {
        {prunable::messages, &prune_report::messages},           {prunable::activities, &prune_report::activities},
        {prunable::conversations, &prune_report::conversations}, {prunable::offers, &prune_report::offers},
        {prunable::visitors, &prune_report::visitors},
    };
    const millis cutoff = retention_cutoff(now, options_.retention_days);
    prune_report report;
    for (const auto& [what, counter] : targets) {
        for (bool more = true; more;) {
            if (report.stopped || (stop_requested && stop_requested())) {
                report.stopped = true;
                break;
            }
            std::size_t deleted = 0;
            {
                std::unique_lock data(database_->lock);
                deleted = database_->tables.prune_some(what, cutoff, options_.prune_batch);
            }
            if (deleted > 0) ++report.batches;
            report.*counter += deleted;
            more = deleted >= options_.prune_batch;
        }
    }
    return report;
}

result<int> memory_engine::schema_version() {
    if (!ready()) return unavailable(database_away);
    return binary_schema_version();  // no schema to be behind or ahead
}

// --- test controls ----------------------------------------------------------------

void memory_engine::set_reachable(bool reachable) {
    {
        std::lock_guard lock(mutex_);
        if (reachable_ == reachable) return;
        reachable_ = reachable;
        if (reachable) ++stats_.reconnects;
    }
    if (reachable) {
        relaxed_failure_log_.report_suppressed(*store_logger());
        store_logger()->info("storage reconnected (memory)");
    } else {
        store_logger()->error("storage unavailable (memory): {}", database_away);
    }
    writer_wake_.notify_all();
    finished_changed_.notify_all();
}

void memory_engine::hold_read_replies() {
    std::lock_guard lock(readers_mutex_);
    holding_replies_ = true;
}

void memory_engine::release_read_replies() {
    {
        std::lock_guard lock(readers_mutex_);
        holding_replies_ = false;
        if (held_replies_.empty()) return;
        // One job for the lot: one reader runs them, in the order they were held.
        released_.push_back([held = std::exchange(held_replies_, {})]() mutable {
            for (auto& answer : held) answer();
        });
    }
    readers_wake_.notify_one();
}

std::size_t memory_engine::held_read_replies() const {
    std::lock_guard lock(readers_mutex_);
    return held_replies_.size();
}

}  // namespace
}  // namespace detail

result<std::unique_ptr<memory_store>> make_memory_store(const store_options& options,
                                                        std::shared_ptr<memory_database> database) {
    if (auto bad = detail::check_options(options)) return *bad;
    if (!database) database = make_memory_database();
    return std::unique_ptr<memory_store>(std::make_unique<detail::memory_engine>(options, std::move(database)));
}

}  // namespace parley::storage
