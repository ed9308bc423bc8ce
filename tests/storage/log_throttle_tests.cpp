// The log throttle (parley/storage/log_throttle.h, used by storage and the
// server) on a hand-moved clock.
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <sstream>

#include "parley/storage/log_throttle.h"

using parley::storage::log_throttle;
using namespace std::chrono_literals;

namespace {

struct captured_log {
    std::ostringstream text;
    spdlog::logger logger{"throttle-test", std::make_shared<spdlog::sinks::ostream_sink_st>(text)};
    explicit captured_log(const char* pattern = "%v") { logger.set_pattern(pattern); }
    std::string take() {
        auto lines = text.str();
        text.str({});
        return lines;
    }
};

}  // namespace

TEST_CASE("the log throttle admits a few events a second and reports how many it held back", "[storage][log]") {
    captured_log log;
    log_throttle throttle(3, "writes failed", spdlog::level::err);
    const auto start = log_throttle::clock::time_point{} + 100s;

    int admitted = 0;
    for (int i = 0; i < 10; ++i) admitted += throttle.admit(log.logger, start + i * 10ms) ? 1 : 0;
    CHECK(admitted == 3);
    CHECK(log.take().empty());  // the count waits for the window to end

    // The next window opens with the count of the last one, then admits again.
    CHECK(throttle.admit(log.logger, start + 1s));
    CHECK(log.take() == "7 more writes failed, not logged one by one\n");
    CHECK(throttle.admit(log.logger, start + 1500ms));
    CHECK(throttle.admit(log.logger, start + 1600ms));
    CHECK_FALSE(throttle.admit(log.logger, start + 1700ms));
    CHECK_FALSE(throttle.admit(log.logger, start + 1800ms));

    // Reported on demand (reconnect, shutdown), and only once.
    throttle.report_suppressed(log.logger);
    CHECK(log.take() == "2 more writes failed, not logged one by one\n");
    throttle.report_suppressed(log.logger);
    CHECK(log.take().empty());

    // A quiet window reports nothing.
    CHECK(throttle.admit(log.logger, start + 10s));
    CHECK(log.take().empty());
}

TEST_CASE("the log throttle reports what it held back at the level it was given", "[storage][log]") {
    captured_log log("%l: %v");
    const auto start = log_throttle::clock::time_point{} + 100s;
    // The server's refused hellos are logged at info, and so is their count.
    log_throttle refusals(1, "hello(s) refused", spdlog::level::info);
    CHECK(refusals.admit(log.logger, start));
    CHECK_FALSE(refusals.admit(log.logger, start + 10ms));
    CHECK_FALSE(refusals.admit(log.logger, start + 20ms));
    CHECK(refusals.admit(log.logger, start + 2s));
    CHECK(log.take() == "info: 2 more hello(s) refused, not logged one by one\n");

    log_throttle failures(1, "writes failed", spdlog::level::err);
    CHECK(failures.admit(log.logger, start));
    CHECK_FALSE(failures.admit(log.logger, start + 10ms));
    failures.report_suppressed(log.logger);
    CHECK(log.take() == "error: 1 more writes failed, not logged one by one\n");
}
