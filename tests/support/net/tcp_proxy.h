#pragma once
// A TCP forwarder on 127.0.0.1 for tests that need a network path they can
// break: put it between a client (parleyd, the storage library) and a server
// (PostgreSQL) and switch it to "blackhole" mid-run.
//
// Blackhole models a half-dead link, as a network partition looks from either
// end: every socket stays open, nobody gets an RST or a FIN, and no byte moves
// in either direction. New connections are accepted but go nowhere. When the
// link is restored, whatever was held back (bytes, closes) is delivered, as TCP
// would after the partition heals.
//
// Limit: the proxy's own kernel still acknowledges what the client sends and
// answers its keepalive probes, so what the client sees is a peer that accepts
// bytes and never answers (a hung server), not lost packets: tcp_user_timeout
// and keepalives do not fire, connect_timeout and application deadlines do.
#include <cstdint>
#include <memory>

namespace parley::test {

class tcp_proxy {
public:
    // Listens on 127.0.0.1, port 0, and forwards to 127.0.0.1:upstream_port,
    // on a thread of its own.
    explicit tcp_proxy(std::uint16_t upstream_port);
    ~tcp_proxy();  // closes every connection
    tcp_proxy(const tcp_proxy&) = delete;
    tcp_proxy& operator=(const tcp_proxy&) = delete;

    std::uint16_t port() const;
    // Takes effect before it returns.
    void set_blackhole(bool on);
    // Connections accepted so far (to check that traffic really went through).
    std::size_t accepted() const;
    // A COMMIT whose reply is lost: the next `count` PostgreSQL COMMITs (simple
    // query "COMMIT") are forwarded to the server, and when the server's reply
    // arrives the connection is cut instead of delivering it. The client cannot
    // tell whether its transaction committed; it did. With `then_blackhole` the
    // proxy turns to blackhole at that moment (set_blackhole(false) heals it), so
    // the client's reconnection waits as long as the test wants. Takes effect
    // before it returns.
    void drop_next_commit_replies(int count, bool then_blackhole = false);
    // COMMIT replies dropped so far.
    std::size_t commit_replies_dropped() const;
    // Reads from a client that the blackhole has held back so far: a test waits
    // for this to grow to know its request is in flight, stuck in the link.
    std::size_t client_chunks_held() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace parley::test
