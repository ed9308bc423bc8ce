#pragma once
// A log-linear latency histogram in the manner of HdrHistogram: values below
// 256 have their own bucket; above that each power of two is split into 128
// equal sub-buckets, so every recorded value is known to within 1/128 (< 0.8%).
// Recording is one bit_width and a shift; merging adds counts, so per-thread
// and per-process histograms combine exactly.
#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace parley::load {

class latency_histogram {
public:
    static constexpr int sub_bucket_bits = 8;
    static constexpr std::uint64_t sub_bucket_count = 1u << sub_bucket_bits;  // 256
    static constexpr std::uint64_t half_count = sub_bucket_count / 2;        // 128
    static constexpr int max_shift = 40;  // values up to 2^48 ns (about 3 days)
    static constexpr std::size_t bucket_total = sub_bucket_count + max_shift * half_count;

    latency_histogram() : counts_(bucket_total, 0) {}

    void record(std::uint64_t value) {
        ++counts_[index_of(value)];
        ++total_;
        max_ = std::max(max_, value);
        min_ = std::min(min_, value);
    }

    void merge(const latency_histogram& other) {
        for (std::size_t i = 0; i < bucket_total; ++i) counts_[i] += other.counts_[i];
        total_ += other.total_;
        max_ = std::max(max_, other.max_);
        min_ = std::min(min_, other.min_);
    }

    std::uint64_t count() const { return total_; }
    std::uint64_t max() const { return total_ ? max_ : 0; }

    // The value at `quantile` (0..1): the midpoint of the bucket holding it,
    // clamped to the largest value seen.
    std::uint64_t value_at(double quantile) const {
        if (total_ == 0) return 0;
        auto rank = static_cast<std::uint64_t>(quantile * static_cast<double>(total_) + 0.5);
        rank = std::clamp<std::uint64_t>(rank, 1, total_);
        if (rank == total_) return max_;
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_total; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::min(midpoint_of(i), max_);
        }
        return max_;
    }

    // Sparse form for passing between processes: [[index, count], ...] plus max/min.
    nlohmann::json to_json() const {
        nlohmann::json buckets = nlohmann::json::array();
        for (std::size_t i = 0; i < bucket_total; ++i)
            if (counts_[i]) buckets.push_back({i, counts_[i]});
        return {{"buckets", buckets}, {"max", max()}, {"min", total_ ? min_ : 0}};
    }
    static latency_histogram from_json(const nlohmann::json& j) {
        latency_histogram h;
        for (const auto& b : j.at("buckets")) {
            auto i = b.at(0).get<std::size_t>();
            auto n = b.at(1).get<std::uint64_t>();
            if (i < bucket_total) {
                h.counts_[i] += n;
                h.total_ += n;
            }
        }
        if (h.total_) {
            h.max_ = j.at("max").get<std::uint64_t>();
            h.min_ = j.at("min").get<std::uint64_t>();
        }
        return h;
    }

    // Summary in microseconds (values are recorded in nanoseconds).
    nlohmann::json summary_us() const {
        auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
        return {{"count", total_}, {"p50", us(value_at(0.50))}, {"p99", us(value_at(0.99))},
                {"p99_9", us(value_at(0.999))}, {"max", us(max())}};
    }

    static std::size_t index_of(std::uint64_t value) {
        if (value < sub_bucket_count) return static_cast<std::size_t>(value);
        int shift = static_cast<int>(std::bit_width(value)) - sub_bucket_bits;
        if (shift > max_shift) return bucket_total - 1;
        return static_cast<std::size_t>(sub_bucket_count + static_cast<std::uint64_t>(shift - 1) * half_count +
                                        ((value >> shift) - half_count));
    }
    static std::uint64_t lowest_of(std::size_t index) {
        if (index < sub_bucket_count) return index;
        std::uint64_t rest = index - sub_bucket_count;
        int shift = static_cast<int>(rest / half_count) + 1;
        return (half_count + rest % half_count) << shift;
    }
    static std::uint64_t midpoint_of(std::size_t index) {
        if (index < sub_bucket_count) return index;
        int shift = static_cast<int>((index - sub_bucket_count) / half_count) + 1;
        return lowest_of(index) + ((std::uint64_t{1} << shift) >> 1);
    }

private:
    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    std::uint64_t max_ = 0;
    std::uint64_t min_ = UINT64_MAX;
};

}  // namespace parley::load
