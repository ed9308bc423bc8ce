#include "http_session.h"

#include "parley/server/logging.h"

namespace parley::server {

namespace {

http::response<http::string_body> text_response(const http::request<http::string_body>& request,
                                                http::status status, std::string body,
                                                const char* content_type = "text/plain; charset=utf-8") {
    http::response<http::string_body> response{status, request.version()};
    response.set(http::field::server, "parleyd");
    response.set(http::field::content_type, content_type);
    response.keep_alive(request.keep_alive());
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
}

std::string json_error(const char* code, const std::string& message) {
    // Codes and messages are ours (never raw input), so no escaping beyond quotes is needed.
    std::string escaped;
    for (char ch : message) {
        if (ch == '"' || ch == '\\') escaped += '\\';
        escaped += ch;
    }
    return std::string("{\"code\":\"") + code + "\",\"message\":\"" + escaped + "\"}";
}

}  // namespace

http::response<http::string_body> handle_http_request(shared_state& state,
                                                      const http::request<http::string_body>& request) {
    std::string_view target = request.target();
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);

    if (target == "/healthz") {
        if (request.method() != http::verb::get && request.method() != http::verb::head)
            return text_response(request, http::status::method_not_allowed, "use GET\n");
        return text_response(request, http::status::ok, "ok\n");
    }
    if (target == "/readyz") {
        if (state.draining.load()) return text_response(request, http::status::service_unavailable, "draining\n");
        if (!state.ready.load()) return text_response(request, http::status::service_unavailable, "storage not ready\n");
        return text_response(request, http::status::ok, "ready\n");
    }
    return text_response(request, http::status::not_found,
                         json_error("not_found", "no such endpoint: " + std::string(target.substr(0, 200))),
                         "application/json");
}

http_session::http_session(tcp::socket&& socket, std::shared_ptr<shared_state> state)
    : stream_(std::move(socket)), state_(std::move(state)) {
    ++state_->open_connections;
}

http_session::~http_session() { --state_->open_connections; }

void http_session::run() {
    asio::dispatch(stream_.get_executor(), beast::bind_front_handler(&http_session::do_read, shared_from_this()));
}

void http_session::do_read() {
    parser_.emplace();
    parser_->body_limit(state_->cfg.limits.http_body_max_bytes);
    parser_->header_limit(16 * 1024);
    stream_.expires_after(state_->cfg.limits.handshake_timeout);
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&http_session::on_read, shared_from_this()));
}

void http_session::on_read(error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream) {
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        return;
    }
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
        http::request<http::string_body> dummy;
        response_ = std::make_shared<http::response<http::string_body>>(
            text_response(dummy, http::status::payload_too_large, json_error("too_large", "request too large"),
                          "application/json"));
        response_->keep_alive(false);
        http::async_write(stream_, *response_,
                          beast::bind_front_handler(&http_session::on_write, shared_from_this(), false));
        return;
    }
    if (ec) return fail(ec, "read");

    auto request = parser_->release();
    response_ = std::make_shared<http::response<http::string_body>>(handle_http_request(*state_, request));
    bool keep_alive = response_->keep_alive() && !state_->draining.load();
    response_->keep_alive(keep_alive);
    http::async_write(stream_, *response_,
                      beast::bind_front_handler(&http_session::on_write, shared_from_this(), keep_alive));
}

void http_session::on_write(bool keep_alive, error_code ec, std::size_t) {
    if (ec) return fail(ec, "write");
    if (!keep_alive) {
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        return;
    }
    response_.reset();
    do_read();
}

void http_session::fail(error_code ec, const char* what) {
    if (ec == asio::error::operation_aborted || ec == beast::error::timeout || ec == asio::error::eof ||
        ec == asio::error::connection_reset)
        return;
    logger("http")->debug("{}: {}", what, ec.message());
}

}  // namespace parley::server
