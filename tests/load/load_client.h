#pragma once
// The load tool's network pieces: an asynchronous WebSocket client connection
// (one per simulated visitor or agent, driven by the io_context thread it was
// created on), a blocking HTTP call for the admin API, and cheap field lookups
// in server frames.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio.hpp>
#include <boost/beast.hpp>

namespace parley::load {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

inline std::uint64_t now_ns() {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

// One client WebSocket. Not thread-safe: every call is made on the thread that
// runs its io_context (callbacks run there too). At most one write in flight;
// further frames wait in `outbound_`.
class ws_connection : public std::enable_shared_from_this<ws_connection> {
public:
    using frame_callback = std::function<void(std::string_view frame)>;
    // `close_code` is the code of the server's close frame, 0 if there was none.
    using closed_callback = std::function<void(error_code ec, std::uint16_t close_code)>;

    explicit ws_connection(asio::io_context& io) : ws_(io) {}

    // Connects from `source` (when set: extra loopback addresses past the
    // ephemeral port range of one address), upgrades on `path`, then starts
    // reading. `done` gets the first error, or success.
    void connect(const tcp::endpoint& server, std::optional<asio::ip::address> source, const std::string& path,
                 std::function<void(error_code)> done);
    void send(std::string frame);
    void pause_reading() { paused_ = true; }
    void resume_reading();
    void abort();  // drop the TCP connection without a close handshake
    void close();  // WebSocket close handshake (1000)
    bool is_open() const { return open_; }
    std::size_t queued_frames() const { return outbound_.size(); }

    frame_callback on_frame;
    closed_callback on_closed;

private:
    void do_read();
    void on_read(error_code ec, std::size_t bytes);
    void do_write();
    void fail(error_code ec);

    websocket::stream<beast::tcp_stream> ws_;
    beast::flat_buffer buffer_;
    std::deque<std::string> outbound_;
    bool writing_ = false;
    bool reading_ = false;
    bool paused_ = false;
    bool open_ = false;
    bool failed_ = false;
};

struct http_reply {
    unsigned status = 0;
    std::string body;
};
// A blocking HTTP/1.1 request (admin API); throws on network errors.
http_reply http_call(const tcp::endpoint& server, const std::string& method, const std::string& target,
                     const std::string& body, const std::string& bearer_token);

// Field lookups in frames written by the server (compact JSON with `type`
// first): the first occurrence of "key": wins, which is the top-level field for
// every key this tool asks for. Strings are returned without unescaping: the
// tool only reads ids, types and its own texts, which contain no escapes.
std::string_view string_field(std::string_view frame, std::string_view key);
std::optional<std::int64_t> integer_field(std::string_view frame, std::string_view key);

}  // namespace parley::load
