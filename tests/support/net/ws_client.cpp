#include "support/net/ws_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <catch2/catch.hpp>

namespace parley::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

http_reply http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& body, const std::map<std::string, std::string>& headers) {
    asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(10));
    beast::error_code ec;
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    if (ec) FAIL("connect to 127.0.0.1:" << port << " failed: " << ec.message());
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty()) {
        req.body() = body;
        if (headers.count("Content-Type") == 0) req.set(http::field::content_type, "application/json");
    }
    req.prepare_payload();
    http::write(stream, req, ec);
    if (ec) FAIL("HTTP write failed: " << ec.message());
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream, buffer, parser, ec);
    if (ec) FAIL("HTTP read failed: " << ec.message());
    auto res = parser.release();
    http_reply reply;
    reply.status = static_cast<int>(res.result_int());
    reply.body = res.body();
    for (const auto& field : res) reply.headers[std::string(field.name_string())] = std::string(field.value());
    return reply;
}

struct ws_client::impl {
    asio::io_context ioc;
    websocket::stream<beast::tcp_stream> ws{ioc};
    beast::flat_buffer buffer;
    std::deque<std::string> received;
    std::deque<nlohmann::json> skipped;
    bool reading = false;
    bool paused = false;
    bool is_closed = false;
    std::optional<int> code;

    void start_read() {
        if (reading || paused || is_closed) return;
        reading = true;
        ws.async_read(buffer, [this](beast::error_code ec, std::size_t) {
            reading = false;
            if (ec) {
                is_closed = true;
                if (ws.reason().code != websocket::close_code::none || ec == websocket::error::closed)
                    code = static_cast<int>(ws.reason().code);
                return;
            }
            received.push_back(beast::buffers_to_string(buffer.data()));
            buffer.consume(buffer.size());
            start_read();
        });
    }

    // Runs the io_context until `done()` or timeout.
    template <typename Predicate>
    bool run_until(Predicate done, std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        start_read();
        while (!done()) {
            auto now = std::chrono::steady_clock::now();
            if (now >= deadline) return false;
            if (ioc.stopped()) ioc.restart();
            ioc.run_one_for(deadline - now);
        }
        return true;
    }
};

ws_client::ws_client(std::uint16_t port, const std::string& target) : impl_(std::make_unique<impl>()) {
    beast::error_code ec;
    beast::get_lowest_layer(impl_->ws).expires_after(std::chrono::seconds(10));
    beast::get_lowest_layer(impl_->ws).connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
    if (ec) FAIL("connect failed: " << ec.message());
    impl_->ws.handshake("127.0.0.1", target, ec);
    if (ec) FAIL("WebSocket handshake to " << target << " failed: " << ec.message());
    beast::get_lowest_layer(impl_->ws).expires_never();
    impl_->ws.read_message_max(64 * 1024 * 1024);
}

ws_client::~ws_client() {
    beast::error_code ignored;
    beast::get_lowest_layer(impl_->ws).socket().close(ignored);
}

void ws_client::send_text(const std::string& text) {
    beast::error_code ec;
    impl_->ws.text(true);
    impl_->ws.write(asio::buffer(text), ec);
    if (ec) FAIL("WebSocket write failed: " << ec.message());
}

void ws_client::send_binary(const std::string& bytes) {
    beast::error_code ec;
    impl_->ws.binary(true);
    impl_->ws.write(asio::buffer(bytes), ec);
    impl_->ws.text(true);
    if (ec) FAIL("WebSocket write failed: " << ec.message());
}

std::optional<std::string> ws_client::receive(std::chrono::milliseconds timeout) {
    impl_->run_until([this] { return !impl_->received.empty() || impl_->is_closed; }, timeout);
    if (impl_->received.empty()) return std::nullopt;
    auto frame = std::move(impl_->received.front());
    impl_->received.pop_front();
    return frame;
}

nlohmann::json ws_client::expect(const std::string& type, std::chrono::milliseconds timeout, const std::string& re) {
    auto matches = [&](const nlohmann::json& message) {
        return message.is_object() && (type.empty() || message.value("type", "") == type) &&
               (re.empty() || message.value("re", "") == re);
    };
    // A frame skipped earlier (while waiting for a reply, say) counts first.
    for (auto it = impl_->skipped.begin(); it != impl_->skipped.end(); ++it) {
        if (matches(*it)) {
            auto message = std::move(*it);
            impl_->skipped.erase(it);
            return message;
        }
    }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (remaining.count() <= 0) break;
        auto frame = receive(remaining);
        if (!frame) break;
        auto message = nlohmann::json::parse(*frame, nullptr, false);
        if (matches(message)) return message;
        impl_->skipped.push_back(message);
    }
    std::string seen;
    for (const auto& m : impl_->skipped) seen += m.dump() + "\n";
    FAIL("no '" << type << "'" << (re.empty() ? "" : " re=" + re) << " within the timeout; skipped:\n" << seen);
    return {};
}

nlohmann::json ws_client::request(nlohmann::json message, std::chrono::milliseconds timeout) {
    static int counter = 0;
    if (!message.contains("id")) message["id"] = "r" + std::to_string(++counter);
    std::string id = message["id"];
    send_json(message);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (remaining.count() <= 0) break;
        auto frame = receive(remaining);
        if (!frame) break;
        auto reply = nlohmann::json::parse(*frame, nullptr, false);
        if (reply.is_object() && reply.value("re", "") == id) return reply;
        impl_->skipped.push_back(reply);
    }
    FAIL("no reply to " << message.dump() << " within the timeout");
    return {};
}

bool ws_client::closed() const { return impl_->is_closed; }
std::optional<int> ws_client::close_code() const { return impl_->code; }

std::optional<int> ws_client::wait_closed(std::chrono::milliseconds timeout) {
    impl_->paused = false;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!impl_->is_closed && std::chrono::steady_clock::now() < deadline) {
        impl_->received.clear();
        impl_->run_until([this] { return impl_->is_closed || !impl_->received.empty(); },
                         std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
    }
    return impl_->code;
}

void ws_client::close(int code) {
    beast::error_code ec;
    impl_->ws.close(websocket::close_reason(static_cast<std::uint16_t>(code)), ec);
}

void ws_client::pause_reading() { impl_->paused = true; }
void ws_client::resume_reading() {
    impl_->paused = false;
    impl_->start_read();
}

const std::deque<nlohmann::json>& ws_client::skipped() const { return impl_->skipped; }

}  // namespace parley::test
