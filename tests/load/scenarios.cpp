// The worker side of parley_load: simulated visitors and agents (and plain echo
// clients) on a few io_context threads, and the scenarios that drive them.
//
// Every client object lives on one io_context thread and records into that
// thread's `thread_stats`, so the hot path takes no lock; the worker merges the
// stats after the threads stop. Latency is measured with the monotonic clock:
// each message text starts with its (intended) send time in nanoseconds, and
// sender and receiver run on the same machine.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <semaphore>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "histogram.h"
#include "load.h"
#include "load_client.h"
#include "parley/server/auth.h"

namespace parley::load {
namespace {

using json = nlohmann::json;

struct thread_stats {
    std::map<std::string, latency_histogram> histograms;
    std::map<std::string, std::uint64_t> counters;
    latency_histogram& histogram(const std::string& name) { return histograms[name]; }
    std::uint64_t& counter(const std::string& name) { return counters[name]; }
};

// What every client reads: the options and the phase of the run.
struct run_state {
    const options* opt = nullptr;
    tcp::endpoint server;
    std::atomic<bool> measuring{false};
    std::atomic<bool> stopping{false};
    std::atomic<int> phase{0};  // slow: 1 = everyone reads, 2 = slow consumers stopped reading
    std::atomic<int> error_frames_logged{0};
    std::string padding;        // text after the timestamp, to reach `size` characters
    std::string flood_text;     // slow: what agents send to slow consumers
    std::atomic<std::uint64_t> next_connection{0};
    std::uint64_t connection_base = 0;  // this process's first global connection number
};

void log_error_frame(run_state& rs, std::string_view who, std::string_view frame) {
    if (rs.error_frames_logged.fetch_add(1) < 5)
        std::cerr << "parley_load: " << who << " got " << frame.substr(0, 300) << "\n";
}

std::optional<asio::ip::address> source_for(run_state& rs) {
    auto number = rs.connection_base + rs.next_connection.fetch_add(1);
    auto per_source = static_cast<std::uint64_t>(std::max(1, rs.opt->connections_per_source));
    auto index = number / per_source;
    if (index == 0 || !rs.server.address().is_loopback()) return std::nullopt;
    asio::ip::address_v4::bytes_type bytes{127, 0, 0, static_cast<unsigned char>(1 + index % 250)};
    return asio::ip::make_address_v4(bytes);
}

std::uint64_t timestamp_of(std::string_view text) {
    std::uint64_t ts = 0;
    std::from_chars(text.data(), text.data() + text.size(), ts);
    return ts;
}

std::string send_frame(run_state& rs, std::string_view conversation_id, std::uint64_t ts, char kind,
                       const std::string* text_override = nullptr) {
    std::string frame;
    frame.reserve(160 + rs.padding.size());
    auto ts_text = std::to_string(ts);
    frame += "{\"type\":\"send\",";
    if (rs.opt->with_ack_id) {
        frame += "\"id\":\"";
        frame += kind;
        frame += ts_text;
        frame += "\",";
    }
    frame += "\"conversation_id\":\"";
    frame += conversation_id;
    frame += "\",\"text\":\"";
    frame += ts_text;
    frame += text_override ? *text_override : rs.padding;
    frame += "\",\"client_msg_id\":\"";
    frame += kind;
    frame += ts_text;
    frame += "\"}";
    return frame;
}

// ----- timing records of the routing storm, shared by visitors and agents ------
struct storm_record {
    std::uint64_t requested = 0, offered = 0, accept_sent = 0, joined = 0;
    bool measured = false;
};
struct storm_book {
    std::mutex mutex;
    std::unordered_map<std::string, storm_record> by_conversation;
    template <class F>
    void update(std::string_view conversation_id, F&& f) {
        std::lock_guard lock(mutex);
        f(by_conversation[std::string(conversation_id)]);
    }
};

// ----- agent ------------------------------------------------------------------
class agent_client {
public:
    agent_client(run_state& rs, thread_stats& st, asio::io_context& io, std::string id, std::string token)
        : rs_(rs), st_(st), io_(io), id_(std::move(id)), token_(std::move(token)) {}

    bool reply = true;          // answer every visitor message at once
    storm_book* storm = nullptr;
    std::vector<std::string> conversations;

    void start(std::function<void(bool)> ready) {
        ready_ = std::move(ready);
        conn_ = std::make_shared<ws_connection>(io_);
        conn_->on_frame = [this](std::string_view f) { on_frame(f); };
        conn_->on_closed = [this](error_code ec, std::uint16_t code) {
            if (!rs_.stopping) {
                ++st_.counter("unexpected_closes");
                if (rs_.error_frames_logged.fetch_add(1) < 5)
                    std::cerr << "parley_load: agent " << id_ << " closed: " << ec.message() << " code " << code << "\n";
            }
            if (ready_) std::exchange(ready_, nullptr)(false);
        };
        conn_->connect(rs_.server, source_for(rs_), "/v1/agent", [this](error_code ec) {
            if (ec) {
                ++st_.counter("connect_failures");
                if (ready_) std::exchange(ready_, nullptr)(false);
                return;
            }
            conn_->send(json{{"type", "hello"}, {"id", "h"}, {"token", token_}}.dump());
        });
    }

    // Sends `count` messages into each of its conversations; `acked` runs per ok.
    void send_burst(int count, std::function<void()> acked) {
        burst_acked_ = std::move(acked);
        for (const auto& c : conversations)
            for (int i = 0; i < count; ++i) conn_->send(send_frame(rs_, c, now_ns(), 'k'));
    }

    // Slow-consumer flood: big messages into `conversation`, one in flight each.
    void flood(const std::string& conversation) {
        flood_conversations_.push_back({conversation, 0});
        send_flood(flood_conversations_.size() - 1);
    }

private:
    void send_flood(std::size_t index) {
        auto& f = flood_conversations_[index];
        if (rs_.phase != 2 || rs_.stopping || f.bytes >= static_cast<std::uint64_t>(rs_.opt->flood_max_bytes)) return;
        f.bytes += rs_.flood_text.size();
        auto frame = "{\"type\":\"send\",\"id\":\"f" + std::to_string(index) + "\",\"conversation_id\":\"" +
                     f.conversation + "\",\"text\":\"" + rs_.flood_text + "\"}";
        conn_->send(std::move(frame));
        ++st_.counter("flood_messages");
    }

    void on_frame(std::string_view frame) {
        auto type = string_field(frame, "type");
        if (type == "message") return on_message(frame);
        if (type == "ok") {
            auto re = string_field(frame, "re");
            if (re.empty()) return;
            switch (re[0]) {
            case 's':
                ++st_.counter("acked");
                if (rs_.measuring) st_.histogram("ack").record(now_ns() - timestamp_of(re.substr(1)));
                return;
            case 'k':
                if (burst_acked_) burst_acked_();
                return;
            case 'f': {
                std::size_t index = 0;
                std::from_chars(re.data() + 1, re.data() + re.size(), index);
                if (index < flood_conversations_.size()) send_flood(index);
                return;
            }
            case 'a': {
                conversations.emplace_back(re.substr(1));
                if (storm) ++st_.counter("accepted");
                // The ok carries what the visitor wrote before it: those are delivered too.
                auto ok = json::parse(frame, nullptr, false);
                if (ok.is_object() && ok.contains("messages") && ok["messages"].is_array())
                    for (const auto& m : ok["messages"]) on_message(m.dump());
                return;
            }
            case 'h':
                if (ready_) std::exchange(ready_, nullptr)(true);
                return;
            default:
                return;
            }
        }
        if (type == "offer") {
            auto offer_id = string_field(frame, "offer_id");
            auto conversation_id = string_field(frame, "conversation_id");
            auto t = now_ns();
            conn_->send("{\"type\":\"accept\",\"id\":\"a" + std::string(conversation_id) + "\",\"offer_id\":\"" +
                        std::string(offer_id) + "\"}");
            if (storm) storm->update(conversation_id, [&](storm_record& r) {
                r.offered = t;
                r.accept_sent = now_ns();
            });
            return;
        }
        if (type == "ended" && storm) {
            auto c = string_field(frame, "conversation_id");
            std::erase(conversations, c);
            return;
        }
        if (type == "error") {
            auto re = string_field(frame, "re");
            // A flood write refused under load is counted, not fatal to the flood.
            if (!re.empty() && re[0] == 'f') {
                ++st_.counter("flood_refused");
                std::size_t index = 0;
                std::from_chars(re.data() + 1, re.data() + re.size(), index);
                if (index < flood_conversations_.size()) send_flood(index);  // the refusal paces the flood
                return;
            }
            ++st_.counter("error_replies");
            log_error_frame(rs_, "agent", frame);
        }
    }

    void on_message(std::string_view frame) {
        auto conversation_id = string_field(frame, "conversation_id");
        auto seq = integer_field(frame, "seq").value_or(0);
        auto& last = last_seq_[std::string(conversation_id)];
        if (seq <= last) ++st_.counter("protocol_errors");
        last = seq;
        auto text = string_field(frame, "text");
        auto now = now_ns();
        if (rs_.measuring) {
            ++st_.counter("delivered");
            bool slow_conversation = std::any_of(flood_conversations_.begin(), flood_conversations_.end(),
                                                 [&](const auto& f) { return f.conversation == conversation_id; });
            if (!slow_conversation) st_.histogram(rs_.phase == 2 ? "latency_slow_phase" : "latency").record(now - timestamp_of(text));
        }
        if (reply && !rs_.stopping) {
            conn_->send(send_frame(rs_, conversation_id, now, 's'));
            ++st_.counter("sent");
        }
    }

    struct flood_target {
        std::string conversation;
        std::uint64_t bytes;
    };
    run_state& rs_;
    thread_stats& st_;
    asio::io_context& io_;
    std::string id_;
    std::string token_;
    std::shared_ptr<ws_connection> conn_;
    std::function<void(bool)> ready_;
    std::function<void()> burst_acked_;
    std::unordered_map<std::string, std::int64_t> last_seq_;
    std::vector<flood_target> flood_conversations_;
};

// ----- visitor ----------------------------------------------------------------
class visitor_client {
public:
    enum class mode { idle, relay_max, relay_rate, storm, echo };

    visitor_client(run_state& rs, thread_stats& st, asio::io_context& io, mode m, std::string route)
        : rs_(rs), st_(st), io_(io), mode_(m), route_(std::move(route)), timer_(io) {}

    bool slow = false;
    storm_book* storm = nullptr;
    std::string conversation_id;
    bool joined = false;  // the agent joined: the conversation is active
    std::string resume_token;
    std::int64_t last_seq = 0;
    std::uint64_t messages_received = 0;

    // Connect, hello, and (relay, storm) request an agent; `done(true)` once
    // hello is answered (idle) or the agent joined (relay).
    void start(std::function<void(bool)> done) {
        done_ = std::move(done);
        open_connection(mode_ == mode::echo ? rs_.opt->path : "/v1/visitor", [this] {
            if (mode_ == mode::echo) return finish(true);
            conn_->send(json{{"type", "hello"}, {"id", "h"}, {"tenant", rs_.opt->tenant}}.dump());
        });
    }

    // Starts the traffic of relay or echo (on the client's thread).
    void begin_traffic(double interval_s, double offset_s) {
        if (mode_ == mode::relay_rate) {
            interval_ns_ = static_cast<std::uint64_t>(interval_s * 1e9);
            next_send_ns_ = now_ns() + static_cast<std::uint64_t>(offset_s * 1e9);
            schedule_next();
        } else {
            send_one(now_ns());
        }
    }

    void pause_reading() { if (conn_) conn_->pause_reading(); }
    void resume_reading(std::function<void(std::uint16_t)> closed) {
        closed_ = std::move(closed);
        if (conn_) conn_->resume_reading();
    }
    void drop() {
        if (conn_) conn_->abort();
        timer_.cancel();
    }

    // Reconnect storm: connect, hello with the resume token, resume after the
    // last seq seen; `done(latency_ns, replayed)` when the resume is answered.
    void reconnect(std::function<void(bool ok, std::uint64_t latency_ns, int replayed)> done) {
        reconnect_done_ = std::move(done);
        reconnect_started_ = now_ns();
        replayed_ = 0;
        resuming_ = true;
        open_connection("/v1/visitor", [this] {
            conn_->send(json{{"type", "hello"}, {"id", "h"}, {"tenant", rs_.opt->tenant},
                             {"resume_token", resume_token}}.dump());
        });
    }

private:
    void open_connection(const std::string& path, std::function<void()> connected) {
        conn_ = std::make_shared<ws_connection>(io_);
        conn_->on_frame = [this](std::string_view f) { on_frame(f); };
        conn_->on_closed = [this](error_code ec, std::uint16_t code) {
            if (closed_) return std::exchange(closed_, nullptr)(code ? code : 1);
            if (!rs_.stopping && !slow && mode_ != mode::storm) {
                ++st_.counter("unexpected_closes");
                if (rs_.error_frames_logged.fetch_add(1) < 5)
                    std::cerr << "parley_load: visitor closed: " << ec.message() << " code " << code << "\n";
            }
            finish(false);
            if (resuming_) std::exchange(reconnect_done_, nullptr)(false, 0, 0), resuming_ = false;
        };
        conn_->connect(rs_.server, source_for(rs_), path, [this, connected](error_code ec) {
            if (ec) {
                ++st_.counter("connect_failures");
                if (rs_.error_frames_logged.fetch_add(1) < 5)
                    std::cerr << "parley_load: connect failed: " << ec.message() << "\n";
                finish(false);
                if (resuming_) std::exchange(reconnect_done_, nullptr)(false, 0, 0), resuming_ = false;
                return;
            }
            connected();
        });
    }

    void finish(bool ok) {
        if (done_) std::exchange(done_, nullptr)(ok);
    }

    void schedule_next() {
        timer_.expires_at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(next_send_ns_)));
        timer_.async_wait([this](error_code ec) {
            if (ec || rs_.stopping || !conn_->is_open()) return;
            send_one(next_send_ns_);  // the intended time: a late send counts as latency
            next_send_ns_ += interval_ns_;
            schedule_next();
        });
    }

    void send_one(std::uint64_t ts) {
        if (rs_.stopping) return;
        // Echo frames have the size of Parley's: a conversation id is "c_" and 32 hex digits.
        static const std::string echo_conversation = "c_" + std::string(32, '0');
        conn_->send(send_frame(rs_, conversation_id.empty() ? echo_conversation : conversation_id, ts, 's'));
        ++st_.counter("sent");
    }

    void on_frame(std::string_view frame) {
        if (mode_ == mode::echo) {
            auto now = now_ns();
            if (rs_.measuring) {
                ++st_.counter("delivered");
                st_.histogram("latency").record(now - timestamp_of(string_field(frame, "text")));
            }
            return send_one(now_ns());
        }
        auto type = string_field(frame, "type");
        if (type == "message") return on_message(frame);
        if (type == "ok") {
            auto re = string_field(frame, "re");
            if (re.empty()) return;
            if (re[0] == 's') {
                ++st_.counter("acked");
                if (rs_.measuring) st_.histogram("ack").record(now_ns() - timestamp_of(re.substr(1)));
            } else if (re == "h") {
                resume_token = std::string(string_field(frame, "resume_token"));
                if (resuming_) {
                    conn_->send("{\"type\":\"resume\",\"id\":\"r\",\"conversation_id\":\"" + conversation_id +
                                "\",\"after_seq\":" + std::to_string(last_seq) + "}");
                } else if (mode_ == mode::idle) {
                    finish(true);
                } else {
                    if (storm) requested_ = now_ns();
                    conn_->send(json{{"type", "request_agent"}, {"id", "q"}, {"route", route_},
                                     {"client_key", "k1"}}.dump());
                }
            } else if (re == "q") {
                conversation_id = std::string(string_field(frame, "conversation_id"));
                if (storm) storm->update(conversation_id, [&](storm_record& r) {
                    r.requested = requested_;
                    r.measured = rs_.measuring;
                });
            } else if (re == "r") {
                resuming_ = false;
                if (reconnect_done_)
                    std::exchange(reconnect_done_, nullptr)(true, now_ns() - reconnect_started_, replayed_);
            }
            return;
        }
        if (type == "agent_joined") {
            joined = true;
            if (storm) {
                auto t = now_ns();
                storm->update(conversation_id, [&](storm_record& r) { r.joined = t; });
                conn_->send("{\"type\":\"end_chat\",\"id\":\"e\",\"conversation_id\":\"" + conversation_id + "\"}");
                conn_->close();
            }
            return finish(true);
        }
        if (type == "error") {
            ++st_.counter("error_replies");
            log_error_frame(rs_, "visitor", frame);
            if (string_field(frame, "re") == "q" || string_field(frame, "re") == "h") finish(false);
            return;
        }
        if (type == "fallback" && storm) {
            ++st_.counter("fallbacks");  // every agent busy: the storm outran capacity
            conn_->close();
            return finish(false);
        }
        if (type == "fallback" || (type == "ended" && !storm)) {
            ++st_.counter("protocol_errors");  // no agent: the setup promised capacity
            log_error_frame(rs_, "visitor", frame);
            finish(false);
        }
    }

    void on_message(std::string_view frame) {
        auto seq = integer_field(frame, "seq").value_or(0);
        if (seq <= last_seq) ++st_.counter("protocol_errors");
        last_seq = seq;
        ++messages_received;
        if (resuming_) {
            ++replayed_;
            return;
        }
        auto now = now_ns();
        if (rs_.measuring) {
            ++st_.counter("delivered");
            if (!slow) st_.histogram(rs_.phase == 2 ? "latency_slow_phase" : "latency").record(now - timestamp_of(string_field(frame, "text")));
        }
        if (mode_ == mode::relay_max) send_one(now);
    }

    run_state& rs_;
    thread_stats& st_;
    asio::io_context& io_;
    mode mode_;
    std::string route_;
    std::shared_ptr<ws_connection> conn_;
    asio::steady_timer timer_;
    std::function<void(bool)> done_;
    std::function<void(std::uint16_t)> closed_;
    std::function<void(bool, std::uint64_t, int)> reconnect_done_;
    std::uint64_t interval_ns_ = 0, next_send_ns_ = 0, requested_ = 0, reconnect_started_ = 0;
    bool resuming_ = false;
    int replayed_ = 0;
};

// ----- the worker: io threads plus a control thread that runs the scenario ----
class completion_counter {
public:
    void add(int n = 1) {
        std::lock_guard lock(mutex_);
        done_ += n;
        cv_.notify_all();
    }
    // Waits until `target` completions or `timeout`; returns completions so far.
    int wait_for(int target, std::chrono::duration<double> timeout) {
        std::unique_lock lock(mutex_);
        cv_.wait_for(lock, timeout, [&] { return done_ >= target; });
        return done_;
    }
    void reset() {
        std::lock_guard lock(mutex_);
        done_ = 0;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    int done_ = 0;
};

class worker {
public:
    worker(const options& opt, int index) : opt_(opt), index_(index) {
        rs_.opt = &opt_;
        rs_.server = tcp::endpoint(asio::ip::make_address(opt.host), opt.port);
        auto digits = std::to_string(now_ns()).size();
        rs_.padding = " " + std::string(static_cast<std::size_t>(std::max<int>(0, opt.size - static_cast<int>(digits) - 1)), 'x');
        rs_.flood_text = std::string(static_cast<std::size_t>(opt.flood_chars), 'f');
        std::uint64_t base = 0;
        for (int p = 0; p < index; ++p) base += static_cast<std::uint64_t>(share_of(connections_needed(opt), p, opt.process_count));
        rs_.connection_base = base;
        for (int i = 0; i < std::max(1, opt.threads); ++i) slots_.push_back(std::make_unique<slot>());
        for (auto& s : slots_) s->thread = std::thread([io = &s->io] { io->run(); });
    }

    // Runs `f(slot_index)` on the io thread that owns slot `i`.
    template <class F>
    void on_slot(std::size_t i, F&& f) {
        asio::post(slots_[i % slots_.size()]->io, std::forward<F>(f));
    }
    std::size_t slot_count() const { return slots_.size(); }
    asio::io_context& io(std::size_t i) { return slots_[i % slots_.size()]->io; }
    thread_stats& stats(std::size_t i) { return slots_[i % slots_.size()]->stats; }
    run_state& rs() { return rs_; }
    const options& opt() const { return opt_; }
    int index() const { return index_; }

    // Stops the io threads (connections are left to the process exit) and merges stats.
    json finish(double measured_s, json extra) {
        rs_.stopping = true;
        for (auto& s : slots_) s->work.reset(), s->io.stop();
        for (auto& s : slots_) s->thread.join();
        thread_stats total;
        for (auto& s : slots_) {
            for (auto& [name, h] : s->stats.histograms) total.histograms[name].merge(h);
            for (auto& [name, n] : s->stats.counters) total.counters[name] += n;
        }
        json hist = json::object();
        for (auto& [name, h] : total.histograms) hist[name] = h.to_json();
        return {{"ok", true}, {"duration_s", measured_s}, {"counters", total.counters}, {"histograms", hist},
                {"extra", extra}};
    }

    // Starts `count` clients with at most `concurrency` setups in flight;
    // `start(i, done)` runs on client i's io thread. Returns how many succeeded.
    int start_all(int count, const std::function<void(int, std::function<void(bool)>)>& start,
                  std::chrono::seconds timeout = std::chrono::seconds(120)) {
        // Shared: a setup still running after the timeout must not outlive them.
        struct progress {
            explicit progress(int window_size) : window(window_size) {}
            std::counting_semaphore<1 << 20> window;
            std::atomic<int> succeeded{0};
            completion_counter finished;
        };
        auto state = std::make_shared<progress>(std::max(1, opt_.concurrency));
        auto deadline = std::chrono::steady_clock::now() + timeout;
        for (int i = 0; i < count; ++i) {
            if (!state->window.try_acquire_until(deadline)) break;
            on_slot(static_cast<std::size_t>(i), [state, start, i] {
                start(i, [state](bool ok) {
                    if (ok) ++state->succeeded;
                    state->window.release();
                    state->finished.add();
                });
            });
        }
        state->finished.wait_for(count, deadline - std::chrono::steady_clock::now());
        return state->succeeded.load();
    }

private:
    struct slot {
        asio::io_context io{1};
        asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
        thread_stats stats;
        std::thread thread;
    };
    options opt_;
    int index_;
    run_state rs_;
    std::vector<std::unique_ptr<slot>> slots_;
};

void write_line(int fd, const std::string& line) {
    std::string data = line + "\n";
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
        auto n = ::write(fd, p, left);
        if (n <= 0) return;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

bool wait_go(int ready_fd, int go_fd) {
    write_line(ready_fd, "ready");
    char c = 0;
    while (::read(go_fd, &c, 1) == 1)
        if (c == '\n') return true;
    return false;
}

void sleep_s(double s) { std::this_thread::sleep_for(std::chrono::duration<double>(s)); }

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

std::string agent_token(const options& opt, const std::string& agent_id) {
    return server::mint_agent_token(opt.agent_secret, opt.tenant, agent_id, std::chrono::hours(12),
                                    std::chrono::system_clock::now());
}

// Agents (ceil(n/10)) and n visitors, each visitor in an active conversation.
struct conversation_set {
    std::vector<std::unique_ptr<agent_client>> agents;
    std::vector<std::unique_ptr<visitor_client>> visitors;
    int agents_ready = 0;
    int established = 0;
};

conversation_set establish(worker& w, int n, visitor_client::mode m) {
    conversation_set set;
    int agent_count = agents_for(n);
    set.agents.resize(static_cast<std::size_t>(agent_count));
    set.agents_ready = w.start_all(agent_count, [&](int i, std::function<void(bool)> done) {
        auto id = agent_id_of(w.opt(), w.index(), i);
        auto slot = static_cast<std::size_t>(i);
        set.agents[slot] = std::make_unique<agent_client>(w.rs(), w.stats(slot), w.io(slot), id, agent_token(w.opt(), id));
        set.agents[slot]->start(std::move(done));
    });
    set.visitors.resize(static_cast<std::size_t>(n));
    set.established = w.start_all(n, [&](int i, std::function<void(bool)> done) {
        auto slot = static_cast<std::size_t>(i);
        set.visitors[slot] = std::make_unique<visitor_client>(w.rs(), w.stats(slot), w.io(slot), m, route_of(w.opt(), w.index()));
        set.visitors[slot]->start(std::move(done));
    });
    return set;
}

json setup_extra(const conversation_set& set, int wanted) {
    return {{"agents_ready", set.agents_ready}, {"conversations", set.established},
            {"setup_failures", (agents_for(wanted) - set.agents_ready) + (wanted - set.established)}};
}

// relay / durable / slow: conversations exchanging messages visitor <-> agent.
// Records what the clients see for `seconds`; returns the seconds actually measured.
double measure_for(worker& w, double seconds) {
    w.rs().measuring = true;
    auto started = clock_type::now();
    sleep_s(seconds);
    w.rs().measuring = false;
    return seconds_since(started);
}

json run_relay(worker& w, int ready_fd, int go_fd, bool slow_consumers) {
    const auto& opt = w.opt();
    int n = share_of(opt.conversations, w.index(), opt.process_count);
    bool fixed_rate = opt.rate > 0 || slow_consumers;
    auto mode = fixed_rate ? visitor_client::mode::relay_rate : visitor_client::mode::relay_max;
    auto set = establish(w, n, mode);
    auto extra = setup_extra(set, n);

    // Slow consumers: every k-th conversation; its agent floods it in phase 2.
    std::vector<std::size_t> slow;
    if (slow_consumers && n > 0) {
        auto every = static_cast<std::size_t>(std::max(1.0, std::round(1.0 / std::max(1e-6, opt.slow_fraction))));
        for (std::size_t i = 0; i < static_cast<std::size_t>(n); i += every) slow.push_back(i);
        for (auto i : slow) set.visitors[i]->slow = true;
    }
    if (!wait_go(ready_fd, go_fd)) return {{"ok", false}, {"error", "no go"}};

    double rate = opt.rate > 0 ? opt.rate : 10.0 * n;  // slow without --rate: 10 messages/s per conversation
    double per_process_rate = opt.rate > 0 ? opt.rate / opt.process_count : rate;
    double interval = per_process_rate > 0 ? n / per_process_rate : 1;
    for (std::size_t i = 0; i < set.visitors.size(); ++i) {
        if (!set.visitors[i] || !set.visitors[i]->joined) continue;
        double offset = interval * static_cast<double>(i) / static_cast<double>(std::max(1, n));
        w.on_slot(i, [v = set.visitors[i].get(), interval, offset] { v->begin_traffic(interval, offset); });
    }
    sleep_s(opt.warmup_s);
    w.rs().phase = 1;
    w.rs().measuring = true;
    auto started = clock_type::now();
    if (!slow_consumers) {
        sleep_s(opt.duration_s);
    } else {
        sleep_s(opt.duration_s / 2);
        w.rs().phase = 2;
        // Find each slow conversation's agent and start the flood there.
        for (auto i : slow) {
            auto* v = set.visitors[i].get();
            w.on_slot(i, [v] { v->pause_reading(); });
        }
        for (std::size_t a = 0; a < set.agents.size(); ++a) {
            if (!set.agents[a]) continue;
            w.on_slot(a, [&, a] {
                auto* agent = set.agents[a].get();
                for (auto i : slow) {
                    const auto& c = set.visitors[i]->conversation_id;
                    if (std::find(agent->conversations.begin(), agent->conversations.end(), c) != agent->conversations.end())
                        agent->flood(c);
                }
            });
        }
        sleep_s(opt.duration_s / 2);
    }
    w.rs().measuring = false;
    double measured = seconds_since(started);
    if (slow_consumers) {
        // Let the slow consumers read again: the server should have closed them (1013).
        w.rs().phase = 3;
        struct close_tally {
            completion_counter closed;
            std::atomic<int> closed_1013{0};
        };
        auto tally = std::make_shared<close_tally>();
        for (auto i : slow) {
            auto* v = set.visitors[i].get();
            w.on_slot(i, [v, tally] {
                v->resume_reading([tally](std::uint16_t code) {
                    if (code == 1013) ++tally->closed_1013;
                    tally->closed.add();
                });
            });
        }
        int closed_count = tally->closed.wait_for(static_cast<int>(slow.size()), std::chrono::seconds(opt.smoke ? 2 : 5));
        extra["slow_consumers"] = slow.size();
        extra["slow_closed"] = closed_count;
        extra["slow_closed_1013"] = tally->closed_1013.load();
    }
    return w.finish(measured, extra);
}

json run_echo(worker& w, int ready_fd, int go_fd) {
    const auto& opt = w.opt();
    int n = share_of(opt.conversations, w.index(), opt.process_count);
    std::vector<std::unique_ptr<visitor_client>> clients(static_cast<std::size_t>(n));
    int connected = w.start_all(n, [&](int i, std::function<void(bool)> done) {
        auto slot = static_cast<std::size_t>(i);
        clients[slot] = std::make_unique<visitor_client>(w.rs(), w.stats(slot), w.io(slot), visitor_client::mode::echo, "");
        clients[slot]->start(std::move(done));
    });
    json extra{{"connections", connected}, {"setup_failures", n - connected}};
    if (!wait_go(ready_fd, go_fd)) return {{"ok", false}, {"error", "no go"}};
    for (std::size_t i = 0; i < clients.size(); ++i)
        if (clients[i]) w.on_slot(i, [c = clients[i].get()] { c->begin_traffic(0, 0); });
    sleep_s(opt.warmup_s);
    return w.finish(measure_for(w, opt.duration_s), extra);
}

json run_idle(worker& w, int ready_fd, int go_fd) {
    const auto& opt = w.opt();
    int n = share_of(opt.connections, w.index(), opt.process_count);
    std::vector<std::unique_ptr<visitor_client>> visitors(static_cast<std::size_t>(n));
    auto setup_started = clock_type::now();
    int connected = w.start_all(n, [&](int i, std::function<void(bool)> done) {
        auto slot = static_cast<std::size_t>(i);
        visitors[slot] = std::make_unique<visitor_client>(w.rs(), w.stats(slot), w.io(slot), visitor_client::mode::idle, "");
        visitors[slot]->start(std::move(done));
    }, std::chrono::seconds(300));
    json extra{{"connections", connected}, {"setup_failures", n - connected},
               {"connect_seconds", seconds_since(setup_started)}};
    if (!wait_go(ready_fd, go_fd)) return {{"ok", false}, {"error", "no go"}};
    return w.finish(measure_for(w, opt.duration_s), extra);
}

json run_storm(worker& w, int ready_fd, int go_fd) {
    const auto& opt = w.opt();
    int agent_count = std::max(1, share_of(opt.agents, w.index(), opt.process_count));
    storm_book book;
    std::vector<std::unique_ptr<agent_client>> agents(static_cast<std::size_t>(agent_count));
    int agents_ready = w.start_all(agent_count, [&](int i, std::function<void(bool)> done) {
        auto slot = static_cast<std::size_t>(i);
        auto id = agent_id_of(w.opt(), w.index(), i);
        agents[slot] = std::make_unique<agent_client>(w.rs(), w.stats(slot), w.io(slot), id, agent_token(opt, id));
        agents[slot]->reply = false;
        agents[slot]->storm = &book;
        agents[slot]->start(std::move(done));
    });
    if (!wait_go(ready_fd, go_fd)) return {{"ok", false}, {"error", "no go"}};

    // Visitors arrive on a fixed schedule, spread over the io threads.
    double rate = (opt.rate > 0 ? opt.rate : 100.0) / opt.process_count;
    std::mutex visitors_mutex;
    std::vector<std::unique_ptr<visitor_client>> visitors;
    std::atomic<int> joined{0}, failed{0};
    auto interval = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * static_cast<double>(w.slot_count()) / rate));
    std::vector<std::unique_ptr<asio::steady_timer>> timers;
    std::function<void(std::size_t)> arrive;
    for (std::size_t s = 0; s < w.slot_count(); ++s) timers.push_back(std::make_unique<asio::steady_timer>(w.io(s)));
    arrive = [&](std::size_t s) {
        if (w.rs().stopping) return;
        auto v = std::make_unique<visitor_client>(w.rs(), w.stats(s), w.io(s), visitor_client::mode::storm, route_of(w.opt(), w.index()));
        v->storm = &book;
        v->start([&](bool ok) { ok ? ++joined : ++failed; });
        {
            std::lock_guard lock(visitors_mutex);
            visitors.push_back(std::move(v));
        }
        auto& t = *timers[s];
        t.expires_at(t.expiry() + interval);
        t.async_wait([&, s](error_code ec) { if (!ec) arrive(s); });
    };
    for (std::size_t s = 0; s < w.slot_count(); ++s) {
        w.on_slot(s, [&, s] {
            timers[s]->expires_after(interval * static_cast<std::int64_t>(s) / static_cast<std::int64_t>(w.slot_count()));
            timers[s]->async_wait([&, s](error_code ec) { if (!ec) arrive(s); });
        });
    }
    sleep_s(opt.warmup_s);
    const double measured = measure_for(w, opt.duration_s);
    for (std::size_t s = 0; s < w.slot_count(); ++s) w.on_slot(s, [&, s] { timers[s]->cancel(); });
    sleep_s(opt.smoke ? 1.0 : 2.0);  // let chats requested at the end complete

    latency_histogram to_offer, accept_to_joined, request_to_joined;
    std::uint64_t measured_requests = 0, completed = 0;
    {
        std::lock_guard lock(book.mutex);
        for (const auto& [id, r] : book.by_conversation) {
            if (!r.measured || !r.requested) continue;
            ++measured_requests;
            if (r.offered) to_offer.record(r.offered - r.requested);
            if (r.joined && r.accept_sent) accept_to_joined.record(r.joined - r.accept_sent);
            if (r.joined) {
                request_to_joined.record(r.joined - r.requested);
                ++completed;
            }
        }
    }
    json extra{{"agents_ready", agents_ready}, {"setup_failures", agent_count - agents_ready},
               {"requests", measured_requests}, {"chats_completed", completed},
               {"chats_incomplete", measured_requests - completed}};
    auto result = w.finish(measured, extra);
    result["histograms"]["request_to_offer"] = to_offer.to_json();
    result["histograms"]["accept_to_joined"] = accept_to_joined.to_json();
    result["histograms"]["request_to_joined"] = request_to_joined.to_json();
    result["counters"]["delivered"] = completed;  // throughput: chats routed per second
    return result;
}

json run_reconnect(worker& w, int ready_fd, int go_fd) {
    const auto& opt = w.opt();
    int n = share_of(opt.conversations, w.index(), opt.process_count);
    auto set = establish(w, n, visitor_client::mode::relay_rate);
    // One exchange each so both sides have seen a seq.
    for (std::size_t i = 0; i < set.visitors.size(); ++i)
        if (set.visitors[i] && set.visitors[i]->joined)
            w.on_slot(i, [v = set.visitors[i].get()] { v->begin_traffic(3600, 0); });
    sleep_s(opt.smoke ? 0.5 : 2.0);
    auto extra = setup_extra(set, n);
    if (!wait_go(ready_fd, go_fd)) return {{"ok", false}, {"error", "no go"}};

    w.rs().measuring = true;
    auto started = clock_type::now();
    int rounds = 0;
    double storm_seconds = 0;
    std::uint64_t reconnected = 0, replay_mismatches = 0, reconnect_failures = 0;
    latency_histogram reconnect_latency;
    std::mutex latency_mutex;
    int live = 0;
    for (const auto& v : set.visitors) live += v && v->joined ? 1 : 0;
    // Shared with the io threads, which may still call back after a timeout.
    struct round_state {
        explicit round_state(int window_size) : window(window_size) {}
        completion_counter acked, done;
        std::counting_semaphore<1 << 20> window;
    };
    do {
        auto round = std::make_shared<round_state>(std::max(1, opt.concurrency));
        // 1. every visitor drops at once
        for (std::size_t i = 0; i < set.visitors.size(); ++i)
            if (set.visitors[i] && set.visitors[i]->joined)
                w.on_slot(i, [v = set.visitors[i].get()] { v->drop(); });
        sleep_s(0.3);
        // 2. agents write while the visitors are away
        int expected_acks = live * opt.resume_messages;
        for (std::size_t a = 0; a < set.agents.size(); ++a)
            if (set.agents[a])
                w.on_slot(a, [agent = set.agents[a].get(), round, count = opt.resume_messages] {
                    agent->send_burst(count, [round] { round->acked.add(); });
                });
        round->acked.wait_for(expected_acks, std::chrono::seconds(60));
        // 3. the storm: everyone reconnects and resumes
        auto storm_started = clock_type::now();
        for (std::size_t i = 0; i < set.visitors.size(); ++i) {
            if (!set.visitors[i] || !set.visitors[i]->joined) continue;
            round->window.acquire();
            w.on_slot(i, [&, round, v = set.visitors[i].get()] {
                v->reconnect([&, round](bool ok, std::uint64_t latency, int replayed) {
                    if (ok) {
                        std::lock_guard lock(latency_mutex);
                        reconnect_latency.record(latency);
                        ++reconnected;
                        if (replayed != opt.resume_messages) ++replay_mismatches;
                    } else {
                        ++reconnect_failures;
                    }
                    round->window.release();
                    round->done.add();
                });
            });
        }
        round->done.wait_for(live, std::chrono::seconds(120));
        storm_seconds += seconds_since(storm_started);
        ++rounds;
    } while (seconds_since(started) < opt.duration_s);
    w.rs().measuring = false;
    double measured = seconds_since(started);
    extra["rounds"] = rounds;
    extra["storm_seconds"] = storm_seconds;
    extra["reconnected"] = reconnected;
    extra["reconnect_failures"] = reconnect_failures;
    auto result = w.finish(measured, extra);
    result["histograms"]["reconnect"] = reconnect_latency.to_json();
    result["counters"]["protocol_errors"] = result["counters"].value("protocol_errors", 0) + replay_mismatches;
    // Throughput: reconnect-and-resume per second of storm.
    result["counters"]["delivered"] = reconnected;
    result["duration_s"] = storm_seconds;
    return result;
}

}  // namespace

int connections_needed(const options& opt) {
    if (opt.scenario == "idle") return opt.connections;
    if (opt.scenario == "echo") return opt.conversations;
    if (opt.scenario == "storm") return opt.agents + static_cast<int>(std::max(1.0, opt.rate));
    return opt.conversations + agents_for(opt.conversations);
}

int run_worker(const options& opt, int process_index, int ready_fd, int go_fd) {
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
    }
    json result;
    try {
        worker w(opt, process_index);
        if (opt.scenario == "relay" || opt.scenario == "durable") result = run_relay(w, ready_fd, go_fd, false);
        else if (opt.scenario == "slow") result = run_relay(w, ready_fd, go_fd, true);
        else if (opt.scenario == "echo") result = run_echo(w, ready_fd, go_fd);
        else if (opt.scenario == "idle") result = run_idle(w, ready_fd, go_fd);
        else if (opt.scenario == "storm") result = run_storm(w, ready_fd, go_fd);
        else if (opt.scenario == "reconnect") result = run_reconnect(w, ready_fd, go_fd);
        else result = {{"ok", false}, {"error", "unknown scenario " + opt.scenario}};
    } catch (const std::exception& e) {
        result = {{"ok", false}, {"error", e.what()}};
    }
    write_line(ready_fd, result.dump());
    std::fflush(nullptr);
    // Connections and objects are left to the kernel: tearing down thousands of
    // sessions one by one would only slow the next run down.
    ::_exit(result.value("ok", false) ? 0 : 1);
}

}  // namespace parley::load
