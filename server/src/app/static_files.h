#pragma once
// The web clients over HTTP: the Agent Inbox (/inbox/), the chat widget
// (/widget.js) and the demo page (/demo/), from the files built into parleyd
// or, with [web] directory, from a directory an operator controls.
//
// Every answer carries a strong ETag (a hash of the content; If-None-Match
// gives 304), Cache-Control, X-Content-Type-Options: nosniff, and on HTML a
// Content-Security-Policy without inline script or style whose connect-src
// is this server only (its ws:// and wss:// endpoints included). The inbox
// and demo pages may not be framed; widget.js may be loaded by any site.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "net/http_handler.h"
#include "parley/config/config.h"

namespace parley::server {

class static_files {
public:
    // Null when [web] enabled = false.
    static std::shared_ptr<const static_files> from_config(const config::config& cfg);

    // The answer when `request` names a web client path; nullopt otherwise (the API's turn).
    std::optional<http_response> answer(const http_request& request) const;

private:
    struct file {
        std::string content;
        std::string etag;
    };
    static_files(std::string directory, std::string websocket_origins);

    std::optional<file> find(const std::string& relative_path) const;
    std::string content_security_policy(const http_request& request) const;

    std::string directory_;          // empty: the embedded files
    std::string websocket_origins_;  // from server.public_url; empty: derived from the request's Host
    std::map<std::string, file, std::less<>> embedded_;
};

// "inbox/app.js" for "/inbox/app.js", "inbox/index.html" for "/inbox/"; nullopt for paths
// outside the clients or that could leave the web root ("..", ".", empty segments, '%',
// backslashes, anything but A-Z a-z 0-9 . _ - /). Exposed for tests.
std::optional<std::string> web_relative_path(std::string_view target);

}  // namespace parley::server
