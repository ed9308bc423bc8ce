#include "tenant/admin_queue.h"

#include <fmt/format.h>

#include "parley/proto/admin.h"
#include "parley/server/logging.h"

namespace parley::server {

// One running mutation's hold on the queue, shared by the copies of its `finish`.
struct admin_queue::turn {
    turn(std::shared_ptr<admin_queue> owner, admin_done reply_to) : queue(std::move(owner)), done(std::move(reply_to)) {}
    turn(const turn&) = delete;
    turn& operator=(const turn&) = delete;

    // The last copy of `finish` went without an answer. While the event loop is
    // stopped (the process is exiting) nothing could run the next one anyway.
    ~turn() {
        if (answered || queue->strand_.get_inner_executor().context().stopped()) return;
        answer({500, proto::admin::encode_admin_error(
                         proto::error_code::internal,
                         "internal error: the change may be incomplete; read the state back before retrying")});
    }

    void answer(admin_reply reply) {
        if (answered) return;  // a second answer is a bug; the first one stands
        answered = true;
        // The turn's end is on the strand before the reply can go out: a request the client
        // sends on seeing it must find the turn over, not wait behind it (or be refused as
        // one too many). Called on the strand, as it normally is, the next one still starts
        // only after this handler, and so after `done`.
        asio::post(queue->strand_, [owner = queue] { owner->turn_ended(); });
        done(std::move(reply));
    }

    std::shared_ptr<admin_queue> queue;
    admin_done done;
    bool answered = false;
};

void admin_queue::submit(admin_done done, mutation m) {
    if (closed_) return done(*closed_);
    if (!running_) return start(std::move(done), std::move(m));
    if (waiting_.size() >= max_waiting_) {
        admin_reply refused{429, proto::admin::encode_admin_error(
                                     proto::error_code::rate_limited,
                                     fmt::format("{} changes of this tenant are already waiting; retry in a moment",
                                                 max_waiting_))};
        refused.retry_after_s = 1;
        return done(std::move(refused));
    }
    waiting_.push_back({std::move(done), std::move(m), now_()});
}

void admin_queue::close(admin_reply reply) {
    closed_ = std::move(reply);
    auto waiting = std::exchange(waiting_, {});
    for (auto& change : waiting) change.done(*closed_);
}

void admin_queue::start(admin_done done, mutation m) {
    running_ = true;
    auto held = std::make_shared<turn>(shared_from_this(), std::move(done));
    admin_done finish = [held = std::move(held)](admin_reply reply) { held->answer(std::move(reply)); };
    try {
        m(std::move(finish));
    } catch (const std::exception& e) {
        // A bug. The copies of `finish` the throw destroyed are gone; whichever is
        // left (a storage completion's) answers, or its destruction does.
        logger("http")->error("an admin change threw: {}", e.what());
    } catch (...) {
        logger("http")->error("an admin change threw");
    }
}

void admin_queue::turn_ended() {
    running_ = false;
    while (!waiting_.empty()) {
        auto next = std::move(waiting_.front());
        waiting_.pop_front();
        if (now_() - next.since <= max_wait_) return start(std::move(next.done), std::move(next.run));
        admin_reply late{503, proto::admin::encode_admin_error(
                                  proto::error_code::unavailable,
                                  fmt::format("waited more than {} s behind other changes of this tenant; the change "
                                              "was not made, retry",
                                              std::chrono::duration_cast<std::chrono::seconds>(max_wait_).count()))};
        late.retry_after_s = 1;
        next.done(std::move(late));
    }
}

}  // namespace parley::server
