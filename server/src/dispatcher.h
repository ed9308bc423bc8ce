#pragma once
// Reads every WebSocket frame on its session's strand: rate limit, decode and
// validate (proto), authenticate the hello, then hand the request to the
// tenant's hub. Nothing here blocks or touches another session.
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "shared_state.h"
#include "tenant_hub.h"
#include "websocket_session.h"

namespace parley::server {

class dispatcher : public frame_handler {
public:
    explicit dispatcher(std::shared_ptr<shared_state> state);

    void on_text(const std::shared_ptr<websocket_session>& session, std::string&& text) override;
    void on_closed(const std::shared_ptr<websocket_session>& session) override;

private:
    void hello(const std::shared_ptr<websocket_session>& session, proto::client_frame& frame);
    void refuse(const std::shared_ptr<websocket_session>& session, const std::optional<std::string>& re,
                const std::string& why);

    proto::limits current_limits() const;

    std::shared_ptr<shared_state> state_;
    // Refused hellos are logged at most max_refusals_logged per second: a flood of bad
    // credentials must not turn into a flood of synchronous log writes on the I/O threads.
    static constexpr int max_refusals_logged = 10;
    std::mutex refusal_log_mutex_;
    std::chrono::steady_clock::time_point refusal_window_start_{};
    int refusals_logged_in_window_ = 0;
    std::uint64_t refusals_not_logged_ = 0;
};

}  // namespace parley::server
