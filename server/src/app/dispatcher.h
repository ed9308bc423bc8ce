#pragma once
// Reads every WebSocket frame on its session's strand: rate limit, decode and
// validate (proto), authenticate the hello. A session that passes its hello is
// handed to a binding to the tenant's hub (the hub of the hello, even when a
// reload removes the tenant later: it answers until it closes), which decodes
// the same way and passes each request on. Nothing here blocks or touches
// another session.
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "parley/storage/log_throttle.h"
#include "app/shared_state.h"
#include "tenant/tenant_hub.h"
#include "net/websocket_session.h"

namespace parley::server {

class dispatcher : public frame_handler {
public:
    // `state` owns this handler (net_context::websocket_handler), so it outlives it.
    explicit dispatcher(shared_state& state);

    void on_text(const std::shared_ptr<websocket_session>& session, std::string&& text) override;
    void on_closed(const std::shared_ptr<websocket_session>& session) override;

    // Rate limit and decode: the frame, or nullopt when it was refused (answered here).
    std::optional<proto::client_frame> decode(websocket_session& session, const std::string& text) const;

private:
    void hello(const std::shared_ptr<websocket_session>& session, proto::client_frame& frame);
    void refuse(const std::shared_ptr<websocket_session>& session, const std::optional<std::string>& re,
                const std::string& why);

    proto::limits current_limits() const;

    shared_state& state_;
    // A flood of bad credentials must not become a flood of log lines.
    storage::log_throttle refusal_log_{10, "hello(s) refused", spdlog::level::info};
};

}  // namespace parley::server
