#include "memory_tables.h"

#include <algorithm>
#include <tuple>

#include "store_rules.h"

namespace parley::storage::detail {
namespace {

// The rows of one tenant in a table keyed (tenant id, id), in id order.
template <class Row, class Visit>
void for_each_of_tenant(const std::map<std::pair<std::string, std::string>, Row>& table, const std::string& tenant_id,
                        Visit visit) {
    for (auto it = table.lower_bound({tenant_id, std::string()}); it != table.end() && it->first.first == tenant_id;
         ++it)
        visit(it->second);
}

template <class Row>
std::vector<Row> rows_of_tenant(const std::map<std::pair<std::string, std::string>, Row>& table,
                                const std::string& tenant_id) {
    std::vector<Row> rows;
    for_each_of_tenant(table, tenant_id, [&](const Row& row) { rows.push_back(row); });
    return rows;
}

// Deletes up to `batch` rows that `expired` says may go; returns how many.
template <class Table, class Expired>
std::size_t erase_some(Table& table, std::size_t batch, Expired expired) {
    std::size_t deleted = 0;
    for (auto it = table.begin(); it != table.end() && deleted < batch;) {
        if (expired(it->second)) {
            it = table.erase(it);
            ++deleted;
        } else {
            ++it;
        }
    }
    return deleted;
}

bool same_message(const message_record& stored, const message_record& m) {
    return stored.sender == m.sender && stored.agent_id == m.agent_id && stored.kind == m.kind &&
           stored.body == m.body && stored.client_msg_id == m.client_msg_id && stored.at == m.at;
}

}  // namespace

// --- writes -------------------------------------------------------------------

void memory_tables::put_tenant(const tenant_record& tenant) { tenants_[tenant.id] = tenant.settings; }

void memory_tables::put_agent(const agent_record& agent) { agents_[{agent.tenant_id, agent.id}] = agent; }

bool memory_tables::delete_agent(const std::string& tenant_id, const std::string& agent_id) {
    overrides_.erase({tenant_id, agent_id});
    return agents_.erase({tenant_id, agent_id}) > 0;
}

void memory_tables::put_route(const route_record& route) { routes_[{route.tenant_id, route.name}] = route; }

bool memory_tables::delete_route(const std::string& tenant_id, const std::string& name) {
    return routes_.erase({tenant_id, name}) > 0;
}

void memory_tables::put_account(const account_record& account) {
    accounts_[{account.tenant_id, account.domain}] = account;
}

bool memory_tables::delete_account(const std::string& tenant_id, const std::string& domain) {
    return accounts_.erase({tenant_id, domain}) > 0;
}

void memory_tables::put_visitor(const visitor_record& visitor) {
    auto [it, inserted] = visitors_.try_emplace({visitor.tenant_id, visitor.id}, visitor);
    if (inserted) return;
    auto& stored = it->second;
    for (auto field : {&visitor_record::name, &visitor_record::job_title, &visitor_record::email,
                       &visitor_record::phone, &visitor_record::crm_status, &visitor_record::company})
        if (visitor.*field) stored.*field = visitor.*field;
    stored.seen_at = visitor.seen_at;
}

void memory_tables::replace_visitor(const visitor_record& visitor) {
    visitors_[{visitor.tenant_id, visitor.id}] = visitor;
}

void memory_tables::save_conversation(const conversation_record& conversation) {
    auto& stored = conversations_[{conversation.tenant_id, conversation.id}];
    stored = conversation;
    stored.last_seq = 0;  // not a column: reads compute it from the messages
}

void memory_tables::put_offer(const offer_record& offer) { offers_[{offer.tenant_id, offer.id}] = offer; }

error_kind memory_tables::resolve_offer(const std::string& tenant_id, const std::string& offer_id,
                                        offer_outcome outcome, millis at) {
    auto it = offers_.find({tenant_id, offer_id});
    if (it == offers_.end()) return error_kind::not_found;
    if (it->second.outcome != offer_outcome::pending) return error_kind::conflict;
    it->second.outcome = outcome;
    it->second.resolved_at = at;
    return error_kind::ok;
}

void memory_tables::append_activity(activity_record activity) {
    activity.id = ++last_activity_id_;
    activities_.emplace(activity.id, std::move(activity));
}

void memory_tables::set_override(const availability_override& value) {
    overrides_[{value.tenant_id, value.agent_id}] = value;
}

void memory_tables::clear_override(const std::string& tenant_id, const std::string& agent_id) {
    overrides_.erase({tenant_id, agent_id});
}

result<append_outcome> memory_tables::append_message(const message_record& m) {
    auto& log = messages_[{m.tenant_id, m.conversation_id}];
    auto at_seq = log.by_seq.find(m.seq);
    auto by_client_id = m.client_msg_id ? log.seq_of_client_id.find(*m.client_msg_id) : log.seq_of_client_id.end();
    if (at_seq == log.by_seq.end() && by_client_id == log.seq_of_client_id.end()) {
        log.by_seq.emplace(m.seq, m);
        if (m.client_msg_id) log.seq_of_client_id.emplace(*m.client_msg_id, m.seq);
        return append_outcome{m.seq, m.at, false, true};
    }
    if (at_seq != log.by_seq.end() && same_message(at_seq->second, m)) return append_outcome{m.seq, m.at, false, true};
    if (by_client_id != log.seq_of_client_id.end())
        return append_outcome{by_client_id->second, log.by_seq.at(by_client_id->second).at, true, true};
    return error{error_kind::conflict, "seq " + std::to_string(m.seq) + " of conversation " + m.conversation_id +
                                           " is already taken by another message"};
}

// --- reads --------------------------------------------------------------------

std::vector<tenant_record> memory_tables::list_tenants() const {
    std::vector<tenant_record> tenants;
    for (const auto& [id, settings] : tenants_) tenants.push_back({id, settings});
    return tenants;
}

std::vector<agent_record> memory_tables::list_agents(const std::string& tenant_id) const {
    return rows_of_tenant(agents_, tenant_id);
}

std::vector<route_record> memory_tables::list_routes(const std::string& tenant_id) const {
    return rows_of_tenant(routes_, tenant_id);
}

std::vector<account_record> memory_tables::list_accounts(const std::string& tenant_id) const {
    return rows_of_tenant(accounts_, tenant_id);
}

std::optional<visitor_record> memory_tables::visitor_of(const std::string& tenant_id,
                                                        const std::string& visitor_id) const {
    auto it = visitors_.find({tenant_id, visitor_id});
    if (it == visitors_.end()) return std::nullopt;
    auto card = it->second;
    card.seen_at = 0;  // kept for retention only; the SQL reads do not return it either
    return card;
}

std::optional<message_record> memory_tables::last_message(const key& conversation, millis cutoff) const {
    auto log = messages_.find(conversation);
    if (log == messages_.end()) return std::nullopt;
    for (auto it = log->second.by_seq.rbegin(); it != log->second.by_seq.rend(); ++it)
        if (it->second.at >= cutoff) return it->second;
    return std::nullopt;
}

std::int64_t memory_tables::last_seq(const key& conversation) const {
    auto log = messages_.find(conversation);
    return log == messages_.end() || log->second.by_seq.empty() ? 0 : log->second.by_seq.rbegin()->first;
}

result<visitor_record> memory_tables::get_visitor(const std::string& tenant_id, const std::string& visitor_id) const {
    if (auto card = visitor_of(tenant_id, visitor_id)) return std::move(*card);
    return error{error_kind::not_found, "no visitor " + visitor_id};
}

result<conversation_record> memory_tables::get_conversation(const std::string& tenant_id,
                                                            const std::string& conversation_id) const {
    auto it = conversations_.find({tenant_id, conversation_id});
    if (it == conversations_.end()) return error{error_kind::not_found, "no conversation " + conversation_id};
    auto conversation = it->second;
    conversation.last_seq = last_seq(it->first);
    return conversation;
}

result<conversation_page> memory_tables::list_conversations(const conversation_query& q, int retention_days) const {
    auto start = conversation_page_start(q.limit, q.cursor);
    if (!start) return start.failure();
    const millis cutoff = retention_cutoff(q.now, retention_days);
    std::vector<const conversation_record*> rows;
    for_each_of_tenant(conversations_, q.tenant_id, [&](const conversation_record& c) {
        const bool listed = q.filter == conversation_filter::active
                                ? c.agent_id == q.agent_id && c.state == conversation_state::active
                                : !c.ended_at || *c.ended_at >= cutoff;
        if (listed && std::tie(c.started_at, c.id) < std::tie(start->time, start->id)) rows.push_back(&c);
    });
    std::sort(rows.begin(), rows.end(), [](const conversation_record* a, const conversation_record* b) {
        return std::tie(b->started_at, b->id) < std::tie(a->started_at, a->id);  // newest first
    });
    conversation_page page;
    for (const auto* c : rows) {
        if (page.conversations.size() == static_cast<std::size_t>(q.limit)) {
            page.next_cursor = cursor_after(page.conversations.back().conversation);
            break;
        }
        conversation_summary summary;
        summary.conversation = *c;
        summary.visitor = visitor_of(c->tenant_id, c->visitor_id);
        summary.last_message = last_message({c->tenant_id, c->id}, cutoff);
        if (summary.last_message) summary.conversation.last_seq = summary.last_message->seq;
        page.conversations.push_back(std::move(summary));
    }
    return page;
}

result<activity_page> memory_tables::get_activity(const activity_query& q, int retention_days) const {
    auto start = activity_page_start(q.limit, q.cursor);
    if (!start) return start.failure();
    const millis cutoff = retention_cutoff(q.now, retention_days);
    std::vector<const activity_record*> rows;
    for (const auto& [id, a] : activities_)
        if (a.tenant_id == q.tenant_id && a.visitor_id == q.visitor_id && a.at >= cutoff &&
            std::tie(a.at, a.id) < std::tie(start->time, start->id))
            rows.push_back(&a);
    std::sort(rows.begin(), rows.end(), [](const activity_record* a, const activity_record* b) {
        return std::tie(b->at, b->id) < std::tie(a->at, a->id);  // newest first
    });
    activity_page page;
    for (const auto* a : rows) {
        if (page.activities.size() == static_cast<std::size_t>(q.limit)) {
            page.next_cursor = cursor_after(page.activities.back());
            break;
        }
        page.activities.push_back(*a);
    }
    return page;
}

result<message_page> memory_tables::get_transcript(const std::string& tenant_id, const std::string& conversation_id,
                                                   std::int64_t after_seq, int limit, millis now,
                                                   int retention_days) const {
    if (auto bad = check_transcript_limit(limit)) return *bad;
    // One message more than asked for says whether another page follows.
    auto rows = messages_after(tenant_id, conversation_id, after_seq, limit + 1, now, retention_days);
    if (!rows) return rows.failure();
    return transcript_page(std::move(rows.value()), limit);
}

result<std::vector<message_record>> memory_tables::messages_after(const std::string& tenant_id,
                                                                  const std::string& conversation_id,
                                                                  std::int64_t after_seq, int limit, millis now,
                                                                  int retention_days) const {
    if (auto bad = check_messages_limit(limit)) return *bad;
    const millis cutoff = retention_cutoff(now, retention_days);
    // An ended conversation older than the retention window is gone for readers.
    auto conversation = conversations_.find({tenant_id, conversation_id});
    if (conversation == conversations_.end() ||
        (conversation->second.ended_at && *conversation->second.ended_at < cutoff))
        return error{error_kind::not_found, "no conversation " + conversation_id};
    std::vector<message_record> messages;
    auto log = messages_.find(conversation->first);
    if (log == messages_.end()) return messages;
    for (auto it = log->second.by_seq.upper_bound(after_seq);
         it != log->second.by_seq.end() && messages.size() < static_cast<std::size_t>(limit); ++it)
        if (it->second.at >= cutoff) messages.push_back(it->second);
    return messages;
}

open_state memory_tables::load_open_state(const std::optional<std::string>& tenant_id, millis now,
                                          int retention_days) const {
    auto of_tenant = [&](const std::string& id) { return !tenant_id || id == *tenant_id; };
    open_state state;
    for (const auto& [id, c] : conversations_) {
        if (c.state == conversation_state::ended || !of_tenant(c.tenant_id)) continue;
        conversation_summary summary;
        summary.conversation = c;
        summary.conversation.last_seq = last_seq(id);
        summary.visitor = visitor_of(c.tenant_id, c.visitor_id);
        // As list_conversations shows it: within the retention window.
        if (summary.conversation.last_seq > 0)
            summary.last_message = last_message(id, retention_cutoff(now, retention_days));
        state.conversations.push_back(std::move(summary));
    }
    std::stable_sort(state.conversations.begin(), state.conversations.end(), [](const auto& a, const auto& b) {
        return a.conversation.started_at < b.conversation.started_at;
    });
    for (const auto& [id, o] : offers_)
        if (o.outcome == offer_outcome::pending && of_tenant(o.tenant_id)) state.pending_offers.push_back(o);
    std::stable_sort(state.pending_offers.begin(), state.pending_offers.end(),
                     [](const offer_record& a, const offer_record& b) { return a.created_at < b.created_at; });
    for (const auto& [id, o] : overrides_)  // in (tenant, agent) order
        if ((!o.until_at || *o.until_at > now) && of_tenant(o.tenant_id)) state.overrides.push_back(o);
    return state;
}

// --- retention ----------------------------------------------------------------

std::size_t memory_tables::prune_some(prunable what, millis cutoff, std::size_t batch) {
    switch (what) {
        case prunable::messages: {
            std::size_t deleted = 0;
            for (auto log = messages_.begin(); log != messages_.end() && deleted < batch;) {
                auto& [by_seq, seq_of_client_id] = log->second;
                deleted += erase_some(by_seq, batch - deleted, [&](const message_record& m) {
                    if (m.at >= cutoff) return false;
                    if (m.client_msg_id) seq_of_client_id.erase(*m.client_msg_id);
                    return true;
                });
                log = by_seq.empty() ? messages_.erase(log) : std::next(log);
            }
            return deleted;
        }
        case prunable::activities:
            return erase_some(activities_, batch, [&](const activity_record& a) { return a.at < cutoff; });
        case prunable::conversations:
            return erase_some(conversations_, batch,
                              [&](const conversation_record& c) { return c.ended_at && *c.ended_at < cutoff; });
        case prunable::offers:
            return erase_some(offers_, batch, [&](const offer_record& o) {
                return o.outcome != offer_outcome::pending && o.created_at < cutoff;
            });
        case prunable::visitors:
            return erase_some(visitors_, batch, [&](const visitor_record& v) {
                if (v.seen_at >= cutoff) return false;
                for (const auto& [id, c] : conversations_)
                    if (c.tenant_id == v.tenant_id && c.visitor_id == v.id) return false;
                for (const auto& [id, a] : activities_)
                    if (a.tenant_id == v.tenant_id && a.visitor_id == v.id) return false;
                return true;
            });
    }
    return 0;
}

}  // namespace parley::storage::detail
