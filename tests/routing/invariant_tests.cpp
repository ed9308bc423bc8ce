// Randomized invariant test: a seeded stream of random events over many
// agents, routes and visitors. After every step the actions seen so far are
// replayed into an independent model and the protocol section 7 invariants
// are asserted. Reproduce a failure with PARLEY_SEED=<seed printed>;
// PARLEY_INVARIANT_EVENTS overrides the number of events (default 10^6).
#include <parley/routing/tenant_router.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

using namespace parley::routing;
using namespace std::chrono_literals;

namespace {

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
    const char* value = std::getenv(name);
    return value && *value ? std::strtoull(value, nullptr, 10) : fallback;
}

constexpr int agent_count = 30;
constexpr int team_count = 5;
constexpr int visitor_count = 200;
const char* const queue_route = "queue";
constexpr duration visitor_grace = 40s;

struct model_offer {
    std::string agent;
    std::string conversation;
};

struct model_conversation {
    std::string visitor;
    conversation_state state = conversation_state::routing;
    std::string agent;  // active only
    std::uint64_t queue_order = 0;  // order of the first `queued` state, 0 = never
    std::set<std::string> tried;
    int last_position = 0;
    bool offered_this_step = false;
    // Visitor presence: `away` once the last reported session closed; `away_since` while the
    // router must keep the place for visitor_grace (routing or queued, visitor away).
    bool away = false;
    std::optional<time_point> away_since;
};

class invariant_run {
public:
    explicit invariant_run(std::uint64_t seed) : random_(seed), router_(make_config(), "inv", now_) {}

    // Returns an empty string, or the first violated invariant.
    std::string step(std::uint64_t step_number) {
        out_.clear();
        step_number_ = step_number;
        visitor_ended_on_request_.clear();
        for (auto& [id, conversation] : conversations_) conversation.offered_this_step = false;
        const auto queued_before = router_.queued_conversations(queue_route);
        random_event();
        replay();
        if (!failure_.empty()) return failure_;
        check_queue(queued_before);
        check_visitor_presence();
        if (step_number % 997 == 0) deep_check();
        return failure_;
    }

    std::size_t offers_made() const { return offers_made_; }
    std::size_t accepted() const { return accepted_; }
    std::size_t ended_for_absent_visitor() const { return ended_for_absent_visitor_; }

private:
    static tenant_config make_config() {
        tenant_config config;
        config.settings.auto_away_after_missed = 3;
        config.settings.visitor_grace = visitor_grace;
        for (int i = 0; i < agent_count; ++i) config.agents.push_back(agent(i, 0));
        route_config all;
        all.name = "all";
        all.fallback_route = "team0";
        config.routes.push_back(all);
        for (int t = 0; t < team_count; ++t) {
            route_config team;
            team.name = "team" + std::to_string(t);
            team.type = route_type::team;
            team.team = "t" + std::to_string(t);
            team.max_attempts = 3;
            team.offer_timeout = 20s;
            config.routes.push_back(team);
        }
        route_config queued;
        queued.name = queue_route;
        queued.type = route_type::team;
        queued.team = "t1";
        queued.queue_wait = 3min;
        config.routes.push_back(queued);
        route_config single;
        single.name = "single";
        single.type = route_type::agent;
        single.agent_id = "a7";
        config.routes.push_back(single);
        route_config rules;
        rules.name = "rules";
        rules.type = route_type::rules;
        rules.rules = {{1, {visitor_field::crm_status, rule_op::equals, "customer"}, {"a1", "a2", "a3"}},
            {2, {visitor_field::email_domain, rule_op::ends_with, ".io"}, {"a4", "a5", "a29"}}};
        config.routes.push_back(rules);
        config.accounts = {{"bigco.com", "a9"}};
        return config;
    }

    static agent_config agent(int index, int variant) {
        agent_config config;
        config.id = "a" + std::to_string(index);
        config.name = config.id;
        config.max_chats = 1 + index % 4;
        config.teams = {"t" + std::to_string((index + variant) % team_count)};
        if (index % 3 == 0) config.teams.push_back("t" + std::to_string((index + 2) % team_count));
        return config;
    }

    int pick(int bound) { return std::uniform_int_distribution<int>{0, bound - 1}(random_); }
    std::string some_agent() { return "a" + std::to_string(pick(agent_count)); }

    void random_event() {
        const int roll = pick(1100);
        if (roll < 150) {
            now_ += std::chrono::milliseconds{pick(30'000)};
            router_.timer_fired(now_, out_);
        } else if (roll < 230) {
            const auto agent_id = some_agent();
            router_.agent_session_opened(agent_id, agent_id + "/s" + std::to_string(pick(2)), now_, out_);
        } else if (roll < 280) {
            const auto agent_id = some_agent();
            router_.agent_session_closed(agent_id, agent_id + "/s" + std::to_string(pick(2)), now_, out_);
        } else if (roll < 320) {
            router_.set_availability(some_agent(), pick(3) != 0, now_, out_);
        } else if (roll < 560) {
            request_chat();
        } else if (roll < 720) {
            answer_offer(true);
        } else if (roll < 780) {
            answer_offer(false);
        } else if (roll < 850) {
            if (const auto id = some_conversation()) router_.message_seen(*id, now_, out_);
        } else if (roll < 920) {
            if (const auto id = some_conversation()) {
                const auto who = pick(2) ? ended_by::agent : ended_by::visitor;
                if (who == ended_by::visitor) visitor_ended_on_request_ = *id;
                const auto result = router_.chat_ended(*id, who, now_, out_);
                const bool active = conversations_.at(*id).state == conversation_state::active;
                expect(result == ((who == ended_by::agent && !active) ? outcome::conflict : outcome::ok),
                    "chat_ended result");
            }
        } else if (roll < 960) {
            if (const auto id = some_conversation()) {
                visitor_ended_on_request_ = *id;
                router_.visitor_left(*id, now_, out_);
            }
        } else if (roll < 990) {
            now_ += std::chrono::milliseconds{pick(200'000)};
            router_.timer_fired(now_, out_);
        } else if (roll < 996) {
            const int index = pick(agent_count);
            router_.upsert_agent(agent(index, pick(team_count)), now_, out_);
        } else if (roll >= 1000 && roll < 1040) {
            open_visitor_session(some_visitor_conversation(), "s" + std::to_string(pick(2)));
        } else if (roll >= 1040) {
            close_visitor_session(some_visitor_conversation(), "s" + std::to_string(pick(2)));
        } else {
            const int index = pick(agent_count);
            if (router_.remove_agent("a" + std::to_string(index), now_, out_) == outcome::ok) {
                removed_.insert(index);
            } else {
                removed_.erase(index);
                router_.upsert_agent(agent(index, 0), now_, out_);
            }
        }
    }

    std::optional<std::string> some_conversation() {
        if (conversations_.empty()) return std::nullopt;
        auto it = conversations_.begin();
        std::advance(it, pick(static_cast<int>(std::min<std::size_t>(conversations_.size(), 64))));
        return it->first;
    }

    // Mostly an open conversation, sometimes any id ever used (most of them ended).
    std::string some_visitor_conversation() {
        if (pick(8) == 0 || conversations_.empty()) {
            return "c" + std::to_string(pick(static_cast<int>(conversation_counter_) + 1));
        }
        return *some_conversation();
    }

    void open_visitor_session(const std::string& id, const std::string& session) {
        const auto result = router_.visitor_session_opened(id, session, now_, out_);
        const auto found = conversations_.find(id);
        expect(result == (found != conversations_.end() ? outcome::ok : outcome::not_found),
            "visitor_session_opened: ok iff the conversation is open");
        if (found == conversations_.end()) return;
        visitor_sessions_[id].insert(session);
        found->second.away = false;
        found->second.away_since.reset();
    }

    void close_visitor_session(const std::string& id, const std::string& session) {
        const auto result = router_.visitor_session_closed(id, session, now_, out_);
        const auto found = conversations_.find(id);
        auto sessions = visitor_sessions_.find(id);
        const bool attached = found != conversations_.end() && sessions != visitor_sessions_.end() &&
                              sessions->second.contains(session);
        expect(result == (attached ? outcome::ok : outcome::not_found),
            "visitor_session_closed: ok iff the session is attached to the open conversation");
        if (!attached) return;
        sessions->second.erase(session);
        if (!sessions->second.empty()) return;
        visitor_sessions_.erase(sessions);
        found->second.away = true;
        if (found->second.state != conversation_state::active) found->second.away_since = now_;
    }

    void request_chat() {
        static const char* const routes[] = {"all", "team0", "team1", "team2", "team3", "team4", queue_route,
            queue_route, "single", "rules", "missing"};
        const auto visitor = "v" + std::to_string(pick(visitor_count));
        chat_request request;
        request.conversation_id = "c" + std::to_string(++conversation_counter_);
        request.visitor_id = visitor;
        request.route = routes[pick(std::size(routes))];
        const int flavour = pick(4);
        if (flavour == 1) request.profile.crm_status = "customer";
        if (flavour == 2) request.profile.email = "x@start.io";
        if (flavour == 3) request.profile.email = "x@bigco.com";
        const auto open = open_by_visitor_.find(visitor);
        pending_request_ = request.conversation_id;
        pending_visitor_ = visitor;
        const auto result = router_.chat_requested(request, now_, out_);
        if (request.route == "missing" && open == open_by_visitor_.end()) {
            expect(result.result == outcome::not_found, "unknown route is not_found");
            return;
        }
        expect(result.result == outcome::ok, "chat_requested ok");
        if (open != open_by_visitor_.end()) {
            expect(!result.created && result.conversation_id == open->second,
                "a visitor with an open conversation gets it back");
        } else {
            expect(result.created, "a new conversation is created");
        }
        // As the server does: the requesting widget's session is attached (here: half the time).
        if (result.created && result.state != conversation_state::ended && pick(2) == 0) {
            expect(router_.visitor_session_opened(result.conversation_id, "s0", now_, out_) == outcome::ok,
                "a new conversation takes its visitor's session");
            visitor_sessions_[result.conversation_id].insert("s0");
        }
    }

    void answer_offer(bool accept) {
        std::string offer_id;
        std::string agent_id;
        if (!outstanding_.empty() && pick(10) != 0) {
            auto it = outstanding_.begin();
            std::advance(it, pick(static_cast<int>(std::min<std::size_t>(outstanding_.size(), 32))));
            offer_id = it->first;
            agent_id = pick(20) == 0 ? some_agent() : it->second.agent;
        } else if (!resolved_.empty()) {
            offer_id = *resolved_.begin();  // stale: must conflict
            agent_id = some_agent();
        } else {
            return;
        }
        const auto found = outstanding_.find(offer_id);
        const bool valid = found != outstanding_.end() && found->second.agent == agent_id;
        const auto result = accept ? router_.offer_accepted(offer_id, agent_id, now_, out_).result
                                   : router_.offer_declined(offer_id, agent_id, now_, out_);
        expect(result == (valid ? outcome::ok : outcome::conflict), "answer to an offer: ok iff outstanding and own");
        if (valid) {
            resolve(offer_id);
            if (accept) ++accepted_;
        }
    }

    void expect(bool condition, const std::string& what) {
        if (!condition && failure_.empty()) {
            std::ostringstream message;
            message << "step " << step_number_ << ": " << what;
            failure_ = message.str();
        }
    }

    void resolve(const std::string& offer_id) {
        const auto found = outstanding_.find(offer_id);
        expect(found != outstanding_.end(), "offer " + offer_id + " resolved exactly once");
        if (found == outstanding_.end()) return;
        --load_[found->second.agent];
        outstanding_.erase(found);
        resolved_.insert(offer_id);
        if (resolved_.size() > 64) resolved_.erase(resolved_.begin());
    }

    int max_chats(const std::string& agent_id) const { return 1 + std::stoi(agent_id.substr(1)) % 4; }

    // Replays this step's actions into the model, checking as it goes.
    void replay() {
        for (const auto& item : out_) {
            if (const auto* offer = std::get_if<send_offer>(&item)) {
                ++offers_made_;
                expect(!outstanding_.contains(offer->offer_id) && !resolved_.contains(offer->offer_id),
                    "offer ids are unique");
                auto& conversation = conversations_.at(offer->conversation_id);
                expect(!conversation.tried.contains(offer->agent_id), "never the same agent twice");
                expect(offer->expires_at > now_, "offers expire in the future");
                conversation.tried.insert(offer->agent_id);
                conversation.offered_this_step = true;
                outstanding_[offer->offer_id] = {offer->agent_id, offer->conversation_id};
                expect(++load_[offer->agent_id] <= max_chats(offer->agent_id), "capacity never exceeded (offer)");
            } else if (const auto* withdrawn = std::get_if<withdraw_offer>(&item)) {
                resolve(withdrawn->offer_id);
            } else if (const auto* change = std::get_if<conversation_state_changed>(&item)) {
                apply_state(*change);
            } else if (const auto* notice = std::get_if<notify_visitor>(&item)) {
                if (const auto* queued = std::get_if<visitor_event::queued>(&notice->event)) {
                    conversations_.at(notice->conversation_id).last_position = queued->position;
                }
            } else if (const auto* wakeup = std::get_if<schedule_wakeup>(&item)) {
                last_wakeup_ = wakeup->at;
            }
        }
        // Time only moves through timer_fired, so nothing is ever overdue, and
        // the last reported wakeup is the router's next deadline.
        const auto next = router_.next_deadline();
        expect(!next || *next > now_, "no deadline is overdue");
        expect(next == last_wakeup_, "schedule_wakeup reports the next deadline");
        const auto stats = router_.stats();
        expect(stats.pending_offers == outstanding_.size(), "router and model agree on pending offers");
        expect(stats.open_conversations == conversations_.size(), "router and model agree on open conversations");
        std::size_t load = 0;
        for (const auto& [agent_id, count] : load_) load += static_cast<std::size_t>(count);
        expect(stats.capacity_in_use == load, "router and model agree on capacity in use");
    }

    void apply_state(const conversation_state_changed& change) {
        if (change.state == conversation_state::routing && !conversations_.contains(change.conversation_id)) {
            expect(change.conversation_id == pending_request_ && change.visitor_id == pending_visitor_,
                "only a request creates a conversation");
            expect(!open_by_visitor_.contains(change.visitor_id), "a visitor never has two open conversations");
            conversations_[change.conversation_id].visitor = change.visitor_id;
            open_by_visitor_[change.visitor_id] = change.conversation_id;
            return;
        }
        const auto found = conversations_.find(change.conversation_id);
        expect(found != conversations_.end(), "state change of an open conversation");
        if (found == conversations_.end()) return;
        auto& conversation = found->second;
        if (conversation.state == conversation_state::active) {
            --load_[conversation.agent];
            conversation.agent.clear();
            // Routed again while the visitor is away: its visitor grace starts now.
            if (change.state == conversation_state::routing && conversation.away) conversation.away_since = now_;
        }
        switch (change.state) {
            case conversation_state::active:
                expect(conversation.state == conversation_state::routing, "active only from routing");
                conversation.agent = change.agent_id;
                conversation.away_since.reset();  // active chats are left to the idle timeout
                expect(++load_[change.agent_id] <= max_chats(change.agent_id), "capacity never exceeded (active)");
                break;
            case conversation_state::queued:
                if (conversation.queue_order == 0) conversation.queue_order = ++queue_counter_;
                break;
            case conversation_state::ended:
                for (const auto& [offer_id, offer] : outstanding_) {
                    expect(offer.conversation != change.conversation_id, "an ended conversation holds no offer");
                }
                if (change.reason == end_reason::visitor_ended && visitor_ended_on_request_ != change.conversation_id) {
                    expect(conversation.away_since && now_ >= *conversation.away_since + visitor_grace &&
                               conversation.state != conversation_state::active,
                        "only a visitor away past visitor_grace is ended for it (" + change.conversation_id + ")");
                    ++ended_for_absent_visitor_;
                }
                visitor_sessions_.erase(change.conversation_id);
                open_by_visitor_.erase(conversation.visitor);
                conversations_.erase(found);
                return;
            case conversation_state::routing: break;
        }
        conversation.state = change.state;
    }

    void check_queue(const std::vector<std::string>& queued_before) {
        const auto queued = router_.queued_conversations(queue_route);
        std::uint64_t previous = 0;
        for (std::size_t index = 0; index < queued.size(); ++index) {
            const auto& conversation = conversations_.at(queued[index]);
            expect(conversation.state == conversation_state::queued, "queued conversations are in state queued");
            expect(conversation.queue_order > previous, "queue order is FIFO");
            expect(conversation.last_position == static_cast<int>(index + 1), "visitors know their live position");
            previous = conversation.queue_order;
        }
        // Nobody is overtaken: an agent that took a later conversation out of
        // the queue had already been tried by every earlier one still waiting.
        const std::unordered_set<std::string> still(queued.begin(), queued.end());
        for (const auto& id : queued_before) {
            const auto found = conversations_.find(id);
            if (found == conversations_.end() || !found->second.offered_this_step) continue;
            const auto& taken = found->second;
            const auto offered_agent = std::find_if(outstanding_.begin(), outstanding_.end(),
                [&](const auto& offer) { return offer.second.conversation == id; });
            if (offered_agent == outstanding_.end()) continue;
            for (const auto& earlier_id : queued_before) {
                if (earlier_id == id) break;
                const auto earlier = conversations_.find(earlier_id);
                if (earlier == conversations_.end() || !still.contains(earlier_id) || earlier->second.offered_this_step) {
                    continue;
                }
                expect(earlier->second.tried.contains(offered_agent->second.agent) ||
                           earlier->second.queue_order > taken.queue_order,
                    "queue FIFO: " + earlier_id + " overtaken by " + id);
            }
        }
    }

    // A visitor away past visitor_grace holds no place: its waiting conversation has ended.
    void check_visitor_presence() {
        for (const auto& [id, conversation] : conversations_) {
            if (conversation.state == conversation_state::active || !conversation.away_since) continue;
            expect(now_ < *conversation.away_since + visitor_grace,
                "a visitor away past visitor_grace still holds a place (" + id + ")");
        }
    }

    // Full cross-check against the router's own view (every ~1000 steps).
    void deep_check() {
        std::unordered_set<std::string> active_seen;
        for (int i = 0; i < agent_count; ++i) {
            const auto snapshot = router_.agent("a" + std::to_string(i));
            if (!snapshot) continue;
            const auto load = snapshot->active_conversations.size() + snapshot->pending_offers.size();
            expect(static_cast<int>(load) <= snapshot->max_chats, "capacity never exceeded (router view)");
            for (const auto& id : snapshot->active_conversations) {
                expect(active_seen.insert(id).second, "a conversation is active with one agent only");
                const auto found = conversations_.find(id);
                expect(found != conversations_.end() && found->second.agent == snapshot->agent_id,
                    "router and model agree on who holds " + id);
            }
        }
        for (const auto& [visitor, id] : open_by_visitor_) {
            expect(router_.open_conversation_of_visitor(visitor) == id, "router and model agree on open conversations");
        }
        for (const auto& [id, conversation] : conversations_) {
            const auto snapshot = router_.conversation(id);
            if (!snapshot) continue;
            const auto sessions = visitor_sessions_.find(id);
            expect(static_cast<std::size_t>(snapshot->visitor_sessions) ==
                       (sessions == visitor_sessions_.end() ? 0 : sessions->second.size()),
                "router and model agree on the visitor sessions of " + id);
            const bool waiting = conversation.state != conversation_state::active && conversation.away_since;
            expect(snapshot->visitor_grace_ends_at ==
                       (waiting ? std::optional<time_point>{*conversation.away_since + visitor_grace} : std::nullopt),
                "router and model agree on the visitor grace of " + id);
        }
    }

    std::mt19937_64 random_;
    time_point now_{std::chrono::milliseconds{1'780'000'000'000}};
    tenant_router router_;
    actions out_;
    std::uint64_t step_number_ = 0;
    std::string failure_;
    std::uint64_t conversation_counter_ = 0;
    std::uint64_t queue_counter_ = 0;
    std::string pending_request_;
    std::string pending_visitor_;
    std::string visitor_ended_on_request_;  // this step's chat_ended(visitor) or visitor_left
    std::map<std::string, std::set<std::string>> visitor_sessions_;  // open conversation -> attached sessions
    std::map<std::string, model_conversation> conversations_;
    std::unordered_map<std::string, std::string> open_by_visitor_;
    std::map<std::string, model_offer> outstanding_;
    std::set<std::string> resolved_;
    std::unordered_map<std::string, int> load_;
    std::set<int> removed_;
    std::optional<time_point> last_wakeup_;
    std::size_t offers_made_ = 0;
    std::size_t accepted_ = 0;
    std::size_t ended_for_absent_visitor_ = 0;
};

}  // namespace

TEST_CASE("random events never break the routing invariants") {
    const auto seed = env_number("PARLEY_SEED", std::random_device{}());
    const auto events = env_number("PARLEY_INVARIANT_EVENTS", 1'000'000);
    INFO("reproduce with PARLEY_SEED=" << seed << " PARLEY_INVARIANT_EVENTS=" << events);
    CAPTURE(seed);
    invariant_run run{seed};
    std::string failure;
    for (std::uint64_t step = 1; step <= events && failure.empty(); ++step) failure = run.step(step);
    CAPTURE(failure);
    CHECK(failure.empty());
    CAPTURE(run.offers_made(), run.accepted(), run.ended_for_absent_visitor());
    // The run must have exercised the router, not idled.
    CHECK(run.offers_made() > events / 20);
    CHECK(run.accepted() > events / 100);
    CHECK(run.ended_for_absent_visitor() > events / 2500);
}
