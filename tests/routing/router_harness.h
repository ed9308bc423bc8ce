#pragma once
// Drives a tenant_router with a manual clock and keeps the actions of the
// last step for inspection.
#include <parley/routing/tenant_router.h>

#include "support/manual_clock.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace parley::routing::test {

using namespace std::chrono_literals;

inline agent_config make_agent(std::string id, int max_chats = 10, std::vector<std::string> teams = {}) {
    agent_config agent;
    agent.id = id;
    agent.name = "Agent " + id;
    agent.calendar_url = "https://cal.example/" + id;
    agent.max_chats = max_chats;
    agent.teams = std::move(teams);
    return agent;
}

inline route_config make_route(std::string name, route_type type = route_type::round_robin) {
    route_config route;
    route.name = std::move(name);
    route.type = type;
    return route;
}

class router_harness {
public:
    explicit router_harness(const tenant_config& config,
        parley::test::manual_clock::time_point start = parley::test::manual_clock::time_point{1'700'000'000'000ms})
        : clock(start), router(config, "t", clock.now()) {}

    void connect(const std::string& agent, const std::string& session = "s1") {
        out.clear();
        router.agent_session_opened(agent, agent + "/" + session, clock.now(), out);
    }
    void disconnect(const std::string& agent, const std::string& session = "s1") {
        out.clear();
        router.agent_session_closed(agent, agent + "/" + session, clock.now(), out);
    }
    request_result request(const std::string& conversation, const std::string& visitor, const std::string& route,
        visitor_profile profile = {}) {
        out.clear();
        return router.chat_requested({conversation, visitor, std::move(profile), route}, clock.now(), out);
    }
    outcome accept(const std::string& offer_id, const std::string& agent) {
        out.clear();
        return router.offer_accepted(offer_id, agent, clock.now(), out).result;
    }
    outcome decline(const std::string& offer_id, const std::string& agent) {
        out.clear();
        return router.offer_declined(offer_id, agent, clock.now(), out);
    }
    // Moves the clock, firing every deadline on the way at its exact time.
    void advance(parley::test::manual_clock::duration step) {
        out.clear();
        const auto target = clock.now() + step;
        while (auto next = router.next_deadline()) {
            if (*next > target) break;
            if (*next > clock.now()) clock.set(*next);
            router.timer_fired(clock.now(), out);
        }
        clock.set(target);
        router.timer_fired(clock.now(), out);
    }

    template <class T>
    std::vector<T> all() const {
        std::vector<T> found;
        for (const auto& item : out) {
            if (const auto* typed = std::get_if<T>(&item)) found.push_back(*typed);
        }
        return found;
    }
    template <class Event>
    std::vector<notify_visitor> visitor_events() const {
        std::vector<notify_visitor> found;
        for (const auto& notice : all<notify_visitor>()) {
            if (std::holds_alternative<Event>(notice.event)) found.push_back(notice);
        }
        return found;
    }
    send_offer only_offer() const {
        const auto offers = all<send_offer>();
        REQUIRE(offers.size() == 1);
        return offers.front();
    }

    parley::test::manual_clock clock;
    tenant_router router;
    actions out;
};

}  // namespace parley::routing::test
