#pragma once
// The message pipeline of one open conversation, as state and rules only (no
// I/O, no clock): the seq counter, the outbox with at most one write in
// flight, the client_msg_ids already stored (resends answered without a
// storage round trip), the message cap, and the `ended` events that wait for
// the messages accepted before the end. The hub's shell (message_pipeline.cpp)
// submits what next() hands out, reports what storage said with settle(), and
// does the replies and the fan-out.
//
// Invariants:
//  - seq is gap-free from 1: a write gets last_seq + 1 when it is handed out,
//    and a failed or duplicate write gives it back (nothing was stored under it);
//  - at most one write is in flight, so writes are stored, acknowledged and
//    fanned out in seq order;
//  - `ended` events are released only when nothing is in flight or waiting.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "parley/storage/records.h"

namespace parley::server {

// A `send` (or a shared calendar) accepted for storage.
struct pending_write {
    storage::message_record message;  // seq and at assigned when handed out
    std::uint64_t origin_session = 0;
    std::optional<std::string> re;
    std::chrono::steady_clock::time_point received_at;
};

class conversation_pipeline {
public:
    static constexpr std::size_t max_outbox = 256;
    // Per conversation, to answer resends without a storage round trip. Under durability
    // commit, storage catches older ones; under relaxed (ok before the write) a resend
    // of an id older than this is acknowledged with a new seq that storage then drops.
    static constexpr std::size_t max_remembered_client_ids = 1024;

    conversation_pipeline() = default;
    // After a restart: the highest seq stored.
    explicit conversation_pipeline(std::int64_t last_seq) : last_seq_(last_seq) {}

    // The highest seq stored or being written.
    std::int64_t last_seq() const { return last_seq_; }
    // A write in flight or waiting: `ended` events wait, the conversation is not forgotten.
    bool busy() const { return writing_ || !outbox_.empty(); }
    bool outbox_full() const { return outbox_.size() >= max_outbox; }
    // Whether what is stored plus what waits already holds `cap` messages (seq is gap-free from 1).
    bool cap_reached(std::size_t cap) const {
        return last_seq_ + static_cast<std::int64_t>(outbox_.size()) >= static_cast<std::int64_t>(cap);
    }
    // The stored (seq, at) of a client_msg_id, if it is among the remembered ones.
    std::optional<std::pair<std::int64_t, std::int64_t>> stored(const std::string& client_msg_id) const;

    void enqueue(pending_write write) { outbox_.push_back(std::move(write)); }

    // What to do with the oldest waiting write.
    struct step {
        enum class kind {
            none,          // nothing waits, or a write is in flight
            answer_known,  // a resend of a stored client_msg_id: answer with seq/at, store nothing
            over_cap,      // the cap was lowered (a reload) since it was accepted: refuse it
            submit,        // store it: seq and at are assigned, the write is now in flight
        } what = kind::none;
        pending_write write;
        std::int64_t seq = 0;  // answer_known
        std::int64_t at = 0;   // answer_known
    };
    step next(std::size_t cap, storage::millis now);

    // Storage answered the write in flight. Returns true when it was stored now (the peer gets
    // the event); false when it failed or was already stored (a duplicate: answered, not fanned out).
    bool settle(const pending_write& write, bool failed, bool duplicate, std::int64_t seq, std::int64_t at);

    // `ended` events wait behind the writes accepted before the end.
    using ended_event = std::pair<bool /* to the agent */, std::shared_ptr<const std::string>>;
    void hold_ended(ended_event event) { ended_events_.push_back(std::move(event)); }
    // The held `ended` events, once nothing is in flight or waiting (else none).
    std::vector<ended_event> take_ended_if_idle();

    // The log says once per conversation that it reached the cap.
    bool first_cap_refusal() { return !std::exchange(cap_logged_, true); }

private:
    void remember(const std::string& client_msg_id, std::int64_t seq, std::int64_t at);

    std::int64_t last_seq_ = 0;
    std::deque<pending_write> outbox_;
    bool writing_ = false;
    std::vector<ended_event> ended_events_;
    std::unordered_map<std::string, std::pair<std::int64_t, std::int64_t>> stored_ids_;  // -> seq, at
    std::deque<std::string> stored_id_order_;                                            // oldest first
    bool cap_logged_ = false;
};

}  // namespace parley::server
