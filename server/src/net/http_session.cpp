#include "net/http_session.h"

#include "base/metrics.h"
#include "parley/proto/admin.h"
#include "parley/server/logging.h"
#include "net/http_handler.h"
#include "net/websocket_session.h"

namespace parley::server {

http_session::http_session(tcp::socket&& socket, std::shared_ptr<net_context> context)
    : stream_(std::move(socket)), context_(std::move(context)), slot_(*context_, stream_.socket()) {}

http_session::~http_session() = default;

void http_session::run() {
    asio::dispatch(stream_.get_executor(), beast::bind_front_handler(&http_session::do_read, shared_from_this()));
}

void http_session::do_read() {
    parser_.emplace();
    parser_->body_limit(context_->limits()->http_body_max_bytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(context_->limits()->handshake_timeout);
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&http_session::on_read, shared_from_this()));
}

void http_session::on_read(error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream) {
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        return;
    }
    if (ec == http::error::body_limit || ec == http::error::header_limit)
        return reply_and_close(http::status::payload_too_large, proto::error_code::too_large, "request too large");
    if (ec) return fail(ec, "read");

    auto request = parser_->release();
    if (websocket::is_upgrade(request)) {
        std::string_view target = request.target();
        if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
        std::optional<client_role> role;
        if (target == "/v1/visitor") role = client_role::visitor;
        if (target == "/v1/agent") role = client_role::agent;
        if (role && context_->websocket_handler && !context_->draining.load()) {
            if (!count_under_client_address(request)) {
                global_metrics().connections_refused++;
                return reply_and_close(http::status::too_many_requests, proto::error_code::capacity,
                                       "too many connections from this address (limits.max_connections_per_ip)");
            }
            // The WebSocket session takes the socket over; this http_session ends here.
            std::make_shared<websocket_session>(stream_.release_socket(), std::move(slot_), context_, *role)
                ->run(std::move(request));
            return;
        }
    }
    // No timeout while the answer is computed (storage may take a moment); the write gets one.
    stream_.expires_never();
    head_request_ = request.method() == http::verb::head;
    context_->http->handle(request, [self = shared_from_this()](http_answer answer) {
        asio::post(self->stream_.get_executor(), [self, answer = std::move(answer)]() mutable {
            bool keep_alive = answer.response.keep_alive() && !self->context_->draining.load();
            if (answer.body) return self->write_streamed(std::move(answer.response), std::move(answer.body), keep_alive);
            self->response_ = std::make_shared<http::response<http::string_body>>(std::move(answer.response));
            self->response_->keep_alive(keep_alive);
            self->stream_.expires_after(self->context_->limits()->handshake_timeout);
            http::async_write(self->stream_, *self->response_,
                              beast::bind_front_handler(&http_session::on_write, self, keep_alive));
        });
    });
}

// A WebSocket through a trusted proxy is one client's: from here on it counts under that
// client's address (limits.max_connections_per_ip), not the proxy's.
bool http_session::count_under_client_address(const http::request<http::string_body>& request) {
    const auto& peer = slot_.address();
    if (!peer || !context_->proxies.contains(*peer)) return true;
    std::string forwarded;
    for (auto [it, end] = request.equal_range("X-Forwarded-For"); it != end; ++it)
        forwarded.append(forwarded.empty() ? "" : ",").append(it->value());
    return slot_.readdress(client_address(*peer, forwarded, context_->proxies), context_->limits()->max_connections_per_ip);
}

void http_session::reply_and_close(http::status status, proto::error_code code, const std::string& message) {
    stream_.expires_after(context_->limits()->handshake_timeout);
    response_ = std::make_shared<http::response<http::string_body>>(status, 11);
    response_->set(http::field::content_type, "application/json");
    response_->body() = proto::admin::encode_admin_error(code, message);
    response_->prepare_payload();
    response_->keep_alive(false);
    http::async_write(stream_, *response_, beast::bind_front_handler(&http_session::on_write, shared_from_this(), false));
}

void http_session::write_streamed(http::response<http::string_body>&& head, std::shared_ptr<body_stream> body,
                                  bool keep_alive) {
    body_ = std::move(body);
    stream_keep_alive_ = keep_alive;
    stream_head_.emplace(std::move(head.base()));
    stream_head_->keep_alive(keep_alive);
    stream_head_->chunked(true);
    stream_head_writer_.emplace(*stream_head_);
    stream_.expires_after(context_->limits()->handshake_timeout);
    http::async_write_header(stream_, *stream_head_writer_,
                             beast::bind_front_handler(&http_session::on_stream_head, shared_from_this()));
}

void http_session::on_stream_head(error_code ec, std::size_t) {
    if (ec) return fail(ec, "write");
    if (head_request_) {
        body_.reset();
        return on_write(stream_keep_alive_, {}, 0);
    }
    next_piece();
}

void http_session::next_piece() {
    // Producing the next piece may wait for storage: no write is pending meanwhile.
    stream_.expires_never();
    body_->next([self = shared_from_this()](body_stream::piece piece) {
        asio::post(self->stream_.get_executor(),
                   [self, piece = std::move(piece)]() mutable { self->on_piece(std::move(piece)); });
    });
}

void http_session::on_piece(body_stream::piece piece) {
    stream_.expires_after(context_->limits()->handshake_timeout);
    if (piece.failed) {
        // No last chunk: the client sees the transfer cut off, not a body that looks complete.
        body_.reset();
        error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.close();
        return;
    }
    if (piece.data.empty()) {
        body_.reset();
        return asio::async_write(stream_, http::make_chunk_last(),
                                 beast::bind_front_handler(&http_session::on_write, shared_from_this(),
                                                           stream_keep_alive_));
    }
    chunk_ = std::move(piece.data);
    asio::async_write(stream_, http::make_chunk(asio::buffer(chunk_)),
                      beast::bind_front_handler(&http_session::on_chunk, shared_from_this()));
}

void http_session::on_chunk(error_code ec, std::size_t) {
    if (ec) {
        body_.reset();
        return fail(ec, "write");
    }
    chunk_.clear();
    chunk_.shrink_to_fit();
    next_piece();
}

void http_session::on_write(bool keep_alive, error_code ec, std::size_t) {
    if (ec) return fail(ec, "write");
    if (!keep_alive) {
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        return;
    }
    response_.reset();
    stream_head_writer_.reset();
    stream_head_.reset();
    do_read();
}

void http_session::fail(error_code ec, const char* what) {
    if (ec == asio::error::operation_aborted || ec == beast::error::timeout || ec == asio::error::eof ||
        ec == asio::error::connection_reset)
        return;
    logger("http")->debug("{}: {}", what, ec.message());
}

}  // namespace parley::server
