#include "load_client.h"

#include <netinet/in.h>

#include <charconv>

namespace parley::load {

void ws_connection::connect(const tcp::endpoint& server, std::optional<asio::ip::address> source,
                            const std::string& path, std::function<void(error_code)> done) {
    auto self = shared_from_this();
    auto& socket = beast::get_lowest_layer(ws_).socket();
    error_code ec;
    if (source) {
        socket.open(server.protocol(), ec);
        // Choose the port at connect() time, not bind() time: otherwise every
        // bound socket reserves a port of the source address for any peer.
#ifdef IP_BIND_ADDRESS_NO_PORT
        if (!ec) {
            int one = 1;
            ::setsockopt(socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        }
#endif
        if (!ec) socket.bind(tcp::endpoint(*source, 0), ec);
        if (ec) {
            asio::post(ws_.get_executor(), [done, ec] { done(ec); });
            return;
        }
    }
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(30));
    auto host = server.address().to_string() + ":" + std::to_string(server.port());
    beast::get_lowest_layer(ws_).async_connect(server, [self, host, path, done](error_code connect_ec) {
        if (connect_ec) return done(connect_ec);
        // As browsers do: without it, a frame written while the previous one is
        // unacknowledged waits for the peer's delayed ACK (Nagle, up to 40 ms).
        error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().set_option(tcp::no_delay(true), ignored);
        beast::get_lowest_layer(self->ws_).expires_never();
        self->ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
        self->ws_.text(true);
        self->ws_.async_handshake(host, path, [self, done](error_code handshake_ec) {
            if (!handshake_ec) {
                self->open_ = true;
                self->do_read();
            }
            done(handshake_ec);
        });
    });
}

void ws_connection::send(std::string frame) {
    if (!open_) return;
    outbound_.push_back(std::move(frame));
    if (!writing_) do_write();
}

void ws_connection::do_write() {
    writing_ = true;
    ws_.async_write(asio::buffer(outbound_.front()), [self = shared_from_this()](error_code ec, std::size_t) {
        self->writing_ = false;
        if (ec) return self->fail(ec);
        self->outbound_.pop_front();
        if (!self->outbound_.empty() && self->open_) self->do_write();
    });
}

void ws_connection::resume_reading() {
    paused_ = false;
    if (open_ && !reading_) do_read();
}

void ws_connection::do_read() {
    if (paused_) return;
    reading_ = true;
    ws_.async_read(buffer_, [self = shared_from_this()](error_code ec, std::size_t bytes) { self->on_read(ec, bytes); });
}

void ws_connection::on_read(error_code ec, std::size_t) {
    reading_ = false;
    if (ec) return fail(ec);
    auto data = buffer_.cdata();
    if (on_frame && !failed_) on_frame(std::string_view(static_cast<const char*>(data.data()), data.size()));
    buffer_.consume(buffer_.size());
    if (open_) do_read();
}

void ws_connection::fail(error_code ec) {
    if (failed_) return;
    failed_ = true;
    open_ = false;
    std::uint16_t code = ws_.reason().code;
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
    if (on_closed) on_closed(ec, code);
}

void ws_connection::abort() {
    open_ = false;
    failed_ = true;  // callbacks stay set: one may be running now; failed_ keeps them from firing again
    error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
}

void ws_connection::close() {
    if (!open_) return;
    open_ = false;
    ws_.async_close(websocket::close_code::normal, [self = shared_from_this()](error_code) {
        self->failed_ = true;
        error_code ignored;
        beast::get_lowest_layer(self->ws_).socket().close(ignored);
    });
}

http_reply http_call(const tcp::endpoint& server, const std::string& method, const std::string& target,
                     const std::string& body, const std::string& bearer_token) {
    namespace http = beast::http;
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(30));
    stream.connect(server);
    http::request<http::string_body> request(http::string_to_verb(method), target, 11);
    request.set(http::field::host, server.address().to_string());
    if (!bearer_token.empty()) request.set(http::field::authorization, "Bearer " + bearer_token);
    if (!body.empty()) {
        request.set(http::field::content_type, "application/json");
        request.body() = body;
    }
    request.prepare_payload();
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return {response.result_int(), response.body()};
}

namespace {
// Position just after `"key":` (and any spaces), or npos.
std::size_t value_start(std::string_view frame, std::string_view key) {
    std::size_t from = 0;
    while (true) {
        auto at = frame.find(key, from);
        if (at == std::string_view::npos) return at;
        auto end = at + key.size();
        if (at > 0 && frame[at - 1] == '"' && end < frame.size() && frame[end] == '"') {
            auto pos = end + 1;
            while (pos < frame.size() && frame[pos] == ' ') ++pos;
            if (pos < frame.size() && frame[pos] == ':') {
                ++pos;
                while (pos < frame.size() && frame[pos] == ' ') ++pos;
                return pos;
            }
        }
        from = at + 1;
    }
}
}  // namespace

std::string_view string_field(std::string_view frame, std::string_view key) {
    auto pos = value_start(frame, key);
    if (pos == std::string_view::npos || pos >= frame.size() || frame[pos] != '"') return {};
    auto end = frame.find('"', pos + 1);
    if (end == std::string_view::npos) return {};
    return frame.substr(pos + 1, end - pos - 1);
}

std::optional<std::int64_t> integer_field(std::string_view frame, std::string_view key) {
    auto pos = value_start(frame, key);
    if (pos == std::string_view::npos) return std::nullopt;
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(frame.data() + pos, frame.data() + frame.size(), value);
    if (ec != std::errc()) return std::nullopt;
    return value;
}

}  // namespace parley::load
