#include "base/metrics.h"

#include <fmt/format.h>

namespace parley::server {

void histogram::observe(double seconds) {
    std::size_t i = 0;
    while (i < bounds.size() && seconds > bounds[i]) ++i;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_microseconds_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void histogram::render(std::string& out, const char* name, const char* help) const {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds.size(); ++i) {
        cumulative += buckets_[i].load(std::memory_order_relaxed);
        out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds[i], cumulative);
    }
    cumulative += buckets_[bounds.size()].load(std::memory_order_relaxed);
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
    out += fmt::format("{}_sum {}\n", name, static_cast<double>(sum_microseconds_.load(std::memory_order_relaxed)) / 1e6);
    out += fmt::format("{}_count {}\n", name, count_.load(std::memory_order_relaxed));
}

namespace {

template <typename Atomic>
void metric(std::string& out, const char* type, const char* name, const char* help, const Atomic& value,
            const char* labels = "") {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}{} {}\n", name, help, name, type, name, labels,
                       value.load(std::memory_order_relaxed));
}

}  // namespace

std::string metrics::render() const {
    std::string out;
    out.reserve(8192);
    out += "# HELP parley_connections Open WebSocket connections by kind.\n# TYPE parley_connections gauge\n";
    out += fmt::format("parley_connections{{kind=\"visitor\"}} {}\n", visitor_connections.load());
    out += fmt::format("parley_connections{{kind=\"agent\"}} {}\n", agent_connections.load());
    metric(out, "gauge", "parley_websocket_session_objects",
           "WebSocket session objects alive, including closed ones not yet released.", websocket_session_objects);
    metric(out, "counter", "parley_frames_in_total", "WebSocket frames received from clients.", frames_in);
    metric(out, "counter", "parley_frames_out_total", "WebSocket frames sent to clients.", frames_out);
    out += "# HELP parley_chats_total Chat routing outcomes.\n# TYPE parley_chats_total counter\n";
    const std::pair<const char*, const counter*> chat_counters[] = {
        {"requested", &chats_requested}, {"offered", &chats_offered},   {"accepted", &chats_accepted},
        {"declined", &chats_declined},   {"expired", &chats_expired},   {"fallback", &chats_fallback},
        {"queued", &chats_queued}};
    for (const auto& [outcome, value] : chat_counters)
        out += fmt::format("parley_chats_total{{outcome=\"{}\"}} {}\n", outcome, value->load());
    metric(out, "counter", "parley_slow_consumer_closes_total", "Connections closed with 1013 for not reading.",
           slow_consumer_closes);
    metric(out, "counter", "parley_hello_refusals_total", "Hellos refused (bad, expired or unknown credentials).",
           hello_refusals);
    metric(out, "counter", "parley_connections_refused_total",
           "Connections closed at accept by limits.max_connections or limits.max_connections_per_ip.",
           connections_refused);
    metric(out, "counter", "parley_handler_exceptions_total", "Exceptions that escaped a handler (bugs; logged).",
           handler_exceptions);
    metric(out, "counter", "parley_rate_limited_frames_total", "Client frames refused by the rate limit.",
           rate_limited_frames);
    metric(out, "counter", "parley_protocol_errors_total", "Client frames answered with an error.", protocol_errors);
    metric(out, "gauge", "parley_queue_depth", "Conversations waiting in route queues.", queue_depth);
    out += fmt::format("# HELP parley_queue_oldest_wait_seconds Wait of the oldest queued conversation.\n"
                       "# TYPE parley_queue_oldest_wait_seconds gauge\nparley_queue_oldest_wait_seconds {}\n",
                       static_cast<double>(queue_oldest_wait_ms.load()) / 1000.0);
    metric(out, "gauge", "parley_agents_available", "Agents connected and available.", agents_available);
    metric(out, "gauge", "parley_capacity_in_use", "Active chats plus pending offers over all agents.",
           capacity_in_use);
    metric(out, "gauge", "parley_capacity_total", "Sum of max_chats of available agents.", capacity_total);
    metric(out, "counter", "parley_storage_errors_total", "Storage operations that failed.", storage_errors);
    metric(out, "counter", "parley_storage_batches_total", "Group-commit transactions.", storage_batches);
    metric(out, "counter", "parley_storage_writes_total", "Writes committed.", storage_writes);
    metric(out, "gauge", "parley_transcript_reads", "get_transcript requests and transcript.txt downloads in progress.",
           transcript_reads);
    metric(out, "counter", "parley_transcript_reads_refused_total",
           "Transcript reads refused by limits.max_transcript_reads_per_tenant.", transcript_reads_refused);
    metric(out, "counter", "parley_message_cap_refusals_total",
           "Messages refused by limits.max_messages_per_conversation.", message_cap_refusals);
    offer_to_accept_seconds.render(out, "parley_offer_to_accept_seconds", "Time from offer to accept.");
    storage_batch_seconds.render(out, "parley_storage_batch_seconds", "Duration of one group-commit transaction.");
    send_ack_seconds.render(out, "parley_send_ack_seconds", "Time from receiving a send to its ok.");
    return out;
}

metrics& global_metrics() {
    static metrics instance;
    return instance;
}

}  // namespace parley::server
