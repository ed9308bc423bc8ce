// The TOML configuration: any text gives a config or problems that name a key, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "parley/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 64 * 1024) return 0;  // configuration files are small; toml11 recurses on nesting
    const std::string text(reinterpret_cast<const char*>(data), size);
    auto parsed = parley::config::parse_text(text, "fuzz.toml", {});
    for (const auto& problem : parsed.problems)
        if (problem.reason.empty() || problem.file != "fuzz.toml") std::abort();  // every problem says what and where
    return 0;
}
