#pragma once
// One tenant's live state, owned by one strand: the thin shell over the
// tenant's parts. It owns the routing core, the agents and routes as stored, and
// the open conversations with their message counters; the session directory
// (session_directory.h) owns who is connected and the fan-out. Sessions post
// requests here; the hub answers by queueing frames on sessions (never writing
// sockets itself) and by submitting storage writes, whose completions are
// posted back to this strand.
//
// Where things are (all in server/src/tenant/):
//  - tenant_hub.cpp: start-up, restart recovery, shutdown, hellos, sessions closing;
//  - requests.cpp: every protocol request, one function each, on_<request>;
//  - message_pipeline.cpp: send, the shell over each conversation's conversation_pipeline
//    (conversation_pipeline.h: seq, outbox, dedupe, cap, `ended` held behind writes; pure rules);
//  - router_effects.cpp: what the router's actions do (events, persistence, timers, stats);
//  - transcripts.cpp: accept's history, resume, get_transcript, transcript.txt;
//  - admin.cpp: the admin API; errors.h: how failures are told to clients.
//
// Invariants:
//  - every router call happens on the strand, with now = the time source's wall();
//  - a conversation has at most one message write in flight, so seq numbers
//    are assigned in order, gap-free, and fan-out order equals seq order;
//  - an `ok` to `send` goes out only after storage reported the message durable
//    (durability commit) or queued (relaxed).
#include <atomic>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tenant/admin_queue.h"
#include "tenant/conversation_pipeline.h"
#include "net/body_stream.h"
#include "tenant/model.h"
#include "base/time_source.h"
#include "net/net.h"
#include "parley/proto/decode.h"
#include "parley/routing/route_graph.h"
#include "parley/routing/tenant_router.h"
#include "parley/storage/store.h"
#include "net/net_context.h"
#include "net/client_session.h"
#include "tenant/session_directory.h"

namespace parley::server {

// What a hub takes from the process.
struct hub_environment {
    std::shared_ptr<const net_context> net;  // the live limits, and whether the server is draining
    config::routing_config routing;          // fixed at start-up
    std::shared_ptr<const time_source> time = std::make_shared<real_time_source>();
};

class tenant_hub : public std::enable_shared_from_this<tenant_hub> {
public:
    tenant_hub(asio::io_context& ioc, hub_environment environment, config::tenant_config tenant,
               std::shared_ptr<storage::store> store);
    ~tenant_hub();

    // Registers the tenant in storage and loads its hub (load() below); on
    // failure returns nullptr and says why in `error`. Blocks: start-up and
    // reloads only.
    static std::shared_ptr<tenant_hub> open(asio::io_context& ioc, hub_environment environment,
                                            const config::tenant_config& tenant, std::shared_ptr<storage::store> store,
                                            std::string& error);

    // Start-up, before serving: loads agents, routes, accounts and the open
    // state (restart recovery) from storage. Blocks the calling thread, never
    // an I/O thread. Returns a message on failure.
    std::optional<std::string> load();

    // A snapshot: secrets may be rotated by a reload.
    std::shared_ptr<const config::tenant_config> tenant() const { return tenant_.load(); }
    const std::string& tenant_id() const { return tenant_id_; }
    // Reload: new name, secrets or allow_anonymous (the id never changes).
    void update_tenant(const config::tenant_config& tenant) {
        tenant_.store(std::make_shared<const config::tenant_config>(tenant));
    }

    // --- from sessions (any thread; work happens on the hub strand) ---
    void visitor_hello(std::shared_ptr<client_session> session, std::optional<std::string> re,
                       std::string visitor_id, proto::visitor_profile profile, bool profile_given);
    void agent_hello(std::shared_ptr<client_session> session, std::optional<std::string> re, std::string agent_id);
    void request(std::shared_ptr<client_session> session, proto::client_frame frame);
    void session_closed(std::shared_ptr<client_session> session);
    // Server shutting down, or the tenant removed by a reload: stop timers (so the io_context can
    // run out of work) and refuse new requests with `unavailable`; once the message writes in
    // flight have completed and their `ok`s are queued, close every session with `code`.
    void shutdown(websocket::close_code code, std::string reason);
    // The time source moved by itself (manual time, in tests): the router's deadlines are
    // checked at once instead of when the wake-up timer, armed on the real clock, fires.
    void time_moved();
    // The drain took too long: close every session now (their queued frames still go first).
    void close_sessions_now();
    // Shut down, drained and without sessions: a hub removed by a reload can be let go.
    bool retired() const { return retired_.load(); }

    // --- admin API (any thread; `done` runs on a storage or hub thread) ---
    // PUTs and DELETEs of agents, routes and accounts run one at a time (admin_queue.h).
    void admin_put_agent(std::string id, proto::admin::agent_body body, admin_done done);
    void admin_delete_agent(std::string id, admin_done done);
    void admin_list_agents(admin_done done);
    void admin_put_route(std::string name, proto::admin::route_body body, admin_done done);
    void admin_delete_route(std::string name, admin_done done);
    // The stored routes in normalised form, by name. Read from storage (after the writes
    // submitted before it, as every read), not queued behind admin changes.
    void admin_list_routes(admin_done done);
    void admin_put_account(std::string key, std::string agent_id, admin_done done);
    void admin_delete_account(std::string key, admin_done done);
    void admin_put_visitor(std::string id, proto::visitor_profile profile, admin_done done);
    void admin_add_activity(std::string visitor_id, proto::admin::activity_body body, admin_done done);
    // `agent_id` is empty for the admin; an agent's token must name a current agent.
    void transcript_text(std::string conversation_id, std::string agent_id, admin_done done);

private:
    struct resume_replay;
    struct transcript_read;

    // One of the tenant's transcript reads in progress (limits.max_transcript_reads_per_tenant):
    // taken when a get_transcript or a transcript.txt download starts, given back when its last
    // copy goes (the reply was queued on the session, the download ended or was cut).
    using transcript_ticket = std::shared_ptr<const void>;
    // nullptr when the tenant already has as many as allowed: the caller refuses the request.
    transcript_ticket try_begin_transcript_read();

    using session_entry = session_directory::session_entry;

    struct conversation {
        std::string id;
        std::string visitor_id;
        std::string route;
        routing::conversation_state state = routing::conversation_state::routing;
        std::string agent_id;
        storage::millis started_at = 0;
        std::optional<storage::millis> ended_at;
        std::optional<std::string> end_reason;
        std::optional<int> score;
        std::vector<std::string> tried_agents;  // as the router's last state change of it said
        proto::visitor_profile profile;
        std::optional<proto::chat_message> last_message;
        conversation_pipeline messages;  // seq, outbox, dedupe, cap, `ended` held behind writes
    };

    struct offer_entry {
        std::string conversation_id;
        std::string agent_id;
        std::chrono::steady_clock::time_point offered_at;
    };

    // The only clock reads of the hub: `now` for the router and every `*_at`, and durations.
    routing::time_point wall_now() const { return time_->wall(); }
    std::chrono::steady_clock::time_point monotonic_now() const { return time_->monotonic(); }

    // Strand helpers.
    template <typename F>
    void on_strand(F&& f) {
        asio::post(strand_, std::forward<F>(f));
    }
    // Wraps a storage callback so it runs on the strand, keeping the hub alive.
    template <typename T, typename F>
    storage::callback<T> back_on_strand(F&& f) {
        return [self = shared_from_this(), f = std::forward<F>(f)](storage::result<T> r) mutable {
            asio::post(self->strand_, [f = std::move(f), r = std::move(r)]() mutable { f(std::move(r)); });
        };
    }

    // Replies and events, addressed by session or participant (session_directory.h).
    void send(std::uint64_t session_id, std::string frame) { directory_.send(session_id, std::move(frame)); }
    void reply_error(std::uint64_t session_id, const std::optional<std::string>& re, proto::error_code code,
                     std::string message) {
        directory_.reply_error(session_id, re, code, std::move(message));
    }
    void reply_ok(std::uint64_t session_id, const std::optional<std::string>& re) { directory_.reply_ok(session_id, re); }
    struct request_context;
    void reply_error(const request_context& cx, proto::error_code code, std::string message);
    void reply_ok(const request_context& cx);
    void to_agent(const std::string& agent_id, const frame_ptr& frame, std::uint64_t except_session = 0) {
        directory_.to_agent(agent_id, frame, except_session);
    }
    void to_agent_about(const std::string& conversation_id, const std::string& agent_id, const frame_ptr& frame) {
        directory_.to_agent_about(conversation_id, agent_id, frame);
    }
    void to_visitor_about(const std::string& conversation_id, const std::string& visitor_id, const frame_ptr& frame) {
        directory_.to_visitor_about(conversation_id, visitor_id, frame);
    }
    std::size_t reply_budget() const { return directory_.reply_budget(); }
    // An `ended` event to one participant (agent or visitor), sent after every message that was
    // accepted before the end: the peer sees the last words, then the end.
    void send_ended(const std::string& conversation_id, bool to_agent, const std::string& principal, frame_ptr frame);
    void flush_ended_events(conversation& c);

    // Carries out what the router asked for, in order.
    void apply(routing::actions& actions);
    void arm_wakeup(std::optional<routing::time_point> at);
    void on_wakeup();
    void persist_conversation(const conversation& c);
    void publish_stats();

    // Requests, on the strand (requests.cpp): one function per protocol request.
    struct request_context {
        const session_entry& from;
        std::uint64_t session_id;
        const std::optional<std::string>& re;
        routing::time_point now;
        routing::actions& actions;  // applied once the request's function returns
    };
    void handle(const session_entry& from, std::uint64_t session_id, proto::client_frame& frame);
    void on_hello_again(const request_context& cx);
    void on_request_agent(const request_context& cx, const proto::requests::request_agent& r);
    void on_accept(const request_context& cx, const std::string& offer_id);
    void on_resume(const request_context& cx, const proto::requests::resume& r);
    void on_send(const request_context& cx, proto::requests::send& r);
    void on_typing(const request_context& cx, proto::requests::typing& r);
    void on_end_chat(const request_context& cx, proto::requests::end_chat& r);
    void on_meeting_booked(const request_context& cx, proto::requests::meeting_booked& r);
    void on_set_availability(const request_context& cx, proto::requests::set_availability& r);
    void on_decline(const request_context& cx, proto::requests::decline& r);
    void on_share_calendar(const request_context& cx, proto::requests::share_calendar& r);
    void on_set_score(const request_context& cx, proto::requests::set_score& r);
    void on_list_conversations(const request_context& cx, proto::requests::list_conversations& r);
    void on_get_visitor(const request_context& cx, proto::requests::get_visitor& r);
    void on_get_activity(const request_context& cx, proto::requests::get_activity& r);
    void on_get_transcript(const request_context& cx, proto::requests::get_transcript& r);
    void on_list_agents(const request_context& cx, proto::requests::list_agents& r);

    // The message pipeline (message_pipeline.cpp).
    void handle_send(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                     const std::string& conversation_id, storage::message_kind kind, std::string body,
                     std::optional<std::string> client_msg_id = std::nullopt);
    void submit_next_write(conversation& c);
    // Whether `c` holds, with the messages waiting in its outbox, limits.max_messages_per_conversation.
    bool message_cap_reached(const conversation& c) const;
    void refuse_over_message_cap(conversation& c, std::uint64_t sid, const std::optional<std::string>& re);
    void reply_not_open(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                        const std::string& conversation_id);
    void on_message_stored(const std::string& conversation_id, pending_write write,
                           storage::result<storage::append_outcome> result);

    conversation* find_conversation(const std::string& id);
    // The conversation if `from` may act in it (its visitor, or its active agent).
    conversation* participant_conversation(const session_entry& from, const std::string& id, bool agent_needs_active);
    proto::conversation_entry entry_of(const conversation& c) const;
    proto::visitor_card visitor_card_of(const conversation& c) const;
    void forget_if_done(const std::string& conversation_id);
    void forget_visitor_if_gone(const std::string& visitor_id);
    // Answers `capacity` and closes (1013) when `principal` already has the most sessions allowed.
    bool refuse_over_session_limit(client_session& session, const std::optional<std::string>& re,
                                   client_role role, const std::string& principal);
    void finish_visitor_hello(std::uint64_t sid, const std::optional<std::string>& re, const std::string& visitor_id);
    void attach_visitor_sessions(const std::string& visitor_id, const std::string& conversation_id,
                                 routing::time_point now, routing::actions& actions);
    std::optional<routing::time_point> restore_state(std::string& error);

    std::shared_ptr<const net_context> net_;
    const config::routing_config routing_settings_;
    const std::string tenant_id_;
    std::atomic<std::shared_ptr<const config::tenant_config>> tenant_;
    std::shared_ptr<storage::store> store_;
    std::shared_ptr<const time_source> time_;
    asio::strand<asio::io_context::executor_type> strand_;
    asio::steady_timer wakeup_timer_;
    asio::steady_timer stats_timer_;
    asio::steady_timer restore_timer_;
    bool stopped_ = false;
    // Set by shutdown(): how sessions are closed once no message write is pending.
    std::optional<websocket::close_reason> close_when_drained_;
    std::size_t pending_writes_ = 0;  // `send`s queued or being written, across conversations
    std::atomic<bool> retired_{false};
    void close_sessions_if_drained();
    // After shutdown(): a new session is closed, a request refused, with its reason.
    void close_while_stopped(client_session& session);
    void refuse_while_stopped(std::uint64_t session_id, const std::optional<std::string>& re);

    std::unique_ptr<routing::tenant_router> router_;
    std::unordered_map<std::string, storage::agent_record> agents_;
    // Route name -> its fallback_route ("" for none); the router holds the rest.
    routing::route_links routes_;
    // Admin mutations, one at a time: each checks against what the previous one left.
    std::shared_ptr<admin_queue> admin_queue_;
    // Runs `m` with the tenant's admin turn (from any thread).
    void mutate(admin_done done, admin_queue::mutation m);
    session_directory directory_;
    std::unordered_map<std::string, conversation> conversations_;
    // Visitor cards of visitors with a session or an open conversation: what routing rules see.
    std::unordered_map<std::string, proto::visitor_profile> visitor_profiles_;
    // Frames that came behind a hello still waiting for the stored visitor card:
    // handled in order right after the hello's ok, so they see the card.
    std::unordered_map<std::uint64_t, std::deque<proto::client_frame>> behind_hello_;
    std::unordered_map<std::string, offer_entry> offers_;
    // request_agent idempotency after the conversation ended: (visitor, client_key) -> conversation id,
    // the most recent client_key_capacity entries.
    static constexpr std::size_t client_key_capacity = 100'000;
    std::unordered_map<std::string, std::string> client_keys_;
    std::deque<std::string> client_key_order_;
    // Transcript reads in progress; shared with their tickets, which may outlive the hub.
    std::shared_ptr<std::atomic<std::size_t>> transcript_reads_ = std::make_shared<std::atomic<std::size_t>>(0);

    routing::tenant_stats published_stats_{};
    std::int64_t published_oldest_wait_ms_ = 0;
};

}  // namespace parley::server
