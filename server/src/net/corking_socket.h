#pragma once
// The TCP socket under each WebSocket session. A session that has more frames
// queued behind the one it is writing marks that write "more follows": the
// kernel then appends the frame to the socket without transmitting it
// (MSG_MORE), and the next write without the mark sends everything in one
// segment. A burst of frames to one client (an agent's conversations all
// answering at once) costs one TCP transmit and one wake-up of the reader
// instead of one per frame. Nothing is held back: the last frame of a burst is
// never marked, and the mark applies to one write only, so the control frames
// Beast writes on its own (pong, close) are never marked.
#include <sys/socket.h>

#include <utility>

#include "net/net.h"

namespace parley::server {

class corking_socket : public tcp::socket {
public:
    explicit corking_socket(tcp::socket&& socket) : tcp::socket(std::move(socket)) {}

    // The next write is followed by another one at once.
    void more_follows() { more_follows_ = true; }

    // Hides tcp::socket's: Beast's write operations call this one.
    template <class ConstBufferSequence, class WriteToken>
    auto async_write_some(const ConstBufferSequence& buffers, WriteToken&& token) {
        const socket_base::message_flags flags = more_follows_ ? MSG_MORE : 0;
        more_follows_ = false;
        return async_send(buffers, flags, std::forward<WriteToken>(token));
    }

private:
    bool more_follows_ = false;
};

// Beast finds these by argument-dependent lookup to end a WebSocket connection.
template <class TeardownHandler>
void async_teardown(beast::role_type role, corking_socket& socket, TeardownHandler&& handler) {
    websocket::async_teardown(role, static_cast<tcp::socket&>(socket), std::forward<TeardownHandler>(handler));
}

inline void teardown(beast::role_type role, corking_socket& socket, error_code& ec) {
    websocket::teardown(role, static_cast<tcp::socket&>(socket), ec);
}

}  // namespace parley::server
