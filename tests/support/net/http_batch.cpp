#include "support/net/http_batch.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>

#include <deque>

namespace parley::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct http_batch::impl {
    struct call {
        explicit call(asio::io_context& ioc) : stream(ioc) {}
        beast::tcp_stream stream;
        http::request<http::string_body> request;
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        http_reply reply;
        bool sent = false;
        bool replied = false;
    };
    std::uint16_t port;
    asio::io_context ioc;
    std::vector<std::unique_ptr<call>> calls;
    std::deque<std::size_t> arrived;  // replies read by the io_context, not yet returned by next_reply

    explicit impl(std::uint16_t p) : port(p) {}
};

http_batch::http_batch(std::uint16_t port) : impl_(std::make_unique<impl>(port)) {}
http_batch::~http_batch() = default;

std::size_t http_batch::add(const std::string& method, const std::string& target, const std::string& body,
                            const std::map<std::string, std::string>& headers) {
    auto c = std::make_unique<impl::call>(impl_->ioc);
    beast::error_code ec;
    c->stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), impl_->port), ec);
    if (ec) FAIL("connect to 127.0.0.1:" << impl_->port << " failed: " << ec.message());
    c->request = {http::string_to_verb(method), target, 11};
    c->request.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) c->request.set(k, v);
    if (!body.empty()) {
        c->request.body() = body;
        if (headers.count("Content-Type") == 0) c->request.set(http::field::content_type, "application/json");
    }
    c->request.prepare_payload();
    c->parser.body_limit(64 * 1024 * 1024);
    impl_->calls.push_back(std::move(c));
    return impl_->calls.size() - 1;
}

void http_batch::send_all() {
    std::vector<std::size_t> fresh;
    for (std::size_t i = 0; i < impl_->calls.size(); ++i)
        if (!impl_->calls[i]->sent) fresh.push_back(i);
    // Small requests on idle connections: each write is one send(2), back to back.
    for (auto i : fresh) {
        auto& c = *impl_->calls[i];
        beast::error_code ec;
        http::write(c.stream, c.request, ec);
        if (ec) FAIL("HTTP write failed: " << ec.message());
        c.sent = true;
    }
    for (auto i : fresh) {
        auto& c = *impl_->calls[i];
        http::async_read(c.stream, c.buffer, c.parser, [this, i](beast::error_code ec, std::size_t) {
            auto& done = *impl_->calls[i];
            done.replied = true;
            if (ec) {
                done.reply.status = -1;
                done.reply.body = "read failed: " + ec.message();
            } else {
                auto res = done.parser.release();
                done.reply.status = static_cast<int>(res.result_int());
                done.reply.body = res.body();
                for (const auto& field : res)
                    done.reply.headers[std::string(field.name_string())] = std::string(field.value());
            }
            impl_->arrived.push_back(i);
        });
    }
}

std::optional<std::size_t> http_batch::next_reply(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (impl_->arrived.empty()) {
        bool pending = false;
        for (const auto& c : impl_->calls) pending = pending || (c->sent && !c->replied);
        if (!pending) return std::nullopt;
        const auto now = std::chrono::steady_clock::now();
        if (now >= deadline) return std::nullopt;
        impl_->ioc.restart();
        impl_->ioc.run_one_for(deadline - now);
    }
    auto index = impl_->arrived.front();
    impl_->arrived.pop_front();
    const auto& reply = impl_->calls[index]->reply;
    if (reply.status < 0) FAIL("request " << index << ": " << reply.body);
    return index;
}

void http_batch::wait_all(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        std::size_t waiting = 0;
        for (const auto& c : impl_->calls) waiting += c->sent && !c->replied;
        if (waiting == 0 && impl_->arrived.empty()) return;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (!next_reply(std::max(left, std::chrono::milliseconds(0))))
            FAIL(waiting << " of " << impl_->calls.size() << " replies did not arrive within " << timeout.count()
                         << " ms");
    }
}

const http_reply& http_batch::reply(std::size_t index) const { return impl_->calls.at(index)->reply; }

std::size_t http_batch::size() const { return impl_->calls.size(); }

}  // namespace parley::test
