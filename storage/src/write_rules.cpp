#include "write_rules.h"

#include <algorithm>

namespace parley::storage::detail {

std::shared_ptr<spdlog::logger> store_logger() {
    auto named = spdlog::get("store");
    return named ? named : spdlog::default_logger();
}

std::size_t queue_bound(const store_options& options, bool message) {
    return message ? options.queue_max : 2 * options.queue_max;
}

std::chrono::milliseconds expiry_poll(const store_options& options) {
    return std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(options.unavailable_after / 10),
                      std::chrono::milliseconds(10), std::chrono::milliseconds(500));
}

std::string conversation_row_key(const conversation_record& conversation) {
    std::string key = conversation.tenant_id;
    key += '\0';
    key += conversation.id;
    return key;
}

void count_batch(store_stats& stats, std::size_t writes) {
    ++stats.transactions_committed;
    stats.writes_committed += writes;
    stats.largest_batch = std::max<std::uint64_t>(stats.largest_batch, writes);
}

void log_relaxed_failure(log_throttle& throttle, const message_record& message, const error& why) {
    auto log = store_logger();
    if (!throttle.admit(*log)) return;
    log->error("relaxed write of message {}/{} seq {} failed after acknowledgement: {}", message.tenant_id,
               message.conversation_id, message.seq, why.message);
}

}  // namespace parley::storage::detail
