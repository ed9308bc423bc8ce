#include "tenant/conversation_pipeline.h"

namespace parley::server {

std::optional<std::pair<std::int64_t, std::int64_t>> conversation_pipeline::stored(
    const std::string& client_msg_id) const {
    auto known = stored_ids_.find(client_msg_id);
    if (known == stored_ids_.end()) return std::nullopt;
    return known->second;
}

conversation_pipeline::step conversation_pipeline::next(std::size_t cap, storage::millis now) {
    step s;
    if (writing_ || outbox_.empty()) return s;
    s.write = std::move(outbox_.front());
    outbox_.pop_front();
    if (s.write.message.client_msg_id)
        if (auto known = stored(*s.write.message.client_msg_id)) {
            s.what = step::kind::answer_known;
            s.seq = known->first;
            s.at = known->second;
            return s;
        }
    if (last_seq_ >= static_cast<std::int64_t>(cap)) {
        s.what = step::kind::over_cap;
        return s;
    }
    s.write.message.seq = ++last_seq_;
    s.write.message.at = now;
    writing_ = true;
    s.what = step::kind::submit;
    return s;
}

bool conversation_pipeline::settle(const pending_write& write, bool failed, bool duplicate, std::int64_t seq,
                                   std::int64_t at) {
    writing_ = false;
    if (failed || duplicate) last_seq_ = write.message.seq - 1;  // nothing was stored under it
    if (failed) return false;
    if (write.message.client_msg_id) remember(*write.message.client_msg_id, seq, at);
    return !duplicate;
}

std::vector<conversation_pipeline::ended_event> conversation_pipeline::take_ended_if_idle() {
    if (busy()) return {};
    return std::exchange(ended_events_, {});
}

void conversation_pipeline::remember(const std::string& client_msg_id, std::int64_t seq, std::int64_t at) {
    if (!stored_ids_.try_emplace(client_msg_id, seq, at).second) return;
    stored_id_order_.push_back(client_msg_id);
    if (stored_id_order_.size() > max_remembered_client_ids) {
        stored_ids_.erase(stored_id_order_.front());
        stored_id_order_.pop_front();
    }
}

}  // namespace parley::server
