#pragma once
// Named loggers (`net`, `route`, `store`, `config`, `main`) sharing one sink,
// so every line says which part of Parley wrote it.
#include <memory>
#include <spdlog/spdlog.h>
#include <string>

namespace parley::server {

// Creates the named loggers once; later calls only change the level.
// Returns false when `level` is not a spdlog level name.
bool setup_logging(const std::string& level);

std::shared_ptr<spdlog::logger> logger(const char* name);

}  // namespace parley::server
