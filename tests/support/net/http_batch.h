#pragma once
// HTTP requests that reach the daemon together: each on a connection of its
// own, all connected first and then written back to back before any reply is
// read. For tests of requests that cross inside the server. Like ws_client it
// owns its io_context and runs it only inside its calls (single-threaded).
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/net/ws_client.h"

namespace parley::test {

class http_batch {
public:
    explicit http_batch(std::uint16_t port);
    ~http_batch();
    http_batch(const http_batch&) = delete;
    http_batch& operator=(const http_batch&) = delete;

    // Connects a new connection for the request (written by send_all); returns its index.
    std::size_t add(const std::string& method, const std::string& target, const std::string& body = {},
                    const std::map<std::string, std::string>& headers = {});
    // Writes every request added since the last call, then starts reading their replies.
    void send_all();
    // The index of the next request whose reply arrives, nullopt if none arrives within `timeout`.
    std::optional<std::size_t> next_reply(std::chrono::milliseconds timeout);
    // Every reply not read yet; FAILs the test if they do not all arrive within `timeout`.
    void wait_all(std::chrono::milliseconds timeout = std::chrono::seconds(10));
    // The reply to request `index` (status 0 until it arrived).
    const http_reply& reply(std::size_t index) const;
    std::size_t size() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace parley::test
