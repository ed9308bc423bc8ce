#pragma once
// At most N log lines a second about one kind of event: a flood of bad input,
// or a storage outage (under durability relaxed it fails every queued message,
// one line per client send), must not become a flood of synchronous log writes
// on the I/O or storage threads. What is held back is counted; the count is
// logged when the next window opens, or by report_suppressed() (storage calls
// it on reconnect and at shutdown), so no event goes unaccounted for.
// Public so that the server, which links storage, uses this one too.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace parley::storage {

class log_throttle {
public:
    using clock = std::chrono::steady_clock;

    // `what` names the events in the summary line, e.g. "relaxed message write(s) failed";
    // `summary_level` is the level that line is logged at.
    log_throttle(unsigned per_second, std::string what, spdlog::level::level_enum summary_level)
        : per_second_(per_second), what_(std::move(what)), summary_level_(summary_level) {}

    // True when the caller may log this event now. Opening a new one-second
    // window first logs how many events the last one held back. Thread-safe.
    bool admit(spdlog::logger& log, clock::time_point now = clock::now()) {
        std::lock_guard lock(mutex_);
        if (now - window_start_ >= std::chrono::seconds(1)) {
            report(log);
            window_start_ = now;
            admitted_ = 0;
        }
        if (admitted_ < per_second_) {
            ++admitted_;
            return true;
        }
        ++suppressed_;
        return false;
    }

    // Logs the count held back since the last report, if any.
    void report_suppressed(spdlog::logger& log) {
        std::lock_guard lock(mutex_);
        report(log);
    }

private:
    void report(spdlog::logger& log) {  // mutex_ held
        if (suppressed_ == 0) return;
        log.log(summary_level_, "{} more {}, not logged one by one", suppressed_, what_);
        suppressed_ = 0;
    }

    const unsigned per_second_;
    const std::string what_;
    const spdlog::level::level_enum summary_level_;
    std::mutex mutex_;
    clock::time_point window_start_{};
    unsigned admitted_ = 0;
    std::uint64_t suppressed_ = 0;
};

}  // namespace parley::storage
