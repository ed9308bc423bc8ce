#pragma once
// A tenant's admin mutations (PUT and DELETE of agents, routes, accounts), one
// at a time. Each checks its invariants against the tenant's state (a
// fallback_route exists and forms no cycle, a route another falls back to is
// not deleted, an account's agent exists, the per-tenant caps), stores, applies
// and answers before the next one starts. Run side by side, two mutations
// could both pass their checks against the state neither had changed yet:
// a PUT naming r1 as fallback and a DELETE of r1, or r1 -> r2 and r2 -> r1.
//
// The others wait, in order, at most `max_waiting` of them; one more is
// answered 429 `rate_limited` at once. One whose turn comes after it waited
// longer than `max_wait` is answered 503 `unavailable` and not made: storage
// that takes its time with each change (an outage lets each take up to
// storage's unavailable_after) must not make the last of them wait minutes,
// and its client may have given up long before. Reads never wait here.
//
// A mutation's turn ends when it answers. One that never does (a step threw,
// a storage completion was dropped) answers 500 when the last copy of its
// `finish` goes away, and the turn ends all the same: the queue never stalls.
// After close() (the tenant stopped) the waiting ones and every later one are
// answered with the close reply; the running one still finishes.
//
// Not thread-safe: submit() and close() run on the tenant's strand; `finish`
// may be called, or dropped, on any thread.
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "net/body_stream.h"
#include "net/net.h"

namespace parley::server {

// A reply to an admin HTTP request: status and JSON (or text) body.
struct admin_reply {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    int retry_after_s = 0;  // > 0: sent as Retry-After
    // When set, the body comes from here, chunked, and `body` is unused.
    std::shared_ptr<body_stream> rest{};
};
using admin_done = std::function<void(admin_reply)>;

class admin_queue : public std::enable_shared_from_this<admin_queue> {
public:
    using strand_type = asio::strand<asio::io_context::executor_type>;
    // Runs on the strand with the tenant's turn; answers through `finish` exactly once,
    // directly or from a storage completion posted back to the strand.
    using mutation = std::function<void(admin_done finish)>;

    using clock_type = std::function<std::chrono::steady_clock::time_point()>;

    admin_queue(strand_type strand, std::size_t max_waiting, std::chrono::milliseconds max_wait,
                clock_type now = &std::chrono::steady_clock::now)
        : strand_(std::move(strand)), max_waiting_(max_waiting), max_wait_(max_wait), now_(std::move(now)) {}

    // On the strand: runs `m` now if no mutation is running, else queues it. A full
    // queue, or a closed one, answers `done` at once and never runs `m`.
    void submit(admin_done done, mutation m);
    // On the strand: answers the waiting mutations, and every later one, with `reply`.
    void close(admin_reply reply);

    bool running() const { return running_; }
    std::size_t waiting() const { return waiting_.size(); }

private:
    struct turn;
    void start(admin_done done, mutation m);
    void turn_ended();

    struct waiting_change {
        admin_done done;
        mutation run;
        std::chrono::steady_clock::time_point since;
    };

    strand_type strand_;
    const std::size_t max_waiting_;
    const std::chrono::milliseconds max_wait_;
    const clock_type now_;
    bool running_ = false;
    std::optional<admin_reply> closed_;
    std::deque<waiting_change> waiting_;
};

}  // namespace parley::server
