// The shell of the open conversations' message pipelines: accepting a `send`,
// submitting what the conversation's pipeline (conversation_pipeline.h, which
// owns seq, outbox, dedupe, cap and the held `ended` events) hands out,
// answering the sender and fanning the stored message out.
#include "tenant/tenant_hub.h"

#include <fmt/format.h>

#include "base/metrics.h"
#include "parley/proto/encode.h"
#include "parley/server/logging.h"
#include "tenant/errors.h"

namespace parley::server {

void tenant_hub::handle_send(const session_entry& from, std::uint64_t sid, const std::optional<std::string>& re,
                             const std::string& conversation_id, storage::message_kind kind, std::string body,
                             std::optional<std::string> client_msg_id) {
    auto* c = participant_conversation(from, conversation_id, true);
    if (c == nullptr || c->state == routing::conversation_state::ended)
        return reply_not_open(from, sid, re, conversation_id);
    if (c->messages.outbox_full())
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
    const bool known_resend = w.message.client_msg_id && c->messages.stored(*w.message.client_msg_id);
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
    c->messages.enqueue(std::move(w));
    ++pending_writes_;
    submit_next_write(*c);
}

// Per conversation, one message write in flight: seq is assigned when the
// write is submitted, so a failed write gives its seq back and seq stays
// gap-free; group commit still batches across conversations.
void tenant_hub::submit_next_write(conversation& c) {
    for (;;) {
        auto step = c.messages.next(net_->limits()->max_messages_per_conversation, to_millis(wall_now()));
        using kind = conversation_pipeline::step::kind;
        if (step.what == kind::none) return;
        if (step.what != kind::submit) {
            if (pending_writes_ > 0) --pending_writes_;
            // Admitted under the cap, but a reload may have lowered it since.
            if (step.what == kind::over_cap) refuse_over_message_cap(c, step.write.origin_session, step.write.re);
            else if (step.write.re) send(step.write.origin_session, proto::encode_send_ok(*step.write.re, step.seq, step.at));
            continue;
        }
        auto record = step.write.message;
        store_->append_message(
            std::move(record),
            [self = shared_from_this(), id = c.id, w = std::move(step.write)](storage::result<storage::append_outcome> r) mutable {
                asio::post(self->strand_, [self, id = std::move(id), w = std::move(w), r = std::move(r)]() mutable {
                    self->on_message_stored(id, std::move(w), std::move(r));
                });
            });
        return;
    }
}

bool tenant_hub::message_cap_reached(const conversation& c) const {
    return c.messages.cap_reached(net_->limits()->max_messages_per_conversation);
}

void tenant_hub::refuse_over_message_cap(conversation& c, std::uint64_t sid, const std::optional<std::string>& re) {
    const auto limit = net_->limits()->max_messages_per_conversation;
    global_metrics().message_cap_refusals++;
    if (c.messages.first_cap_refusal()) {
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
    const bool stored_now = c->messages.settle(w, !r, r && r->duplicate, r ? r->seq : 0, r ? r->at : 0);
    if (!r) {
        global_metrics().storage_errors++;
        reply_error(w.origin_session, w.re, to_proto_error(r.kind()), storage_message(r.failure()));
    } else if (!stored_now) {
        if (w.re) send(w.origin_session, proto::encode_send_ok(*w.re, r->seq, r->at));
    } else {
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
    if (c != nullptr && c->messages.busy()) {
        c->messages.hold_ended({to_agent, std::move(frame)});
        return;
    }
    if (to_agent) to_agent_about(conversation_id, principal, frame);
    else to_visitor_about(conversation_id, principal, frame);
}

void tenant_hub::flush_ended_events(conversation& c) {
    for (auto& [to_agent, frame] : c.messages.take_ended_if_idle()) {
        if (to_agent) to_agent_about(c.id, c.agent_id, frame);
        else to_visitor_about(c.id, c.visitor_id, frame);
    }
}

}  // namespace parley::server
