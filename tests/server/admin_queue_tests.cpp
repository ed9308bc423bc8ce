// admin_queue (server/src/admin_queue.h): a tenant's admin mutations one at a
// time, a bounded wait, and a turn that always ends, whether its mutation
// answers, throws, or loses its `finish`. Driven by hand on one io_context: the
// test thread is the strand, and ioc.poll() runs what the queue posted to it.
#include <catch2/catch.hpp>

#include <optional>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

#include "tenant/admin_queue.h"
#include "parley/proto/admin.h"

using namespace parley::server;

namespace {

struct fixture {
    asio::io_context ioc;
    std::chrono::steady_clock::time_point now{};  // moved by hand
    admin_queue::strand_type strand = asio::make_strand(ioc);
    std::shared_ptr<admin_queue> queue =
        std::make_shared<admin_queue>(strand, 2, std::chrono::seconds(10), [this] { return now; });
    std::vector<std::optional<admin_reply>> replies;  // by submission
    std::vector<int> started;                         // submission numbers, in the order they ran
    std::vector<admin_done> held;                     // `finish` of mutations "waiting for storage"

    // Submits mutation number `n` (its index in `replies`); `body` is what it does with its turn.
    void submit(std::function<void(int, admin_done)> body) {
        const int n = static_cast<int>(replies.size());
        replies.emplace_back();
        queue->submit([this, n](admin_reply r) { replies[n] = std::move(r); },
                      [this, n, body = std::move(body)](admin_done finish) {
                          started.push_back(n);
                          body(n, std::move(finish));
                      });
    }
    // A mutation that waits for storage: its `finish` is kept in `held`.
    void submit_held() {
        submit([this](int, admin_done finish) { held.push_back(std::move(finish)); });
    }
    void run() {
        ioc.restart();
        ioc.poll();
    }
};

std::string code_of(const admin_reply& reply) { return nlohmann::json::parse(reply.body)["code"]; }

}  // namespace

TEST_CASE("admin_queue: one mutation at a time, the others in order, at most max_waiting of them", "[admin_queue]") {
    fixture f;
    f.submit_held();
    f.submit_held();
    f.submit_held();
    CHECK(f.started == std::vector<int>{0});
    CHECK(f.queue->waiting() == 2);

    f.submit_held();  // a third one waiting: refused at once, never run
    REQUIRE(f.replies[3]);
    CHECK(f.replies[3]->status == 429);
    CHECK(code_of(*f.replies[3]) == "rate_limited");
    CHECK(f.replies[3]->retry_after_s == 1);

    REQUIRE(f.held.size() == 1);
    f.held[0]({201, "{}"});
    REQUIRE(f.replies[0]);
    CHECK(f.replies[0]->status == 201);
    CHECK(f.started == std::vector<int>{0});  // the next starts from the strand, after the answer
    f.run();
    CHECK(f.started == std::vector<int>{0, 1});
    f.held[1]({200, "{}"});
    f.run();
    f.held[2]({204, ""});
    f.run();
    CHECK(f.started == std::vector<int>{0, 1, 2});
    CHECK(!f.queue->running());
    CHECK(f.queue->waiting() == 0);

    // A mutation that answers at once (a failed check) ends its turn too.
    f.submit([](int, admin_done finish) { finish({400, "{}"}); });
    f.submit_held();
    f.run();
    CHECK(f.started == std::vector<int>{0, 1, 2, 4, 5});
}

TEST_CASE("admin_queue: a mutation that throws or drops its finish answers 500 and the next one runs", "[admin_queue]") {
    fixture f;
    SECTION("throws before handing finish on") {
        f.submit([](int, admin_done) { throw std::runtime_error("bug"); });
    }
    SECTION("drops finish without answering (a storage completion lost)") {
        f.submit([](int, admin_done finish) { admin_done lost = std::move(finish); });
    }
    f.submit_held();
    REQUIRE(f.replies[0]);
    CHECK(f.replies[0]->status == 500);
    CHECK(code_of(*f.replies[0]) == "internal");
    f.run();
    CHECK(f.started == std::vector<int>{0, 1});
}

TEST_CASE("admin_queue: a mutation that threw after handing finish to storage holds its turn until storage answers",
          "[admin_queue]") {
    fixture f;
    f.submit([&f](int, admin_done finish) {
        f.held.push_back(std::move(finish));
        throw std::runtime_error("bug after the write was submitted");
    });
    f.submit_held();
    f.run();
    CHECK(!f.replies[0]);
    CHECK(f.started == std::vector<int>{0});  // its write may still land: the next one waits for it
    f.held[0]({201, "{}"});
    f.run();
    CHECK(f.replies[0]->status == 201);
    CHECK(f.started == std::vector<int>{0, 1});
    f.held[0]({500, "{}"});  // a second answer is ignored
    CHECK(f.replies[0]->status == 201);
}

TEST_CASE("admin_queue: close answers the waiting mutations and later ones; the running one finishes", "[admin_queue]") {
    fixture f;
    f.submit_held();
    f.submit_held();
    f.submit_held();
    f.queue->close({503, parley::proto::admin::encode_admin_error(parley::proto::error_code::unavailable, "tenant removed")});
    for (int n : {1, 2}) {
        REQUIRE(f.replies[n]);
        CHECK(f.replies[n]->status == 503);
    }
    f.submit_held();
    REQUIRE(f.replies[3]);
    CHECK(f.replies[3]->status == 503);
    CHECK(!f.replies[0]);
    f.held[0]({201, "{}"});
    f.run();
    CHECK(f.replies[0]->status == 201);
    CHECK(f.started == std::vector<int>{0});
}

TEST_CASE("admin_queue: a mutation whose turn comes after it waited too long is answered 503 and not run",
          "[admin_queue]") {
    fixture f;
    f.submit_held();
    f.submit_held();  // waits from t = 0
    f.now += std::chrono::seconds(5);
    f.submit_held();  // waits from t = 5
    f.now += std::chrono::seconds(6);  // t = 11: the first one waited too long, the second 6 s
    f.held[0]({201, "{}"});
    f.run();
    REQUIRE(f.replies[1]);
    CHECK(f.replies[1]->status == 503);
    CHECK(code_of(*f.replies[1]) == "unavailable");
    CHECK(f.replies[1]->retry_after_s == 1);
    CHECK(f.started == std::vector<int>{0, 2});
    CHECK(!f.replies[2]);
}

TEST_CASE("admin_queue: a change sent on seeing the previous reply finds that turn over", "[admin_queue]") {
    // The hub posts each request to the strand (tenant_hub::mutate); a client that sends its
    // next change as soon as it sees a reply must not find the replied one still running.
    fixture f;
    std::optional<admin_reply> next_reply;
    f.queue->submit(
        [&f, &next_reply](admin_reply) {
            asio::post(f.strand, [&f, &next_reply] {
                f.queue->submit([&next_reply](admin_reply r) { next_reply = std::move(r); },
                                [&f](admin_done finish) { f.held.push_back(std::move(finish)); });
            });
        },
        [&f](admin_done finish) { f.held.push_back(std::move(finish)); });
    f.submit_held();
    f.submit_held();  // the queue is full
    f.held[0]({200, "{}"});
    f.run();
    CHECK(!next_reply);  // waiting, not refused as one too many
    CHECK(f.queue->waiting() == 2);
}
