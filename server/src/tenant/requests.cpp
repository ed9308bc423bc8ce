// The protocol's requests, one small function each (on_<request>): checks, the
// router call, the reply. Sending goes through the message pipeline, resume and
// accept and get_transcript through transcripts.cpp.
#include "tenant/tenant_hub.h"

#include <algorithm>
#include <tuple>

#include "base/metrics.h"
#include "parley/proto/encode.h"
#include "parley/server/auth.h"
#include "tenant/errors.h"

namespace parley::server {

namespace {

// A page reply (list_conversations, get_activity) that fits `budget`, the reply's share of the
// session's outbound bound: 100 entries may each carry a 4,000-character last message or 16 KiB
// of activity details. Entries are dropped from the end until it fits, and the next page then
// starts after the last one kept; one entry always goes, so a reader always gets on.
// `encode(entries, next_cursor)` encodes; `cursors[i]` is the cursor after entries[i].
template <class Entry, class Encode>
std::string fitted_page(std::vector<Entry> entries, const std::vector<std::string>& cursors,
                        std::optional<std::string> next_cursor, std::size_t budget, Encode encode) {
    auto text = encode(entries, next_cursor);
    while (text.size() > budget && entries.size() > 1) {
        // In proportion to the overshoot, and at least one fewer each time.
        const auto keep = std::clamp<std::size_t>(entries.size() * budget / text.size(), 1, entries.size() - 1);
        entries.resize(keep);
        next_cursor = cursors[keep - 1];
        text = encode(entries, next_cursor);
    }
    return text;
}

// A reply built on a storage thread goes straight to its session, without a hop through the
// hub's strand: it depends on no state of the hub, and nothing else is ordered after it.
void reply_to(const std::shared_ptr<client_session>& session, std::string text) {
    if (!session) return;
    global_metrics().frames_out++;
    session->send(make_frame(std::move(text)));
}

}  // namespace

// Every protocol request after the hello has one function here, named after it:
// `on_<request>` (protocol.md, section 4). Each runs on the strand; the router's
// actions it collects are applied once it returns.
void tenant_hub::handle(const session_entry& from, std::uint64_t sid, proto::client_frame& frame) {
    namespace rq = proto::requests;
    routing::actions actions;
    const request_context cx{from, sid, frame.id, wall_now(), actions};
    std::visit(
        [&](auto& r) {
            using R = std::decay_t<decltype(r)>;
            if constexpr (std::is_same_v<R, rq::visitor_hello> || std::is_same_v<R, rq::agent_hello>) on_hello_again(cx);
            else if constexpr (std::is_same_v<R, rq::request_agent>) on_request_agent(cx, r);
            else if constexpr (std::is_same_v<R, rq::send>) on_send(cx, r);
            else if constexpr (std::is_same_v<R, rq::typing>) on_typing(cx, r);
            else if constexpr (std::is_same_v<R, rq::end_chat>) on_end_chat(cx, r);
            else if constexpr (std::is_same_v<R, rq::meeting_booked>) on_meeting_booked(cx, r);
            else if constexpr (std::is_same_v<R, rq::set_availability>) on_set_availability(cx, r);
            else if constexpr (std::is_same_v<R, rq::accept>) on_accept(cx, r.offer_id);
            else if constexpr (std::is_same_v<R, rq::decline>) on_decline(cx, r);
            else if constexpr (std::is_same_v<R, rq::share_calendar>) on_share_calendar(cx, r);
            else if constexpr (std::is_same_v<R, rq::set_score>) on_set_score(cx, r);
            else if constexpr (std::is_same_v<R, rq::list_conversations>) on_list_conversations(cx, r);
            else if constexpr (std::is_same_v<R, rq::get_visitor>) on_get_visitor(cx, r);
            else if constexpr (std::is_same_v<R, rq::get_activity>) on_get_activity(cx, r);
            else if constexpr (std::is_same_v<R, rq::get_transcript>) on_get_transcript(cx, r);
            else if constexpr (std::is_same_v<R, rq::resume>) on_resume(cx, r);
            else if constexpr (std::is_same_v<R, rq::list_agents>) on_list_agents(cx, r);
            // Credentials are the connection's business: the app answers reauth before a frame reaches a hub.
            else if constexpr (std::is_same_v<R, rq::reauth>) reply_error(cx, proto::error_code::internal, "reauth reached the hub");
        },
        frame.request);
    apply(actions);
}

void tenant_hub::reply_error(const request_context& cx, proto::error_code code, std::string message) {
    reply_error(cx.session_id, cx.re, code, std::move(message));
}

void tenant_hub::reply_ok(const request_context& cx) { reply_ok(cx.session_id, cx.re); }

void tenant_hub::on_hello_again(const request_context& cx) {
    reply_error(cx, proto::error_code::bad_request, "hello was already received");
}

void tenant_hub::on_request_agent(const request_context& cx, const proto::requests::request_agent& r) {
    if (cx.from.role != client_role::visitor) return reply_error(cx, proto::error_code::forbidden, "visitors only");
    std::string key;
    if (r.client_key) {
        key = cx.from.principal + '\n' + *r.client_key;
        if (auto known = client_keys_.find(key); known != client_keys_.end()) {
            auto* c = find_conversation(known->second);
            auto state = c ? to_proto(c->state) : proto::conversation_state::ended;
            return send(cx.session_id, proto::encode_request_agent_ok(cx.re.value_or(""), known->second, state));
        }
    }
    if (routes_.count(r.route) == 0)
        return reply_error(cx, proto::error_code::not_found, "no route named " + r.route);

    routing::chat_request request;
    request.conversation_id = random_id("c_");
    request.visitor_id = cx.from.principal;
    request.route = r.route;
    // The profile the visitor gave at hello (kept on an earlier conversation or in storage) is
    // what rules and account routing see; start from the last known one.
    proto::visitor_profile profile;
    if (auto known = visitor_profiles_.find(cx.from.principal); known != visitor_profiles_.end()) profile = known->second;
    request.profile = routing_profile(profile);

    // Create our record first: the router's actions refer to it.
    conversation c;
    c.id = request.conversation_id;
    c.visitor_id = cx.from.principal;
    c.route = r.route;
    c.started_at = to_millis(cx.now);
    c.profile = profile;
    auto [it, inserted] = conversations_.emplace(c.id, std::move(c));

    routing::actions actions;
    auto result = router_->chat_requested(request, cx.now, cx.actions);
    if (result.result != routing::outcome::ok || !result.created) conversations_.erase(it);
    // The visitor's sessions (this one, other tabs) are what keeps the chat's place while it waits.
    if (result.result == routing::outcome::ok && result.state != routing::conversation_state::ended)
        attach_visitor_sessions(cx.from.principal, result.conversation_id, cx.now, cx.actions);
    if (result.result == routing::outcome::not_found)
        return reply_error(cx, proto::error_code::not_found, "no route named " + r.route);
    if (result.result != routing::outcome::ok)
        return reply_error(cx, proto::error_code::bad_request, "cannot route this request");
    if (result.created) {
        // Every visitor with a conversation has a card, if only an empty one (an anonymous
        // visitor's): get_visitor answers with nulls, not not_found. Merging keeps what is stored.
        // The conversation row itself is saved by its first action, conversation_state_changed
        // (routing), which the router emits for every chat it creates (apply, below).
        store_->put_visitor(visitor_record_from(tenant_id_, cx.from.principal, profile, to_millis(cx.now)), [](auto) {});
    }
    if (!key.empty()) {
        client_keys_[key] = result.conversation_id;
        client_key_order_.push_back(key);
        if (client_key_order_.size() > client_key_capacity) {
            client_keys_.erase(client_key_order_.front());
            client_key_order_.pop_front();
        }
    }
    // The ok first, so the widget knows the conversation id before any event about it.
    send(cx.session_id, proto::encode_request_agent_ok(cx.re.value_or(""), result.conversation_id, to_proto(result.state)));
    apply(actions);
}

void tenant_hub::on_send(const request_context& cx, proto::requests::send& r) {
    handle_send(cx.from, cx.session_id, cx.re, r.conversation_id, storage::message_kind::text, std::move(r.text),
                std::move(r.client_msg_id));
}

void tenant_hub::on_typing(const request_context& cx, proto::requests::typing& r) {
    auto* c = participant_conversation(cx.from, r.conversation_id, true);
    if (c == nullptr) return reply_error(cx, proto::error_code::not_found, "no such open conversation");
    bool from_agent = cx.from.role == client_role::agent;
    auto event = make_frame(proto::encode_typing_event(
        c->id, from_agent ? proto::message_author::agent : proto::message_author::visitor, r.on));
    if (from_agent) to_visitor_about(c->id, c->visitor_id, event);
    else if (!c->agent_id.empty()) to_agent_about(c->id, c->agent_id, event);
    reply_ok(cx);
}

void tenant_hub::on_end_chat(const request_context& cx, proto::requests::end_chat& r) {
    auto* c = participant_conversation(cx.from, r.conversation_id, false);
    if (c == nullptr) return reply_not_open(cx.from, cx.session_id, cx.re, r.conversation_id);
    auto outcome = router_->chat_ended(
        r.conversation_id, cx.from.role == client_role::agent ? routing::ended_by::agent : routing::ended_by::visitor,
        cx.now, cx.actions);
    if (outcome == routing::outcome::ok) reply_ok(cx);
    else reply_error(cx, proto::error_code::conflict, "chat already ended");
}

void tenant_hub::on_meeting_booked(const request_context& cx, proto::requests::meeting_booked& r) {
    if (cx.from.role != client_role::visitor) return;
    if (agents_.count(r.agent_id) == 0) return reply_error(cx, proto::error_code::not_found, "no such agent");
    storage::activity_record activity;
    activity.tenant_id = tenant_id_;
    activity.visitor_id = cx.from.principal;
    activity.type = "meeting_booked";
    activity.at = to_millis(cx.now);
    activity.conversation_id = r.conversation_id;
    activity.details = {{"agent_id", r.agent_id}, {"start_at", r.start_at}};
    auto record = [self = shared_from_this(), sid = cx.session_id, re = cx.re, activity = std::move(activity)]() mutable {
        self->store_->append_activity(std::move(activity), self->back_on_strand<void>([self, sid, re](storage::status s) {
            if (s) self->reply_ok(sid, re);
            else self->reply_error(sid, re, to_proto_error(s.kind()), storage_message(s.failure()));
        }));
    };
    // Only about the visitor's own conversation, open or past (a booking may come after the chat).
    if (auto* c = find_conversation(r.conversation_id)) {
        if (c->visitor_id != cx.from.principal)
            return reply_error(cx, proto::error_code::not_found, "no such conversation of yours");
        return record();
    }
    store_->get_conversation(
        tenant_id_, r.conversation_id,
        back_on_strand<storage::conversation_record>(
            [self = shared_from_this(), sid = cx.session_id, re = cx.re, principal = cx.from.principal,
             record = std::move(record)](storage::result<storage::conversation_record> c) mutable {
                if (!c) return self->reply_error(sid, re, to_proto_error(c.kind()), "no such conversation of yours");
                if (c->visitor_id != principal)
                    return self->reply_error(sid, re, proto::error_code::not_found,
                                             "no such conversation of yours");
                record();
            }));
}

void tenant_hub::on_set_availability(const request_context& cx, proto::requests::set_availability& r) {
    auto result = router_->set_availability(cx.from.principal, r.available, cx.now, cx.actions);
    if (!result) return reply_error(cx, proto::error_code::not_found, "unknown agent");
    reply_ok(cx);
}

void tenant_hub::on_decline(const request_context& cx, proto::requests::decline& r) {
    if (router_->offer_declined(r.offer_id, cx.from.principal, cx.now, cx.actions) != routing::outcome::ok)
        return reply_error(cx, proto::error_code::conflict, "the offer is no longer pending");
    global_metrics().chats_declined++;
    offers_.erase(r.offer_id);
    store_->resolve_offer(tenant_id_, r.offer_id, storage::offer_outcome::declined, to_millis(cx.now),
                          [](auto) {});
    reply_ok(cx);
    // The agent's other tabs drop the offer too.
    to_agent(cx.from.principal,
             make_frame(proto::encode_offer_withdrawn_event(r.offer_id, proto::withdraw_reason::taken)), cx.session_id);
}

void tenant_hub::on_share_calendar(const request_context& cx, proto::requests::share_calendar& r) {
    auto target = agents_.find(r.agent_id);
    if (target == agents_.end()) return reply_error(cx, proto::error_code::not_found, "no such agent");
    if (!target->second.calendar_url)
        return reply_error(cx, proto::error_code::not_found, "that agent has no calendar_url");
    nlohmann::json card = {{"agent_id", target->second.id},
                           {"agent_name", target->second.name},
                           {"booking_url", *target->second.calendar_url}};
    auto* c = participant_conversation(cx.from, r.conversation_id, true);
    // Over the cap nothing is stored, the activity neither.
    if (c != nullptr && c->state != routing::conversation_state::ended && message_cap_reached(*c))
        return refuse_over_message_cap(*c, cx.session_id, cx.re);
    if (c != nullptr) {
        storage::activity_record activity;
        activity.tenant_id = tenant_id_;
        activity.visitor_id = c->visitor_id;
        activity.type = "calendar_shared";
        activity.at = to_millis(cx.now);
        activity.conversation_id = c->id;
        activity.details = {{"agent_id", target->second.id}, {"shared_by", cx.from.principal}};
        store_->append_activity(std::move(activity), [](auto) {});
    }
    handle_send(cx.from, cx.session_id, cx.re, r.conversation_id, storage::message_kind::calendar, card.dump());
}

void tenant_hub::on_set_score(const request_context& cx, proto::requests::set_score& r) {
    auto* c = find_conversation(r.conversation_id);
    if (c != nullptr && c->agent_id == cx.from.principal) {
        c->score = r.score;
        persist_conversation(*c);
        return reply_ok(cx);
    }
    // A past conversation: read it, check it was this agent's, store the score.
    store_->get_conversation(
        tenant_id_, r.conversation_id,
        back_on_strand<storage::conversation_record>(
            [self = shared_from_this(), sid = cx.session_id, re = cx.re, agent = cx.from.principal,
             score = r.score](storage::result<storage::conversation_record> found) mutable {
                if (!found || found->agent_id.value_or("") != agent)
                    return self->reply_error(sid, re, proto::error_code::not_found,
                                             "no such conversation of yours");
                auto record = std::move(found.value());
                record.score = score;
                self->store_->save_conversation(
                    std::move(record),
                    self->back_on_strand<void>([self, sid, re](storage::status s) {
                        if (s) self->reply_ok(sid, re);
                        else self->reply_error(sid, re, to_proto_error(s.kind()), storage_message(s.failure()));
                    }));
            }));
}

void tenant_hub::on_list_conversations(const request_context& cx, proto::requests::list_conversations& r) {
    storage::conversation_query q;
    q.tenant_id = tenant_id_;
    q.agent_id = cx.from.principal;
    q.filter = r.filter == proto::conversation_filter::all ? storage::conversation_filter::all
                                                           : storage::conversation_filter::active;
    q.limit = r.limit;
    q.cursor = r.cursor;
    q.now = to_millis(cx.now);
    store_->list_conversations(std::move(q), [session = cx.from.session(), re = cx.re, budget = reply_budget()](
                                                 storage::result<storage::conversation_page> page) {
        if (!page) {
            global_metrics().protocol_errors++;
            return reply_to(session, proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt,
                                                         to_proto_error(page.kind()), storage_message(page.failure())));
        }
        std::vector<proto::conversation_entry> entries;
        std::vector<std::string> cursors;
        for (const auto& s : page->conversations) {
            cursors.push_back(storage::cursor_after(s.conversation));
            proto::conversation_entry e;
            e.id = s.conversation.id;
            e.visitor = {s.conversation.visitor_id, s.visitor ? proto_profile(*s.visitor) : proto::visitor_profile{}};
            e.state = to_proto(s.conversation.state);
            e.agent_id = s.conversation.agent_id;
            e.started_at = s.conversation.started_at;
            e.ended_at = s.conversation.ended_at;
            if (s.last_message) e.last_message = chat_message_from(*s.last_message);
            entries.push_back(std::move(e));
        }
        // Encoded here, on the storage thread.
        reply_to(session, fitted_page(std::move(entries), cursors, page->next_cursor, budget,
                                      [&re](const auto& list, const std::optional<std::string>& cursor) {
                                          return proto::encode_list_conversations_ok(re.value_or(""), list, cursor);
                                      }));
    });
}

void tenant_hub::on_get_visitor(const request_context& cx, proto::requests::get_visitor& r) {
    store_->get_visitor(tenant_id_, r.visitor_id,
                        [session = cx.from.session(), re = cx.re, id = r.visitor_id](
                            storage::result<storage::visitor_record> v) {
                            reply_to(session,
                                v ? proto::encode_get_visitor_ok(re.value_or(""), proto::visitor_card{id, proto_profile(v.value())})
                                  : proto::encode_error(
                                        re ? std::optional<std::string_view>(*re) : std::nullopt,
                                        to_proto_error(v.kind()), storage_message(v.failure())));
                        });
}

void tenant_hub::on_get_activity(const request_context& cx, proto::requests::get_activity& r) {
    storage::activity_query q{tenant_id_, r.visitor_id, r.limit, r.cursor, to_millis(cx.now)};
    store_->get_activity(std::move(q), [session = cx.from.session(), re = cx.re, budget = reply_budget()](
                                           storage::result<storage::activity_page> page) {
        std::string text;
        if (!page) {
            text = proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt,
                                       to_proto_error(page.kind()), storage_message(page.failure()));
        } else {
            std::vector<proto::activity> list;
            std::vector<std::string> cursors;
            for (const auto& a : page->activities) {
                list.push_back({a.type, a.at, a.conversation_id,
                                a.details.is_null() ? std::string() : a.details.dump()});
                cursors.push_back(storage::cursor_after(a));
            }
            text = fitted_page(std::move(list), cursors, page->next_cursor, budget,
                               [&re](const auto& entries, const std::optional<std::string>& cursor) {
                                   return proto::encode_get_activity_ok(re.value_or(""), entries, cursor);
                               });
        }
        reply_to(session, std::move(text));
    });
}


// The tenant's agents as colleagues see them (the inbox's calendar picker):
// no emails, schedules or teams, only what share_calendar needs. Sorted by name.
void tenant_hub::on_list_agents(const request_context& cx, proto::requests::list_agents&) {
    std::vector<proto::agent_listing> listing;
    listing.reserve(agents_.size());
    for (const auto& [id, agent] : agents_)
        listing.push_back({id, agent.name, agent.avatar_url, agent.calendar_url.has_value()});
    std::sort(listing.begin(), listing.end(),
              [](const auto& a, const auto& b) { return std::tie(a.name, a.id) < std::tie(b.name, b.id); });
    // Like every reply, within the reply budget (1,000 agents with 2 KiB avatar URLs would not
    // fit): the agents past it are left out, shrinking in proportion until the frame fits.
    auto text = proto::encode_list_agents_ok(cx.re.value_or(""), listing);
    while (text.size() > reply_budget() && !listing.empty()) {
        listing.resize(listing.size() * reply_budget() / text.size());
        text = proto::encode_list_agents_ok(cx.re.value_or(""), listing);
    }
    send(cx.session_id, std::move(text));
}

}  // namespace parley::server
