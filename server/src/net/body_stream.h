#pragma once
// The rest of an HTTP response body, produced a piece at a time, so that a large
// body (a transcript) is never held whole: the http_session writes each piece as
// one HTTP/1.1 chunk and asks for the next only once that one is written. A
// producer therefore holds one piece at a time, and a client that stops reading
// stops the production (its write times out and the stream is dropped).
#include <functional>
#include <string>

namespace parley::server {

class body_stream {
public:
    struct piece {
        std::string data;     // empty (and not failed): the body is complete
        bool failed = false;  // the body cannot be completed
    };
    virtual ~body_stream() = default;
    // Calls `done`, on any thread, with the next piece. After a failed piece the
    // connection is closed without the final chunk, so the client sees a cut
    // transfer, never a shorter body that looks whole. Called again only after
    // `done` ran; dropped (never called again) when the connection ends.
    virtual void next(std::function<void(piece)> done) = 0;
};

}  // namespace parley::server
