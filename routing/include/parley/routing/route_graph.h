#pragma once
// The rules about how routes lead to one another through fallback_route: a
// fallback must name a route, must not lead back to the route it serves, and a
// route another one falls back to cannot go away. The admin API checks them
// before a change, the server reports stored routes that break them (left by
// older versions), and the router follows at most max_fallback_route_hops
// fallbacks while routing one chat, so a broken graph cannot spin it.
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace parley::routing {

// How many fallback_routes the router follows while routing one chat.
inline constexpr int max_fallback_route_hops = 8;

// Route name -> its fallback_route ("" for none).
using route_links = std::unordered_map<std::string, std::string>;

// Why route `name` with fallback_route `fallback` cannot join `routes` (replacing
// its own entry, if any), or nullopt when it can: "fallback_route forms a cycle"
// or "fallback_route: no route named X".
std::optional<std::string> fallback_problem(const route_links& routes, const std::string& name,
                                            const std::string& fallback);

// Every route of `routes` whose fallback_route names no route or whose fallbacks
// lead back to it, one sentence each ("route a: ..."), sorted.
std::vector<std::string> broken_fallbacks(const route_links& routes);

// The routes whose fallback_route is `name`, sorted: they keep `name` from being deleted.
std::vector<std::string> routes_falling_back_to(const route_links& routes, const std::string& name);

}  // namespace parley::routing
