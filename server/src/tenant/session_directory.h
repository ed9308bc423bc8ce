#pragma once
// The session directory of one tenant: who is connected (sessions by id, and
// the ids of each agent's and each visitor's sessions), fan-out of frames to
// them, and the replay holds that keep a conversation's live events behind a
// resume's replay or an accept's reply. Owned by the tenant's strand; it never
// writes sockets itself, it queues frames on sessions.
//
// Invariants:
//  - a session id is in at most one index entry (its role's, under its principal);
//  - events held for a session and conversation fit held_share of the session's
//    outbound bounds, or the session is closed as a slow consumer;
//  - one replay reads and sends at a time per session; the others wait in order.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "net/net_context.h"
#include "net/client_session.h"
#include "parley/proto/common.h"

namespace parley::server {

using frame_ptr = std::shared_ptr<const std::string>;
inline frame_ptr make_frame(std::string text) { return std::make_shared<const std::string>(std::move(text)); }

class session_directory {
public:
    // Live events of a conversation that a `resume` is replaying to this
    // session, or whose `accept` reply is being built: held back until the
    // reply is sent, so the client sees every seq once and in order, and
    // nothing about the chat (typing, ended) before the reply.
    struct replay_hold {
        int replays = 0;  // resumes of this conversation in progress on the session
        std::vector<std::pair<std::int64_t, frame_ptr>> held;  // seq, frame
        std::size_t held_bytes = 0;  // bounded by a quarter of the session's outbound queue
    };

    struct session_entry {
        // Not owned: a session lives by its pending operations, and a closing one reaches the
        // hub (session_closed, which removes it here) before it goes; so this never dangles
        // while the hub runs, and nothing of the tenant keeps a session, or what it owns, alive.
        std::weak_ptr<client_session> link;
        std::shared_ptr<client_session> session() const { return link.lock(); }
        client_role role;
        std::string principal;  // visitor id or agent id
        std::unordered_map<std::string, replay_hold> replaying;  // by conversation id
        // One replay reads and sends at a time (its pages are what the session
        // buffers); the session's other resumes wait here, already holding.
        bool replay_running = false;
        std::vector<std::function<void()>> waiting_replays;  // a vector: an empty deque allocates
    };

    // Passed for events that are not messages: released whatever the reply carried.
    static constexpr std::int64_t no_seq = INT64_MAX;

    explicit session_directory(std::shared_ptr<const net_context> net) : net_(std::move(net)) {}

    // --- who is connected ---
    // A session past its hello's checks; not yet reached by events (see index).
    void add(std::shared_ptr<client_session> session, client_role role, std::string principal);
    // From now on the session receives the events of its principal.
    void index(std::uint64_t session_id);
    // Forgets the session; says whether it was indexed. nullopt when unknown.
    std::optional<std::pair<session_entry, bool>> remove(std::uint64_t session_id);
    session_entry* find(std::uint64_t session_id);
    bool empty() const { return sessions_.empty(); }
    // How many indexed sessions `principal` has in `role`.
    std::size_t count(client_role role, const std::string& principal) const;
    // The indexed sessions of `principal` (empty when none).
    std::vector<std::uint64_t> sessions_of(client_role role, const std::string& principal) const;
    // Every session (shutdown): `f(client_session&)`.
    void for_each(const std::function<void(client_session&)>& f);
    // Who sent a request, copied (a handler may end the session) without the
    // session's holds and waiting resumes, which handlers never read.
    static session_entry requester_of(const session_entry& entry);

    // --- fan-out ---
    void send(const session_entry& to, const frame_ptr& frame);
    void send(std::uint64_t session_id, std::string frame);
    void reply_error(std::uint64_t session_id, const std::optional<std::string>& re, proto::error_code code,
                     std::string message);
    void reply_ok(std::uint64_t session_id, const std::optional<std::string>& re);
    void to_agent(const std::string& agent_id, const frame_ptr& frame, std::uint64_t except_session = 0);
    // A stored message's event to every session of the visitor and (when `agent_id` is not
    // empty) of the agent, but its sender's, held for sessions replaying the conversation.
    void deliver_message(const std::string& conversation_id, const std::string& visitor_id, const std::string& agent_id,
                         std::int64_t seq, const frame_ptr& event, std::uint64_t except_session);
    // Another event of a conversation (typing, ended, agent_joined, …) to every session of one
    // participant, behind that session's hold of the conversation if it has one.
    void to_agent_about(const std::string& conversation_id, const std::string& agent_id, const frame_ptr& frame);
    void to_visitor_about(const std::string& conversation_id, const std::string& visitor_id, const frame_ptr& frame);
    // The largest reply frame built from stored data: half of what a session may queue.
    std::size_t reply_budget() const;

    // --- replay holds ---
    // Holds the session's live events of the conversation until release_hold (an accept's reply).
    void hold(std::uint64_t session_id, const std::string& conversation_id);
    // Ends one hold of the session's live events of the conversation; when none is left,
    // sends the held events past `sent_through` (the ones the replay or reply did not carry).
    void release_hold(std::uint64_t session_id, const std::string& conversation_id, std::int64_t sent_through);
    // False when the session already has `max_waiting` waiting: the caller answers rate_limited.
    bool begin_replay(std::uint64_t session_id, const std::string& conversation_id, std::size_t max_waiting,
                      std::function<void()> start);
    // Sends the held events past `replayed_through`, then `final_frame` (the resume's ok or error),
    // and starts the session's next waiting replay.
    void end_replay(std::uint64_t session_id, const std::string& conversation_id, std::int64_t replayed_through,
                    frame_ptr final_frame);

private:
    using session_index = std::unordered_map<std::string, std::vector<std::uint64_t>>;  // principal -> session ids
    session_index& index_of(client_role role) { return role == client_role::agent ? agent_sessions_ : visitor_sessions_; }
    const session_index& index_of(client_role role) const {
        return role == client_role::agent ? agent_sessions_ : visitor_sessions_;
    }
    // Sends, or holds while the session has a hold of the conversation. `seq` orders messages.
    void send_about(session_entry& entry, const std::string& conversation_id, std::int64_t seq, const frame_ptr& frame);
    void release_hold(session_entry& entry, const std::string& conversation_id, std::int64_t sent_through);

    std::shared_ptr<const net_context> net_;
    std::unordered_map<std::uint64_t, session_entry> sessions_;
    session_index agent_sessions_;
    session_index visitor_sessions_;
};

}  // namespace parley::server
