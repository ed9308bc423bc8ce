#pragma once
// A running parleyd with tenants t1 and t2 (tests/support/net test_config) and
// helpers to configure it through the admin API and to connect authenticated
// agents and visitors over real WebSockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "parley/server/auth.h"
#include "support/net/daemon_process.h"
#include "support/net/ws_client.h"
#include "support/test_env.h"

namespace parley::test {

// A plain TCP connection to the daemon over loopback, reads timing out after `receive_timeout`;
// with `receive_buffer_bytes`, a receive buffer that small (the kernel's minimum at least);
// with `source` (127.0.0.x), from that address: another client to the daemon.
inline int connect_loopback(std::uint16_t port, timeval receive_timeout, int receive_buffer_bytes = 0,
                            const char* source = nullptr) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    if (receive_buffer_bytes > 0)  // before connect: the window is agreed in the handshake
        REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes) == 0);
    if (source != nullptr) {
        sockaddr_in from{};
        from.sin_family = AF_INET;
        REQUIRE(::inet_pton(AF_INET, source, &from.sin_addr) == 1);
        REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) == 0);
    }
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receive_timeout, sizeof receive_timeout);
    return fd;
}

inline std::string admin_token_of(const std::string& tenant) { return tenant + "-admin-token-0123456789"; }
inline std::string agent_secret_of(const std::string& tenant) { return tenant + "-agent-secret-0123456789"; }

class chat_server {
public:
    // `storage_keys`, `server_keys`: more keys of the [storage] and [server] tables (TOML lines).
    explicit chat_server(const std::string& extra_toml = {}, const std::string& storage_url = {},
                         const std::string& storage_keys = {}, const std::string& server_keys = {})
        : daemon_(std::make_unique<daemon_process>(
              dir_.path(), with_keys_in(with_keys_in(test_config(dir_.path(), storage_url, extra_toml), "storage",
                                                     storage_keys),
                                        "server", server_keys))) {}

    std::uint16_t port() const { return daemon_->port(); }
    daemon_process& daemon() { return *daemon_; }
    const temp_dir& dir() const { return dir_; }

    http_reply admin(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr,
                     const std::string& tenant = "t1", const std::string& token_tenant = {}) {
        std::map<std::string, std::string> headers{
            {"Authorization", "Bearer " + admin_token_of(token_tenant.empty() ? tenant : token_tenant)}};
        return http_request(port(), method, "/v1/tenants/" + tenant + path, body.is_null() ? "" : body.dump(),
                            headers);
    }

    // PUT an agent and check it was stored.
    void put_agent(const std::string& id, nlohmann::json body, const std::string& tenant = "t1") {
        auto reply = admin("PUT", "/agents/" + id, body, tenant);
        INFO(reply.body);
        REQUIRE((reply.status == 200 || reply.status == 201));
    }
    void put_route(const std::string& name, nlohmann::json body, const std::string& tenant = "t1") {
        auto reply = admin("PUT", "/routes/" + name, body, tenant);
        INFO(reply.body);
        REQUIRE((reply.status == 200 || reply.status == 201));
    }

    static std::string agent_token(const std::string& agent_id, const std::string& tenant = "t1",
                                   const std::string& secret = {}) {
        return server::mint_agent_token(secret.empty() ? agent_secret_of(tenant) : secret, tenant, agent_id,
                                        std::chrono::hours(1), std::chrono::system_clock::now());
    }

    // An agent session after a successful hello; `hello_reply` keeps the ok.
    struct agent_session {
        std::unique_ptr<ws_client> ws;
        nlohmann::json hello_reply;
        ws_client* operator->() { return ws.get(); }
    };
    agent_session connect_agent(const std::string& agent_id, bool make_available = true,
                                const std::string& tenant = "t1") {
        agent_session a{std::make_unique<ws_client>(port(), "/v1/agent"), {}};
        a.hello_reply = a.ws->request({{"type", "hello"}, {"id", "h"}, {"token", agent_token(agent_id, tenant)}});
        INFO(a.hello_reply.dump());
        REQUIRE(a.hello_reply["type"] == "ok");
        if (make_available) {
            auto ok = a.ws->request({{"type", "set_availability"}, {"id", "av"}, {"available", true}});
            REQUIRE(ok["type"] == "ok");
        }
        return a;
    }

    struct visitor_session {
        std::unique_ptr<ws_client> ws;
        nlohmann::json hello_reply;
        std::string visitor_id;
        std::string resume_token;
        ws_client* operator->() { return ws.get(); }
    };
    visitor_session connect_visitor(const nlohmann::json& profile = nullptr, const std::string& resume_token = {},
                                    const std::string& tenant = "t1") {
        visitor_session v{std::make_unique<ws_client>(port(), "/v1/visitor"), {}, {}, {}};
        nlohmann::json hello{{"type", "hello"}, {"id", "h"}, {"tenant", tenant}};
        if (!profile.is_null()) hello["profile"] = profile;
        if (!resume_token.empty()) hello["resume_token"] = resume_token;
        v.hello_reply = v.ws->request(hello);
        INFO(v.hello_reply.dump());
        REQUIRE(v.hello_reply["type"] == "ok");
        v.visitor_id = v.hello_reply["visitor_id"];
        v.resume_token = v.hello_reply["resume_token"];
        return v;
    }

    // Visitor asks for an agent on `route`; returns the conversation id.
    static std::string request_agent(visitor_session& v, const std::string& route, const std::string& key = "k-1") {
        auto ok = v->request({{"type", "request_agent"}, {"id", "q"}, {"route", route}, {"client_key", key}});
        INFO(ok.dump());
        REQUIRE(ok["type"] == "ok");
        return ok["conversation_id"];
    }

    // The agent accepts its next offer; returns the accept reply.
    static nlohmann::json accept_next_offer(agent_session& a) {
        auto offer = a->expect("offer");
        auto ok = a->request({{"type", "accept"}, {"id", "acc"}, {"offer_id", offer["offer_id"]}});
        INFO(ok.dump());
        REQUIRE(ok["type"] == "ok");
        return ok;
    }

    // A visitor (with `profile`) in an active chat with `agent` on `route`, the agent_joined seen.
    struct chat {
        visitor_session visitor;
        std::string conversation_id;
    };
    chat start_chat(agent_session& agent, const std::string& route, const nlohmann::json& profile = nullptr) {
        chat c{connect_visitor(profile), {}};
        c.conversation_id = request_agent(c.visitor, route);
        accept_next_offer(agent);
        c.visitor->expect("agent_joined");
        return c;
    }

    // Sends messages 1..count ("<text_prefix> i", client_msg_id "<id_prefix>i") without waiting
    // for each ok; every 100th ok is awaited and must carry seq i (the conversation was empty).
    static void send_numbered(ws_client& client, const std::string& conversation_id, int count,
                              const std::string& text_prefix, const std::string& id_prefix) {
        using namespace std::chrono_literals;
        for (int i = 1; i <= count; ++i) {
            client.send_json({{"type", "send"}, {"id", "p" + std::to_string(i)}, {"conversation_id", conversation_id},
                              {"text", text_prefix + " " + std::to_string(i)}, {"client_msg_id", id_prefix + std::to_string(i)}});
            // The last one too: once it is acknowledged, every event of these messages has gone out.
            if (i % 100 == 0 || i == count) REQUIRE(client.expect("ok", 10s, "p" + std::to_string(i))["seq"] == i);
        }
    }

    static nlohmann::json send_text(ws_client& client, const std::string& conversation_id, const std::string& text,
                                    const std::string& client_msg_id) {
        nlohmann::json frame{{"type", "send"}, {"id", "s-" + client_msg_id}, {"conversation_id", conversation_id},
                             {"text", text}};
        if (!client_msg_id.empty()) frame["client_msg_id"] = client_msg_id;
        return client.request(frame);
    }

private:
    temp_dir dir_;
    std::unique_ptr<daemon_process> daemon_;
};

}  // namespace parley::test
