#include "listener.h"

#include "http_session.h"
#include "parley/server/logging.h"

namespace parley::server {

listener::listener(asio::io_context& ioc, tcp::endpoint endpoint, std::shared_ptr<shared_state> state)
    : ioc_(ioc), acceptor_(asio::make_strand(ioc)), state_(std::move(state)) {
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
    });
}

void listener::do_accept() {
    acceptor_.async_accept(asio::make_strand(ioc_),
                           beast::bind_front_handler(&listener::on_accept, shared_from_this()));
}

void listener::on_accept(error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
        // EMFILE and friends: log and keep accepting; the next accept may succeed.
        logger("net")->warn("accept failed: {}", ec.message());
    } else if (state_->open_connections.load() >= static_cast<std::int64_t>(state_->limits()->max_connections)) {
        error_code ignored;
        socket.close(ignored);  // over the connection limit: refuse rather than degrade everyone
    } else {
        std::make_shared<http_session>(std::move(socket), state_)->run();
    }
    do_accept();
}

}  // namespace parley::server
