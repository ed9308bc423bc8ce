// Routing decisions per second and per-decision latency with 10,000 agents
// in 1,000 teams. A decision is one chat_requested that ends in an offer, or
// one offer_declined that moves the chat on to the next agent. Each call is
// timed with steady_clock (allowed here, never in the library).
//
// Usage: routing_bench [iterations=200000] [seed=1]
#include <parley/routing/tenant_router.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <variant>
#include <vector>

using namespace parley::routing;
using namespace std::chrono_literals;

namespace {

constexpr int agent_count = 10'000;
constexpr int team_count = 1'000;

void report(const char* what, std::vector<double>& nanoseconds) {
    std::sort(nanoseconds.begin(), nanoseconds.end());
    const auto at = [&](double quantile) {
        return nanoseconds[static_cast<std::size_t>(quantile * static_cast<double>(nanoseconds.size() - 1))];
    };
    double total = 0;
    for (const double value : nanoseconds) total += value;
    std::printf("%-22s n=%zu  decisions/s=%.0f  mean=%.0f ns  p50=%.0f ns  p99=%.0f ns  p99.9=%.0f ns  max=%.0f ns\n",
        what, nanoseconds.size(), 1e9 * static_cast<double>(nanoseconds.size()) / total,
        total / static_cast<double>(nanoseconds.size()), at(0.5), at(0.99), at(0.999), nanoseconds.back());
}

const send_offer* find_offer(const actions& out) {
    for (const auto& item : out) {
        if (const auto* offer = std::get_if<send_offer>(&item)) return offer;
    }
    return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
    const long iterations = argc > 1 ? std::atol(argv[1]) : 200'000;
    std::mt19937_64 random(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1);

    tenant_config config;
    config.settings.idle_timeout = 24h;
    for (int i = 0; i < agent_count; ++i) {
        agent_config agent;
        agent.id = "a" + std::to_string(i);
        agent.name = agent.id;
        agent.max_chats = 10;
        agent.teams = {"t" + std::to_string(i % team_count)};
        config.agents.push_back(agent);
    }
    route_config all;
    all.name = "all";
    all.max_attempts = 3;
    config.routes.push_back(all);
    for (int t = 0; t < team_count; ++t) {
        route_config team;
        team.name = "team" + std::to_string(t);
        team.type = route_type::team;
        team.team = "t" + std::to_string(t);
        team.max_attempts = 3;
        config.routes.push_back(team);
    }
    auto now = time_point{std::chrono::milliseconds{1'780'000'000'000}};
    tenant_router router{config, "bench", now};
    actions out;
    out.reserve(64);
    for (int i = 0; i < agent_count; ++i) {
        out.clear();
        router.agent_session_opened("a" + std::to_string(i), "s", now, out);
    }

    // Background load: 30,000 active chats (3 per agent on average).
    long conversation_number = 0;
    std::vector<std::string> background;
    for (int i = 0; i < 30'000; ++i) {
        out.clear();
        const auto id = "c" + std::to_string(++conversation_number);
        router.chat_requested({id, "v" + std::to_string(conversation_number), {}, "all"}, now, out);
        const auto* offer = find_offer(out);
        if (!offer) continue;
        const auto offer_id = offer->offer_id;
        const auto agent_id = offer->agent_id;
        out.clear();
        router.offer_accepted(offer_id, agent_id, now, out);
    }

    std::uniform_int_distribution<int> team_pick(0, team_count - 1);
    std::vector<std::string> route_names;
    for (int t = 0; t < team_count; ++t) route_names.push_back("team" + std::to_string(t));
    std::vector<double> request_ns;
    std::vector<double> decline_ns;
    request_ns.reserve(static_cast<std::size_t>(iterations));
    decline_ns.reserve(static_cast<std::size_t>(iterations));
    std::vector<chat_request> requests;  // built ahead so string building is not timed
    requests.reserve(static_cast<std::size_t>(iterations));
    for (long i = 0; i < iterations; ++i) {
        ++conversation_number;
        requests.push_back({"c" + std::to_string(conversation_number), "v" + std::to_string(conversation_number), {},
            (random() & 1) ? std::string{"all"} : route_names[static_cast<std::size_t>(team_pick(random))]});
    }

    for (long i = 0; i < iterations; ++i) {
        now += 1ms;
        out.clear();
        const auto start = std::chrono::steady_clock::now();
        router.chat_requested(requests[static_cast<std::size_t>(i)], now, out);
        const auto stop = std::chrono::steady_clock::now();
        request_ns.push_back(std::chrono::duration<double, std::nano>(stop - start).count());
        const auto* offer = find_offer(out);
        if (!offer) continue;
        std::string offer_id = offer->offer_id;
        std::string agent_id = offer->agent_id;
        if (i % 2 == 0) {  // half the offers are declined: the next agent is chosen
            out.clear();
            const auto decline_start = std::chrono::steady_clock::now();
            router.offer_declined(offer_id, agent_id, now, out);
            const auto decline_stop = std::chrono::steady_clock::now();
            decline_ns.push_back(std::chrono::duration<double, std::nano>(decline_stop - decline_start).count());
            offer = find_offer(out);
            if (!offer) continue;
            offer_id = offer->offer_id;
            agent_id = offer->agent_id;
        }
        out.clear();
        router.offer_accepted(offer_id, agent_id, now, out);
        out.clear();
        router.chat_ended(requests[static_cast<std::size_t>(i)].conversation_id, ended_by::visitor, now, out);
    }

    const auto stats = router.stats();
    std::printf("agents=%d teams=%d connected=%zu open_conversations=%zu capacity_in_use=%zu\n", agent_count,
        team_count, stats.agents_connected, stats.open_conversations, stats.capacity_in_use);
    report("chat_requested", request_ns);
    report("offer_declined", decline_ns);
    std::vector<double> combined = request_ns;
    combined.insert(combined.end(), decline_ns.begin(), decline_ns.end());
    report("all decisions", combined);
    return 0;
}
