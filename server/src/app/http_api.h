#pragma once
// Plain HTTP on the WebSocket port: health, readiness, metrics, the admin API
// (protocol.md section 6), transcript download and the web clients. Requests
// that need storage or a tenant's hub answer asynchronously through `done`.
#include "app/shared_state.h"
#include "net/http_handler.h"

namespace parley::server {

class http_api final : public http_handler {
public:
    // `state` owns this handler (net_context::http), so it outlives it.
    explicit http_api(shared_state& state) : state_(state) {}
    void handle(const http_request& request, std::function<void(http_answer)> done) override;

private:
    shared_state& state_;
};

}  // namespace parley::server
