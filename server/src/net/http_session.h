#pragma once
// One HTTP connection: reads requests (bounded size, bounded time), answers the
// plain HTTP endpoints, and upgrades /v1/visitor and /v1/agent to WebSocket.
#include <memory>
#include <optional>
#include <string>

#include "net/body_stream.h"
#include "net/net.h"
#include "parley/proto/common.h"
#include "net/net_context.h"

namespace parley::server {

class http_session : public std::enable_shared_from_this<http_session> {
public:
    http_session(tcp::socket&& socket, std::shared_ptr<net_context> context);
    ~http_session();

    void run();

private:
    void do_read();
    void on_read(error_code ec, std::size_t bytes);
    void on_write(bool keep_alive, error_code ec, std::size_t bytes);
    // A body that comes in pieces: the head, then one chunk per piece (each
    // asked for once the previous one is written), then the last chunk.
    void write_streamed(http::response<http::string_body>&& head, std::shared_ptr<body_stream> body, bool keep_alive);
    void on_stream_head(error_code ec, std::size_t bytes);
    void next_piece();
    void on_piece(body_stream::piece piece);
    void on_chunk(error_code ec, std::size_t bytes);
    void fail(error_code ec, const char* what);
    bool count_under_client_address(const http::request<http::string_body>& request);
    // An error answer ({code, message}) after which the connection closes.
    void reply_and_close(http::status status, proto::error_code code, const std::string& message);

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::shared_ptr<net_context> context_;
    connection_slot slot_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::shared_ptr<http::response<http::string_body>> response_;
    bool head_request_ = false;  // a HEAD: a streamed body is not sent

    // While a body is streamed.
    std::shared_ptr<body_stream> body_;
    std::optional<http::response<http::empty_body>> stream_head_;
    std::optional<http::response_serializer<http::empty_body>> stream_head_writer_;
    std::string chunk_;  // the piece being written
    bool stream_keep_alive_ = false;
};

}  // namespace parley::server
