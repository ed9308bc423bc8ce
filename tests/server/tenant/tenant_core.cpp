#include "tenant_core.h"

namespace parley::server::test {

using namespace std::chrono_literals;

tenant_core::tenant_core(const std::function<void(config::config&)>& configure, storage::store_options store_options)
    : work_(asio::make_work_guard(ioc_)), time_(std::make_shared<manual_time_source>()) {
    config_.routing.restore_window = std::chrono::seconds(0);
    if (configure) configure(config_);
    tenant_.id = "t1";
    tenant_.name = "Tenant one";
    tenant_.admin_token = "admin-token-for-tests-0123456789";
    tenant_.agent_secret = "agent-secret-for-tests-0123456789";
    tenant_.widget_secret = "widget-secret-for-tests-0123456789";
    config_.tenants[tenant_.id] = tenant_;
    net_ = std::make_shared<net_context>(trusted_proxies{}, config_.limits);
    auto made = storage::make_memory_store(store_options);
    REQUIRE(made);
    store_ = std::move(made).value();
    open_hub();
}

tenant_core::~tenant_core() {
    if (hub_) {
        hub_->shutdown(websocket::close_code::going_away, "test over");
        settle();
    }
    hub_.reset();
    work_.reset();
    ioc_.run_for(20ms);
    store_.reset();
}

void tenant_core::open_hub() {
    std::string error;
    hub_ = tenant_hub::open(ioc_, {net_, config_.routing, time_}, tenant_, store_, error);
    INFO(error);
    REQUIRE(hub_);
    settle();
}

void tenant_core::restart() {
    hub_->shutdown(websocket::close_code::going_away, "restart");
    settle();
    hub_.reset();
    open_hub();
}

bool tenant_core::run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > give_up) return false;
        ioc_.run_for(1ms);
    }
    return true;
}

void tenant_core::settle() {
    // Storage answers on its own threads and posts back: a few rounds let every chain finish.
    for (int i = 0; i < 5; ++i) ioc_.run_for(10ms);
}

void tenant_core::advance(std::chrono::milliseconds step) {
    time_->advance(step);
    hub_->time_moved();
    settle();
}

admin_reply tenant_core::admin(const std::function<void(admin_done)>& call) {
    auto reply = std::make_shared<std::optional<admin_reply>>();
    auto mutex = std::make_shared<std::mutex>();
    call([reply, mutex](admin_reply r) {
        std::lock_guard lock(*mutex);
        *reply = std::move(r);
    });
    REQUIRE(run_until([&] {
        std::lock_guard lock(*mutex);
        return reply->has_value();
    }));
    std::lock_guard lock(*mutex);
    return std::move(**reply);
}

void tenant_core::put_agent(const std::string& id, const json& body) {
    auto parsed = proto::admin::parse_agent_body(body.dump());
    REQUIRE(parsed);
    auto reply = admin([&](admin_done done) { hub_->admin_put_agent(id, parsed.value(), std::move(done)); });
    INFO(reply.body);
    REQUIRE(reply.status < 300);
}

void tenant_core::put_route(const std::string& name, const json& body) {
    auto parsed = proto::admin::parse_route_body(body.dump());
    REQUIRE(parsed);
    auto reply = admin([&](admin_done done) { hub_->admin_put_route(name, parsed.value(), std::move(done)); });
    INFO(reply.body);
    REQUIRE(reply.status < 300);
}

connected tenant_core::connect_agent(const std::string& agent_id) {
    connected client{std::make_shared<fake_session>(next_session_id_++), proto::role::agent, agent_id, {}};
    hub_->agent_hello(client.session, "hello", agent_id);
    client.hello_reply = reply_to(client, "hello");
    return client;
}

connected tenant_core::connect_visitor(const std::string& visitor_id, const json& profile) {
    connected client{std::make_shared<fake_session>(next_session_id_++), proto::role::visitor, visitor_id, {}};
    proto::visitor_profile parsed_profile;
    if (!profile.empty()) {
        auto parsed = proto::admin::parse_visitor_profile_body(profile.dump());
        REQUIRE(parsed);
        parsed_profile = parsed.value();
    }
    hub_->visitor_hello(client.session, "hello", visitor_id, parsed_profile, !profile.empty());
    client.hello_reply = reply_to(client, "hello");
    return client;
}

void tenant_core::disconnect(const connected& client) {
    hub_->session_closed(client.session);
    settle();
}

void tenant_core::send(const connected& client, const json& frame) {
    auto parsed = proto::parse_client_frame(frame.dump(), client.role, proto::limits{});
    INFO(frame.dump());
    REQUIRE(parsed);
    hub_->request(client.session, std::move(parsed.value()));
}

json tenant_core::request(const connected& client, const json& frame) {
    send(client, frame);
    return reply_to(client, frame.at("id").get<std::string>());
}

json tenant_core::reply_to(const connected& client, const std::string& re) {
    std::optional<json> reply;
    const bool answered = run_until([&] {
        reply = client->take([&](const json& f) { return f.value("re", "") == re; });
        return reply.has_value();
    });
    INFO("no reply to " << re);
    REQUIRE(answered);
    return *reply;
}

json tenant_core::expect(const connected& client, const std::string& type) {
    std::optional<json> event;
    const bool seen = run_until([&] {
        event = client->take([&](const json& f) { return f.value("type", "") == type && !f.contains("re"); });
        return event.has_value();
    });
    INFO("no " << type << " event");
    REQUIRE(seen);
    return *event;
}

bool tenant_core::received(const connected& client, const std::string& type) {
    settle();
    return client->count(type) > 0;
}

std::string tenant_core::request_agent(const connected& visitor, const std::string& route, const std::string& key) {
    auto ok = request(visitor, {{"type", "request_agent"}, {"id", "q" + std::to_string(next_request_++)},
                                {"route", route}, {"client_key", key}});
    INFO(ok.dump());
    REQUIRE(ok["type"] == "ok");
    return ok["conversation_id"];
}

json tenant_core::accept_next_offer(const connected& agent) {
    auto offer = expect(agent, "offer");
    auto ok = request(agent, {{"type", "accept"}, {"id", "acc" + std::to_string(next_request_++)},
                              {"offer_id", offer["offer_id"]}});
    INFO(ok.dump());
    REQUIRE(ok["type"] == "ok");
    return ok;
}

void tenant_core::put_ann_and_sales(const json& route) {
    put_agent("a1", {{"name", "Ann"}});
    json body = {{"type", "round_robin"}};
    body.update(route);
    put_route("sales", body);
}

active_chat tenant_core::start_chat() {
    put_ann_and_sales();
    active_chat chat{connect_agent("a1"), connect_visitor("v1"), {}};
    chat.conversation_id = request_agent(chat.visitor, "sales");
    accept_next_offer(chat.agent);
    expect(chat.visitor, "agent_joined");
    return chat;
}

json tenant_core::send_text(const connected& client, const std::string& conversation_id, const std::string& text,
                            const std::optional<std::string>& client_msg_id) {
    json frame = {{"type", "send"},
                  {"id", "s" + std::to_string(next_request_++)},
                  {"conversation_id", conversation_id},
                  {"text", text}};
    if (client_msg_id) frame["client_msg_id"] = *client_msg_id;
    return request(client, frame);
}

std::vector<json> tenant_core::take_messages(const connected& client) {
    std::vector<json> messages;
    while (auto m = client->take([](const json& f) { return f.value("type", "") == "message"; }))
        messages.push_back(std::move(*m));
    return messages;
}

}  // namespace parley::server::test
