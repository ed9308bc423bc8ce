#pragma once
// Rules every store keeps, whatever holds its data (SQL through queries.cpp, or
// memory_tables.h): which options it runs with, the limits and cursors of paged
// reads, and where the retention window starts. Written once, so that the
// backends cannot drift apart on them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "parley/storage/records.h"
#include "parley/storage/result.h"
#include "parley/storage/store.h"

namespace parley::storage::detail {

// bad_request naming the first option no store can run with; nullopt when they are fine.
std::optional<error> check_options(const store_options& options);

// Reads never return what is older than this (messages, activities, conversations ended before it).
millis retention_cutoff(millis now, int retention_days);

// Where a newest-first page starts: after the row whose sort key is (time, id).
// Cursors are "<time>.<id>", the sort key of the last row of the previous page;
// without one, a page starts at the top.
struct conversation_cursor {
    millis time = 0;
    std::string id;
};
struct activity_cursor {
    millis time = 0;
    std::int64_t id = 0;  // activities are numbered by storage
};
// bad_request for a limit outside 1..100 or a malformed cursor.
result<conversation_cursor> conversation_page_start(int limit, const std::optional<std::string>& cursor);
result<activity_cursor> activity_page_start(int limit, const std::optional<std::string>& cursor);
std::string make_cursor(std::int64_t time, const std::string& id);

// A get_transcript page from the messages after after_seq, read with one more
// than `limit`: that one only says whether another page follows.
message_page transcript_page(std::vector<message_record> read, int limit);
// bad_request unless 1 <= limit <= max_message_page (get_transcript).
std::optional<error> check_transcript_limit(int limit);
// bad_request unless limit >= 1 (messages_after).
std::optional<error> check_messages_limit(int limit);

}  // namespace parley::storage::detail
