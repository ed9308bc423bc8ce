// The load tool's latency histogram: bucket bounds, precision, quantiles, merging.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

#include "load/histogram.h"

using parley::load::latency_histogram;

TEST_CASE("every value maps to a bucket that contains it, within 1/128", "[load][histogram]") {
    std::mt19937_64 random(7);
    for (int i = 0; i < 200000; ++i) {
        std::uint64_t v = random() >> (random() % 30 + 18);
        auto index = latency_histogram::index_of(v);
        auto low = latency_histogram::lowest_of(index);
        REQUIRE(low <= v);
        REQUIRE(latency_histogram::index_of(low) == index);
        auto mid = latency_histogram::midpoint_of(index);
        REQUIRE(std::abs(static_cast<double>(mid) - static_cast<double>(v)) <= static_cast<double>(v) / 128.0 + 1.0);
    }
    for (std::uint64_t v = 0; v < 256; ++v) REQUIRE(latency_histogram::midpoint_of(latency_histogram::index_of(v)) == v);
}

TEST_CASE("quantiles of a known distribution", "[load][histogram]") {
    latency_histogram h;
    for (std::uint64_t v = 1; v <= 100000; ++v) h.record(v * 1000);  // 1 us .. 100 ms in ns
    REQUIRE(h.count() == 100000);
    REQUIRE(h.max() == 100000000);
    auto near = [](std::uint64_t got, double want) { return std::abs(static_cast<double>(got) - want) <= want / 100.0; };
    CHECK(near(h.value_at(0.5), 50e6));
    CHECK(near(h.value_at(0.99), 99e6));
    CHECK(near(h.value_at(0.999), 99.9e6));
    CHECK(h.value_at(1.0) == 100000000);
    CHECK(h.summary_us()["p50"].get<double>() == Approx(50000).epsilon(0.01));
}

TEST_CASE("histograms merge exactly, also through their JSON form", "[load][histogram]") {
    latency_histogram a, b;
    for (std::uint64_t v = 0; v < 1000; ++v) (v % 2 ? a : b).record(v * 997);
    latency_histogram merged = a;
    merged.merge(latency_histogram::from_json(b.to_json()));
    latency_histogram all;
    for (std::uint64_t v = 0; v < 1000; ++v) all.record(v * 997);
    REQUIRE(merged.count() == all.count());
    REQUIRE(merged.max() == all.max());
    for (double q : {0.1, 0.5, 0.9, 0.99, 0.999}) REQUIRE(merged.value_at(q) == all.value_at(q));
    REQUIRE(latency_histogram().value_at(0.5) == 0);
}
