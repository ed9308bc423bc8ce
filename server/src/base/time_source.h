#pragma once
// Where the tenant core reads time (Envoy's TimeSource idea): `monotonic` for
// durations and deadlines (offer-to-accept, send-to-ack), `wall` for every
// `*_at` that is stored or sent, and for the routing core's `now`. The core
// never reads a clock itself, so a test can hold a manual_time_source and move
// it by hand.
#include <chrono>

#include "parley/routing/actions.h"

namespace parley::server {

class time_source {
public:
    virtual ~time_source() = default;
    virtual std::chrono::steady_clock::time_point monotonic() const = 0;
    // The system clock at millisecond precision (what storage and the wire carry).
    virtual routing::time_point wall() const = 0;
};

// The process's clocks.
class real_time_source final : public time_source {
public:
    std::chrono::steady_clock::time_point monotonic() const override { return std::chrono::steady_clock::now(); }
    routing::time_point wall() const override {
        return std::chrono::time_point_cast<routing::duration>(std::chrono::system_clock::now());
    }
};

// Time that moves only when a test moves it; both clocks advance together.
class manual_time_source final : public time_source {
public:
    explicit manual_time_source(routing::time_point start = routing::time_point{routing::duration{1'700'000'000'000}})
        : wall_(start) {}
    std::chrono::steady_clock::time_point monotonic() const override { return monotonic_; }
    routing::time_point wall() const override { return wall_; }
    void advance(routing::duration step) {
        wall_ += step;
        monotonic_ += step;
    }

private:
    routing::time_point wall_;
    std::chrono::steady_clock::time_point monotonic_{};
};

}  // namespace parley::server
