// The claim a token names before its signature is checked (which tenant's key
// verifies it): reached by anyone who connects, before authentication. Then the
// full verification, which must refuse everything a fuzzer makes up.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "parley/server/auth.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string token(reinterpret_cast<const char*>(data), size);
    (void)parley::server::unverified_claim(token, "tenant");
    const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{1'800'000'000}};
    auto verified = parley::server::verify_agent_token("fuzz-secret-0123456789", token, now, "acme");
    // Without the secret no input can carry a valid HS256 signature.
    if (verified.claims) std::abort();
    return 0;
}
