#pragma once
// What the tenant core sees of a client connection: an id, a queue to put
// frames on, and a way to close it. websocket_session is the real one; tests
// drive the tenant core with a fake that records what it was sent.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net/net.h"

namespace parley::server {

enum class client_role { visitor, agent };

using outbound_frame = std::shared_ptr<const std::string>;

class client_session {
public:
    virtual ~client_session() = default;
    virtual std::uint64_t id() const = 0;
    // Thread-safe: queue a frame for sending.
    virtual void send(outbound_frame message) = 0;
    // Thread-safe: queue `frames` only while the outbound queue has room for a bulk
    // replay, then call `done`. Dropped, `done` uncalled, if the session closes first.
    virtual void send_paced(std::vector<outbound_frame> frames, std::function<void()> done) = 0;
    // Thread-safe: send what is queued, then close with `code` (1000, 1001, 1008, 1013, 4401...).
    virtual void close(websocket::close_code code, std::string reason) = 0;
    void close(std::uint16_t code, std::string reason) {
        close(static_cast<websocket::close_code>(code), std::move(reason));
    }
    // When the credentials of the session's hello expire (seconds since the epoch), if they do.
    virtual std::optional<std::int64_t> credentials_expiry_s() const = 0;
};

}  // namespace parley::server
