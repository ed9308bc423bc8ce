#include "parley/server/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace parley::server {
namespace {
constexpr const char* logger_names[] = {"main", "net", "route", "store", "config", "http"};
}

bool setup_logging(const std::string& level) {
    auto parsed = spdlog::level::from_str(level);
    if (parsed == spdlog::level::off && level != "off") return false;
    static bool created = false;
    if (!created) {
        // stderr, unbuffered: journald timestamps and collects it under systemd.
        auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l [%n] %v");
        for (const char* name : logger_names) {
            auto named = std::make_shared<spdlog::logger>(name, sink);
            spdlog::register_logger(named);
        }
        spdlog::set_default_logger(spdlog::get("main"));
        created = true;
    }
    spdlog::set_level(parsed);
    return true;
}

std::shared_ptr<spdlog::logger> logger(const char* name) {
    auto found = spdlog::get(name);
    if (found) return found;
    // Only before setup_logging ran (tests); calling it later would reset the configured level.
    if (!spdlog::get("main")) setup_logging("info");
    found = spdlog::get(name);
    return found ? found : spdlog::default_logger();
}

}  // namespace parley::server
