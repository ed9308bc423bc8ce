// The routing core. Layout of the state, and why:
//
//  - Agents live in a vector indexed by a dense agent index that never changes
//    for a given agent id (a removed agent's slot is revived if it comes back),
//    so conversations can remember tried agents as small integers.
//  - Round robin is an LRU ring per "pool" (all agents, each team, each rule's
//    agent set): an intrusive doubly linked list holding exactly the agents
//    that are eligible for new work (connected, available, under capacity).
//    Picking takes the first member not yet tried for the conversation and
//    moves it to the tail, so a decision costs O(1 + tried agents), never a
//    scan of the tenant. Eligibility changes relink an agent in its few pools.
//  - Conversations and offers live in slot vectors (index + generation) so the
//    timer heap can refer to them without owning strings.
//  - Timers: one min-heap of (at, kind, slot, generation). Each timed thing
//    owns a `deadline` {at, queued_at}; an entry is live only while its time
//    equals `queued_at`. Postponing a deadline (idle timer on every message)
//    pushes nothing: the old entry, when it pops, re-queues itself at `at`.
//  - Queues are drained at the end of every public call that may have freed
//    capacity (`drain_needed_`), never by polling.
#include <parley/routing/tenant_router.h>
#include <parley/routing/schedule.h>
#include <parley/routing/route_graph.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <queue>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

namespace parley::routing {

namespace {

constexpr std::uint32_t none = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint32_t all_agents_pool = 0;

struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};
template <class Value>
using string_map = std::unordered_map<std::string, Value, string_hash, std::equal_to<>>;

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower_copy(std::string_view text) {
    std::string result(text);
    for (auto& c : result) c = ascii_lower(c);
    return result;
}

bool iequals(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
        return ascii_lower(x) == ascii_lower(y);
    });
}

bool icontains(std::string_view haystack, std::string_view needle) {
    if (needle.empty()) return true;
    if (needle.size() > haystack.size()) return false;
    for (std::size_t i = 0; i + needle.size() <= haystack.size(); ++i) {
        if (iequals(haystack.substr(i, needle.size()), needle)) return true;
    }
    return false;
}

std::string_view email_domain(std::string_view email) {
    const auto at = email.rfind('@');
    return at == std::string_view::npos ? std::string_view{} : email.substr(at + 1);
}

std::string_view field_of(const visitor_profile& profile, visitor_field field) {
    switch (field) {
        case visitor_field::name: return profile.name;
        case visitor_field::job_title: return profile.job_title;
        case visitor_field::email: return profile.email;
        case visitor_field::email_domain: return email_domain(profile.email);
        case visitor_field::phone: return profile.phone;
        case visitor_field::crm_status: return profile.crm_status;
        case visitor_field::company: return profile.company;
    }
    return {};
}

// A field the visitor did not supply (empty in visitor_profile) matches no
// operator, not even not_equals: "crm_status not_equals Customer" is meant for
// known non-customers, not for visitors we know nothing about (proto/README.md,
// PUT route). proto already reads "" as not supplied, so nothing is lost by
// treating the two alike. An email without a domain has no email_domain.
bool condition_holds(const visitor_profile& profile, const rule_condition& condition) {
    const auto value = field_of(profile, condition.field);
    if (value.empty()) return false;
    const std::string_view expected = condition.value;
    switch (condition.op) {
        case rule_op::equals: return iequals(value, expected);
        case rule_op::not_equals: return !iequals(value, expected);
        case rule_op::contains: return icontains(value, expected);
        case rule_op::starts_with: return value.size() >= expected.size() && iequals(value.substr(0, expected.size()), expected);
        case rule_op::ends_with:
            return value.size() >= expected.size() && iequals(value.substr(value.size() - expected.size()), expected);
    }
    return false;
}

// A deadline owned by a timed thing; see the file comment.
struct deadline {
    std::optional<time_point> at;
    std::optional<time_point> queued_at;
};

enum class timer_kind : std::uint8_t { offer_expiry, idle, queue_wait, grace, availability, visitor_grace };

struct timer_entry {
    time_point at;
    timer_kind kind;
    std::uint32_t slot;
    std::uint32_t generation;

    friend bool operator>(const timer_entry& a, const timer_entry& b) {
        return std::tie(a.at, a.kind, a.slot, a.generation) > std::tie(b.at, b.kind, b.slot, b.generation);
    }
};

struct pool_member {
    std::uint32_t agent = none;
    std::uint32_t prev = none;
    std::uint32_t next = none;
    bool present = true;
    bool linked = false;
};

// LRU ring of the eligible members of one pool (see the file comment).
struct agent_pool {
    std::vector<pool_member> members;  // positions are stable; removed members stay as holes
    std::uint32_t head = none;
    std::uint32_t tail = none;
};

struct pool_ref {
    std::uint32_t pool;
    std::uint32_t position;
};

struct override_state {
    bool available;
    time_point until;
};

struct agent_state {
    agent_config config;
    std::optional<resolved_schedule> schedule;
    bool alive = false;
    std::uint32_t generation = 0;
    std::vector<std::string> sessions;
    std::optional<override_state> manual_override;
    availability current;  // cached; refreshed at every schedule/override boundary
    std::vector<pool_ref> memberships;
    std::vector<std::uint32_t> active_chats;  // conversation slots
    std::vector<std::uint32_t> offers;        // offer slots
    bool eligible = false;  // linked into its pools; see is_eligible()
    int consecutive_missed = 0;
    deadline grace;
    deadline availability_check;

    int load() const { return static_cast<int>(active_chats.size() + offers.size()); }
};

struct conversation_record {
    bool alive = false;
    std::uint32_t generation = 0;
    std::string id;
    std::string visitor_id;
    visitor_profile profile;
    std::string route;
    conversation_state state = conversation_state::routing;
    std::vector<std::uint32_t> tried;  // agent indices, first tried first; never offered twice
    int attempts_this_round = 0;       // reset when an active chat is routed again
    std::uint32_t agent = none;        // active only
    std::uint32_t offer = none;        // routing with a pending offer
    time_point requested_at;
    time_point last_activity;
    std::uint64_t queue_seq = 0;  // 0 = never queued; FIFO order key
    time_point first_enqueued_at;
    deadline idle;
    deadline queue_wait;
    // Visitor presence (visitor_session_opened/closed). `visitor_away`: known to have no
    // session (the last one closed, or restored without one); while it holds, a routing or
    // queued conversation has `visitor_grace` armed.
    std::vector<std::string> visitor_sessions;
    bool visitor_away = false;
    deadline visitor_grace;
    bool restored = false;  // by restore_conversation, until finish_restore
};

struct offer_record {
    bool alive = false;
    std::uint32_t generation = 0;
    std::string id;
    std::uint32_t conversation = none;
    std::uint32_t agent = none;
    time_point expires_at;
    deadline expiry;
};

template <class Record>
struct slot_vector {
    std::vector<Record> items;
    std::vector<std::uint32_t> free_slots;
    std::size_t live = 0;

    std::uint32_t acquire() {
        ++live;
        if (!free_slots.empty()) {
            const auto slot = free_slots.back();
            free_slots.pop_back();
            items[slot].alive = true;
            return slot;
        }
        items.emplace_back();
        items.back().alive = true;
        return static_cast<std::uint32_t>(items.size() - 1);
    }
    void release(std::uint32_t slot) {
        --live;
        const auto generation = items[slot].generation + 1;
        items[slot] = Record{};
        items[slot].generation = generation;
        free_slots.push_back(slot);
    }
};

struct rule_state {
    int priority;
    rule_condition when;
    std::vector<std::string> agent_ids;  // as configured, so agents added later join the pool
    std::uint32_t pool;
};

struct route_state {
    static constexpr std::size_t unchanged = std::numeric_limits<std::size_t>::max();
    route_config config;
    std::vector<rule_state> rules;  // sorted by priority
    std::deque<std::uint32_t> queue;  // conversation slots, ascending queue_seq
    std::size_t positions_changed_from = unchanged;  // in this event; see announce_positions
};

request_result rejected_request(outcome result) {
    request_result rejected;
    rejected.result = result;
    return rejected;
}

}  // namespace

struct tenant_router::impl {
    tenant_settings settings;
    std::string offer_id_prefix;
    std::uint64_t offer_counter = 0;

    std::vector<agent_state> agents;
    string_map<std::uint32_t> agent_index;
    std::vector<agent_pool> pools;
    std::vector<std::uint32_t> free_pools;
    string_map<std::uint32_t> team_pools;

    string_map<route_state> routes;
    string_map<std::string> accounts;  // lower-case key -> agent id

    slot_vector<conversation_record> conversations;
    string_map<std::uint32_t> conversation_index;
    string_map<std::uint32_t> visitor_index;  // visitor -> open conversation
    slot_vector<offer_record> offers;
    string_map<std::uint32_t> offer_index;

    std::priority_queue<timer_entry, std::vector<timer_entry>, std::greater<>> timers;
    std::optional<time_point> reported_wakeup;

    bool drain_needed = false;
    std::vector<std::string> positions_dirty;  // routes whose queue positions changed in this event
    std::size_t queued_total = 0;
    std::uint64_t next_queue_seq = 1;
    // Restored routing conversations (slot, generation), routed by finish_restore: one ended
    // meanwhile may have given its slot to a new conversation, which must not be routed twice.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> restored_pending;

    // ---- pools ---------------------------------------------------------

    std::uint32_t create_pool() {
        if (!free_pools.empty()) {
            const auto index = free_pools.back();
            free_pools.pop_back();
            pools[index] = agent_pool{};
            return index;
        }
        pools.emplace_back();
        return static_cast<std::uint32_t>(pools.size() - 1);
    }

    void link_tail(agent_pool& pool, std::uint32_t position) {
        auto& member = pool.members[position];
        member.prev = pool.tail;
        member.next = none;
        if (pool.tail != none) {
            pool.members[pool.tail].next = position;
        } else {
            pool.head = position;
        }
        pool.tail = position;
        member.linked = true;
    }

    void unlink(agent_pool& pool, std::uint32_t position) {
        auto& member = pool.members[position];
        if (member.prev != none) {
            pool.members[member.prev].next = member.next;
        } else {
            pool.head = member.next;
        }
        if (member.next != none) {
            pool.members[member.next].prev = member.prev;
        } else {
            pool.tail = member.prev;
        }
        member.prev = member.next = none;
        member.linked = false;
    }

    void add_member(std::uint32_t pool_index, std::uint32_t agent) {
        for (const auto& ref : agents[agent].memberships) {
            if (ref.pool == pool_index) return;
        }
        auto& pool = pools[pool_index];
        const auto position = static_cast<std::uint32_t>(pool.members.size());
        pool.members.push_back(pool_member{agent});
        agents[agent].memberships.push_back(pool_ref{pool_index, position});
        if (agents[agent].eligible) link_tail(pool, position);
    }

    void remove_member(std::uint32_t pool_index, std::uint32_t agent) {
        auto& refs = agents[agent].memberships;
        const auto found = std::find_if(refs.begin(), refs.end(), [&](const pool_ref& ref) { return ref.pool == pool_index; });
        if (found == refs.end()) return;
        auto& pool = pools[pool_index];
        if (pool.members[found->position].linked) unlink(pool, found->position);
        pool.members[found->position].present = false;
        refs.erase(found);
    }

    void destroy_pool(std::uint32_t pool_index) {
        for (const auto& member : pools[pool_index].members) {
            if (!member.present) continue;
            auto& refs = agents[member.agent].memberships;
            refs.erase(std::remove_if(refs.begin(), refs.end(), [&](const pool_ref& ref) { return ref.pool == pool_index; }),
                refs.end());
        }
        pools[pool_index] = agent_pool{};
        free_pools.push_back(pool_index);
    }

    std::uint32_t team_pool(const std::string& team) {
        const auto found = team_pools.find(team);
        if (found != team_pools.end()) return found->second;
        const auto index = create_pool();
        team_pools.emplace(team, index);
        return index;
    }

    // ---- eligibility ---------------------------------------------------

    static bool is_eligible(const agent_state& agent) {
        return agent.alive && !agent.sessions.empty() && agent.current.available &&
               agent.load() < agent.config.max_chats;
    }

    // Keeps `eligible` and pool links in step with is_eligible(). Called after
    // anything that may change sessions, availability or load.
    void refresh_eligibility(std::uint32_t agent_index_value) {
        auto& agent = agents[agent_index_value];
        const bool eligible = is_eligible(agent);
        if (eligible == agent.eligible) return;
        agent.eligible = eligible;
        for (const auto& ref : agent.memberships) {
            if (eligible) {
                link_tail(pools[ref.pool], ref.position);
            } else {
                unlink(pools[ref.pool], ref.position);
            }
        }
        if (eligible) drain_needed = true;
    }

    void capacity_freed(std::uint32_t agent) {
        refresh_eligibility(agent);
        if (agents[agent].eligible) drain_needed = true;
    }

    // ---- timers --------------------------------------------------------

    void arm(deadline& target, time_point at, timer_kind kind, std::uint32_t slot, std::uint32_t generation) {
        target.at = at;
        if (!target.queued_at || at < *target.queued_at) {
            timers.push(timer_entry{at, kind, slot, generation});
            target.queued_at = at;
        }
    }

    deadline* deadline_of(const timer_entry& entry) {
        switch (entry.kind) {
            case timer_kind::offer_expiry: {
                auto& offer = offers.items[entry.slot];
                return offer.alive && offer.generation == entry.generation ? &offer.expiry : nullptr;
            }
            case timer_kind::idle:
            case timer_kind::queue_wait:
            case timer_kind::visitor_grace: {
                auto& conversation = conversations.items[entry.slot];
                if (!conversation.alive || conversation.generation != entry.generation) return nullptr;
                if (entry.kind == timer_kind::idle) return &conversation.idle;
                return entry.kind == timer_kind::queue_wait ? &conversation.queue_wait : &conversation.visitor_grace;
            }
            case timer_kind::grace:
            case timer_kind::availability: {
                auto& agent = agents[entry.slot];
                if (!agent.alive || agent.generation != entry.generation) return nullptr;
                return entry.kind == timer_kind::grace ? &agent.grace : &agent.availability_check;
            }
        }
        return nullptr;
    }

    // Drops dead heap tops so the reported wakeup is a real deadline.
    void drop_dead_timer_tops() {
        while (!timers.empty()) {
            const auto entry = timers.top();
            deadline* target = deadline_of(entry);
            if (target && target->queued_at == entry.at) {
                if (target->at) return;
                target->queued_at.reset();  // disarmed: this entry was its only one
            }
            timers.pop();
        }
    }

    // Every public mutator ends here: drain queues, then report the wakeup.
    void finish(time_point now, actions& out) {
        drain_queues(now, out);
        // State changes carry the tried agents as this call leaves them: offers made after the
        // change (in the same call) count too.
        for (auto& item : out)
            if (auto* change = std::get_if<conversation_state_changed>(&item))
                if (auto found = conversation_index.find(change->conversation_id); found != conversation_index.end())
                    change->tried_agents = tried_agent_ids(conversations.items[found->second]);
        announce_positions(out);
        drop_dead_timer_tops();
        std::optional<time_point> next;
        if (!timers.empty()) next = timers.top().at;
        if (next != reported_wakeup) {
            reported_wakeup = next;
            out.push_back(schedule_wakeup{next});
        }
    }

    void fire_due_timers(time_point now, actions& out) {
        while (!timers.empty() && timers.top().at <= now) {
            const auto entry = timers.top();
            timers.pop();
            deadline* target = deadline_of(entry);
            if (!target || target->queued_at != entry.at) continue;  // superseded
            target->queued_at.reset();
            if (!target->at) continue;  // disarmed
            if (*target->at > now) {    // postponed: re-queue at the real deadline
                timers.push(timer_entry{*target->at, entry.kind, entry.slot, entry.generation});
                target->queued_at = target->at;
                continue;
            }
            target->at.reset();
            switch (entry.kind) {
                case timer_kind::offer_expiry: expire_offer(entry.slot, now, out); break;
                case timer_kind::idle: idle_expired(entry.slot, now, out); break;
                case timer_kind::queue_wait: queue_wait_expired(entry.slot, now, out); break;
                case timer_kind::grace: grace_expired(entry.slot, now, out); break;
                case timer_kind::availability: apply_availability(entry.slot, now, out); break;
                case timer_kind::visitor_grace: visitor_grace_expired(entry.slot, now, out); break;
            }
        }
    }

    // ---- availability --------------------------------------------------

    static availability compute_availability(const agent_state& agent, time_point now) {
        if (agent.manual_override && now < agent.manual_override->until) {
            return availability{agent.manual_override->available, availability_source::override,
                agent.manual_override->until};
        }
        return availability{agent.schedule->available_at(now), availability_source::schedule, std::nullopt};
    }

    void arm_availability_check(std::uint32_t index, time_point now) {
        auto& agent = agents[index];
        std::optional<time_point> at;
        if (agent.alive && !agent.sessions.empty()) {
            at = agent.manual_override ? std::optional<time_point>{agent.manual_override->until}
                                       : agent.schedule->next_block_boundary(now);
        }
        if (at) {
            arm(agent.availability_check, *at, timer_kind::availability, index, agent.generation);
        } else {
            agent.availability_check.at.reset();
        }
    }

    // Re-evaluates override and schedule at `now`; notifies on change; an
    // agent going unavailable loses its pending offers (they are re-routed).
    void apply_availability(std::uint32_t index, time_point now, actions& out) {
        auto& agent = agents[index];
        if (agent.manual_override && now >= agent.manual_override->until) agent.manual_override.reset();
        const auto next = compute_availability(agent, now);
        const bool lost_availability = agent.current.available && !next.available;
        if (next != agent.current) {
            agent.current = next;
            out.push_back(notify_agent_availability{agent.config.id, next});
        }
        arm_availability_check(index, now);
        refresh_eligibility(index);
        if (lost_availability) withdraw_all_offers(index, withdraw_reason::agent_unavailable, now, out);
    }

    // ---- offers --------------------------------------------------------

    std::string make_offer_id() {
        char digits[24];
        const auto end = std::to_chars(digits, digits + sizeof digits, ++offer_counter).ptr;
        std::string id;
        id.reserve(3 + offer_id_prefix.size() + static_cast<std::size_t>(end - digits));
        id.append("o_").append(offer_id_prefix).append("_").append(digits, end);
        return id;
    }

    void make_offer(std::uint32_t conversation_slot, std::uint32_t agent, const route_state& route, time_point now,
        actions& out) {
        const auto offer_slot = offers.acquire();
        auto& offer = offers.items[offer_slot];
        offer.id = make_offer_id();
        offer.conversation = conversation_slot;
        offer.agent = agent;
        offer.expires_at = now + route.config.offer_timeout;
        offer_index.emplace(offer.id, offer_slot);
        arm(offer.expiry, offer.expires_at, timer_kind::offer_expiry, offer_slot, offer.generation);

        auto& conversation = conversations.items[conversation_slot];
        conversation.offer = offer_slot;
        conversation.tried.push_back(agent);
        ++conversation.attempts_this_round;
        if (conversation.state != conversation_state::routing) set_state(conversation, conversation_state::routing, out);

        agents[agent].offers.push_back(offer_slot);
        refresh_eligibility(agent);
        out.push_back(send_offer{agents[agent].config.id, offer.id, conversation.id, conversation.visitor_id,
            conversation.route, offer.expires_at});
    }

    // Removes the offer from every index; the caller decides what comes next.
    void resolve_offer(std::uint32_t offer_slot) {
        auto& offer = offers.items[offer_slot];
        auto& agent_offers = agents[offer.agent].offers;
        agent_offers.erase(std::find(agent_offers.begin(), agent_offers.end(), offer_slot));
        conversations.items[offer.conversation].offer = none;
        offer_index.erase(offer.id);
        offers.release(offer_slot);
    }

    void withdraw_all_offers(std::uint32_t agent, withdraw_reason reason, time_point now, actions& out) {
        if (agents[agent].offers.empty()) return;
        std::vector<std::uint32_t> to_reroute;
        const auto pending = agents[agent].offers;  // copy: resolve_offer edits it
        for (const auto offer_slot : pending) {
            const auto& offer = offers.items[offer_slot];
            const auto conversation_slot = offer.conversation;
            out.push_back(withdraw_offer{agents[agent].config.id, offer.id, conversations.items[conversation_slot].id, reason});
            resolve_offer(offer_slot);
            to_reroute.push_back(conversation_slot);
        }
        capacity_freed(agent);
        for (const auto conversation_slot : to_reroute) route_conversation(conversation_slot, now, out);
    }

    void expire_offer(std::uint32_t offer_slot, time_point now, actions& out) {
        const auto& offer = offers.items[offer_slot];
        const auto agent = offer.agent;
        const auto conversation_slot = offer.conversation;
        const auto& conversation = conversations.items[conversation_slot];
        out.push_back(withdraw_offer{agents[agent].config.id, offer.id, conversation.id, withdraw_reason::expired});
        out.push_back(record_activity{conversation.visitor_id, conversation.id, activity_type::chat_missed,
            agents[agent].config.id, now});
        resolve_offer(offer_slot);
        capacity_freed(agent);
        auto& agent_state_ref = agents[agent];
        ++agent_state_ref.consecutive_missed;
        if (settings.auto_away_after_missed > 0 && agent_state_ref.consecutive_missed >= settings.auto_away_after_missed &&
            agent_state_ref.current.available) {
            agent_state_ref.consecutive_missed = 0;
            set_override(agent, false, now, out);
        }
        route_conversation(conversation_slot, now, out);
    }

    void set_override(std::uint32_t index, bool available, time_point now, actions& out) {
        auto& agent = agents[index];
        if (available == agent.schedule->available_at(now)) {
            agent.manual_override.reset();  // switched back to the schedule
        } else {
            agent.manual_override = override_state{available, agent.schedule->override_expiry(now)};
        }
        apply_availability(index, now, out);
    }

    // ---- conversations -------------------------------------------------

    void set_state(conversation_record& conversation, conversation_state state, actions& out,
        std::optional<end_reason> reason = std::nullopt, std::string agent_id = {}) {
        conversation.state = state;
        out.push_back(conversation_state_changed{conversation.id, conversation.visitor_id, conversation.route, state,
            std::move(agent_id), reason, tried_agent_ids(conversation)});
    }

    std::vector<std::string> tried_agent_ids(const conversation_record& conversation) const {
        std::vector<std::string> ids;
        ids.reserve(conversation.tried.size());
        for (const auto agent : conversation.tried) ids.push_back(agents[agent].config.id);
        return ids;
    }

    bool already_tried(const conversation_record& conversation, std::uint32_t agent) const {
        return std::find(conversation.tried.begin(), conversation.tried.end(), agent) != conversation.tried.end();
    }

    std::uint32_t pick_from_pool(std::uint32_t pool_index, const conversation_record& conversation) {
        auto& pool = pools[pool_index];
        for (auto position = pool.head; position != none; position = pool.members[position].next) {
            const auto agent = pool.members[position].agent;
            if (already_tried(conversation, agent)) continue;
            if (position != pool.tail) {  // round robin: the chosen agent goes to the back
                unlink(pool, position);
                link_tail(pool, position);
            }
            return agent;
        }
        return none;
    }

    std::uint32_t find_agent(std::string_view id) const {
        const auto found = agent_index.find(id);
        return found == agent_index.end() || !agents[found->second].alive ? none : found->second;
    }

    std::uint32_t account_owner(const visitor_profile& profile) const {
        if (accounts.empty()) return none;
        for (const auto key : {email_domain(profile.email), std::string_view{profile.company}}) {
            if (key.empty()) continue;
            const auto found = accounts.find(lower_copy(key));
            if (found != accounts.end()) return find_agent(found->second);
        }
        return none;
    }

    std::uint32_t pick_by_rules(const conversation_record& conversation, const route_state& route) {
        for (const auto& rule : route.rules) {
            if (!condition_holds(conversation.profile, rule.when)) continue;
            const auto agent = pick_from_pool(rule.pool, conversation);
            if (agent != none) return agent;
        }
        return none;
    }

    // The next eligible agent for the conversation on this route, or none.
    std::uint32_t pick_candidate(const conversation_record& conversation, const route_state& route) {
        const auto type = route.config.type;
        if (type == route_type::account || type == route_type::rules) {
            // Account ownership is checked before any other rule.
            const auto owner = account_owner(conversation.profile);
            if (owner != none && agents[owner].eligible && !already_tried(conversation, owner)) return owner;
        }
        switch (type) {
            case route_type::round_robin: return pick_from_pool(all_agents_pool, conversation);
            case route_type::team: {
                const auto found = team_pools.find(route.config.team);
                return found == team_pools.end() ? none : pick_from_pool(found->second, conversation);
            }
            case route_type::agent: {
                const auto agent = find_agent(route.config.agent_id);
                return agent != none && agents[agent].eligible && !already_tried(conversation, agent) ? agent : none;
            }
            case route_type::rules: return pick_by_rules(conversation, route);
            case route_type::account:
                return route.rules.empty() ? pick_from_pool(all_agents_pool, conversation)
                                           : pick_by_rules(conversation, route);
        }
        return none;
    }

    // Offers the conversation to the next eligible agent, or queues it, or
    // takes the fallback route, or falls back. Precondition: no pending offer,
    // not in a queue, not active.
    void route_conversation(std::uint32_t conversation_slot, time_point now, actions& out) {
        for (int hop = 0; hop < max_fallback_route_hops; ++hop) {
            auto& conversation = conversations.items[conversation_slot];
            const auto found = routes.find(conversation.route);
            if (found == routes.end()) return fall_back(conversation_slot, nullptr, now, out);
            auto& route = found->second;
            if (conversation.attempts_this_round >= route.config.max_attempts) {
                return fall_back(conversation_slot, &route, now, out);
            }
            const bool queues = route.config.queue_wait > duration::zero();
            if (queues && !route.queue.empty()) {
                // Others are waiting: join the line; the drain serves it in order.
                drain_needed = true;
                return enqueue(conversation_slot, route, now, out);
            }
            const auto agent = pick_candidate(conversation, route);
            if (agent != none) return make_offer(conversation_slot, agent, route, now, out);
            if (queues) return enqueue(conversation_slot, route, now, out);
            const auto& next_route = route.config.fallback_route;
            if (conversation.attempts_this_round == 0 && !next_route.empty() && next_route != conversation.route &&
                routes.contains(next_route)) {
                conversation.route = next_route;  // no agent eligible at all here
                continue;
            }
            return fall_back(conversation_slot, &route, now, out);
        }
        const auto found = routes.find(conversations.items[conversation_slot].route);
        fall_back(conversation_slot, found == routes.end() ? nullptr : &found->second, now, out);
    }

    // Positions from `from` on changed. Told once, at the end of the event
    // (announce_positions): an event that moves the queue many times (offer
    // timers expiring together, a drain) would otherwise tell everyone behind
    // each move, quadratic in the queue's length.
    void positions_changed(const std::string& route_name, route_state& route, std::size_t from) {
        if (route.positions_changed_from == route_state::unchanged) positions_dirty.push_back(route_name);
        route.positions_changed_from = std::min(route.positions_changed_from, from);
    }

    void announce_positions(actions& out) {
        for (const auto& name : positions_dirty) {
            const auto found = routes.find(name);
            if (found == routes.end()) continue;
            auto& route = found->second;
            for (auto index = route.positions_changed_from; index < route.queue.size(); ++index) {
                const auto& conversation = conversations.items[route.queue[index]];
                out.push_back(notify_visitor{conversation.id, conversation.visitor_id,
                    visitor_event::queued{static_cast<int>(index + 1)}});
            }
            route.positions_changed_from = route_state::unchanged;
        }
        positions_dirty.clear();
    }

    void enqueue(std::uint32_t conversation_slot, route_state& route, time_point now, actions& out) {
        auto& conversation = conversations.items[conversation_slot];
        if (conversation.queue_seq == 0) {
            conversation.queue_seq = next_queue_seq++;
            conversation.first_enqueued_at = now;
        }
        const auto wait_ends = conversation.first_enqueued_at + route.config.queue_wait;
        if (now >= wait_ends || route.queue.size() >= settings.max_queue_length)
            return fall_back(conversation_slot, &route, now, out);
        arm(conversation.queue_wait, wait_ends, timer_kind::queue_wait, conversation_slot, conversation.generation);
        const auto position = std::upper_bound(route.queue.begin(), route.queue.end(), conversation.queue_seq,
            [&](std::uint64_t seq, std::uint32_t slot) { return seq < conversations.items[slot].queue_seq; });
        const auto index = static_cast<std::size_t>(position - route.queue.begin());
        route.queue.insert(position, conversation_slot);
        ++queued_total;
        set_state(conversation, conversation_state::queued, out);
        positions_changed(conversation.route, route, index);
    }

    void remove_from_queue(std::uint32_t conversation_slot) {
        const auto found = routes.find(conversations.items[conversation_slot].route);
        if (found == routes.end()) return;
        auto& queue = found->second.queue;
        const auto position = std::find(queue.begin(), queue.end(), conversation_slot);
        if (position == queue.end()) return;
        const auto index = static_cast<std::size_t>(position - queue.begin());
        queue.erase(position);
        --queued_total;
        positions_changed(found->first, found->second, index);
    }

    // Serves every queue in FIFO order while agents are eligible. A queued
    // conversation is passed over only when no eligible agent is left for it
    // (all of them already tried it), so nobody is overtaken by a later one
    // that the same agent could have served.
    void drain_queues(time_point now, actions& out) {
        while (drain_needed) {
            drain_needed = false;
            if (queued_total == 0) return;
            std::vector<route_state*> waiting;
            for (auto& [name, route] : routes) {
                if (!route.queue.empty()) waiting.push_back(&route);
            }
            std::sort(waiting.begin(), waiting.end(), [&](const route_state* a, const route_state* b) {
                return conversations.items[a->queue.front()].queue_seq < conversations.items[b->queue.front()].queue_seq;
            });
            for (auto* route : waiting) {
                const auto& route_name = route->config.name;
                std::size_t index = 0;
                while (index < route->queue.size()) {
                    const auto conversation_slot = route->queue[index];
                    const auto agent = pick_candidate(conversations.items[conversation_slot], *route);
                    if (agent == none) {
                        ++index;
                        continue;
                    }
                    route->queue.erase(route->queue.begin() + static_cast<std::ptrdiff_t>(index));
                    --queued_total;
                    positions_changed(route_name, *route, index);
                    make_offer(conversation_slot, agent, *route, now, out);
                }
            }
        }
    }

    void fall_back(std::uint32_t conversation_slot, const route_state* route, time_point now, actions& out) {
        auto& conversation = conversations.items[conversation_slot];
        visitor_event::fallback event;
        if (route) {
            event.message = route->config.fallback_message;
            if (route->config.fallback_calendar) {
                auto agent = conversation.tried.empty() ? none : conversation.tried.front();
                if (agent == none && route->config.type == route_type::agent) agent = find_agent(route->config.agent_id);
                if (agent != none && !agents[agent].config.calendar_url.empty()) {
                    const auto& config = agents[agent].config;
                    event.calendar = calendar_card{config.id, config.name, config.calendar_url};
                }
            }
        }
        out.push_back(notify_visitor{conversation.id, conversation.visitor_id, std::move(event)});
        end_conversation(conversation_slot, end_reason::no_agent, withdraw_reason::visitor_left, now, out);
    }

    void end_conversation(std::uint32_t conversation_slot, end_reason reason, withdraw_reason offer_reason,
        time_point now, actions& out) {
        auto& conversation = conversations.items[conversation_slot];
        if (conversation.offer != none) {
            const auto& offer = offers.items[conversation.offer];
            const auto agent = offer.agent;
            out.push_back(withdraw_offer{agents[agent].config.id, offer.id, conversation.id, offer_reason});
            resolve_offer(conversation.offer);
            capacity_freed(agent);
        }
        if (conversation.state == conversation_state::queued) remove_from_queue(conversation_slot);
        std::string last_agent;
        if (conversation.agent != none) {
            const auto agent = conversation.agent;
            auto& chats = agents[agent].active_chats;
            chats.erase(std::find(chats.begin(), chats.end(), conversation_slot));
            last_agent = agents[agent].config.id;
            conversation.agent = none;
            capacity_freed(agent);
        }
        out.push_back(notify_visitor{conversation.id, conversation.visitor_id, visitor_event::ended{reason}});
        out.push_back(record_activity{conversation.visitor_id, conversation.id, activity_type::chat_ended, last_agent, now});
        set_state(conversation, conversation_state::ended, out, reason, std::move(last_agent));
        visitor_index.erase(conversation.visitor_id);
        conversation_index.erase(conversation.id);
        conversations.release(conversation_slot);
    }

    void idle_expired(std::uint32_t conversation_slot, time_point now, actions& out) {
        if (conversations.items[conversation_slot].state != conversation_state::active) return;
        end_conversation(conversation_slot, end_reason::idle_timeout, withdraw_reason::visitor_left, now, out);
    }

    void queue_wait_expired(std::uint32_t conversation_slot, time_point now, actions& out) {
        // Only a conversation still waiting in line falls back; one holding an
        // offer finds out when the offer resolves (enqueue checks the wait).
        if (conversations.items[conversation_slot].state != conversation_state::queued) return;
        remove_from_queue(conversation_slot);
        const auto found = routes.find(conversations.items[conversation_slot].route);
        fall_back(conversation_slot, found == routes.end() ? nullptr : &found->second, now, out);
    }

    // The visitor of a routing or queued conversation has no session: the conversation keeps
    // its place (queue position, pending offer) until visitor_grace runs out. Returns false
    // when there is no grace and the conversation ended here.
    bool keep_place_for_absent_visitor(std::uint32_t conversation_slot, time_point now, actions& out) {
        auto& conversation = conversations.items[conversation_slot];
        if (settings.visitor_grace <= duration::zero()) {
            end_conversation(conversation_slot, end_reason::visitor_ended, withdraw_reason::visitor_left, now, out);
            return false;
        }
        arm(conversation.visitor_grace, now + settings.visitor_grace, timer_kind::visitor_grace, conversation_slot,
            conversation.generation);
        return true;
    }

    // Ends the conversation as visitor_left does. An active one is not affected: it became
    // active during the grace (activate disarms it) and the idle timeout covers it.
    void visitor_grace_expired(std::uint32_t conversation_slot, time_point now, actions& out) {
        const auto& conversation = conversations.items[conversation_slot];
        if (conversation.state == conversation_state::active || !conversation.visitor_sessions.empty()) return;
        end_conversation(conversation_slot, end_reason::visitor_ended, withdraw_reason::visitor_left, now, out);
    }

    // The agent's chats go back to routing (its grace ran out, or it was removed).
    // A chat whose visitor is away starts its visitor grace now.
    void reroute_active_chats(std::uint32_t agent, time_point now, actions& out) {
        auto chats = std::move(agents[agent].active_chats);
        agents[agent].active_chats.clear();
        for (const auto conversation_slot : chats) {
            auto& conversation = conversations.items[conversation_slot];
            conversation.agent = none;
            conversation.attempts_this_round = 0;
            conversation.idle.at.reset();
            if (!already_tried(conversation, agent)) conversation.tried.push_back(agent);
            set_state(conversation, conversation_state::routing, out);
        }
        capacity_freed(agent);
        for (const auto conversation_slot : chats) {
            if (conversations.items[conversation_slot].visitor_away &&
                !keep_place_for_absent_visitor(conversation_slot, now, out)) {
                continue;
            }
            route_conversation(conversation_slot, now, out);
        }
    }

    void grace_expired(std::uint32_t agent, time_point now, actions& out) {
        if (!agents[agent].sessions.empty()) return;
        reroute_active_chats(agent, now, out);
    }

    void start_grace(std::uint32_t agent, time_point now) {
        auto& state = agents[agent];
        arm(state.grace, now + settings.grace_period, timer_kind::grace, agent, state.generation);
    }

    void activate(std::uint32_t conversation_slot, std::uint32_t agent, time_point now, actions& out) {
        auto& conversation = conversations.items[conversation_slot];
        conversation.agent = agent;
        conversation.attempts_this_round = 0;
        conversation.last_activity = now;
        conversation.queue_wait.at.reset();
        conversation.visitor_grace.at.reset();  // active chats are left to the idle timeout
        agents[agent].active_chats.push_back(conversation_slot);
        arm(conversation.idle, now + settings.idle_timeout, timer_kind::idle, conversation_slot, conversation.generation);
        const auto& config = agents[agent].config;
        set_state(conversation, conversation_state::active, out, std::nullopt, config.id);
        out.push_back(record_activity{conversation.visitor_id, conversation.id, activity_type::agent_engaged, config.id, now});
        out.push_back(notify_visitor{conversation.id, conversation.visitor_id,
            visitor_event::agent_joined{config.id, config.name, config.avatar_url}});
    }

    std::uint32_t find_conversation(std::string_view id) const {
        const auto found = conversation_index.find(id);
        return found == conversation_index.end() ? none : found->second;
    }

    // ---- configuration -------------------------------------------------

    void upsert_agent(const agent_config& config, time_point now, actions& out) {
        if (config.id.empty()) throw std::invalid_argument("agent id is empty");
        if (config.max_chats < 1 || config.max_chats > 10) {
            throw std::invalid_argument("agent " + config.id + ": max_chats must be 1..10");
        }
        resolved_schedule schedule{config.schedule};  // throws on a bad zone or block

        auto found = agent_index.find(config.id);
        std::uint32_t index;
        if (found == agent_index.end()) {
            index = static_cast<std::uint32_t>(agents.size());
            agents.emplace_back();
            agent_index.emplace(config.id, index);
        } else {
            index = found->second;
        }
        auto& agent = agents[index];
        const bool revived = !agent.alive;
        std::vector<std::string> old_teams = revived ? std::vector<std::string>{} : agent.config.teams;
        agent.config = config;
        agent.schedule.emplace(std::move(schedule));
        agent.alive = true;
        if (revived) {
            add_member(all_agents_pool, index);
            for (auto& [name, route] : routes) {
                for (const auto& rule : route.rules) {
                    const auto& ids = rule.agent_ids;
                    if (std::find(ids.begin(), ids.end(), config.id) != ids.end()) add_member(rule.pool, index);
                }
            }
        }
        for (const auto& team : old_teams) {
            if (std::find(config.teams.begin(), config.teams.end(), team) == config.teams.end()) {
                remove_member(team_pool(team), index);
            }
        }
        for (const auto& team : config.teams) add_member(team_pool(team), index);
        apply_availability(index, now, out);
        capacity_freed(index);  // max_chats may have grown
    }

    void remove_agent(std::uint32_t index, time_point now, actions& out) {
        auto& agent = agents[index];
        agent.alive = false;
        refresh_eligibility(index);
        const auto memberships = agent.memberships;
        for (const auto& ref : memberships) remove_member(ref.pool, index);
        agent.sessions.clear();
        agent.manual_override.reset();
        agent.grace.at.reset();
        agent.availability_check.at.reset();
        withdraw_all_offers(index, withdraw_reason::agent_unavailable, now, out);
        reroute_active_chats(index, now, out);
        ++agents[index].generation;
    }

    void upsert_route(const route_config& config) {
        if (config.name.empty()) throw std::invalid_argument("route name is empty");
        if (config.max_attempts < 1) throw std::invalid_argument("route " + config.name + ": max_attempts must be >= 1");
        if (config.offer_timeout <= duration::zero()) {
            throw std::invalid_argument("route " + config.name + ": offer_timeout must be positive");
        }
        auto& route = routes[config.name];
        for (const auto& rule : route.rules) destroy_pool(rule.pool);
        route.rules.clear();
        route.config = config;
        std::vector<routing_rule> sorted = config.rules;
        std::stable_sort(sorted.begin(), sorted.end(),
            [](const routing_rule& a, const routing_rule& b) { return a.priority < b.priority; });
        for (const auto& rule : sorted) {
            const auto pool = create_pool();
            route.rules.push_back(rule_state{rule.priority, rule.when, rule.agents, pool});
            for (const auto& agent_id : rule.agents) {
                const auto agent = find_agent(agent_id);
                if (agent != none) add_member(pool, agent);
            }
        }
        drain_needed = true;
    }
};

// ---- public API -----------------------------------------------------------

tenant_router::tenant_router(const tenant_config& config, std::string offer_id_prefix, time_point now)
    : impl_(std::make_unique<impl>()) {
    impl_->settings = config.settings;
    impl_->offer_id_prefix = std::move(offer_id_prefix);
    impl_->create_pool();  // all_agents_pool
    actions ignored;       // nobody is connected yet: nothing to tell
    for (const auto& route : config.routes) impl_->upsert_route(route);
    for (const auto& agent : config.agents) impl_->upsert_agent(agent, now, ignored);
    for (const auto& [key, agent_id] : config.accounts) upsert_account(key, agent_id);
    impl_->drain_needed = false;
}

tenant_router::~tenant_router() = default;
tenant_router::tenant_router(tenant_router&&) noexcept = default;
tenant_router& tenant_router::operator=(tenant_router&&) noexcept = default;

void tenant_router::upsert_agent(const agent_config& agent, time_point now, actions& out) {
    impl_->upsert_agent(agent, now, out);
    impl_->finish(now, out);
}

outcome tenant_router::remove_agent(std::string_view agent_id, time_point now, actions& out) {
    const auto agent = impl_->find_agent(agent_id);
    if (agent == none) return outcome::not_found;
    impl_->remove_agent(agent, now, out);
    impl_->finish(now, out);
    return outcome::ok;
}

void tenant_router::upsert_route(const route_config& route, time_point now, actions& out) {
    impl_->upsert_route(route);
    impl_->finish(now, out);
}

outcome tenant_router::remove_route(std::string_view name, time_point now, actions& out) {
    auto& state = *impl_;
    const auto found = state.routes.find(name);
    if (found == state.routes.end()) return outcome::not_found;
    auto& route = found->second;
    while (!route.queue.empty()) state.fall_back(route.queue.front(), &route, now, out);
    for (const auto& rule : route.rules) state.destroy_pool(rule.pool);
    state.routes.erase(found);
    state.finish(now, out);
    return outcome::ok;
}

void tenant_router::upsert_account(std::string_view key, std::string_view agent_id) {
    impl_->accounts.insert_or_assign(lower_copy(key), std::string(agent_id));
}

outcome tenant_router::remove_account(std::string_view key) {
    return impl_->accounts.erase(lower_copy(key)) ? outcome::ok : outcome::not_found;
}

bool tenant_router::has_account(std::string_view key) const { return impl_->accounts.count(lower_copy(key)) != 0; }

std::size_t tenant_router::account_count() const { return impl_->accounts.size(); }

void tenant_router::update_settings(const tenant_settings& settings) { impl_->settings = settings; }

outcome tenant_router::agent_session_opened(std::string_view agent_id, std::string_view session_id, time_point now,
    actions& out) {
    auto& state = *impl_;
    const auto index = state.find_agent(agent_id);
    if (index == none) return outcome::not_found;
    auto& agent = state.agents[index];
    if (std::find(agent.sessions.begin(), agent.sessions.end(), session_id) != agent.sessions.end()) return outcome::ok;
    agent.sessions.emplace_back(session_id);
    if (agent.sessions.size() == 1) {
        if (agent.grace.at) {  // back within the grace period: the chats stay
            agent.grace.at.reset();
            for (const auto slot : agent.active_chats) {
                const auto& conversation = state.conversations.items[slot];
                out.push_back(notify_visitor{conversation.id, conversation.visitor_id, visitor_event::agent_back{}});
            }
        }
        state.apply_availability(index, now, out);
    }
    state.capacity_freed(index);
    state.finish(now, out);
    return outcome::ok;
}

outcome tenant_router::agent_session_closed(std::string_view agent_id, std::string_view session_id, time_point now,
    actions& out) {
    auto& state = *impl_;
    const auto index = state.find_agent(agent_id);
    if (index == none) return outcome::not_found;
    auto& sessions = state.agents[index].sessions;
    const auto found = std::find(sessions.begin(), sessions.end(), session_id);
    if (found == sessions.end()) return outcome::not_found;
    sessions.erase(found);
    if (sessions.empty()) {
        state.refresh_eligibility(index);
        state.agents[index].availability_check.at.reset();
        state.withdraw_all_offers(index, withdraw_reason::agent_unavailable, now, out);
        auto& agent = state.agents[index];
        if (!agent.active_chats.empty()) {
            state.start_grace(index, now);
            for (const auto slot : agent.active_chats) {
                const auto& conversation = state.conversations.items[slot];
                out.push_back(notify_visitor{conversation.id, conversation.visitor_id, visitor_event::agent_away{}});
            }
        }
    }
    state.finish(now, out);
    return outcome::ok;
}

std::optional<availability> tenant_router::set_availability(std::string_view agent_id, bool available, time_point now,
    actions& out) {
    auto& state = *impl_;
    const auto index = state.find_agent(agent_id);
    if (index == none) return std::nullopt;
    state.agents[index].consecutive_missed = 0;
    state.set_override(index, available, now, out);
    state.finish(now, out);
    return state.agents[index].current;
}

request_result tenant_router::chat_requested(const chat_request& request, time_point now, actions& out) {
    auto& state = *impl_;
    if (request.conversation_id.empty() || request.visitor_id.empty()) return rejected_request(outcome::bad_request);
    if (const auto open = state.visitor_index.find(request.visitor_id); open != state.visitor_index.end()) {
        const auto& conversation = state.conversations.items[open->second];
        return {outcome::ok, conversation.id, conversation.state, false};
    }
    if (state.conversation_index.contains(request.conversation_id)) return rejected_request(outcome::conflict);
    if (!state.routes.contains(request.route)) return rejected_request(outcome::not_found);

    const auto slot = state.conversations.acquire();
    auto& conversation = state.conversations.items[slot];
    conversation.id = request.conversation_id;
    conversation.visitor_id = request.visitor_id;
    conversation.profile = request.profile;
    conversation.route = request.route;
    conversation.requested_at = now;
    conversation.last_activity = now;
    state.conversation_index.emplace(conversation.id, slot);
    state.visitor_index.emplace(conversation.visitor_id, slot);
    state.set_state(conversation, conversation_state::routing, out);
    out.push_back(record_activity{conversation.visitor_id, conversation.id, activity_type::chat_requested, {}, now});
    state.route_conversation(slot, now, out);
    state.finish(now, out);

    const auto after = state.find_conversation(request.conversation_id);
    return {outcome::ok, request.conversation_id,
        after == none ? conversation_state::ended : state.conversations.items[after].state, true};
}

accept_result tenant_router::offer_accepted(std::string_view offer_id, std::string_view agent_id, time_point now,
    actions& out) {
    auto& state = *impl_;
    const auto found = state.offer_index.find(offer_id);
    if (found == state.offer_index.end()) return {outcome::conflict, {}};
    const auto offer_slot = found->second;
    const auto& offer = state.offers.items[offer_slot];
    if (state.agents[offer.agent].config.id != agent_id) return {outcome::conflict, {}};
    const auto agent = offer.agent;
    const auto conversation_slot = offer.conversation;
    state.resolve_offer(offer_slot);
    state.agents[agent].consecutive_missed = 0;
    state.activate(conversation_slot, agent, now, out);
    state.refresh_eligibility(agent);
    accept_result result{outcome::ok, state.conversations.items[conversation_slot].id};
    state.finish(now, out);
    return result;
}

outcome tenant_router::offer_declined(std::string_view offer_id, std::string_view agent_id, time_point now,
    actions& out) {
    auto& state = *impl_;
    const auto found = state.offer_index.find(offer_id);
    if (found == state.offer_index.end()) return outcome::conflict;
    const auto offer_slot = found->second;
    const auto& offer = state.offers.items[offer_slot];
    if (state.agents[offer.agent].config.id != agent_id) return outcome::conflict;
    const auto agent = offer.agent;
    const auto conversation_slot = offer.conversation;
    const auto& conversation = state.conversations.items[conversation_slot];
    out.push_back(record_activity{conversation.visitor_id, conversation.id, activity_type::chat_missed,
        state.agents[agent].config.id, now});
    state.resolve_offer(offer_slot);
    state.agents[agent].consecutive_missed = 0;  // a decline shows the agent is there
    state.capacity_freed(agent);
    state.route_conversation(conversation_slot, now, out);
    state.finish(now, out);
    return outcome::ok;
}

outcome tenant_router::message_seen(std::string_view conversation_id, time_point now, actions& out) {
    auto& state = *impl_;
    const auto slot = state.find_conversation(conversation_id);
    if (slot == none) return outcome::not_found;
    auto& conversation = state.conversations.items[slot];
    conversation.last_activity = now;
    if (conversation.state == conversation_state::active) {
        state.arm(conversation.idle, now + state.settings.idle_timeout, timer_kind::idle, slot, conversation.generation);
    }
    state.finish(now, out);
    return outcome::ok;
}

outcome tenant_router::chat_ended(std::string_view conversation_id, ended_by who, time_point now, actions& out) {
    auto& state = *impl_;
    const auto slot = state.find_conversation(conversation_id);
    if (slot == none) return outcome::not_found;
    if (who == ended_by::agent && state.conversations.items[slot].state != conversation_state::active) {
        return outcome::conflict;
    }
    state.end_conversation(slot, who == ended_by::visitor ? end_reason::visitor_ended : end_reason::agent_ended,
        withdraw_reason::visitor_left, now, out);
    state.finish(now, out);
    return outcome::ok;
}

outcome tenant_router::visitor_left(std::string_view conversation_id, time_point now, actions& out) {
    auto& state = *impl_;
    const auto slot = state.find_conversation(conversation_id);
    if (slot == none) return outcome::not_found;
    state.end_conversation(slot, end_reason::visitor_ended, withdraw_reason::visitor_left, now, out);
    state.finish(now, out);
    return outcome::ok;
}

outcome tenant_router::visitor_session_opened(std::string_view conversation_id, std::string_view session_id,
    time_point now, actions& out) {
    auto& state = *impl_;
    const auto slot = state.find_conversation(conversation_id);
    if (slot == none) return outcome::not_found;
    auto& conversation = state.conversations.items[slot];
    auto& sessions = conversation.visitor_sessions;
    if (std::find(sessions.begin(), sessions.end(), session_id) == sessions.end()) sessions.emplace_back(session_id);
    conversation.visitor_away = false;
    conversation.visitor_grace.at.reset();  // back in time: the place and the offer stay
    state.finish(now, out);
    return outcome::ok;
}

outcome tenant_router::visitor_session_closed(std::string_view conversation_id, std::string_view session_id,
    time_point now, actions& out) {
    auto& state = *impl_;
    const auto slot = state.find_conversation(conversation_id);
    if (slot == none) return outcome::not_found;
    auto& conversation = state.conversations.items[slot];
    auto& sessions = conversation.visitor_sessions;
    const auto found = std::find(sessions.begin(), sessions.end(), session_id);
    if (found == sessions.end()) return outcome::not_found;
    sessions.erase(found);
    if (sessions.empty()) {
        conversation.visitor_away = true;
        if (conversation.state != conversation_state::active) state.keep_place_for_absent_visitor(slot, now, out);
    }
    state.finish(now, out);
    return outcome::ok;
}

void tenant_router::timer_fired(time_point now, actions& out) {
    impl_->fire_due_timers(now, out);
    impl_->finish(now, out);
}

void tenant_router::restore_availability_override(std::string_view agent_id, bool available, time_point until_at,
    time_point now) {
    auto& state = *impl_;
    const auto index = state.find_agent(agent_id);
    if (index == none || until_at <= now) return;
    auto& agent = state.agents[index];
    agent.manual_override = override_state{available, until_at};
    agent.current = impl::compute_availability(agent, now);
}

outcome tenant_router::restore_conversation(const restored_conversation& restored, time_point now) {
    auto& state = *impl_;
    if (restored.conversation_id.empty() || restored.visitor_id.empty() ||
        restored.state == conversation_state::ended) {
        return outcome::bad_request;
    }
    if (state.conversation_index.contains(restored.conversation_id) ||
        state.visitor_index.contains(restored.visitor_id)) {
        return outcome::conflict;
    }
    const auto slot = state.conversations.acquire();
    auto& conversation = state.conversations.items[slot];
    conversation.id = restored.conversation_id;
    conversation.visitor_id = restored.visitor_id;
    conversation.profile = restored.profile;
    conversation.route = restored.route;
    conversation.requested_at = restored.requested_at;
    conversation.last_activity = restored.last_activity_at;
    conversation.restored = true;
    for (const auto& id : restored.tried_agents) {
        const auto agent = state.find_agent(id);
        if (agent != none && !state.already_tried(conversation, agent)) conversation.tried.push_back(agent);
    }
    state.conversation_index.emplace(conversation.id, slot);
    state.visitor_index.emplace(conversation.visitor_id, slot);
    const auto agent = restored.state == conversation_state::active ? state.find_agent(restored.agent_id) : none;
    if (agent != none) {
        conversation.state = conversation_state::active;
        conversation.agent = agent;
        if (!state.already_tried(conversation, agent)) conversation.tried.push_back(agent);
        state.agents[agent].active_chats.push_back(slot);
        state.arm(conversation.idle, std::max(now, restored.last_activity_at + state.settings.idle_timeout),
            timer_kind::idle, slot, conversation.generation);
        state.refresh_eligibility(agent);
    } else {
        conversation.state = conversation_state::routing;
        state.restored_pending.emplace_back(slot, conversation.generation);
    }
    return outcome::ok;
}

void tenant_router::finish_restore(time_point now, actions& out) {
    auto& state = *impl_;
    for (std::uint32_t index = 0; index < state.agents.size(); ++index) {
        auto& agent = state.agents[index];
        if (agent.alive && agent.sessions.empty() && !agent.active_chats.empty() && !agent.grace.at) {
            state.start_grace(index, now);
        }
    }
    // Nobody reported a session for these visitors since the restart: they are away (a widget
    // still open reconnects and says hello within seconds).
    for (auto& conversation : state.conversations.items) {
        if (!conversation.alive || !conversation.restored) continue;
        conversation.restored = false;
        if (conversation.visitor_sessions.empty()) conversation.visitor_away = true;
    }
    std::vector<std::uint32_t> pending;
    for (const auto& [slot, generation] : state.restored_pending) {
        const auto& conversation = state.conversations.items[slot];
        if (conversation.alive && conversation.generation == generation) pending.push_back(slot);
    }
    state.restored_pending.clear();
    std::stable_sort(pending.begin(), pending.end(), [&](std::uint32_t a, std::uint32_t b) {
        return state.conversations.items[a].requested_at < state.conversations.items[b].requested_at;
    });
    for (const auto slot : pending) {
        if (state.conversations.items[slot].visitor_away && !state.keep_place_for_absent_visitor(slot, now, out)) {
            continue;
        }
        state.route_conversation(slot, now, out);
    }
    state.finish(now, out);
}

std::optional<time_point> tenant_router::next_deadline() const {
    if (impl_->timers.empty()) return std::nullopt;
    return impl_->timers.top().at;
}

std::optional<availability> tenant_router::availability_of(std::string_view agent_id, time_point now) const {
    const auto index = impl_->find_agent(agent_id);
    if (index == none) return std::nullopt;
    return impl::compute_availability(impl_->agents[index], now);
}

std::optional<agent_snapshot> tenant_router::agent(std::string_view agent_id) const {
    const auto& state = *impl_;
    const auto index = state.find_agent(agent_id);
    if (index == none) return std::nullopt;
    const auto& agent = state.agents[index];
    agent_snapshot snapshot;
    snapshot.agent_id = agent.config.id;
    snapshot.max_chats = agent.config.max_chats;
    snapshot.sessions = static_cast<int>(agent.sessions.size());
    snapshot.in_grace = agent.grace.at.has_value();
    for (const auto slot : agent.active_chats) snapshot.active_conversations.push_back(state.conversations.items[slot].id);
    for (const auto slot : agent.offers) {
        const auto& offer = state.offers.items[slot];
        const auto& conversation = state.conversations.items[offer.conversation];
        snapshot.pending_offers.push_back(pending_offer_info{offer.id, conversation.id, conversation.route, offer.expires_at});
    }
    return snapshot;
}

std::optional<conversation_snapshot> tenant_router::conversation(std::string_view conversation_id) const {
    const auto& state = *impl_;
    const auto slot = state.find_conversation(conversation_id);
    if (slot == none) return std::nullopt;
    const auto& conversation = state.conversations.items[slot];
    conversation_snapshot snapshot;
    snapshot.conversation_id = conversation.id;
    snapshot.visitor_id = conversation.visitor_id;
    snapshot.route = conversation.route;
    snapshot.state = conversation.state;
    if (conversation.agent != none) snapshot.agent_id = state.agents[conversation.agent].config.id;
    if (conversation.offer != none) {
        const auto& offer = state.offers.items[conversation.offer];
        snapshot.offer_id = offer.id;
        snapshot.agent_id = state.agents[offer.agent].config.id;
    }
    for (const auto agent : conversation.tried) snapshot.tried_agents.push_back(state.agents[agent].config.id);
    snapshot.visitor_sessions = static_cast<int>(conversation.visitor_sessions.size());
    snapshot.visitor_grace_ends_at = conversation.visitor_grace.at;
    if (conversation.state == conversation_state::queued) {
        const auto route = state.routes.find(conversation.route);
        if (route != state.routes.end()) {
            const auto& queue = route->second.queue;
            snapshot.queue_position = static_cast<int>(std::find(queue.begin(), queue.end(), slot) - queue.begin()) + 1;
        }
    }
    return snapshot;
}

std::optional<std::string> tenant_router::open_conversation_of_visitor(std::string_view visitor_id) const {
    const auto found = impl_->visitor_index.find(visitor_id);
    if (found == impl_->visitor_index.end()) return std::nullopt;
    return impl_->conversations.items[found->second].id;
}

std::optional<queue_stats> tenant_router::queue(std::string_view route) const {
    const auto found = impl_->routes.find(route);
    if (found == impl_->routes.end()) return std::nullopt;
    queue_stats stats;
    stats.depth = found->second.queue.size();
    if (!found->second.queue.empty()) {
        stats.oldest_enqueued_at = impl_->conversations.items[found->second.queue.front()].first_enqueued_at;
    }
    return stats;
}

std::vector<std::string> tenant_router::queued_conversations(std::string_view route) const {
    std::vector<std::string> ids;
    const auto found = impl_->routes.find(route);
    if (found == impl_->routes.end()) return ids;
    for (const auto slot : found->second.queue) ids.push_back(impl_->conversations.items[slot].id);
    return ids;
}

tenant_stats tenant_router::stats() const {
    const auto& state = *impl_;
    tenant_stats stats;
    for (const auto& agent : state.agents) {
        if (!agent.alive) continue;
        ++stats.agents;
        stats.capacity_in_use += static_cast<std::size_t>(agent.load());
        if (agent.sessions.empty()) continue;
        ++stats.agents_connected;
        stats.capacity_total += static_cast<std::size_t>(agent.config.max_chats);
        if (agent.current.available) ++stats.agents_available;
        if (agent.eligible) ++stats.agents_eligible;
    }
    stats.open_conversations = state.conversations.live;
    stats.pending_offers = state.offers.live;
    stats.queued = state.queued_total;
    return stats;
}

}  // namespace parley::routing
