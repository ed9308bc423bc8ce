#pragma once
// Accepts TCP connections and hands each to an http_session on its own strand.
#include <memory>

#include "net/net.h"
#include "net/net_context.h"

namespace parley::server {

class listener : public std::enable_shared_from_this<listener> {
public:
    listener(asio::io_context& ioc, tcp::endpoint endpoint, std::shared_ptr<net_context> context);

    void run();
    void stop();  // closes the acceptor; open sessions are not touched
    std::uint16_t port() const { return port_; }

private:
    void do_accept();
    void on_accept(error_code ec, tcp::socket socket);
    bool over_limits(const tcp::socket& socket) const;

    asio::io_context& ioc_;
    tcp::acceptor acceptor_;
    asio::steady_timer retry_timer_;  // after a failed accept (EMFILE...): pause instead of spinning
    std::shared_ptr<net_context> context_;
    std::uint16_t port_ = 0;
};

}  // namespace parley::server
