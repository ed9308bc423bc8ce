#include "parley/routing/route_graph.h"

#include <algorithm>
#include <unordered_set>

namespace parley::routing {

namespace {
// A chain longer than this among the existing routes is treated as a cycle: it
// can only come from rows an older version stored without these checks.
constexpr int max_checked_hops = 32;
}  // namespace

std::optional<std::string> fallback_problem(const route_links& routes, const std::string& name,
                                            const std::string& fallback) {
    std::string next = fallback;
    for (int hops = 0; !next.empty(); ++hops) {
        if (next == name || hops > max_checked_hops) return "fallback_route forms a cycle";
        auto it = routes.find(next);
        if (it == routes.end()) return "fallback_route: no route named " + next;
        next = it->second;
    }
    return std::nullopt;
}

std::vector<std::string> broken_fallbacks(const route_links& routes) {
    std::vector<std::string> problems;
    for (const auto& [name, fallback] : routes) {
        if (fallback.empty()) continue;
        if (routes.count(fallback) == 0) {
            problems.push_back("route " + name + ": fallback_route " + fallback + " does not exist");
            continue;
        }
        std::unordered_set<std::string> seen;
        for (std::string next = fallback; !next.empty() && routes.count(next) != 0 && seen.insert(next).second;
             next = routes.at(next)) {
            if (next == name) {
                problems.push_back("route " + name + ": its fallback_routes lead back to it");
                break;
            }
        }
    }
    std::sort(problems.begin(), problems.end());
    return problems;
}

std::vector<std::string> routes_falling_back_to(const route_links& routes, const std::string& name) {
    std::vector<std::string> users;
    for (const auto& [other, fallback] : routes)
        if (fallback == name) users.push_back(other);
    std::sort(users.begin(), users.end());
    return users;
}

}  // namespace parley::routing
