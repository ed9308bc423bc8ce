#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <catch2/catch.hpp>
#include <memory>

#include "parley/server/auth.h"
#include "signed_token.h"

using namespace parley::server;
using parley::test::signed_token;
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

std::string rsa_private_key_pem() {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_RSA_gen(2048), EVP_PKEY_free);
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    long size = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(size));
}

const char* valid_claims = R"({"sub":"a_1","tenant":"acme","exp":1900000000})";
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
    // A minute of leeway past exp for the issuer's clock, as for nbf; not a second more.
    CHECK(verify_agent_token(secret, token, now + hours(1) + seconds(59), "acme").claims);
    CHECK(verify_agent_token(secret, token, now + hours(1) + seconds(60), "acme").error == token_error::expired);
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

TEST_CASE("only HS256 is accepted: HS384 and HS512 signed with the right secret and RS256 are refused", "[auth]") {
    // The HS256 token with the same claims passes, so what refuses the others
    // is Parley's algorithm pinning, not the key or the claims.
    REQUIRE(verify_agent_token(secret, signed_token(valid_claims, JWT_ALG_HS256, secret), now, "acme").claims);
    for (auto alg : {JWT_ALG_HS384, JWT_ALG_HS512}) {
        INFO(jwt_alg_str(alg));
        auto token = signed_token(valid_claims, alg, secret);
        REQUIRE_FALSE(token.empty());
        auto v = verify_agent_token(secret, token, now, "acme");
        CHECK_FALSE(v.claims);
        CHECK(v.error == token_error::wrong_algorithm);
        CHECK_FALSE(verify_hs256(secret, token, now, true).claims);
        CHECK_FALSE(verify_resume_token(secret, "acme", signed_token(R"({"sub":"v_1","tenant":"acme","typ":"resume","exp":1900000000})", alg, secret), now));
    }
    auto rs256 = signed_token(valid_claims, JWT_ALG_RS256, rsa_private_key_pem());
    REQUIRE_FALSE(rs256.empty());
    CHECK_FALSE(verify_agent_token(secret, rs256, now, "acme").claims);
    CHECK_FALSE(verify_hs256(secret, rs256, now, false).claims);
}

TEST_CASE("agent tokens lacking sub, tenant or exp, or with mistyped ones, are refused as missing_claim", "[auth]") {
    for (const char* claims : {R"({"tenant":"acme","exp":1900000000})", R"({"sub":"a_1","exp":1900000000})",
                               R"({"sub":"a_1","tenant":"acme"})", R"({"sub":"","tenant":"acme","exp":1900000000})",
                               R"({"sub":7,"tenant":"acme","exp":1900000000})", R"({"sub":"a_1","tenant":["acme"],"exp":1900000000})",
                               R"({"sub":"a_1","tenant":"acme","exp":"1900000000"})"}) {
        INFO(claims);
        auto v = verify_agent_token(secret, signed_token(claims, JWT_ALG_HS256, secret), now, "acme");
        CHECK_FALSE(v.claims);
        CHECK(v.error == token_error::missing_claim);
    }
}

TEST_CASE("visitor tokens: expired ones are refused; exp is required when asked for (the dispatcher asks)", "[auth]") {
    const std::string widget_secret = "widget-secret-0123456789";
    auto expired = signed_token(R"({"sub":"v_1","tenant":"acme","exp":1700000000})", JWT_ALG_HS256, widget_secret);
    auto v = verify_hs256(widget_secret, expired, now, false);
    CHECK_FALSE(v.claims);
    CHECK(v.error == token_error::expired);
    CHECK(verify_hs256(widget_secret, signed_token(R"({"sub":"v_1","tenant":"acme"})", JWT_ALG_HS256, widget_secret), now, false).claims);
    CHECK(verify_hs256(widget_secret, signed_token(R"({"sub":"v_1","tenant":"acme"})", JWT_ALG_HS256, widget_secret), now, true).error ==
          token_error::missing_claim);
    // Signed with another tenant's widget secret: the signature check refuses it.
    CHECK(verify_hs256(widget_secret, signed_token(R"({"sub":"v_1","tenant":"other","exp":1900000000})", JWT_ALG_HS256,
                                                   "other-widget-secret-012345"), now, false).error == token_error::bad_signature);
    // A resume token minted for another tenant with the same secret is refused.
    auto other = mint_resume_token(widget_secret, "other", "v_1", hours(1), now);
    CHECK_FALSE(verify_resume_token(widget_secret, "acme", other, now));
    CHECK(verify_resume_token(widget_secret, "other", other, now));
    CHECK_FALSE(verify_resume_token(widget_secret, "other", other, now + hours(2)));
}

TEST_CASE("a token issued in the future (iat beyond the leeway) is not valid yet; a mistyped iat is malformed", "[auth]") {
    auto with_iat = [](const std::string& iat) {
        return signed_token(("{\"sub\":\"a_1\",\"tenant\":\"acme\",\"exp\":1900000000,\"iat\":" + iat + "}").c_str(),
                            JWT_ALG_HS256, secret);
    };
    CHECK(verify_agent_token(secret, with_iat("1799999000"), now, "acme").claims);
    CHECK(verify_agent_token(secret, with_iat("1800000060"), now, "acme").claims);  // within the leeway
    CHECK(verify_agent_token(secret, with_iat("1800000061"), now, "acme").error == token_error::not_yet_valid);
    CHECK(verify_agent_token(secret, with_iat("\"yesterday\""), now, "acme").error == token_error::malformed);
}
