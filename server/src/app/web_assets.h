#pragma once
// The web clients (web/inbox, web/widget, web/demo) as built into parleyd.
// The definition is generated at build time by server/cmake/embed_web.cmake.
#include <span>
#include <string_view>

namespace parley::server {

struct embedded_file {
    std::string_view path;     // relative to web/, e.g. "inbox/index.html"
    std::string_view content;
};

std::span<const embedded_file> embedded_web_files();

}  // namespace parley::server
