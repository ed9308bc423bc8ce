#include "store_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>

#include "queries.h"
#include "write_rules.h"

namespace parley::storage::detail {
namespace {

error unavailable(std::string message) { return {error_kind::unavailable, std::move(message)}; }

}  // namespace

store_engine::store_engine(connection_factory factory, std::string backend_name, store_options options,
                           std::unique_ptr<sql_connection> writer)
    : factory_(std::move(factory)),
      backend_name_(std::move(backend_name)),
      options_(std::move(options)),
      writer_(std::move(writer)),
      // One tenant may fill half of the read queue: the rest stays for the others.
      read_queue_(options_.reader_queue_max, std::max<std::size_t>(1, options_.reader_queue_max / 2)) {
    writer_->limit_reply_wait();
    writer_thread_ = std::thread([this] { writer_loop(); });
    expiry_thread_ = std::thread([this] { expiry_loop(); });
    for (std::size_t i = 0; i < options_.reader_threads; ++i) reader_threads_.emplace_back([this] { reader_loop(); });
}

store_engine::~store_engine() {
    // Writers first: everything queued is committed (or failed when the
    // database is down) before the store goes away.
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    writer_wake_.notify_all();
    expiry_wake_.notify_all();
    writer_thread_.join();
    expiry_thread_.join();
    {
        std::lock_guard lock(readers_mutex_);
        readers_stopping_ = true;
    }
    readers_wake_.notify_all();
    for (auto& reader : reader_threads_) reader.join();
    relaxed_failure_log_.report_suppressed(*store_logger());
}

std::unique_ptr<sql_connection> store_engine::connect() const {
    auto connection = factory_();
    connection->limit_reply_wait();
    return connection;
}

// --- writes -------------------------------------------------------------------

void store_engine::submit_write(write_job job) {
    job.enqueued = clock::now();
    const bool relaxed_message = job.message && options_.durability == durability::relaxed;
    std::optional<append_outcome> acknowledged;
    if (relaxed_message) acknowledged = append_outcome{job.message->seq, job.message->at, false, false};
    callback<append_outcome> acknowledge;
    {
        std::unique_lock lock(mutex_);
        // Messages have a sender to tell; state writes have nobody waiting and must not be lost in
        // an outage, so they may fill the queue up to twice its bound before one is refused.
        const std::size_t bound = queue_bound(options_, job.message.has_value());
        if (stopping_ || queue_.size() >= bound) {
            const bool full = !stopping_;
            lock.unlock();
            if (full) {
                std::lock_guard stats_lock(stats_mutex_);
                ++stats_.rejected_queue_full;
            }
            complete(job, std::optional<error>(unavailable(full ? "storage queue is full" : "storage is shutting down")));
            return;
        }
        if (relaxed_message) acknowledge = std::move(job.on_message);
        const bool was_empty = queue_.empty();
        enqueued(job);
        queue_.push_back(std::move(job));
        ++submitted_;
        // The writer waits either for a first write or for a full batch.
        if (was_empty || queue_.size() == options_.batch_max) writer_wake_.notify_one();
    }
    if (acknowledge) acknowledge(*acknowledged);
}

void store_engine::enqueued(const write_job& job) {
    if (job.message) return;
    ++queued_state_writes_;
    // A save requeued after a lost connection takes new saves only if none queued behind it.
    if (job.save) coalesced_saves_.try_emplace(job.save->key, job.save);
}

void store_engine::dequeued(const write_job& job) {
    if (job.message) return;
    --queued_state_writes_;
    if (job.save) {
        auto it = coalesced_saves_.find(job.save->key);
        if (it != coalesced_saves_.end() && it->second == job.save) coalesced_saves_.erase(it);
    }
}

void store_engine::submit_generic(apply_fn apply, callback<void> done) {
    write_job job;
    job.apply = std::move(apply);
    job.on_done = std::move(done);
    submit_write(std::move(job));
}

void store_engine::append_message(message_record message, callback<append_outcome> done) {
    write_job job;
    job.message = std::move(message);
    job.on_message = std::move(done);
    submit_write(std::move(job));
}

namespace {

// Adapts a write that cannot fail logically and is idempotent (an upsert):
// running it again after an unknown COMMIT outcome changes nothing.
template <class F>
auto always_ok(F write) {
    return [write = std::move(write)](sql_connection& c, bool) -> std::optional<error> {
        write(c);
        return std::nullopt;
    };
}

template <class F>
auto must_exist(F remove, std::string what) {
    return [remove = std::move(remove), what = std::move(what)](sql_connection& c, bool) -> std::optional<error> {
        if (remove(c)) return std::nullopt;
        return error{error_kind::not_found, "no " + what};
    };
}

}  // namespace

void store_engine::put_tenant(tenant_record tenant, callback<void> done) {
    submit_generic(always_ok([r = std::move(tenant)](sql_connection& c) { detail::put_tenant(c, r); }), std::move(done));
}

void store_engine::put_agent(agent_record agent, callback<void> done) {
    submit_generic(always_ok([r = std::move(agent)](sql_connection& c) { detail::put_agent(c, r); }), std::move(done));
}

void store_engine::delete_agent(std::string tenant_id, std::string agent_id, callback<void> done) {
    std::string what = "agent " + agent_id;
    submit_generic(must_exist([t = std::move(tenant_id), a = std::move(agent_id)](
                                  sql_connection& c) { return detail::delete_agent(c, t, a); },
                              std::move(what)),
                   std::move(done));
}

void store_engine::put_route(route_record route, callback<void> done) {
    submit_generic(always_ok([r = std::move(route)](sql_connection& c) { detail::put_route(c, r); }), std::move(done));
}

void store_engine::delete_route(std::string tenant_id, std::string name, callback<void> done) {
    std::string what = "route " + name;
    submit_generic(must_exist([t = std::move(tenant_id), n = std::move(name)](
                                  sql_connection& c) { return detail::delete_route(c, t, n); },
                              std::move(what)),
                   std::move(done));
}

void store_engine::put_account(account_record account, callback<void> done) {
    submit_generic(always_ok([r = std::move(account)](sql_connection& c) { detail::put_account(c, r); }),
                   std::move(done));
}

void store_engine::delete_account(std::string tenant_id, std::string domain, callback<void> done) {
    std::string what = "account " + domain;
    submit_generic(must_exist([t = std::move(tenant_id), d = std::move(domain)](
                                  sql_connection& c) { return detail::delete_account(c, t, d); },
                              std::move(what)),
                   std::move(done));
}

void store_engine::put_visitor(visitor_record visitor, callback<void> done) {
    submit_generic(always_ok([r = std::move(visitor)](sql_connection& c) { detail::put_visitor(c, r); }),
                   std::move(done));
}

void store_engine::replace_visitor(visitor_record visitor, callback<void> done) {
    submit_generic(always_ok([r = std::move(visitor)](sql_connection& c) { detail::replace_visitor(c, r); }),
                   std::move(done));
}

void store_engine::save_conversation(conversation_record conversation, callback<void> done) {
    std::string key = conversation_row_key(conversation);
    {
        std::lock_guard lock(mutex_);
        if (auto queued = coalesced_saves_.find(key); queued != coalesced_saves_.end() && !stopping_) {
            // Not yet taken by the writer: the newer row replaces the queued one.
            queued->second->record = std::move(conversation);
            if (done) queued->second->done.push_back(std::move(done));
            std::lock_guard stats_lock(stats_mutex_);
            ++stats_.coalesced_saves;
            return;
        }
    }
    auto save = std::make_shared<coalesced_save>();
    save->key = std::move(key);
    save->record = std::move(conversation);
    if (done) save->done.push_back(std::move(done));
    write_job job;
    job.apply = [save](sql_connection& c, bool) -> std::optional<error> {
        detail::save_conversation(c, save->record);
        return std::nullopt;
    };
    job.on_done = [save](status outcome) {
        for (auto& waiter : save->done) waiter(outcome);
    };
    job.save = std::move(save);
    submit_write(std::move(job));
}

void store_engine::put_offer(offer_record offer, callback<void> done) {
    submit_generic(always_ok([r = std::move(offer)](sql_connection& c) { detail::put_offer(c, r); }), std::move(done));
}

void store_engine::resolve_offer(std::string tenant_id, std::string offer_id, offer_outcome outcome, millis at,
                                 callback<void> done) {
    submit_generic(
        [t = std::move(tenant_id), o = std::move(offer_id), outcome, at](sql_connection& c,
                                                                         bool in_doubt) -> std::optional<error> {
            const auto resolved = detail::resolve_offer(c, t, o, outcome, at);
            // After an unknown COMMIT outcome, "no longer pending" means the first attempt resolved it.
            if (in_doubt && resolved == error_kind::conflict) return std::nullopt;
            switch (resolved) {
                case error_kind::ok: return std::nullopt;
                case error_kind::not_found: return error{error_kind::not_found, "no offer " + o};
                default: return error{error_kind::conflict, "offer " + o + " is no longer pending"};
            }
        },
        std::move(done));
}

void store_engine::append_activity(activity_record activity, callback<void> done) {
    // A plain insert: after an unknown COMMIT outcome it is made only if the first one did not land.
    submit_generic(
        [r = std::move(activity)](sql_connection& c, bool in_doubt) -> std::optional<error> {
            detail::append_activity(c, r, in_doubt);
            return std::nullopt;
        },
        std::move(done));
}

void store_engine::set_override(availability_override value, callback<void> done) {
    submit_generic(always_ok([r = std::move(value)](sql_connection& c) { detail::set_override(c, r); }),
                   std::move(done));
}

void store_engine::clear_override(std::string tenant_id, std::string agent_id, callback<void> done) {
    // Clearing an override that does not exist is not an error: the agent is on its schedule either way.
    submit_generic(always_ok([t = std::move(tenant_id), a = std::move(agent_id)](sql_connection& c) {
                       detail::clear_override(c, t, a);
                   }),
                   std::move(done));
}

void store_engine::complete(write_job& job, result<append_outcome> outcome) {
    if (job.on_message) {
        job.on_message(std::move(outcome));
    } else if (!outcome.ok()) {
        log_relaxed_failure(relaxed_failure_log_, *job.message, outcome.failure());
    }
}

void store_engine::complete(write_job& job, std::optional<error> outcome) {
    if (job.message) {
        if (outcome)
            complete(job, result<append_outcome>(std::move(*outcome)));
        else
            complete(job, result<append_outcome>(append_outcome{job.message->seq, job.message->at, false, true}));
        return;
    }
    if (!job.on_done) return;
    if (outcome)
        job.on_done(status(std::move(*outcome)));
    else
        job.on_done(status());
}

void store_engine::mark_finished(std::size_t count) {
    {
        std::lock_guard lock(finished_mutex_);
        finished_ += count;
    }
    finished_changed_.notify_all();
}

// Group commit: the writer takes everything queued (up to batch_max), waiting
// at most batch_delay after the oldest write arrived for the batch to fill,
// runs it as one transaction and only then completes the callbacks. When the
// database is unreachable it keeps the writes queued, reconnects with
// exponential backoff and fails writes older than unavailable_after.
void store_engine::writer_loop() {
    auto backoff = options_.reconnect_backoff_min;
    for (;;) {
        if (!writer_) {
            try {
                writer_ = connect();
                ready_ = true;
                // The backoff is reset by a commit, not by connecting: SQLite always
                // connects, and a full disk then fails every batch at once.
                {
                    std::lock_guard lock(stats_mutex_);
                    ++stats_.reconnects;
                }
                relaxed_failure_log_.report_suppressed(*store_logger());
                store_logger()->info("storage reconnected ({})", backend_name_);
            } catch (...) {
                auto why = classify_connect_failure(std::current_exception());
                std::unique_lock lock(mutex_);
                if (stopping_) {
                    lock.unlock();
                    fail_all_queued(unavailable("storage shut down while the database was unreachable: " + why.message));
                    return;
                }
                // Waiting messages are answered by expiry_loop on time; the writer only backs off.
                // (Timing this wait to the queue head's expiry spun every millisecond once the head
                // was a state write, which never expires.)
                writer_wake_.wait_for(lock, backoff, [this] { return stopping_; });
                backoff = std::min(backoff * 2, options_.reconnect_backoff_max);
                continue;
            }
        }

        std::vector<write_job> batch;
        {
            std::unique_lock lock(mutex_);
            if (queue_.empty()) {
                if (stopping_) return;
                if (!writer_wake_.wait_for(lock, options_.health_check_interval,
                                           [this] { return stopping_ || !queue_.empty(); })) {
                    lock.unlock();
                    try {
                        writer_->ping();
                    } catch (...) {
                        connection_lost(writer_->classify(std::current_exception()));
                    }
                    continue;
                }
                if (queue_.empty()) continue;
            }
            if (queue_.size() < options_.batch_max && !stopping_ && options_.batch_delay.count() > 0) {
                auto deadline = queue_.front().enqueued + options_.batch_delay;
                writer_wake_.wait_until(lock, deadline,
                                        [this] { return stopping_ || queue_.size() >= options_.batch_max; });
            }
            const std::size_t take = std::min(queue_.size(), options_.batch_max);
            batch.reserve(take);
            for (std::size_t i = 0; i < take; ++i) {
                dequeued(queue_.front());
                batch.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        if (run_batch(batch)) {
            backoff = options_.reconnect_backoff_min;
        } else {
            // Connection lost: the unfinished writes go back to the head of the
            // queue, in order, to be retried after reconnecting, once the backoff
            // has passed (a database that fails every batch is not hammered).
            std::unique_lock lock(mutex_);
            for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
                enqueued(*it);
                queue_.push_front(std::move(*it));
            }
            writer_wake_.wait_for(lock, backoff, [this] { return stopping_; });
            backoff = std::min(backoff * 2, options_.reconnect_backoff_max);
        }
    }
}

// Runs `jobs` as one transaction and completes them. Returns false when the
// connection was lost; `jobs` then holds exactly the writes still to be made.
// Retrying them is safe: messages are deduplicated by their unique keys and
// every other write is an upsert or a conditional update. (Only activities,
// plain inserts, may be stored twice if a commit's outcome was unknown.)
bool store_engine::run_batch(std::vector<write_job>& jobs) {
    std::vector<result<append_outcome>> message_outcomes;
    std::vector<std::optional<error>> other_outcomes(jobs.size());
    std::vector<std::size_t> message_index(jobs.size(), 0);
    const auto started = clock::now();
    bool committing = false;
    try {
        writer_->begin();
        for (std::size_t i = 0; i < jobs.size();) {
            if (!jobs[i].message) {
                other_outcomes[i] = jobs[i].apply(*writer_, jobs[i].in_doubt);
                ++i;
                continue;
            }
            std::vector<const message_record*> run;
            std::size_t j = i;
            for (; j < jobs.size() && jobs[j].message; ++j) {
                message_index[j] = message_outcomes.size() + run.size();
                run.push_back(&*jobs[j].message);
            }
            for (auto& outcome : writer_->append_messages(run)) message_outcomes.push_back(std::move(outcome));
            i = j;
        }
        committing = true;
        writer_->commit();
    } catch (...) {
        writer_->rollback();
        auto why = writer_->classify(std::current_exception());
        if (why.kind == error_kind::unavailable) {
            // The COMMIT went out and its answer did not come back: it may have landed. The
            // retry must find its own rows (messages: resolve_message_conflict) rather than
            // store them twice, and these writes are not expired meanwhile: their senders
            // learn the outcome when it is known.
            // SQLite's COMMIT is a local call: when it fails, the transaction did not land.
            if (committing && writer_->kind() == dialect::postgresql)
                for (auto& job : jobs) job.in_doubt = true;
            connection_lost(why);
            return false;
        }
        if (jobs.size() == 1) {
            complete(jobs[0], std::optional<error>(why));
            mark_finished(1);
            return true;
        }
        // One write broke the transaction: run them one by one so only it fails.
        store_logger()->warn("storage batch of {} failed ({}); retrying writes one by one", jobs.size(), why.message);
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            std::vector<write_job> single;
            single.push_back(std::move(jobs[i]));
            if (!run_batch(single)) {
                std::vector<write_job> remaining;
                remaining.push_back(std::move(single[0]));
                for (std::size_t k = i + 1; k < jobs.size(); ++k) remaining.push_back(std::move(jobs[k]));
                jobs = std::move(remaining);
                return false;
            }
        }
        return true;
    }
    {
        std::lock_guard lock(stats_mutex_);
        count_batch(stats_, jobs.size());
    }
    if (options_.on_batch_committed)
        options_.on_batch_committed(jobs.size(),
                                    std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - started));
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (jobs[i].message)
            complete(jobs[i], std::move(message_outcomes[message_index[i]]));
        else
            complete(jobs[i], std::move(other_outcomes[i]));
    }
    mark_finished(jobs.size());
    return true;
}

void store_engine::connection_lost(const error& why) {
    if (ready_.exchange(false)) store_logger()->error("storage unavailable ({}): {}", backend_name_, why.message);
    writer_.reset();
}

// The writer can be held up for as long as the URL's tcp_user_timeout by one
// batch that waits for its reply, and the writes queued behind it with it.
// A message whose sender waits for its ok (durability commit) is answered
// `unavailable` once it has waited unavailable_after, as store.h promises, so
// the client can retry (by client_msg_id) instead of hanging. Other writes
// stay queued: nobody waits on them, and the writer still makes them.
void store_engine::expiry_loop() {
    const auto poll = expiry_poll(options_);
    std::unique_lock lock(mutex_);
    while (!expiry_wake_.wait_for(lock, poll, [this] { return stopping_; })) {
        lock.unlock();
        expire_waiting_messages(clock::now());
        lock.lock();
    }
}

void store_engine::expire_waiting_messages(clock::time_point now) {
    std::vector<write_job> expired;
    {
        std::lock_guard lock(mutex_);
        auto old_end = queue_.begin();  // the queue is in arrival order: the old ones lead
        while (old_end != queue_.end() && old_end->enqueued + options_.unavailable_after <= now) ++old_end;
        if (old_end == queue_.begin()) return;
        // Only messages whose sender waits, and whose outcome is not in doubt, are answered
        // `unavailable`: state writes and acknowledged (relaxed) messages wait for the database.
        auto waited_for = std::stable_partition(queue_.begin(), old_end, [](const write_job& job) {
            return !(job.message && job.on_message && !job.in_doubt);
        });
        for (auto it = waited_for; it != old_end; ++it) expired.push_back(std::move(*it));
        queue_.erase(waited_for, old_end);
    }
    fail_expired(expired, "the database has not answered for a while; write not stored, retry");
}

void store_engine::fail_expired(std::vector<write_job>& expired, const char* why) {
    if (expired.empty()) return;
    {
        std::lock_guard lock(stats_mutex_);
        stats_.expired_unavailable += expired.size();
    }
    for (auto& job : expired)
        complete(job, std::optional<error>(unavailable(why)));
    mark_finished(expired.size());
}

void store_engine::fail_all_queued(const error& why) {
    std::deque<write_job> failed;
    {
        std::lock_guard lock(mutex_);
        failed.swap(queue_);
        queued_state_writes_ = 0;
        coalesced_saves_.clear();
    }
    for (auto& job : failed) complete(job, std::optional<error>(why));
    mark_finished(failed.size());
}

std::uint64_t store_engine::writes_submitted() const {
    std::lock_guard lock(mutex_);
    return submitted_;
}

void store_engine::wait_for_writes(std::uint64_t target) {
    std::unique_lock lock(finished_mutex_);
    finished_changed_.wait(lock, [&] { return finished_ >= target; });
}

void store_engine::flush() { wait_for_writes(writes_submitted()); }

bool store_engine::flush_within(std::chrono::milliseconds limit) {
    const auto target = writes_submitted();
    std::unique_lock lock(finished_mutex_);
    return finished_changed_.wait_for(lock, limit, [&] { return finished_ >= target; });
}

bool store_engine::ready() const { return ready_.load(); }

store_stats store_engine::stats() const {
    store_stats copy;
    {
        std::lock_guard lock(stats_mutex_);
        copy = stats_;
    }
    std::lock_guard lock(mutex_);
    copy.queue_depth = queue_.size();
    copy.state_writes_waiting = queued_state_writes_;
    return copy;
}

// --- reads --------------------------------------------------------------------

void store_engine::reader_loop() {
    std::unique_ptr<sql_connection> connection;
    for (;;) {
        read_job job;
        {
            std::unique_lock lock(readers_mutex_);
            readers_wake_.wait(lock, [this] { return readers_stopping_ || !read_queue_.empty(); });
            if (read_queue_.empty()) return;
            job = read_queue_.pop();
        }
        job(connection);
    }
}

// Reads see every write submitted before them (read-your-writes): a reader
// first waits until the writer has finished (committed or failed) all of
// those, which costs at most one group-commit batch.
template <class T, class Query>
void store_engine::submit_read(std::string_view tenant, callback<T> done, Query query) {
    // A reader's connection that sat idle through a database restart only finds
    // out it is dead on its next query. That read gets one more try on a fresh
    // connection, so the first reads after an outage do not fail although the
    // database is back; reads change nothing, so a retry is safe. A fresh
    // connection that fails is a real outage: the read fails fast with unavailable.
    read_job job = [this, done, query = std::move(query), writes_before = writes_submitted()](
                       std::unique_ptr<sql_connection>& connection) {
        wait_for_writes(writes_before);
        std::optional<result<T>> outcome;
        for (bool fresh = false; !outcome;) {
            if (!connection) {
                try {
                    connection = connect();
                    fresh = true;
                } catch (...) {
                    outcome.emplace(classify_connect_failure(std::current_exception()));
                    break;
                }
            }
            try {
                outcome.emplace(query(*connection));
            } catch (...) {
                connection->rollback();
                auto why = connection->classify(std::current_exception());
                if (why.kind != error_kind::unavailable) {
                    outcome.emplace(std::move(why));
                    break;
                }
                connection.reset();
                if (fresh) outcome.emplace(std::move(why));
            }
        }
        if (done) done(std::move(*outcome));
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

template <class T, class Query>
result<T> store_engine::run_sync(std::string_view tenant, Query query) {
    auto promise = std::make_shared<std::promise<result<T>>>();
    auto future = promise->get_future();
    submit_read<T>(tenant, [promise](result<T> outcome) { promise->set_value(std::move(outcome)); }, std::move(query));
    return future.get();
}

void store_engine::list_tenants(callback<std::vector<tenant_record>> done) {
    submit_read("", std::move(done), [](sql_connection& c) { return detail::list_tenants(c); });
}

void store_engine::list_agents(std::string tenant_id, callback<std::vector<agent_record>> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id](sql_connection& c) { return detail::list_agents(c, t); });
}

void store_engine::list_routes(std::string tenant_id, callback<std::vector<route_record>> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id](sql_connection& c) { return detail::list_routes(c, t); });
}

void store_engine::list_accounts(std::string tenant_id, callback<std::vector<account_record>> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id](sql_connection& c) { return detail::list_accounts(c, t); });
}

void store_engine::get_visitor(std::string tenant_id, std::string visitor_id, callback<visitor_record> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id, v = std::move(visitor_id)](sql_connection& c) {
        return detail::get_visitor(c, t, v);
    });
}

void store_engine::get_conversation(std::string tenant_id, std::string conversation_id,
                                    callback<conversation_record> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id, id = std::move(conversation_id)](sql_connection& c) {
        return detail::get_conversation(c, t, id);
    });
}

void store_engine::list_conversations(conversation_query query, callback<conversation_page> done) {
    submit_read(query.tenant_id, std::move(done), [q = query, days = options_.retention_days](sql_connection& c) {
        return detail::list_conversations(c, q, days);
    });
}

void store_engine::get_activity(activity_query query, callback<activity_page> done) {
    submit_read(query.tenant_id, std::move(done), [q = query, days = options_.retention_days](sql_connection& c) {
        return detail::get_activity(c, q, days);
    });
}

void store_engine::get_transcript(std::string tenant_id, std::string conversation_id, std::int64_t after_seq,
                                  int limit, millis now, callback<message_page> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id, id = std::move(conversation_id), after_seq, limit, now,
                                  days = options_.retention_days](sql_connection& c) {
        return detail::get_transcript(c, t, id, after_seq, limit, now, days);
    });
}

void store_engine::messages_after(std::string tenant_id, std::string conversation_id, std::int64_t after_seq,
                                  int limit, millis now, callback<std::vector<message_record>> done) {
    submit_read(tenant_id, std::move(done), [t = tenant_id, id = std::move(conversation_id), after_seq, limit, now,
                                  days = options_.retention_days](sql_connection& c) {
        return detail::messages_after(c, t, id, after_seq, limit, now, days);
    });
}

result<open_state> store_engine::load_open_state(std::optional<std::string> tenant_id, millis now) {
    const std::string key = tenant_id.value_or("");
    return run_sync<open_state>(
        key, [t = std::move(tenant_id), now, days = options_.retention_days](sql_connection& c) {
            return detail::load_open_state(c, t, now, days);
        });
}

// Not on a reader thread: a prune can take minutes and would hold one of the
// few readers (interactive reads) all along.
result<prune_report> store_engine::prune(millis now, std::function<bool()> stop_requested) {
    std::unique_ptr<sql_connection> connection;
    try {
        connection = connect();
    } catch (...) {
        return classify_connect_failure(std::current_exception());
    }
    try {
        return detail::prune(*connection, now, options_.retention_days, options_.prune_batch, stop_requested);
    } catch (...) {
        connection->rollback();
        return connection->classify(std::current_exception());
    }
}

result<int> store_engine::schema_version() {
    return run_sync<int>("", [](sql_connection& c) { return detail::current_schema_version(c); });
}

}  // namespace parley::storage::detail
