#pragma once
// Drives one tenant's core (tenant_hub and its parts) without sockets: fake
// sessions record what they are sent, time is manual, storage is the memory
// store (parley/storage/memory_store.h), whose test controls make outages and
// reads in progress happen on command. The io_context runs on the test's
// thread, only while a test waits for something, so every step is
// deterministic but the storage round trips.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/net_context.h"
#include "net/client_session.h"
#include "parley/proto/admin.h"
#include "parley/proto/decode.h"
#include "parley/storage/memory_store.h"
#include "tenant/tenant_hub.h"
#include "base/time_source.h"

namespace parley::server::test {

using json = nlohmann::json;

// A client connection that keeps every frame it is sent, parsed.
class fake_session final : public client_session {
public:
    explicit fake_session(std::uint64_t id) : id_(id) {}
    std::uint64_t id() const override { return id_; }
    void send(outbound_frame frame) override {
        std::lock_guard lock(mutex_);
        frames_.push_back(json::parse(*frame));
    }
    // Paced sends may come from a storage thread: recorded at once, `done` run at once.
    void send_paced(std::vector<outbound_frame> frames, std::function<void()> done) override {
        for (auto& frame : frames) send(std::move(frame));
        done();
    }
    void close(websocket::close_code code, std::string) override {
        std::lock_guard lock(mutex_);
        if (!closed_) closed_ = static_cast<int>(code);
    }
    std::optional<std::int64_t> credentials_expiry_s() const override { return std::nullopt; }

    // Takes (removes) every frame not taken yet, in the order they were sent.
    std::vector<json> take_all() {
        std::lock_guard lock(mutex_);
        return std::exchange(frames_, {});
    }
    // Takes (removes) the first frame not taken yet that `match`es.
    std::optional<json> take(const std::function<bool(const json&)>& match) {
        std::lock_guard lock(mutex_);
        for (auto it = frames_.begin(); it != frames_.end(); ++it)
            if (match(*it)) {
                auto frame = std::move(*it);
                frames_.erase(it);
                return frame;
            }
        return std::nullopt;
    }
    std::size_t count(const std::string& type) {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& f : frames_) n += f.value("type", "") == type;
        return n;
    }
    std::optional<int> closed() {
        std::lock_guard lock(mutex_);
        return closed_;
    }

private:
    const std::uint64_t id_;
    std::mutex mutex_;
    std::vector<json> frames_;
    std::optional<int> closed_;
};

struct connected {
    std::shared_ptr<fake_session> session;
    proto::role role;
    std::string principal;
    json hello_reply;
    fake_session* operator->() const { return session.get(); }
};

// A chat in progress: an agent and a visitor connected, the visitor's conversation accepted.
struct active_chat {
    connected agent;
    connected visitor;
    std::string conversation_id;
};

class tenant_core {
public:
    // `configure` changes the configuration before the hub opens; `store_options` are the memory store's.
    explicit tenant_core(const std::function<void(config::config&)>& configure = {},
                         storage::store_options store_options = {});
    ~tenant_core();

    // The hub is closed (as at a restart) and opened again on the same store.
    void restart();

    void put_agent(const std::string& id, const json& body);
    void put_route(const std::string& name, const json& body);
    connected connect_agent(const std::string& agent_id);
    connected connect_visitor(const std::string& visitor_id, const json& profile = json::object());
    void disconnect(const connected& client);

    // Sends `frame` (with an "id") and waits for its reply.
    json request(const connected& client, const json& frame);
    void send(const connected& client, const json& frame);
    json reply_to(const connected& client, const std::string& re);
    // Waits for the next event of `type` the client has not taken yet.
    json expect(const connected& client, const std::string& type);
    // Lets queued work run, then says whether the client got an event of `type`.
    bool received(const connected& client, const std::string& type);

    std::string request_agent(const connected& visitor, const std::string& route, const std::string& key = "k-1");
    json accept_next_offer(const connected& agent);

    // Agent a1 ("Ann") and route "sales", round robin, with `route` (more fields of the route) merged in.
    void put_ann_and_sales(const json& route = json::object());
    // put_ann_and_sales(), then a1 and visitor v1 connect, v1 asks for an agent on "sales", and
    // a1 accepts (v1's agent_joined taken).
    active_chat start_chat();
    // A `send` of `text` from `client`, answered: its reply (`ok` with `seq`, or an error).
    json send_text(const connected& client, const std::string& conversation_id, const std::string& text,
                   const std::optional<std::string>& client_msg_id = std::nullopt);
    // The `message` events `client` has not taken yet, taken, in the order they came.
    std::vector<json> take_messages(const connected& client);

    // The manual clock's wall time, in milliseconds since the epoch (what `*_at` fields carry).
    std::int64_t now_ms() const { return time_->wall().time_since_epoch().count(); }
    // Moves the manual clock; the hub checks the router's deadlines at once.
    void advance(std::chrono::milliseconds step);
    // Runs ready work for a moment (storage completions, posted replies).
    void settle();
    bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(10));

    tenant_hub& hub() { return *hub_; }
    // The store under the hub, with its test controls (set_reachable, held read replies).
    storage::memory_store& store() { return *store_; }

private:
    void open_hub();
    admin_reply admin(const std::function<void(admin_done)>& call);

    asio::io_context ioc_;
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    config::config config_;
    config::tenant_config tenant_;
    std::shared_ptr<manual_time_source> time_;
    std::shared_ptr<net_context> net_;
    std::shared_ptr<storage::memory_store> store_;
    std::shared_ptr<tenant_hub> hub_;
    std::uint64_t next_session_id_ = 1;
    int next_request_ = 1;  // ids of the requests the helpers send
};

}  // namespace parley::server::test
