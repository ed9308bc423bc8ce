// The effects of the router's actions: offers and events to sessions, persistence
// of conversations, offers, overrides and activity, the wake-up timer, and the
// gauges published from the router's stats.
#include "tenant/tenant_hub.h"

#include <algorithm>

#include "base/metrics.h"
#include "parley/proto/encode.h"

namespace parley::server {

void tenant_hub::apply(routing::actions& actions) {
    auto& m = global_metrics();
    const auto now_ms = to_millis(wall_now());
    for (auto& action : actions) {
        std::visit(
            [&](auto& a) {
                using A = std::decay_t<decltype(a)>;
                if constexpr (std::is_same_v<A, routing::send_offer>) {
                    m.chats_offered++;
                    offers_[a.offer_id] = {a.conversation_id, a.agent_id, monotonic_now()};
                    storage::offer_record offer;
                    offer.tenant_id = tenant_id_;
                    offer.id = a.offer_id;
                    offer.conversation_id = a.conversation_id;
                    offer.agent_id = a.agent_id;
                    offer.created_at = now_ms;
                    offer.expires_at = to_millis(a.expires_at);
                    store_->put_offer(std::move(offer), [](auto) {});
                    auto* c = find_conversation(a.conversation_id);
                    proto::offer event{a.offer_id, a.conversation_id,
                                       c ? visitor_card_of(*c) : proto::visitor_card{a.visitor_id, {}}, a.route,
                                       to_millis(a.expires_at)};
                    to_agent(a.agent_id, make_frame(proto::encode_offer_event(event)));
                } else if constexpr (std::is_same_v<A, routing::withdraw_offer>) {
                    if (a.reason == routing::withdraw_reason::expired) m.chats_expired++;
                    offers_.erase(a.offer_id);
                    store_->resolve_offer(tenant_id_, a.offer_id,
                                          a.reason == routing::withdraw_reason::expired
                                              ? storage::offer_outcome::expired
                                              : storage::offer_outcome::withdrawn,
                                          now_ms, [](auto) {});
                    to_agent(a.agent_id, make_frame(proto::encode_offer_withdrawn_event(a.offer_id, to_proto(a.reason))));
                } else if constexpr (std::is_same_v<A, routing::notify_visitor>) {
                    std::string frame = std::visit(
                        [&](const auto& e) -> std::string {
                            using E = std::decay_t<decltype(e)>;
                            namespace ve = routing::visitor_event;
                            if constexpr (std::is_same_v<E, ve::agent_joined>) {
                                m.chats_accepted++;
                                return proto::encode_agent_joined_event(
                                    a.conversation_id,
                                    {e.agent_id, e.name,
                                     e.avatar_url.empty() ? std::nullopt : std::optional<std::string>(e.avatar_url)});
                            } else if constexpr (std::is_same_v<E, ve::queued>) {
                                return proto::encode_queued_event(a.conversation_id, e.position);
                            } else if constexpr (std::is_same_v<E, ve::fallback>) {
                                m.chats_fallback++;
                                std::optional<proto::calendar_card> card;
                                if (e.calendar)
                                    card = proto::calendar_card{e.calendar->agent_id, e.calendar->agent_name,
                                                                e.calendar->booking_url};
                                return proto::encode_fallback_event(
                                    a.conversation_id,
                                    e.message.empty() ? std::nullopt : std::optional<std::string_view>(e.message), card);
                            } else if constexpr (std::is_same_v<E, ve::agent_away>) {
                                return proto::encode_agent_away_event(a.conversation_id);
                            } else if constexpr (std::is_same_v<E, ve::agent_back>) {
                                return proto::encode_agent_back_event(a.conversation_id);
                            } else {
                                return proto::encode_ended_event(a.conversation_id, to_proto(e.reason));
                            }
                        },
                        a.event);
                    if (std::holds_alternative<routing::visitor_event::ended>(a.event))
                        send_ended(a.conversation_id, false, a.visitor_id, make_frame(std::move(frame)));
                    else
                        to_visitor_about(a.conversation_id, a.visitor_id, make_frame(std::move(frame)));
                } else if constexpr (std::is_same_v<A, routing::notify_agent_availability>) {
                    to_agent(a.agent_id, make_frame(proto::encode_availability_event(to_proto(a.state))));
                    // Persist the override so a restart keeps it; a revert clears it.
                    if (a.state.source == routing::availability_source::override && a.state.until_at)
                        store_->set_override({tenant_id_, a.agent_id, a.state.available, to_millis(*a.state.until_at),
                                              now_ms},
                                             [](auto) {});
                    else
                        store_->clear_override(tenant_id_, a.agent_id, [](auto) {});
                } else if constexpr (std::is_same_v<A, routing::conversation_state_changed>) {
                    auto it = conversations_.find(a.conversation_id);
                    if (it == conversations_.end()) return;
                    auto& c = it->second;
                    c.tried_agents = a.tried_agents;
                    const std::string previous_agent = c.agent_id;
                    c.state = a.state;
                    c.route = a.route;
                    if (a.state == routing::conversation_state::active || a.state == routing::conversation_state::ended)
                        c.agent_id = a.agent_id;
                    else
                        c.agent_id.clear();
                    if (a.state == routing::conversation_state::queued) m.chats_queued++;
                    if (a.state == routing::conversation_state::ended) {
                        c.ended_at = now_ms;
                        if (a.reason) c.end_reason = end_reason_name(*a.reason);
                        if (!a.agent_id.empty() && a.reason)
                            send_ended(c.id, true, a.agent_id, make_frame(proto::encode_ended_event(c.id, to_proto(*a.reason))));
                    } else if (!previous_agent.empty() && previous_agent != c.agent_id &&
                               a.state != routing::conversation_state::active) {
                        // The chat left its agent (grace period over): tell the agent's clients it is gone.
                        to_agent_about(c.id, previous_agent,
                                       make_frame(proto::encode_ended_event(c.id, proto::end_reason::no_agent)));
                    }
                    persist_conversation(c);
                    if (a.state == routing::conversation_state::ended) forget_if_done(c.id);
                } else if constexpr (std::is_same_v<A, routing::record_activity>) {
                    storage::activity_record activity;
                    activity.tenant_id = tenant_id_;
                    activity.visitor_id = a.visitor_id;
                    activity.type = activity_name(a.type);
                    activity.at = to_millis(a.at);
                    activity.conversation_id = a.conversation_id;
                    if (!a.agent_id.empty()) activity.details = {{"agent_id", a.agent_id}};
                    if (a.type == routing::activity_type::chat_requested) m.chats_requested++;
                    store_->append_activity(std::move(activity), [](auto) {});
                } else if constexpr (std::is_same_v<A, routing::schedule_wakeup>) {
                    arm_wakeup(a.at);
                }
            },
            action);
    }
    actions.clear();
}

void tenant_hub::arm_wakeup(std::optional<routing::time_point> at) {
    wakeup_timer_.cancel();
    if (!at || stopped_) return;
    auto delay = *at - wall_now();
    wakeup_timer_.expires_after(std::max(routing::duration::zero(), delay));
    wakeup_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) self->on_wakeup();
    });
}

void tenant_hub::on_wakeup() {
    if (stopped_) return;
    routing::actions actions;
    router_->timer_fired(wall_now(), actions);
    apply(actions);
    // The router says schedule_wakeup only when the earliest deadline changes; re-arm from its answer.
    arm_wakeup(router_->next_deadline());
}

void tenant_hub::persist_conversation(const conversation& c) {
    storage::conversation_record record;
    record.tenant_id = tenant_id_;
    record.id = c.id;
    record.visitor_id = c.visitor_id;
    record.route = c.route;
    record.state = to_storage(c.state);
    if (!c.agent_id.empty()) record.agent_id = c.agent_id;
    record.started_at = c.started_at;
    record.ended_at = c.ended_at;
    record.end_reason = c.end_reason;
    record.score = c.score;
    record.tried_agents = c.tried_agents;
    store_->save_conversation(std::move(record), [](storage::status s) {
        if (!s) global_metrics().storage_errors++;
    });
}

// Gauges are process-wide; each hub adds the change since its last report.
void tenant_hub::publish_stats() {
    if (stopped_) return;
    auto& m = global_metrics();
    auto now = wall_now();
    auto s = router_->stats();
    m.agents_available += static_cast<std::int64_t>(s.agents_available) -
                          static_cast<std::int64_t>(published_stats_.agents_available);
    m.capacity_in_use += static_cast<std::int64_t>(s.capacity_in_use) -
                         static_cast<std::int64_t>(published_stats_.capacity_in_use);
    m.capacity_total += static_cast<std::int64_t>(s.capacity_total) -
                        static_cast<std::int64_t>(published_stats_.capacity_total);
    m.queue_depth += static_cast<std::int64_t>(s.queued) - static_cast<std::int64_t>(published_stats_.queued);
    std::int64_t oldest_ms = 0;
    for (const auto& [name, body] : routes_)
        if (auto q = router_->queue(name); q && q->oldest_enqueued_at)
            oldest_ms = std::max<std::int64_t>(oldest_ms, (now - *q->oldest_enqueued_at).count());
    // Oldest wait is a maximum over tenants; with one hub per tenant the last writer wins, which is
    // exact for one tenant and a lower bound otherwise.
    if (oldest_ms > 0 || published_oldest_wait_ms_ > 0) m.queue_oldest_wait_ms = oldest_ms;
    published_oldest_wait_ms_ = oldest_ms;
    published_stats_ = s;
    stats_timer_.expires_after(std::chrono::seconds(1));
    stats_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) self->publish_stats();
    });
}

}  // namespace parley::server
