#include "parley/server/auth.h"

#include <jwt.h>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <algorithm>
#include <memory>

namespace parley::server {
namespace {

struct jwt_deleter {
    void operator()(jwt_t* j) const { jwt_free(j); }
};
using jwt_ptr = std::unique_ptr<jwt_t, jwt_deleter>;

const unsigned char* key_bytes(const std::string& secret) {
    return reinterpret_cast<const unsigned char*>(secret.data());
}

std::int64_t to_seconds(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace

const char* to_string(token_error e) {
    switch (e) {
        case token_error::malformed: return "malformed token";
        case token_error::bad_signature: return "bad signature";
        case token_error::wrong_algorithm: return "token must be signed with HS256";
        case token_error::expired: return "token expired";
        case token_error::missing_claim: return "token lacks sub, tenant or exp";
        case token_error::wrong_tenant: return "token is for another tenant";
    }
    return "invalid token";
}

std::string mint_agent_token(const std::string& secret, const std::string& tenant,
                             const std::string& agent_id, std::chrono::seconds ttl,
                             std::chrono::system_clock::time_point now) {
    jwt_t* raw = nullptr;
    if (jwt_new(&raw) != 0) throw std::runtime_error("jwt_new failed");
    jwt_ptr token(raw);
    auto issued = to_seconds(now);
    if (jwt_add_grant(token.get(), "sub", agent_id.c_str()) != 0 ||
        jwt_add_grant(token.get(), "tenant", tenant.c_str()) != 0 ||
        jwt_add_grant_int(token.get(), "iat", issued) != 0 ||
        jwt_add_grant_int(token.get(), "exp", issued + ttl.count()) != 0 ||
        jwt_set_alg(token.get(), JWT_ALG_HS256, key_bytes(secret), static_cast<int>(secret.size())) != 0)
        throw std::runtime_error("cannot build agent token");
    char* encoded = jwt_encode_str(token.get());
    if (encoded == nullptr) throw std::runtime_error("cannot encode agent token");
    std::string result(encoded);
    std::free(encoded);
    return result;
}

verified_agent verify_agent_token(const std::string& secret, const std::string& token,
                                  std::chrono::system_clock::time_point now,
                                  const std::string& expected_tenant) {
    verified_agent result;
    if (token.empty() || token.size() > 8192) return result;
    jwt_t* raw = nullptr;
    if (jwt_decode(&raw, token.c_str(), key_bytes(secret), static_cast<int>(secret.size())) != 0) {
        // libjwt does not say why; a token of three dot-separated parts that
        // fails is most likely signed with another key.
        result.error = std::count(token.begin(), token.end(), '.') == 2 ? token_error::bad_signature
                                                                       : token_error::malformed;
        return result;
    }
    jwt_ptr decoded(raw);
    // Only HS256 counts as verified: `alg: none` must never pass.
    if (jwt_get_alg(raw) != JWT_ALG_HS256) {
        result.error = token_error::wrong_algorithm;
        return result;
    }
    const char* sub = jwt_get_grant(raw, "sub");
    const char* tenant = jwt_get_grant(raw, "tenant");
    errno = 0;
    long exp = jwt_get_grant_int(raw, "exp");
    if (sub == nullptr || tenant == nullptr || *sub == '\0' || errno != 0 || exp <= 0) {
        result.error = token_error::missing_claim;
        return result;
    }
    if (exp <= to_seconds(now)) {
        result.error = token_error::expired;
        return result;
    }
    if (!expected_tenant.empty() && expected_tenant != tenant) {
        result.error = token_error::wrong_tenant;
        return result;
    }
    result.claims = agent_claims{tenant, sub, exp};
    return result;
}

}  // namespace parley::server
