// The per-tenant round-robin read queue (storage/src/fair_queue.h).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "fair_queue.h"

using parley::storage::detail::fair_queue;

namespace {
std::vector<std::string> drain(fair_queue<std::string>& queue) {
    std::vector<std::string> served;
    while (!queue.empty()) served.push_back(queue.pop());
    return served;
}
}  // namespace

TEST_CASE("fair_queue serves tenants in turn, each in its own order", "[storage][fair_queue]") {
    fair_queue<std::string> queue(100, 100);
    // A flood from "big" queued first, then one read each from "a" and "b".
    for (int i = 1; i <= 4; ++i) {
        std::string job = "big" + std::to_string(i);
        REQUIRE(queue.push("big", job));
    }
    for (const char* key : {"a", "b"}) {
        std::string job = std::string(key) + "1";
        REQUIRE(queue.push(key, job));
    }
    std::string job = "a2";
    REQUIRE(queue.push("a", job));
    CHECK(queue.size() == 7);
    CHECK(drain(queue) == std::vector<std::string>{"big1", "a1", "b1", "big2", "a2", "big3", "big4"});
    CHECK(queue.size() == 0);
    // Empty again: a key that comes back starts a new turn.
    job = "b2";
    REQUIRE(queue.push("b", job));
    CHECK(queue.pop() == "b2");
}

TEST_CASE("fair_queue bounds each tenant and the whole, leaving a refused job to the caller", "[storage][fair_queue]") {
    fair_queue<std::string> queue(5, 3);
    for (int i = 0; i < 3; ++i) {
        std::string job = "x";
        REQUIRE(queue.push("flood", job));
    }
    std::string refused = "one too many";
    CHECK_FALSE(queue.push("flood", refused));
    CHECK(refused == "one too many");  // untouched: the caller answers it
    // The others still have room...
    for (const char* key : {"a", "b"}) {
        std::string job = key;
        CHECK(queue.push(key, job));
    }
    // ...until the total is reached.
    std::string late = "c";
    CHECK_FALSE(queue.push("c", late));
    CHECK(queue.size() == 5);
    queue.pop();
    CHECK(queue.push("c", late));
}
