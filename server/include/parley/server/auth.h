#pragma once
// Agent and visitor credentials: HS256 JWTs through libjwt (no hand-rolled crypto).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace parley::server {

// The issuer's clock and ours may differ: `exp`, `nbf` and `iat` are checked with this much
// leeway (Envoy's jwt_authn default). A token is accepted until exp + token_leeway_s.
inline constexpr std::int64_t token_leeway_s = 60;

struct agent_claims {
    std::string tenant;
    std::string agent_id;
    std::int64_t expires_at_s = 0;  // `exp`, seconds since the epoch
};

// Mints an agent token: {sub: agent_id, tenant, iat, exp}.
std::string mint_agent_token(const std::string& secret, const std::string& tenant,
                             const std::string& agent_id, std::chrono::seconds ttl,
                             std::chrono::system_clock::time_point now);

enum class token_error { malformed, bad_signature, wrong_algorithm, expired, not_yet_valid, missing_claim, wrong_tenant };
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

// Verifies any HS256 token and returns all its claims. `exp`, when present,
// must be in the future; when `require_exp`, it must be present.
struct verified_token {
    std::optional<nlohmann::json> claims;
    token_error error = token_error::malformed;
};
verified_token verify_hs256(const std::string& secret, const std::string& token,
                            std::chrono::system_clock::time_point now, bool require_exp);

// A visitor token as a tenant's own backend mints it for its widget: {sub:
// visitor id, tenant, iat, exp} plus profile claims (name, job_title, email,
// phone, crm_status, company), signed with the tenant's widget secret. Its
// claims win over the profile the widget sends. For tools and tests.
std::string mint_visitor_token(const std::string& widget_secret, const std::string& tenant,
                               const std::string& visitor_id,
                               const std::vector<std::pair<std::string, std::string>>& profile_claims,
                               std::chrono::seconds ttl, std::chrono::system_clock::time_point now);

// Resume tokens let an anonymous visitor reattach later: {sub: visitor id,
// tenant, typ: "resume", iat, exp}, signed with the tenant's widget secret.
std::string mint_resume_token(const std::string& widget_secret, const std::string& tenant,
                              const std::string& visitor_id, std::chrono::seconds ttl,
                              std::chrono::system_clock::time_point now);
struct resume_claims {
    std::string visitor_id;
    std::int64_t expires_at_s = 0;
};
// The claims of a valid resume token of `tenant`.
std::optional<resume_claims> verify_resume_token(const std::string& widget_secret, const std::string& tenant,
                                               const std::string& token,
                                               std::chrono::system_clock::time_point now);

// One string claim of a token's payload, NOT verified: only for choosing the
// key that will verify it (the tenant of an agent token).
std::optional<std::string> unverified_claim(const std::string& token, const char* name);

// Random identifiers ("v_" + 32 hex digits) from OpenSSL's CSPRNG.
std::string random_id(const char* prefix);

}  // namespace parley::server
