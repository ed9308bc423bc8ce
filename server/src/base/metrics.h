#pragma once
// Process-wide counters, gauges and histograms, rendered in the Prometheus
// text format on GET /metrics. Updates are relaxed atomics: cheap on hot
// paths, never a lock.
#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace parley::server {

class histogram {
public:
    // Upper bounds in seconds; +Inf is implicit.
    static constexpr std::array<double, 14> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    void observe(double seconds);
    void render(std::string& out, const char* name, const char* help) const;

private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets_{};
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> sum_microseconds_{0};
};

struct metrics {
    using counter = std::atomic<std::uint64_t>;
    using gauge = std::atomic<std::int64_t>;

    gauge visitor_connections{0};
    gauge agent_connections{0};
    gauge websocket_session_objects{0};  // alive, closed or not: a leak shows here, not in the connection gauges
    counter frames_in{0};
    counter frames_out{0};
    counter chats_requested{0};
    counter chats_offered{0};
    counter chats_accepted{0};
    counter chats_declined{0};
    counter chats_expired{0};
    counter chats_fallback{0};
    counter chats_queued{0};
    counter slow_consumer_closes{0};
    counter handler_exceptions{0};
    counter hello_refusals{0};
    counter connections_refused{0};  // cut at accept: limits.max_connections or max_connections_per_ip
    counter rate_limited_frames{0};
    counter protocol_errors{0};
    gauge queue_depth{0};
    gauge queue_oldest_wait_ms{0};
    gauge agents_available{0};
    gauge capacity_in_use{0};
    gauge capacity_total{0};
    counter storage_errors{0};
    counter storage_batches{0};
    counter storage_writes{0};
    gauge transcript_reads{0};            // get_transcript requests and transcript.txt downloads in progress
    counter transcript_reads_refused{0};  // refused by limits.max_transcript_reads_per_tenant
    counter message_cap_refusals{0};      // sends refused by limits.max_messages_per_conversation
    histogram offer_to_accept_seconds;
    histogram storage_batch_seconds;
    histogram send_ack_seconds;

    std::string render() const;
};

// The one instance of the process.
metrics& global_metrics();

}  // namespace parley::server
