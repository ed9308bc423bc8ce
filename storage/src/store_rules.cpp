#include "store_rules.h"

#include <charconv>
#include <limits>

namespace parley::storage::detail {
namespace {

constexpr std::int64_t max_int64 = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t millis_per_day = 24LL * 3600 * 1000;

error bad_request(std::string message) { return {error_kind::bad_request, std::move(message)}; }

bool parse_integer(std::string_view text, std::int64_t& value) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc{} && end == text.data() + text.size();
}

// "<time>.<id>" split at its first dot; nullopt when it is not that.
std::optional<std::pair<std::int64_t, std::string>> split_cursor(const std::string& cursor) {
    auto dot = cursor.find('.');
    if (dot == std::string::npos || dot == 0) return std::nullopt;
    std::int64_t time = 0;
    if (!parse_integer(std::string_view(cursor).substr(0, dot), time)) return std::nullopt;
    return std::pair{time, cursor.substr(dot + 1)};
}

std::optional<error> check_list_limit(int limit) {
    if (limit < 1 || limit > 100) return bad_request("limit must be 1..100");
    return std::nullopt;
}

}  // namespace

std::optional<error> check_options(const store_options& o) {
    if (o.batch_max < 1) return bad_request("batch_max must be at least 1");
    if (o.queue_max < 1) return bad_request("queue_max must be at least 1");
    if (o.reader_threads < 1) return bad_request("reader_threads must be at least 1");
    if (o.reader_queue_max < 1) return bad_request("reader_queue_max must be at least 1");
    if (o.retention_days < 1) return bad_request("retention_days must be at least 1");
    if (o.prune_batch < 1) return bad_request("prune_batch must be at least 1");
    if (o.batch_delay.count() < 0) return bad_request("batch_delay must not be negative");
    if (o.reconnect_backoff_min.count() < 1 || o.reconnect_backoff_max < o.reconnect_backoff_min)
        return bad_request("reconnect backoff must satisfy 1 ms <= min <= max");
    return std::nullopt;
}

millis retention_cutoff(millis now, int retention_days) { return now - retention_days * millis_per_day; }

result<conversation_cursor> conversation_page_start(int limit, const std::optional<std::string>& cursor) {
    if (auto bad = check_list_limit(limit)) return *bad;
    if (!cursor) return conversation_cursor{max_int64, ""};
    auto parts = split_cursor(*cursor);
    if (!parts) return bad_request("malformed cursor");
    return conversation_cursor{parts->first, std::move(parts->second)};
}

result<activity_cursor> activity_page_start(int limit, const std::optional<std::string>& cursor) {
    if (auto bad = check_list_limit(limit)) return *bad;
    if (!cursor) return activity_cursor{max_int64, max_int64};
    auto parts = split_cursor(*cursor);
    activity_cursor start;
    if (!parts || !parse_integer(parts->second, start.id)) return bad_request("malformed cursor");
    start.time = parts->first;
    return start;
}

std::string make_cursor(std::int64_t time, const std::string& id) { return std::to_string(time) + "." + id; }

message_page transcript_page(std::vector<message_record> read, int limit) {
    message_page page;
    page.messages = std::move(read);
    if (page.messages.size() > static_cast<std::size_t>(limit)) {
        page.messages.pop_back();
        page.next_after_seq = page.messages.back().seq;
    }
    return page;
}

std::optional<error> check_transcript_limit(int limit) {
    if (limit < 1 || limit > max_message_page)
        return bad_request("limit must be 1.." + std::to_string(max_message_page));
    return std::nullopt;
}

std::optional<error> check_messages_limit(int limit) {
    if (limit < 1) return bad_request("limit must be positive");
    return std::nullopt;
}

}  // namespace parley::storage::detail

namespace parley::storage {

std::string cursor_after(const conversation_record& last) { return detail::make_cursor(last.started_at, last.id); }
std::string cursor_after(const activity_record& last) { return detail::make_cursor(last.at, std::to_string(last.id)); }

}  // namespace parley::storage
