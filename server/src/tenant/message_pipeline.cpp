// The message pipeline of the open conversations: one write in flight per
// conversation (seq assigned at submit, gap-free), the outbox, resend dedupe by
// client_msg_id, the message cap, and `ended` events ordered after the messages
// accepted before the end.
#include "tenant/tenant_hub.h"

#include <fmt/format.h>

#include "base/metrics.h"
#include "parley/proto/encode.h"
#include "parley/server/logging.h"
#include "tenant/errors.h"

namespace parley::server {

namespace {

constexpr std::size_t max_outbox_per_conversation = 256;
// Per conversation, to answer resends without a storage round trip. Under durability
// commit, storage catches older ones; under relaxed (ok before the write) a resend
// of an id older than this is acknowledged with a new seq that storage then drops.
constexpr std::size_t max_remembered_client_ids = 1024;

}  // namespace

void tenant_hub::handle_send(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                             const std::string& conversation_id, storage::message_kind kind, std::string body,
                             std::optional<std::string> client_msg_id) {
    auto* c = participant_conversation(from, conversation_id, true);
    if (c == nullptr || c->state == routing::conversation_state::ended)
        return reply_not_open(from, sid, re, conversation_id);
    if (c->outbox.size() >= max_outbox_per_conversation)
        return reply_error(sid, re, proto::error_code::rate_limited, "too many messages waiting to be stored");
    pending_write w;
    // Each sender has its own client_msg_id space: stored scoped by who sent it.
    if (client_msg_id)
        w.message.client_msg_id =
            (from.role == client_role::agent
                 ? "a:" + std::to_string(from.principal.size()) + ":" + from.principal + ":"  // ids may hold ':'
                 : std::string("v:")) +
            *client_msg_id;
    // A resend of a message already stored is still answered with its seq (submit_next_write).
    const bool known_resend = w.message.client_msg_id && c->stored_client_ids.count(*w.message.client_msg_id) > 0;
    if (!known_resend && message_cap_reached(*c)) return refuse_over_message_cap(*c, sid, re);
    w.message.tenant_id = tenant_id_;
    w.message.conversation_id = c->id;
    w.message.sender = from.role == client_role::agent ? storage::sender_kind::agent : storage::sender_kind::visitor;
    if (from.role == client_role::agent) w.message.agent_id = from.principal;
    w.message.kind = kind;
    w.message.body = std::move(body);
    w.origin_session = sid;
    w.re = re;
    w.received_at = monotonic_now();
    c->outbox.push_back(std::move(w));
    ++pending_writes_;
    submit_next_write(*c);
}

// Per conversation, one message write in flight: seq is assigned when the
// write is submitted, so a failed write gives its seq back and seq stays
// gap-free; group commit still batches across conversations.
void tenant_hub::submit_next_write(conversation& c) {
    while (!c.writing && !c.outbox.empty()) {
        auto w = std::move(c.outbox.front());
        c.outbox.pop_front();
        if (w.message.client_msg_id) {
            auto known = c.stored_client_ids.find(*w.message.client_msg_id);
            if (known != c.stored_client_ids.end()) {
                if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, known->second.first, known->second.second));
                if (pending_writes_ > 0) --pending_writes_;
                continue;
            }
        }
        // Admitted under the cap, but a reload may have lowered it since.
        if (c.last_seq >= static_cast<std::int64_t>(net_->limits()->max_messages_per_conversation)) {
            if (pending_writes_ > 0) --pending_writes_;
            refuse_over_message_cap(c, w.origin_session, w.re);
            continue;
        }
        w.message.seq = c.last_seq + 1;
        w.message.at = to_millis(wall_now());
        c.last_seq = w.message.seq;
        c.writing = true;
        auto record = w.message;
        store_->append_message(
            std::move(record),
            [self = shared_from_this(), id = c.id, w = std::move(w)](storage::result<storage::append_outcome> r) mutable {
                asio::post(self->strand_, [self, id = std::move(id), w = std::move(w), r = std::move(r)]() mutable {
                    self->on_message_stored(id, std::move(w), std::move(r));
                });
            });
    }
}

void tenant_hub::remember_client_id(conversation& c, const std::string& client_msg_id, std::int64_t seq,
                                    std::int64_t at) {
    if (!c.stored_client_ids.try_emplace(client_msg_id, seq, at).second) return;
    c.stored_client_id_order.push_back(client_msg_id);
    if (c.stored_client_id_order.size() > max_remembered_client_ids) {
        c.stored_client_ids.erase(c.stored_client_id_order.front());
        c.stored_client_id_order.pop_front();
    }
}

bool tenant_hub::message_cap_reached(const conversation& c) const {
    const auto limit = net_->limits()->max_messages_per_conversation;
    return c.last_seq + static_cast<std::int64_t>(c.outbox.size()) >= static_cast<std::int64_t>(limit);
}

void tenant_hub::refuse_over_message_cap(conversation& c, std::uint64_t sid, const std::optional<std::string>& re) {
    const auto limit = net_->limits()->max_messages_per_conversation;
    global_metrics().message_cap_refusals++;
    if (!c.message_cap_logged) {
        c.message_cap_logged = true;
        logger("route")->info("tenant {}: conversation {} reached {} messages (limits.max_messages_per_conversation); "
                              "further messages are refused",
                              tenant_id_, c.id, limit);
    }
    reply_error(sid, re, proto::error_code::capacity,
                fmt::format("the conversation already holds {} messages, the most allowed "
                            "(limits.max_messages_per_conversation); end it and start a new one",
                            limit));
}

void tenant_hub::on_message_stored(const std::string& conversation_id, pending_write w,
                                   storage::result<storage::append_outcome> r) {
    if (pending_writes_ > 0) --pending_writes_;
    auto* c = find_conversation(conversation_id);
    if (c == nullptr) return close_sessions_if_drained();
    c->writing = false;
    if (!r) {
        c->last_seq = w.message.seq - 1;  // give the seq back: nothing was stored under it
        global_metrics().storage_errors++;
        reply_error(w.origin_session, w.re, to_proto_error(r.kind()),
                    storage_message(r.failure()));
    } else if (r->duplicate) {
        c->last_seq = w.message.seq - 1;
        if (w.message.client_msg_id) remember_client_id(*c, *w.message.client_msg_id, r->seq, r->at);
        if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, r->seq, r->at));
    } else {
        if (w.message.client_msg_id) remember_client_id(*c, *w.message.client_msg_id, r->seq, r->at);
        auto& m = global_metrics();
        m.send_ack_seconds.observe(std::chrono::duration<double>(monotonic_now() - w.received_at).count());
        if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, r->seq, r->at));
        auto message = chat_message_from(w.message);
        message.seq = r->seq;
        message.at = r->at;
        auto event = make_frame(proto::encode_message_event(message));
        c->last_message = std::move(message);
        // An ended chat's agent still gets the messages accepted before the end (its `ended` waits for them).
        const bool agent_reads = c->state == routing::conversation_state::active ||
                                 c->state == routing::conversation_state::ended;
        directory_.deliver_message(c->id, c->visitor_id, agent_reads ? c->agent_id : std::string(), r->seq, event,
                                   w.origin_session);
        routing::actions actions;
        router_->message_seen(c->id, wall_now(), actions);
        apply(actions);
        c = find_conversation(conversation_id);
        if (c == nullptr) return;
    }
    submit_next_write(*c);
    flush_ended_events(*c);
    forget_if_done(conversation_id);
    close_sessions_if_drained();
}


void tenant_hub::send_ended(const std::string& conversation_id, bool to_agent, const std::string& principal,
                            frame_ptr frame) {
    auto* c = find_conversation(conversation_id);
    if (c != nullptr && (c->writing || !c->outbox.empty())) {
        c->ended_events.emplace_back(to_agent, std::move(frame));
        return;
    }
    if (to_agent) to_agent_about(conversation_id, principal, frame);
    else to_visitor_about(conversation_id, principal, frame);
}

void tenant_hub::flush_ended_events(conversation& c) {
    if (c.writing || !c.outbox.empty() || c.ended_events.empty()) return;
    auto events = std::move(c.ended_events);
    c.ended_events.clear();
    for (auto& [to_agent, frame] : events) {
        if (to_agent) to_agent_about(c.id, c.agent_id, frame);
        else to_visitor_about(c.id, c.visitor_id, frame);
    }
}

}  // namespace parley::server
