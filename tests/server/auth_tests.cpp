#include <jwt.h>

#include <catch2/catch.hpp>

#include "parley/server/auth.h"

using namespace parley::server;
using namespace std::chrono;

namespace {
const std::string secret = "agent-secret-0123456789";
const auto now = system_clock::time_point{seconds{1'800'000'000}};

std::string unsigned_token(const std::string& tenant, const std::string& sub) {
    jwt_t* raw = nullptr;
    jwt_new(&raw);
    jwt_add_grant(raw, "sub", sub.c_str());
    jwt_add_grant(raw, "tenant", tenant.c_str());
    jwt_add_grant_int(raw, "exp", 1'900'000'000);
    jwt_set_alg(raw, JWT_ALG_NONE, nullptr, 0);
    char* s = jwt_encode_str(raw);
    std::string token(s);
    std::free(s);
    jwt_free(raw);
    return token;
}
}  // namespace

TEST_CASE("a minted agent token verifies with its claims", "[auth]") {
    auto token = mint_agent_token(secret, "acme", "a_1", hours(1), now);
    auto v = verify_agent_token(secret, token, now + minutes(59), "acme");
    REQUIRE(v.claims);
    CHECK(v.claims->agent_id == "a_1");
    CHECK(v.claims->tenant == "acme");
    CHECK(v.claims->expires_at_s == 1'800'003'600);
}

TEST_CASE("expired, foreign, forged and unsigned tokens are refused", "[auth]") {
    auto token = mint_agent_token(secret, "acme", "a_1", hours(1), now);
    CHECK(verify_agent_token(secret, token, now + hours(1), "acme").error == token_error::expired);
    CHECK_FALSE(verify_agent_token(secret, token, now + hours(2)).claims);
    CHECK(verify_agent_token(secret, token, now, "other").error == token_error::wrong_tenant);
    CHECK(verify_agent_token("another-secret-0123456", token, now).error == token_error::bad_signature);
    CHECK(verify_agent_token(secret, "not-a-token", now).error == token_error::malformed);
    CHECK(verify_agent_token(secret, "", now).error == token_error::malformed);
    CHECK_FALSE(verify_agent_token(secret, unsigned_token("acme", "a_1"), now).claims);
    // Flip one character of the signature.
    auto tampered = token;
    tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
    CHECK_FALSE(verify_agent_token(secret, tampered, now).claims);
}

TEST_CASE("resume tokens with mistyped claims are refused, not thrown on", "[auth]") {
    // Signed with the right secret, so only the claim checks stand between a
    // token like this and the I/O thread.
    auto signed_token = [](auto add_claims) {
        jwt_t* raw = nullptr;
        jwt_new(&raw);
        add_claims(raw);
        jwt_add_grant_int(raw, "exp", 1'900'000'000);
        jwt_set_alg(raw, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret.data()), static_cast<int>(secret.size()));
        char* s = jwt_encode_str(raw);
        std::string token(s);
        std::free(s);
        jwt_free(raw);
        return token;
    };
    auto good = signed_token([](jwt_t* t) {
        jwt_add_grant(t, "typ", "resume");
        jwt_add_grant(t, "tenant", "acme");
        jwt_add_grant(t, "sub", "v_1");
    });
    auto verified_good = verify_resume_token(secret, "acme", good, now);
    REQUIRE(verified_good);
    CHECK(verified_good->visitor_id == "v_1");
    CHECK(verified_good->expires_at_s == 1'900'000'000);
    for (const char* claims : {R"({"typ":1,"tenant":"acme","sub":"v_1"})", R"({"typ":"resume","tenant":["acme"],"sub":"v_1"})",
                               R"({"typ":"resume","tenant":"acme","sub":{"id":"v_1"}})", R"({"typ":null,"tenant":"acme","sub":"v_1"})"}) {
        INFO(claims);
        auto token = signed_token([claims](jwt_t* t) { jwt_add_grants_json(t, claims); });
        std::optional<resume_claims> verified;
        REQUIRE_NOTHROW(verified = verify_resume_token(secret, "acme", token, now));
        CHECK_FALSE(verified);
    }
}

TEST_CASE("a token is refused before its nbf, with a minute of leeway for the issuer's clock", "[auth]") {
    auto signed_with_nbf = [](auto add_nbf) {
        jwt_t* raw = nullptr;
        jwt_new(&raw);
        jwt_add_grant(raw, "sub", "a_1");
        jwt_add_grant(raw, "tenant", "acme");
        jwt_add_grant_int(raw, "exp", 1'900'000'000);
        add_nbf(raw);
        jwt_set_alg(raw, JWT_ALG_HS256, reinterpret_cast<const unsigned char*>(secret.data()),
                    static_cast<int>(secret.size()));
        char* s = jwt_encode_str(raw);
        std::string token(s);
        std::free(s);
        jwt_free(raw);
        return token;
    };
    const auto at = [&](std::int64_t nbf) {
        return signed_with_nbf([nbf](jwt_t* raw) { jwt_add_grant_int(raw, "nbf", nbf); });
    };
    const std::int64_t now_s = 1'800'000'000;
    CHECK(verify_agent_token(secret, at(now_s - 10), now, "acme").claims);
    CHECK(verify_agent_token(secret, at(now_s + 30), now, "acme").claims);  // within the leeway
    CHECK(verify_agent_token(secret, at(now_s + 3600), now, "acme").error == token_error::not_yet_valid);
    CHECK(verify_agent_token(secret, at(now_s + 3600), now + hours(2), "acme").claims);
    auto mistyped = signed_with_nbf([](jwt_t* raw) { jwt_add_grant(raw, "nbf", "soon"); });
    CHECK_FALSE(verify_agent_token(secret, mistyped, now, "acme").claims);
}
