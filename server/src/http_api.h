#pragma once
// Plain HTTP on the WebSocket port: health, readiness, metrics, the admin API
// (protocol.md section 6) and transcript download. Requests that need storage
// or a tenant's hub answer asynchronously through `done`, which may run on any
// thread (the http_session posts the write back to its own strand).
#include <functional>

#include "net.h"
#include "shared_state.h"

namespace parley::server {

using http_request = http::request<http::string_body>;
using http_response = http::response<http::string_body>;

void handle_http(const std::shared_ptr<shared_state>& state, const http_request& request,
                 std::function<void(http_response)> done);

}  // namespace parley::server
