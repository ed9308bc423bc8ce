#pragma once
// Tokens with exactly the claims a test wants, signed as a careless or hostile
// issuer might sign them (parleyd's own minting always adds sub, tenant, exp).
#include <jwt.h>

#include <cstdlib>
#include <string>

namespace parley::test {

// A token with exactly these claims (JSON), signed with `alg` and `key`.
inline std::string signed_token(const char* claims_json, jwt_alg_t alg, const std::string& key) {
    jwt_t* raw = nullptr;
    jwt_new(&raw);
    jwt_add_grants_json(raw, claims_json);
    jwt_set_alg(raw, alg, reinterpret_cast<const unsigned char*>(key.data()), static_cast<int>(key.size()));
    char* s = jwt_encode_str(raw);
    std::string token(s == nullptr ? "" : s);
    std::free(s);
    jwt_free(raw);
    return token;
}

}  // namespace parley::test
