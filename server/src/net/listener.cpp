#include "net/listener.h"

#include "base/metrics.h"

#include "net/http_session.h"
#include "parley/server/logging.h"

namespace parley::server {

listener::listener(asio::io_context& ioc, tcp::endpoint endpoint, std::shared_ptr<net_context> context)
    : ioc_(ioc), acceptor_(asio::make_strand(ioc)), retry_timer_(acceptor_.get_executor()), context_(std::move(context)) {
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
}

void listener::run() { do_accept(); }

void listener::stop() {
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
        error_code ignored;
        self->acceptor_.close(ignored);
        self->retry_timer_.cancel();
    });
}

void listener::do_accept() {
    acceptor_.async_accept(asio::make_strand(ioc_),
                           beast::bind_front_handler(&listener::on_accept, shared_from_this()));
}

bool listener::over_limits(const tcp::socket& socket) const {
    const auto limits = context_->limits();
    if (context_->open_connections.load() >= static_cast<std::int64_t>(limits->max_connections)) return true;
    if (limits->max_connections_per_ip == 0) return false;
    error_code ec;
    auto peer = socket.remote_endpoint(ec);
    if (ec) return false;
    // A trusted proxy carries many clients: they are counted by their own address at the upgrade.
    if (context_->proxies.contains(peer.address())) return false;
    return context_->connections_by_address.count(unmapped(peer.address())) >= limits->max_connections_per_ip;
}

void listener::on_accept(error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
        // EMFILE and friends: the next accept may succeed once connections close; retrying at
        // once would spin, so wait a moment.
        logger("net")->warn("accept failed: {}; retrying in 100 ms", ec.message());
        retry_timer_.expires_after(std::chrono::milliseconds(100));
        retry_timer_.async_wait([self = shared_from_this()](error_code wait_ec) {
            if (!wait_ec && self->acceptor_.is_open()) self->do_accept();
        });
        return;
    } else if (over_limits(socket)) {
        error_code ignored;
        socket.close(ignored);  // over a connection limit: refuse rather than degrade everyone
        global_metrics().connections_refused++;
    } else {
        // Frames are small and often sent back to back (ok, then an event): without this the
        // second waits for the peer's delayed ACK (~40 ms).
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        std::make_shared<http_session>(std::move(socket), context_)->run();
    }
    do_accept();
}

}  // namespace parley::server
