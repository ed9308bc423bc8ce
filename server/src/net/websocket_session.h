#pragma once
// One WebSocket connection (visitor widget or agent client) on its own strand.
//
// Invariants: at most one write in flight; the outbound queue is bounded in
// frames and bytes, and a client past either bound is closed with 1013 (its
// messages stay in storage for resume); every wait has a timeout (handshake,
// hello, peer silence). The session is kept alive by the handlers of its
// pending operations (shared_from_this), never by the code that routes to it.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "net/client_session.h"
#include "net/corking_socket.h"
#include "net/net.h"
#include "net/net_context.h"

namespace parley::server {

class websocket_session;

// Receives what a session reads. Called on the session's strand. A session
// starts with net_context::websocket_handler (which checks the hello) and is
// handed to another handler once it has authenticated.
class frame_handler {
public:
    virtual ~frame_handler() = default;
    virtual void on_text(const std::shared_ptr<websocket_session>& session, std::string&& text) = 0;
    virtual void on_closed(const std::shared_ptr<websocket_session>& session) = 0;
};

class websocket_session final : public client_session, public std::enable_shared_from_this<websocket_session> {
public:
    // Frames go to `context->websocket_handler` until the session authenticates.
    websocket_session(tcp::socket&& socket, connection_slot&& slot, std::shared_ptr<net_context> context,
                      client_role role);
    ~websocket_session();

    // Accepts the upgrade request already read by the http_session.
    void run(http::request<http::string_body> upgrade_request);

    // Thread-safe: queue a frame for sending (posted to the session's strand).
    void send(outbound_frame message) override;
    // Thread-safe: queue `frames` only while the outbound queue is below a
    // quarter of its bounds (a bulk replay must not trip the slow-consumer close), then
    // call `done` on the session's strand. Dropped, `done` uncalled, if the
    // session closes first.
    void send_paced(std::vector<outbound_frame> frames, std::function<void()> done) override;
    // Thread-safe: close unless a hello has been accepted (its hub decides when then).
    void close_unless_authenticated(websocket::close_code code, std::string reason);
    // Thread-safe: send what is queued, then close with `code` (1000, 1001, 1008, 4401...).
    void close(websocket::close_code code, std::string reason = {}) override;
    void close(std::uint16_t code, std::string reason = {}) {
        close(static_cast<websocket::close_code>(code), std::move(reason));
    }

    std::uint64_t id() const override { return id_; }
    client_role role() const { return role_; }
    asio::any_io_executor executor() { return executor_; }

    // Who the client proved to be at its hello.
    struct identity {
        std::string tenant;
        std::string principal;  // visitor id or agent id
        // When the credentials of the hello expire (visitor token or resume token), if they do.
        std::optional<std::int64_t> credentials_expire_at_s;
    };
    // On the session's strand, once, after a successful hello: from now on `handler`
    // receives the session's frames and its end. A second call is ignored (returns false).
    bool authenticate(identity who, std::shared_ptr<frame_handler> handler);
    // Read on the session's strand; after authenticate() also by whoever it was posted to.
    bool authenticated() const { return authenticated_; }
    const identity& who() const { return identity_; }
    std::optional<std::int64_t> credentials_expiry_s() const override { return identity_.credentials_expire_at_s; }

    // When the credentials of the session run out: `warning` is queued credentials_warning_lead
    // before (at once when that is past), and the session closes with 4401 at `expires_at`. A
    // later call moves both (a fresh token, or a rotated secret's grace). On the session's strand.
    static constexpr std::chrono::seconds credentials_warning_lead{60};
    void expire_credentials_at(std::chrono::system_clock::time_point expires_at, outbound_frame warning);
    std::optional<std::chrono::system_clock::time_point> credentials_expire_at() const { return credentials_expire_at_; }

    // Rate limiting of client frames (token bucket). Returns false when the
    // frame must be refused with `rate_limited`; closes with 1008 on sustained abuse.
    bool admit_client_frame();

private:
    void on_accept(error_code ec);
    void do_read();
    void on_read(error_code ec, std::size_t bytes);
    void do_write();
    void feed_paced();
    void on_write(error_code ec, std::size_t bytes);
    void on_hello_deadline(error_code ec);
    void arm_credentials_timer();
    void schedule_ping();
    void on_ping_timer(error_code ec);
    void begin_close(websocket::close_reason reason);
    void fail(error_code ec, const char* what);
    void finish();
    void release_stream();

    std::shared_ptr<net_context> context_;
    asio::any_io_executor executor_;  // the session's strand; outlives ws_
    // Emptied a moment after finish(): see release_stream().
    std::optional<websocket::stream<corking_socket>> ws_;
    connection_slot slot_;
    beast::flat_buffer buffer_;
    client_role role_;
    std::shared_ptr<frame_handler> handler_;
    std::uint64_t id_;

    std::deque<outbound_frame> outbound_;
    std::size_t outbound_bytes_ = 0;
    // Waiting for room in outbound_, in the order send_paced was called; each
    // batch's done runs once its last frame is queued.
    struct paced_batch {
        std::deque<outbound_frame> frames;
        std::function<void()> done;
    };
    std::deque<paced_batch> paced_;
    bool writing_ = false;
    bool closing_ = false;  // close requested: no more reads dispatched, no new frames queued
    bool finished_ = false;
    bool registered_ = false;  // in context_->websockets
    bool authenticated_ = false;
    identity identity_;
    std::optional<websocket::close_reason> pending_close_;

    asio::steady_timer hello_timer_;
    asio::steady_timer ping_timer_;
    asio::steady_timer close_deadline_;
    bool ping_in_flight_ = false;
    // Only for sessions whose credentials expire (agents): most sessions never need the timer.
    std::unique_ptr<asio::steady_timer> credentials_timer_;
    std::optional<std::chrono::system_clock::time_point> credentials_expire_at_;
    outbound_frame credentials_warning_;
    bool credentials_warned_ = false;
    std::chrono::steady_clock::time_point last_heard_;

    double rate_tokens_;
    std::chrono::steady_clock::time_point rate_refilled_at_;
    unsigned consecutive_refusals_ = 0;
};

}  // namespace parley::server
