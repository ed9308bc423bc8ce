#pragma once
// A clock that only moves when a test moves it. The routing core takes `now`
// as a parameter, so tests hold one of these and pass `clock.now()`.
#include <chrono>

namespace parley::test {

class manual_clock {
public:
    using duration = std::chrono::milliseconds;
    using time_point = std::chrono::sys_time<duration>;

    explicit manual_clock(time_point start = time_point{duration{1'700'000'000'000}}) : now_(start) {}

    time_point now() const { return now_; }
    void advance(duration step) { now_ += step; }
    void set(time_point to) { now_ = to; }

private:
    time_point now_;
};

}  // namespace parley::test
