#include "support/net/tcp_proxy.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <string_view>
#include <boost/asio.hpp>
#include <future>
#include <optional>
#include <thread>
#include <vector>

namespace parley::test {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

struct proxy_state {
    asio::io_context& ioc;
    tcp::endpoint upstream;
    bool blackhole = false;  // read and written on the proxy's thread only
    int commits_to_cut = 0;  // likewise: drop_next_commit_replies
    bool blackhole_after_cut = false;
    std::atomic<std::size_t> commit_replies_dropped{0};
    std::atomic<std::size_t> client_chunks_held{0};
};

// The PostgreSQL frontend message of a simple-query COMMIT: 'Q', length 11 (big endian), "COMMIT\0".
constexpr std::string_view simple_commit{"Q\0\0\0\x0b" "COMMIT\0", 12};

// One client connection and its upstream twin. Everything runs on the proxy's
// one thread, so there are no locks. The proxy holds every link until it is
// closed: a blackholed link has no operation pending that would.
class link : public std::enable_shared_from_this<link> {
public:
    link(tcp::socket client, proxy_state& state) : state_(state), client_(std::move(client)), upstream_(state.ioc) {
        pumps_[0].from = &client_;
        pumps_[0].to = &upstream_;
        pumps_[1].from = &upstream_;
        pumps_[1].to = &client_;
    }

    // While the link is blackholed even the upstream connection waits.
    void start() {
        if (state_.blackhole) {
            waiting_to_connect_ = true;
            return;
        }
        connect();
    }

    void resume() {
        if (closed_) return;
        if (waiting_to_connect_) {
            waiting_to_connect_ = false;
            connect();
            return;
        }
        for (int i = 0; i < 2; ++i) {
            auto& p = pumps_[i];
            if (!p.paused) continue;
            p.paused = false;
            if (p.resume_with_delivery)
                deliver(i);
            else
                read(i);
        }
    }

    bool closed() const { return closed_; }

    void close() {
        if (closed_) return;
        closed_ = true;
        error_code ignored;
        client_.close(ignored);
        upstream_.close(ignored);
    }

private:
    // One direction. A read fills `buffer`; the bytes (and then an end of
    // stream, if the read ended it) are delivered before the next read.
    struct pump {
        tcp::socket* from = nullptr;
        tcp::socket* to = nullptr;
        std::array<char, 64 * 1024> buffer{};
        std::size_t held = 0;
        bool ended = false;
        bool paused = false;                // stopped by the blackhole
        bool resume_with_delivery = false;  // else with a read
    };

    void connect() {
        upstream_.async_connect(state_.upstream, [self = shared_from_this()](error_code ec) {
            if (ec || self->closed_) {
                self->close();
                return;
            }
            error_code ignored;
            self->client_.set_option(tcp::no_delay(true), ignored);
            self->upstream_.set_option(tcp::no_delay(true), ignored);
            self->read(0);
            self->read(1);
        });
    }

    void read(int i) {
        if (closed_) return;
        auto& p = pumps_[i];
        if (state_.blackhole) {
            p.paused = true;
            p.resume_with_delivery = false;
            return;
        }
        p.from->async_read_some(asio::buffer(p.buffer), [self = shared_from_this(), i](error_code ec, std::size_t n) {
            auto& q = self->pumps_[i];
            q.held = n;
            q.ended = static_cast<bool>(ec);
            self->deliver(i);
        });
    }

    void deliver(int i) {
        if (closed_) return;
        auto& p = pumps_[i];
        if (state_.blackhole) {
            if (i == 0 && p.held > 0 && !p.paused) ++state_.client_chunks_held;
            p.paused = true;
            p.resume_with_delivery = true;
            return;
        }
        if (p.held > 0 && i == 1 && cut_at_reply_) {
            // The server answered the COMMIT: it landed. The client never learns it.
            ++state_.commit_replies_dropped;
            if (state_.blackhole_after_cut) state_.blackhole = true;
            close();
            return;
        }
        if (p.held > 0 && i == 0 && state_.commits_to_cut > 0 &&
            std::search(p.buffer.begin(), p.buffer.begin() + static_cast<std::ptrdiff_t>(p.held), simple_commit.begin(),
                        simple_commit.end()) != p.buffer.begin() + static_cast<std::ptrdiff_t>(p.held)) {
            --state_.commits_to_cut;
            cut_at_reply_ = true;
        }
        if (p.held > 0) {
            asio::async_write(*p.to, asio::buffer(p.buffer.data(), p.held),
                              [self = shared_from_this(), i](error_code ec, std::size_t) {
                                  if (ec) {
                                      self->close();
                                      return;
                                  }
                                  self->pumps_[i].held = 0;
                                  self->deliver(i);
                              });
            return;
        }
        if (p.ended) {
            close();  // either side's close or error ends the pair
            return;
        }
        read(i);
    }

    proxy_state& state_;
    bool cut_at_reply_ = false;  // a COMMIT went upstream: cut the link when its reply comes
    tcp::socket client_;
    tcp::socket upstream_;
    std::array<pump, 2> pumps_;
    bool waiting_to_connect_ = false;
    bool closed_ = false;
};

}  // namespace

struct tcp_proxy::impl {
    explicit impl(std::uint16_t upstream_port)
        : state{ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), upstream_port)},
          acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
          work(ioc.get_executor()) {
        port = acceptor.local_endpoint().port();
        accept();
        thread = std::thread([this] { ioc.run(); });
    }

    ~impl() {
        run_on_thread([this] {
            error_code ignored;
            acceptor.close(ignored);
            for (auto& l : links) l->close();
            links.clear();
        });
        work.reset();
        ioc.stop();
        thread.join();
    }

    void accept() {
        acceptor.async_accept([this](error_code ec, tcp::socket socket) {
            if (ec) return;  // closed
            ++accepted;
            auto l = std::make_shared<link>(std::move(socket), state);
            std::erase_if(links, [](const std::shared_ptr<link>& other) { return other->closed(); });
            links.push_back(l);
            l->start();
            accept();
        });
    }

    template <class F>
    void run_on_thread(F f) {
        std::promise<void> done;
        asio::post(ioc, [&] {
            f();
            done.set_value();
        });
        done.get_future().wait();
    }

    asio::io_context ioc;
    proxy_state state;
    tcp::acceptor acceptor;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
    std::vector<std::shared_ptr<link>> links;
    std::uint16_t port = 0;
    std::atomic<std::size_t> accepted{0};
    std::thread thread;
};

tcp_proxy::tcp_proxy(std::uint16_t upstream_port) : impl_(std::make_unique<impl>(upstream_port)) {}

tcp_proxy::~tcp_proxy() = default;

std::uint16_t tcp_proxy::port() const { return impl_->port; }

void tcp_proxy::set_blackhole(bool on) {
    impl_->run_on_thread([this, on] {
        impl_->state.blackhole = on;
        if (on) return;
        for (auto& l : impl_->links) l->resume();
    });
}

std::size_t tcp_proxy::accepted() const { return impl_->accepted.load(); }

void tcp_proxy::drop_next_commit_replies(int count, bool then_blackhole) {
    impl_->run_on_thread([this, count, then_blackhole] {
        impl_->state.commits_to_cut = count;
        impl_->state.blackhole_after_cut = then_blackhole;
    });
}

std::size_t tcp_proxy::commit_replies_dropped() const { return impl_->state.commit_replies_dropped.load(); }

std::size_t tcp_proxy::client_chunks_held() const { return impl_->state.client_chunks_held.load(); }

}  // namespace parley::test
