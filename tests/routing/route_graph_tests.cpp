// The fallback_route rules (route_graph.h): what the admin API refuses, what a
// load reports about stored routes, and what keeps a route from being deleted.
#include <catch2/catch.hpp>

#include <parley/routing/route_graph.h>

using namespace parley::routing;

TEST_CASE("a fallback_route must name an existing route", "[route_graph]") {
    const route_links routes{{"sales", ""}, {"support", "sales"}};
    CHECK_FALSE(fallback_problem(routes, "billing", ""));
    CHECK_FALSE(fallback_problem(routes, "billing", "sales"));
    CHECK_FALSE(fallback_problem(routes, "billing", "support"));  // two hops
    CHECK(fallback_problem(routes, "billing", "nowhere") == "fallback_route: no route named nowhere");
    // A hop further down the chain missing counts too.
    const route_links dangling{{"a", "gone"}};
    CHECK(fallback_problem(dangling, "b", "a") == "fallback_route: no route named gone");
}

TEST_CASE("a fallback_route must not lead back to its route", "[route_graph]") {
    const route_links routes{{"a", "b"}, {"b", "c"}, {"c", ""}};
    CHECK(fallback_problem(routes, "a", "a") == "fallback_route forms a cycle");
    // Replacing c's entry with one that falls back to a closes a -> b -> c -> a.
    CHECK(fallback_problem(routes, "c", "a") == "fallback_route forms a cycle");
    CHECK_FALSE(fallback_problem(routes, "c", ""));
    // A cycle among stored routes that does not pass through the new one is still refused.
    const route_links stored_cycle{{"x", "y"}, {"y", "x"}};
    CHECK(fallback_problem(stored_cycle, "new", "x") == "fallback_route forms a cycle");
}

TEST_CASE("broken stored fallbacks are reported, sorted, one sentence each", "[route_graph]") {
    const route_links routes{{"a", "b"}, {"b", "a"}, {"c", "missing"}, {"d", ""}, {"e", "d"}};
    CHECK(broken_fallbacks(routes) == std::vector<std::string>{"route a: its fallback_routes lead back to it",
                                                               "route b: its fallback_routes lead back to it",
                                                               "route c: fallback_route missing does not exist"});
    CHECK(broken_fallbacks({{"a", "b"}, {"b", ""}}).empty());
    // A route that leads into a cycle it is not part of is not itself reported.
    CHECK(broken_fallbacks({{"x", "y"}, {"y", "z"}, {"z", "y"}}) ==
          std::vector<std::string>{"route y: its fallback_routes lead back to it",
                                   "route z: its fallback_routes lead back to it"});
}

TEST_CASE("routes falling back to a route keep it", "[route_graph]") {
    const route_links routes{{"main", ""}, {"b", "main"}, {"a", "main"}, {"c", "b"}};
    CHECK(routes_falling_back_to(routes, "main") == std::vector<std::string>{"a", "b"});
    CHECK(routes_falling_back_to(routes, "c").empty());
}

TEST_CASE("the router follows a bounded number of fallbacks", "[route_graph]") {
    STATIC_REQUIRE(max_fallback_route_hops > 0);
}
