#include "tenant/session_directory.h"

#include "base/metrics.h"
#include "parley/proto/encode.h"

namespace parley::server {

void session_directory::add(std::shared_ptr<client_session> session, client_role role, std::string principal) {
    const auto sid = session->id();
    sessions_[sid] = {std::move(session), role, std::move(principal), {}, false, {}};
}

void session_directory::index(std::uint64_t session_id) {
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) index_of(it->second.role)[it->second.principal].push_back(session_id);
}

std::optional<std::pair<session_directory::session_entry, bool>> session_directory::remove(std::uint64_t session_id) {
    auto it = sessions_.find(session_id);
    if (it == sessions_.end()) return std::nullopt;
    auto entry = std::move(it->second);
    sessions_.erase(it);
    bool indexed = false;
    auto& index = index_of(entry.role);
    if (auto list = index.find(entry.principal); list != index.end()) {
        indexed = std::erase(list->second, session_id) > 0;
        if (list->second.empty()) index.erase(list);
    }
    return std::pair{std::move(entry), indexed};
}

session_directory::session_entry* session_directory::find(std::uint64_t session_id) {
    auto it = sessions_.find(session_id);
    return it == sessions_.end() ? nullptr : &it->second;
}

std::size_t session_directory::count(client_role role, const std::string& principal) const {
    const auto& index = index_of(role);
    auto it = index.find(principal);
    return it == index.end() ? 0 : it->second.size();
}

std::vector<std::uint64_t> session_directory::sessions_of(client_role role, const std::string& principal) const {
    const auto& index = index_of(role);
    auto it = index.find(principal);
    return it == index.end() ? std::vector<std::uint64_t>{} : it->second;
}

void session_directory::for_each(const std::function<void(client_session&)>& f) {
    for (auto& [id, entry] : sessions_)
        if (auto session = entry.session()) f(*session);
}

session_directory::session_entry session_directory::requester_of(const session_entry& entry) {
    return {entry.link, entry.role, entry.principal, {}, false, {}};
}

// ---------------------------------------------------------------------------
// Fan-out

void session_directory::send(const session_entry& to, const frame_ptr& frame) {
    if (auto session = to.session()) session->send(frame);
    global_metrics().frames_out++;
}

void session_directory::send(std::uint64_t session_id, std::string frame) {
    if (auto* entry = find(session_id)) send(*entry, make_frame(std::move(frame)));
}

void session_directory::reply_error(std::uint64_t session_id, const std::optional<std::string>& re,
                                    proto::error_code code, std::string message) {
    global_metrics().protocol_errors++;
    send(session_id, proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt, code, message));
}

void session_directory::reply_ok(std::uint64_t session_id, const std::optional<std::string>& re) {
    if (re) send(session_id, proto::encode_ok(*re));
}

void session_directory::to_agent(const std::string& agent_id, const frame_ptr& frame, std::uint64_t except_session) {
    auto it = agent_sessions_.find(agent_id);
    if (it == agent_sessions_.end()) return;
    for (auto sid : it->second)
        if (sid != except_session) send(sessions_.at(sid), frame);
}

void session_directory::send_about(session_entry& entry, const std::string& conversation_id, std::int64_t seq,
                                   const frame_ptr& frame) {
    auto hold = entry.replaying.find(conversation_id);
    if (hold == entry.replaying.end()) return send(entry, frame);
    // Released at once behind a replay's last page or an accept's reply, they must still fit
    // the session's queue beside them (held_share).
    const auto share = held_share(*net_->limits());
    if (hold->second.held.size() >= share.frames || hold->second.held_bytes + frame->size() > share.bytes) {
        // As for any slow consumer: closed, and everything stays in storage for the next resume.
        global_metrics().slow_consumer_closes++;
        entry.replaying.erase(hold);
        if (auto session = entry.session()) session->close(websocket::close_code::try_again_later, "slow consumer");
        return;
    }
    hold->second.held_bytes += frame->size();
    hold->second.held.emplace_back(seq, frame);
}

void session_directory::deliver_message(const std::string& conversation_id, const std::string& visitor_id,
                                        const std::string& agent_id, std::int64_t seq, const frame_ptr& event,
                                        std::uint64_t except_session) {
    auto deliver = [&](std::uint64_t sid) {
        if (sid != except_session) send_about(sessions_.at(sid), conversation_id, seq, event);
    };
    if (auto it = visitor_sessions_.find(visitor_id); it != visitor_sessions_.end())
        for (auto sid : it->second) deliver(sid);
    if (agent_id.empty()) return;
    if (auto it = agent_sessions_.find(agent_id); it != agent_sessions_.end())
        for (auto sid : it->second) deliver(sid);
}

void session_directory::to_agent_about(const std::string& conversation_id, const std::string& agent_id,
                                       const frame_ptr& frame) {
    if (auto it = agent_sessions_.find(agent_id); it != agent_sessions_.end())
        for (auto sid : it->second) send_about(sessions_.at(sid), conversation_id, no_seq, frame);
}

void session_directory::to_visitor_about(const std::string& conversation_id, const std::string& visitor_id,
                                         const frame_ptr& frame) {
    if (auto it = visitor_sessions_.find(visitor_id); it != visitor_sessions_.end())
        for (auto sid : it->second) send_about(sessions_.at(sid), conversation_id, no_seq, frame);
}

std::size_t session_directory::reply_budget() const { return reply_share_bytes(*net_->limits()); }

// ---------------------------------------------------------------------------
// Replay holds

void session_directory::hold(std::uint64_t session_id, const std::string& conversation_id) {
    if (auto* entry = find(session_id)) ++entry->replaying[conversation_id].replays;
}

void session_directory::release_hold(std::uint64_t session_id, const std::string& conversation_id,
                                     std::int64_t sent_through) {
    if (auto* entry = find(session_id)) release_hold(*entry, conversation_id, sent_through);
}

void session_directory::release_hold(session_entry& entry, const std::string& conversation_id,
                                     std::int64_t sent_through) {
    auto hold = entry.replaying.find(conversation_id);
    if (hold == entry.replaying.end()) return;
    // While another replay of the conversation still runs, it keeps holding; the last one
    // to end sends what it did not send itself.
    if (--hold->second.replays > 0) return;
    auto held = std::move(hold->second.held);
    entry.replaying.erase(hold);
    for (const auto& [seq, frame] : held)
        if (seq > sent_through) send(entry, frame);  // older ones were in the replay
}

bool session_directory::begin_replay(std::uint64_t session_id, const std::string& conversation_id,
                                     std::size_t max_waiting, std::function<void()> start) {
    auto* entry = find(session_id);
    if (entry == nullptr) return true;  // gone: nothing to replay to
    if (entry->waiting_replays.size() >= max_waiting) return false;
    ++entry->replaying[conversation_id].replays;
    if (entry->replay_running) {
        entry->waiting_replays.push_back(std::move(start));
    } else {
        entry->replay_running = true;
        start();
    }
    return true;
}

void session_directory::end_replay(std::uint64_t session_id, const std::string& conversation_id,
                                   std::int64_t replayed_through, frame_ptr final_frame) {
    auto* entry = find(session_id);
    if (entry == nullptr) return;
    release_hold(*entry, conversation_id, replayed_through);
    if (final_frame) send(*entry, final_frame);
    entry->replay_running = !entry->waiting_replays.empty();
    if (entry->replay_running) {
        auto next = std::move(entry->waiting_replays.front());
        entry->waiting_replays.erase(entry->waiting_replays.begin());
        next();  // may start a read; the entry is not touched after this
    }
}

}  // namespace parley::server
