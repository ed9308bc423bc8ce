#pragma once
// How a store's write queue behaves, whatever runs its batches (store_engine on
// a SQL connection, the memory store on its tables): the bounds, how often
// waiting messages are checked against unavailable_after, which saves collapse
// into one, what a committed batch adds to the stats, and what is logged when a
// relaxed message fails after its sender was told ok. Written once, so that the
// engines keep store.h's promises alike.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "parley/storage/log_throttle.h"
#include "parley/storage/records.h"
#include "parley/storage/result.h"
#include "parley/storage/store.h"

namespace parley::storage::detail {

// The "store" logger when the server registered one, else the default.
std::shared_ptr<spdlog::logger> store_logger();

// How many queued writes refuse the next one: queue_max for a message, whose
// sender is told; twice that for a state write, which nobody waits for and
// which must not be lost in an outage.
std::size_t queue_bound(const store_options& options, bool message);

// How often waiting messages are checked against unavailable_after: a tenth
// of it, from 10 ms to 500 ms.
std::chrono::milliseconds expiry_poll(const store_options& options);

// Saves of one conversation row queued behind each other collapse into one
// write under this key: the last record wins, every caller is told.
std::string conversation_row_key(const conversation_record& conversation);

// A committed batch of `writes`, counted in `stats`.
void count_batch(store_stats& stats, std::size_t writes);

// A relaxed message whose write failed after its sender was told ok has nobody
// left to tell but the log; in an outage that is every message sent, so a few
// lines a second and a count of the rest (a log_throttle made with relaxed_failures).
inline constexpr const char* relaxed_failures = "relaxed message write(s) failed after acknowledgement";
void log_relaxed_failure(log_throttle& throttle, const message_record& message, const error& why);

}  // namespace parley::storage::detail
