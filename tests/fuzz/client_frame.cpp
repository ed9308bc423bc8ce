// The decoder of every client frame, as a visitor and as an agent would send it.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "parley/proto/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const parley::proto::limits limits;
    for (auto sender : {parley::proto::role::visitor, parley::proto::role::agent}) {
        auto frame = parley::proto::parse_client_frame(text, sender, limits);
        if (frame.ok()) (void)parley::proto::type_name(frame.value().request);
    }
    return 0;
}
