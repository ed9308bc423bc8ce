#pragma once
// Bounds how long a blocking database call may wait for its reply.
//
// libpq waits for a reply as long as the socket stays open. On a link that went
// silent, the kernel's tcp_user_timeout and keepalives end that wait only when
// our packets go unacknowledged; a peer whose TCP stack still acknowledges but
// never answers (a hung server, a half-dead proxy or NAT in between) keeps the
// caller blocked for ever: the writer then holds every queued write and never
// reports the store unready. The watchdog shuts the socket down (shutdown(2),
// both directions) once the limit passes, so the blocked call returns with a
// broken connection, which the engine treats like any lost connection.
//
// One thread per watchdog, shared by the connections of one store.
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>

namespace parley::storage::detail {

class reply_watchdog {
public:
    using clock = std::chrono::steady_clock;

    reply_watchdog() : thread_([this] { run(); }) {}
    ~reply_watchdog() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        changed_.notify_all();
        thread_.join();
    }
    reply_watchdog(const reply_watchdog&) = delete;
    reply_watchdog& operator=(const reply_watchdog&) = delete;

    // While an `armed` lives, `fd` is shut down if `limit` passes. The caller
    // keeps `fd` open until the `armed` is gone: shutting down is done under the
    // watchdog's lock, and disarming takes the same lock, so the watchdog never
    // touches a descriptor number that was closed and reused.
    class armed {
    public:
        armed(reply_watchdog& watchdog, int fd, std::chrono::milliseconds limit) : watchdog_(watchdog) {
            std::lock_guard lock(watchdog_.mutex_);
            id_ = watchdog_.next_id_++;
            const auto deadline = clock::now() + limit;
            watchdog_.deadlines_.emplace(id_, entry{fd, deadline, false});
            // Every call is armed: wake the thread only when it would otherwise
            // look too late (a context switch per query is not free).
            if (deadline < watchdog_.wake_at_) watchdog_.changed_.notify_all();
        }
        ~armed() {
            std::lock_guard lock(watchdog_.mutex_);
            watchdog_.deadlines_.erase(id_);
        }
        armed(const armed&) = delete;
        armed& operator=(const armed&) = delete;

        // True when the limit passed and the socket was shut down.
        bool fired() const {
            std::lock_guard lock(watchdog_.mutex_);
            auto it = watchdog_.deadlines_.find(id_);
            return it != watchdog_.deadlines_.end() && it->second.fired;
        }

    private:
        reply_watchdog& watchdog_;
        std::uint64_t id_ = 0;
    };

private:
    struct entry {
        int fd;
        clock::time_point deadline;
        bool fired;
    };

    void run() {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            auto next = clock::time_point::max();
            const auto now = clock::now();
            for (auto& [id, e] : deadlines_) {
                if (e.fired) continue;
                if (e.deadline <= now) {
                    ::shutdown(e.fd, SHUT_RDWR);
                    e.fired = true;
                } else {
                    next = std::min(next, e.deadline);
                }
            }
            wake_at_ = next;
            if (next == clock::time_point::max())
                changed_.wait(lock);
            else
                changed_.wait_until(lock, next);
        }
    }

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::map<std::uint64_t, entry> deadlines_;
    std::uint64_t next_id_ = 0;
    clock::time_point wake_at_ = clock::time_point::min();  // when run() looks next; min until it first waits
    bool stopping_ = false;
    std::thread thread_;  // last: starts once the members above exist
};

}  // namespace parley::storage::detail
