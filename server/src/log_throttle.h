#pragma once
// At most N log lines per second from one source: a flood of bad input or a
// storage outage must not become a flood of synchronous log writes on the I/O
// threads. What is dropped is counted and reported with the next window.

#include <chrono>
#include <cstdint>
#include <mutex>

#include <spdlog/spdlog.h>

namespace parley::server {

class log_throttle {
public:
    log_throttle(int per_second, const char* what) : per_second_(per_second), what_(what) {}

    // True when the caller may log this event now.
    bool admit(spdlog::logger& log) {
        std::lock_guard lock(mutex_);
        auto now = std::chrono::steady_clock::now();
        if (now - window_start_ >= std::chrono::seconds(1)) {
            if (dropped_ > 0) log.info("{} more {} in the last second, not logged", dropped_, what_);
            window_start_ = now;
            admitted_ = 0;
            dropped_ = 0;
        }
        if (admitted_ < per_second_) {
            ++admitted_;
            return true;
        }
        ++dropped_;
        return false;
    }

private:
    const int per_second_;
    const char* const what_;
    std::mutex mutex_;
    std::chrono::steady_clock::time_point window_start_{};
    int admitted_ = 0;
    std::uint64_t dropped_ = 0;
};

}  // namespace parley::server
