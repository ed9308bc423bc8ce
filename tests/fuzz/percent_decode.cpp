// Percent-decoding of admin API path segments; decoding what was encoded gives it back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "parley/proto/admin.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string segment(reinterpret_cast<const char*>(data), size);
    (void)parley::proto::admin::percent_decode(segment);
    static const char* hex = "0123456789ABCDEF";
    std::string encoded;
    for (unsigned char c : segment) {
        encoded += '%';
        encoded += hex[c >> 4];
        encoded += hex[c & 15];
    }
    auto round_trip = parley::proto::admin::percent_decode(encoded);
    if (!round_trip || *round_trip != segment) std::abort();
    return 0;
}
