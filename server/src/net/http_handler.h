#pragma once
// What answers the plain HTTP requests an http_session reads (everything but
// the WebSocket upgrades). The app installs one (app/http_api.h); `done` may
// run on any thread: the http_session posts the write back to its own strand.
#include <functional>
#include <memory>

#include "net/body_stream.h"
#include "net/net.h"

namespace parley::server {

using http_request = http::request<http::string_body>;
using http_response = http::response<http::string_body>;

// What answers a request: a whole response, or (with `body`) the head of one
// whose body follows in chunks (Transfer-Encoding: chunked).
struct http_answer {
    http_response response;  // with `body`: status and headers only
    std::shared_ptr<body_stream> body;

    http_answer(http_response whole) : response(std::move(whole)) {}  // NOLINT: most answers are whole
    http_answer(http_response head, std::shared_ptr<body_stream> rest)
        : response(std::move(head)), body(std::move(rest)) {}
};

class http_handler {
public:
    virtual ~http_handler() = default;
    virtual void handle(const http_request& request, std::function<void(http_answer)> done) = 0;
};

}  // namespace parley::server
