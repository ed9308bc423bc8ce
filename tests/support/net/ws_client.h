#pragma once
// Test clients over real loopback sockets, built on Beast. Each owns its own
// io_context and runs it only inside its calls, so tests stay single-threaded
// and deterministic: received frames queue up until the test asks for them.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace parley::test {

struct http_reply {
    int status = 0;
    std::string body;
    std::map<std::string, std::string> headers;
    nlohmann::json json() const { return nlohmann::json::parse(body); }
};

// One HTTP/1.1 request on a fresh connection.
http_reply http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body = {}, const std::map<std::string, std::string>& headers = {});

class ws_client {
public:
    // Connects and upgrades `target` (e.g. "/v1/agent"); FAILs the test on error.
    ws_client(std::uint16_t port, const std::string& target);
    ~ws_client();
    ws_client(const ws_client&) = delete;
    ws_client& operator=(const ws_client&) = delete;

    void send_text(const std::string& text);
    void send_json(const nlohmann::json& message) { send_text(message.dump()); }
    void send_binary(const std::string& bytes);

    // Next received text frame, or nullopt if none arrived within `timeout`
    // or the connection closed.
    std::optional<std::string> receive(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    // The first frame, among those skipped earlier and then those still to
    // come, that parses to JSON with "type" == type (any type when empty) and,
    // when `re` is given, "re" == re; frames passed over are kept in skipped().
    nlohmann::json expect(const std::string& type, std::chrono::milliseconds timeout = std::chrono::seconds(5),
                          const std::string& re = {});
    // Sends a request and returns the reply carrying re == id ("ok" or "error").
    nlohmann::json request(nlohmann::json message, std::chrono::milliseconds timeout = std::chrono::seconds(5));

    // True once the server closed; close_code() says with what.
    bool closed() const;
    std::optional<int> close_code() const;
    // Waits until the server closes the connection; returns its close code.
    std::optional<int> wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(5));
    void close(int code = 1000);
    // Stops reading frames (to simulate a slow consumer) until resume_reading().
    void pause_reading();
    void resume_reading();

    const std::deque<nlohmann::json>& skipped() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace parley::test
