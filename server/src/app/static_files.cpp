#include "app/static_files.h"

#include <openssl/evp.h>

#include <cctype>
#include <fstream>
#include <sstream>

#include "parley/server/logging.h"
#include "app/web_assets.h"

namespace parley::server {

namespace {

std::string_view content_type_of(std::string_view path) {
    static constexpr std::pair<std::string_view, std::string_view> types[] = {
        {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".json", "application/json"}, {".svg", "image/svg+xml"}, {".png", "image/png"},
        {".ico", "image/x-icon"}, {".woff2", "font/woff2"}, {".txt", "text/plain; charset=utf-8"}};
    for (auto [extension, type] : types)
        if (path.ends_with(extension)) return type;
    return "application/octet-stream";
}

// A strong validator: the first 16 bytes of the content's SHA-256, in hex.
std::string etag_of(std::string_view content) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_Digest(content.data(), content.size(), digest, &length, EVP_sha256(), nullptr);
    static constexpr char hex[] = "0123456789abcdef";
    std::string tag = "\"";
    for (unsigned int i = 0; i < 16 && i < length; ++i) {
        tag += hex[digest[i] >> 4];
        tag += hex[digest[i] & 0xf];
    }
    return tag + "\"";
}

// ws:// and wss:// origins of server.public_url ("https://chat.example/x" -> "wss://chat.example").
std::string websocket_origins_of(const std::string& public_url) {
    const auto scheme_end = public_url.find("://");
    if (scheme_end == std::string::npos) return {};
    const auto host_start = scheme_end + 3;
    const auto authority = public_url.substr(host_start, public_url.find_first_of("/?#", host_start) - host_start);
    const auto scheme = public_url.substr(0, scheme_end);
    const bool secure = scheme == "https" || scheme == "wss";
    return (secure ? "wss://" : "ws://") + authority;
}

bool safe_host(std::string_view host) {
    if (host.empty() || host.size() > 255) return false;
    for (unsigned char ch : host)
        if (!std::isalnum(ch) && ch != '.' && ch != '-' && ch != ':' && ch != '[' && ch != ']') return false;
    return true;
}

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
    if (if_none_match == "*") return true;
    // A list of tags, possibly weak ("W/"): weak comparison is what If-None-Match uses.
    return if_none_match.find(etag) != std::string_view::npos;
}

}  // namespace

std::optional<std::string> web_relative_path(std::string_view target) {
    if (target == "/inbox/") return "inbox/index.html";
    if (target == "/demo/") return "demo/index.html";
    if (target == "/widget.js") return "widget/widget.js";
    if (!target.starts_with("/inbox/") && !target.starts_with("/demo/")) return std::nullopt;
    std::string_view relative = target.substr(1);
    for (unsigned char ch : relative)
        if (!std::isalnum(ch) && ch != '.' && ch != '_' && ch != '-' && ch != '/') return std::nullopt;
    std::size_t start = 0;
    while (start <= relative.size()) {
        auto end = relative.find('/', start);
        if (end == std::string_view::npos) end = relative.size();
        auto segment = relative.substr(start, end - start);
        if (segment.empty() || segment == "." || segment == ".." || segment.front() == '.') return std::nullopt;
        start = end + 1;
    }
    return std::string(relative);
}

std::shared_ptr<const static_files> static_files::from_config(const config::config& cfg) {
    if (!cfg.web.enabled) return nullptr;
    auto files = std::shared_ptr<static_files>(
        new static_files(cfg.web.directory, websocket_origins_of(cfg.server.public_url)));
    if (files->directory_.empty())
        for (const auto& embedded : embedded_web_files())
            files->embedded_.emplace(std::string(embedded.path),
                                     file{std::string(embedded.content), etag_of(embedded.content)});
    return files;
}

static_files::static_files(std::string directory, std::string websocket_origins)
    : directory_(std::move(directory)), websocket_origins_(std::move(websocket_origins)) {}

std::optional<static_files::file> static_files::find(const std::string& relative_path) const {
    if (directory_.empty()) {
        auto it = embedded_.find(relative_path);
        if (it == embedded_.end()) return std::nullopt;
        return it->second;
    }
    // Read on each request, so that an operator's edits show without a restart. The files are
    // small; web_relative_path has refused anything that could leave the directory.
    std::ifstream in(directory_ + "/" + relative_path, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream content;
    content << in.rdbuf();
    if (!in.good() && !in.eof()) return std::nullopt;
    file found{content.str(), {}};
    found.etag = etag_of(found.content);
    return found;
}

std::string static_files::content_security_policy(const http_request& request) const {
    std::string websocket = websocket_origins_;
    if (websocket.empty()) {
        // No public_url: this server as the browser addressed it.
        auto host = request[http::field::host];
        if (safe_host(host)) websocket = "ws://" + std::string(host) + " wss://" + std::string(host);
    }
    return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
           "media-src 'self' data:; connect-src 'self' " + websocket +
           "; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}

std::optional<http_response> static_files::answer(const http_request& request) const {
    std::string_view target = request.target();
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);

    auto respond = [&](http::status status) {
        http_response response{status, request.version()};
        response.set(http::field::server, "parleyd");
        response.set("X-Content-Type-Options", "nosniff");
        response.set("Referrer-Policy", "no-referrer");
        response.keep_alive(request.keep_alive());
        return response;
    };
    auto redirect = [&](std::string_view location) {
        auto response = respond(http::status::found);
        response.set(http::field::location, location);
        response.set(http::field::content_type, "text/plain; charset=utf-8");
        response.body() = "See " + std::string(location) + "\n";
        response.prepare_payload();
        return response;
    };
    if (target == "/") return redirect("/inbox/");
    if (target == "/inbox") return redirect("/inbox/");
    if (target == "/demo") return redirect("/demo/");

    auto relative = web_relative_path(target);
    const bool under_clients = target.starts_with("/inbox/") || target.starts_with("/demo/") || target == "/widget.js";
    if (!under_clients) return std::nullopt;

    auto not_found = [&] {
        auto response = respond(http::status::not_found);
        response.set(http::field::content_type, "text/plain; charset=utf-8");
        response.body() = "not found\n";
        response.prepare_payload();
        return response;
    };
    const auto method = request.method();
    if (method != http::verb::get && method != http::verb::head) {
        auto response = respond(http::status::method_not_allowed);
        response.set(http::field::allow, "GET, HEAD");
        response.set(http::field::content_type, "text/plain; charset=utf-8");
        response.body() = "use GET\n";
        response.prepare_payload();
        return response;
    }
    if (!relative) return not_found();
    auto found = find(*relative);
    if (!found) return not_found();

    const bool is_widget = *relative == "widget/widget.js";
    const bool is_html = relative->ends_with(".html");
    auto if_none_match = request[http::field::if_none_match];
    auto response = respond(!if_none_match.empty() && etag_matches(if_none_match, found->etag)
                                ? http::status::not_modified
                                : http::status::ok);
    response.set(http::field::etag, found->etag);
    // Revalidated on every use (cheap, with the ETag): the inbox's modules change together, and a
    // mix of an old page with a new module must never run. The widget is cached a little.
    response.set(http::field::cache_control, is_widget ? "public, max-age=300" : "no-cache");
    response.set(http::field::content_type, content_type_of(*relative));
    if (is_html) response.set("Content-Security-Policy", content_security_policy(request));
    if (is_widget) {
        // Any site may load the widget (it is the point); it reads nothing of the site's.
        response.set(http::field::access_control_allow_origin, "*");
        response.set("Cross-Origin-Resource-Policy", "cross-origin");
    } else {
        response.set("X-Frame-Options", "DENY");
        response.set("Cross-Origin-Resource-Policy", "same-origin");
    }
    if (response.result() == http::status::not_modified) return response;
    if (method == http::verb::head) {
        response.content_length(found->content.size());
        return response;
    }
    response.body() = std::move(found->content);
    response.prepare_payload();
    return response;
}

}  // namespace parley::server
