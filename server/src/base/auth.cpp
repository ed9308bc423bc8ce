#include "parley/server/auth.h"

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <algorithm>
#include <memory>
#include <vector>

#include "base/json_fields.h"

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
        case token_error::not_yet_valid: return "token not valid yet (nbf or iat in the future)";
        case token_error::missing_claim: return "token lacks sub, tenant or exp";
        case token_error::wrong_tenant: return "token is for another tenant";
    }
    return "invalid token";
}

namespace {

struct mint_grant {
    const char* name;
    std::string value;
};

std::string mint_hs256(const std::string& secret, const std::vector<mint_grant>& grants, std::int64_t issued,
                       std::int64_t expires) {
    jwt_t* raw = nullptr;
    if (jwt_new(&raw) != 0) throw std::runtime_error("jwt_new failed");
    jwt_ptr token(raw);
    for (const auto& g : grants)
        if (jwt_add_grant(raw, g.name, g.value.c_str()) != 0) throw std::runtime_error("cannot add token claim");
    if (jwt_add_grant_int(raw, "iat", issued) != 0 || jwt_add_grant_int(raw, "exp", expires) != 0 ||
        jwt_set_alg(raw, JWT_ALG_HS256, key_bytes(secret), static_cast<int>(secret.size())) != 0)
        throw std::runtime_error("cannot build token");
    char* encoded = jwt_encode_str(raw);
    if (encoded == nullptr) throw std::runtime_error("cannot encode token");
    std::string result(encoded);
    std::free(encoded);
    return result;
}

}  // namespace

verified_token verify_hs256(const std::string& secret, const std::string& token,
                            std::chrono::system_clock::time_point now, bool require_exp) {
    verified_token result;
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
    char* grants = jwt_get_grants_json(raw, nullptr);
    if (grants == nullptr) return result;
    auto claims = nlohmann::json::parse(grants, nullptr, false);
    std::free(grants);
    if (!claims.is_object()) return result;
    // The issuer's clock and ours may differ: a minute of leeway either way, for
    // `exp`, `nbf` and `iat` alike (Envoy's jwt_authn clock_skew_seconds default).
    constexpr std::int64_t leeway_s = token_leeway_s;
    const std::int64_t now_s = to_seconds(now);
    auto exp = claims.find("exp");
    if (exp == claims.end()) {
        if (require_exp) {
            result.error = token_error::missing_claim;
            return result;
        }
    } else if (!exp->is_number_integer() || exp->get<std::int64_t>() + leeway_s <= now_s) {
        result.error = exp->is_number_integer() ? token_error::expired : token_error::missing_claim;
        return result;
    }
    // RFC 7519 4.1.5 `nbf` (not before) and 4.1.6 `iat` (issued at): a token
    // from the future is not valid yet.
    for (const char* name : {"nbf", "iat"}) {
        auto claim = claims.find(name);
        if (claim == claims.end()) continue;
        if (!claim->is_number_integer()) {
            result.error = token_error::malformed;
            return result;
        }
        if (claim->get<std::int64_t>() > now_s + leeway_s) {
            result.error = token_error::not_yet_valid;
            return result;
        }
    }
    result.claims = std::move(claims);
    return result;
}

verified_agent verify_agent_token(const std::string& secret, const std::string& token,
                                  std::chrono::system_clock::time_point now,
                                  const std::string& expected_tenant) {
    verified_agent result;
    auto verified = verify_hs256(secret, token, now, true);
    if (!verified.claims) {
        result.error = verified.error;
        return result;
    }
    const auto& claims = *verified.claims;
    auto sub = claims.find("sub");
    auto tenant = claims.find("tenant");
    if (sub == claims.end() || !sub->is_string() || sub->get_ref<const std::string&>().empty() ||
        tenant == claims.end() || !tenant->is_string()) {
        result.error = token_error::missing_claim;
        return result;
    }
    if (!expected_tenant.empty() && expected_tenant != tenant->get<std::string>()) {
        result.error = token_error::wrong_tenant;
        return result;
    }
    result.claims = agent_claims{tenant->get<std::string>(), sub->get<std::string>(), claims["exp"].get<std::int64_t>()};
    return result;
}

std::string mint_agent_token(const std::string& secret, const std::string& tenant,
                             const std::string& agent_id, std::chrono::seconds ttl,
                             std::chrono::system_clock::time_point now) {
    auto issued = to_seconds(now);
    return mint_hs256(secret, {{"sub", agent_id}, {"tenant", tenant}}, issued, issued + ttl.count());
}

std::string mint_visitor_token(const std::string& widget_secret, const std::string& tenant,
                               const std::string& visitor_id,
                               const std::vector<std::pair<std::string, std::string>>& profile_claims,
                               std::chrono::seconds ttl, std::chrono::system_clock::time_point now) {
    std::vector<mint_grant> grants{{"sub", visitor_id}, {"tenant", tenant}};
    for (const auto& [name, value] : profile_claims) grants.push_back({name.c_str(), value});
    auto issued = to_seconds(now);
    return mint_hs256(widget_secret, grants, issued, issued + ttl.count());
}

std::string mint_resume_token(const std::string& widget_secret, const std::string& tenant,
                              const std::string& visitor_id, std::chrono::seconds ttl,
                              std::chrono::system_clock::time_point now) {
    auto issued = to_seconds(now);
    return mint_hs256(widget_secret, {{"sub", visitor_id}, {"tenant", tenant}, {"typ", "resume"}}, issued,
                      issued + ttl.count());
}

std::optional<resume_claims> verify_resume_token(const std::string& widget_secret, const std::string& tenant,
                                               const std::string& token,
                                               std::chrono::system_clock::time_point now) {
    auto verified = verify_hs256(widget_secret, token, now, true);
    if (!verified.claims) return std::nullopt;
    const auto& c = *verified.claims;
    if (string_field(c, "typ") != "resume" || string_field(c, "tenant") != tenant) return std::nullopt;
    auto sub = string_field(c, "sub");
    if (sub.empty() || sub.size() > 128) return std::nullopt;
    return resume_claims{sub, c["exp"].get<std::int64_t>()};  // verify_hs256 checked exp is an integer
}

std::optional<std::string> unverified_claim(const std::string& token, const char* name) {
    auto first = token.find('.');
    auto second = first == std::string::npos ? first : token.find('.', first + 1);
    if (second == std::string::npos || token.size() > 8192) return std::nullopt;
    // base64url -> base64 with padding, then OpenSSL's decoder.
    std::string payload = token.substr(first + 1, second - first - 1);
    for (auto& ch : payload) {
        if (ch == '-') ch = '+';
        else if (ch == '_') ch = '/';
    }
    while (payload.size() % 4 != 0) payload += '=';
    std::string decoded(payload.size(), '\0');
    int length = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(decoded.data()),
                                 reinterpret_cast<const unsigned char*>(payload.data()), static_cast<int>(payload.size()));
    if (length < 0) return std::nullopt;
    decoded.resize(static_cast<std::size_t>(length));
    while (!decoded.empty() && decoded.back() == '\0') decoded.pop_back();  // padding decodes to zero bytes
    auto claims = nlohmann::json::parse(decoded, nullptr, false);
    if (!claims.is_object()) return std::nullopt;
    auto it = claims.find(name);
    if (it == claims.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

std::string random_id(const char* prefix) {
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
    static const char* hex = "0123456789abcdef";
    std::string id(prefix);
    for (unsigned char b : bytes) {
        id += hex[b >> 4];
        id += hex[b & 15];
    }
    return id;
}

}  // namespace parley::server
