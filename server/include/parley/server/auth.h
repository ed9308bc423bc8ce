#pragma once
// Agent and visitor credentials: HS256 JWTs through libjwt (no hand-rolled crypto).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace parley::server {

struct agent_claims {
    std::string tenant;
    std::string agent_id;
    std::int64_t expires_at_s = 0;  // `exp`, seconds since the epoch
};

// Mints an agent token: {sub: agent_id, tenant, iat, exp}.
std::string mint_agent_token(const std::string& secret, const std::string& tenant,
                             const std::string& agent_id, std::chrono::seconds ttl,
                             std::chrono::system_clock::time_point now);

enum class token_error { malformed, bad_signature, wrong_algorithm, expired, missing_claim, wrong_tenant };
const char* to_string(token_error e);

struct verified_agent {
    std::optional<agent_claims> claims;
    token_error error = token_error::malformed;
};

// Verifies signature (HS256 only: `none` and other algorithms are refused),
// expiry against `now`, and that the token names `expected_tenant` when given.
verified_agent verify_agent_token(const std::string& secret, const std::string& token,
                                  std::chrono::system_clock::time_point now,
                                  const std::string& expected_tenant = {});

}  // namespace parley::server
