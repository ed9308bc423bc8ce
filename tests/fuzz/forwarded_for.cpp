// X-Forwarded-For from a trusted proxy: whatever the header says, the answer is
// an address the header or the peer named, never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "parley/server/client_address.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const auto proxies = *parley::server::trusted_proxies::parse({"127.0.0.0/8", "::1", "10.0.0.0/8", "fd00::/8"});
    const std::string_view header(reinterpret_cast<const char*>(data), size);
    for (const char* peer : {"127.0.0.1", "::1", "192.0.2.7"})
        (void)parley::server::client_address(boost::asio::ip::make_address(peer), header, proxies);
    return 0;
}
