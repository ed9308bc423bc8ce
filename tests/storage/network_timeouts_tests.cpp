// The TCP timeouts added to PostgreSQL URLs (storage/src/postgres_connection.cpp).
#include <libpq-fe.h>

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "sql.h"

using parley::storage::detail::with_network_timeouts;

namespace {
// What libpq itself reads from the URL: the test checks meaning, not spelling.
std::map<std::string, std::string> options_of(const std::string& url) {
    std::map<std::string, std::string> set;
    PQconninfoOption* parsed = PQconninfoParse(url.c_str(), nullptr);
    REQUIRE(parsed != nullptr);
    for (const auto* option = parsed; option->keyword != nullptr; ++option)
        if (option->val != nullptr) set[option->keyword] = option->val;
    PQconninfoFree(parsed);
    return set;
}
}  // namespace

TEST_CASE("PostgreSQL URLs get TCP timeouts unless they set their own", "[storage][postgres]") {
    SECTION("none given: all added, the rest of the URL intact") {
        auto options = options_of(with_network_timeouts("postgresql://parley:pw@db.example:5433/parley"));
        CHECK(options["host"] == "db.example");
        CHECK(options["port"] == "5433");
        CHECK(options["user"] == "parley");
        CHECK(options["password"] == "pw");
        CHECK(options["dbname"] == "parley");
        CHECK(options["connect_timeout"] == "10");
        CHECK(options["keepalives"] == "1");
        CHECK(options["keepalives_idle"] == "30");
        CHECK(options["keepalives_interval"] == "10");
        CHECK(options["keepalives_count"] == "3");
        CHECK(options["tcp_user_timeout"] == "30000");
        // A standby (failover) or a read-only database is refused at connect: writes need a primary.
        CHECK(options["target_session_attrs"] == "read-write");
    }
    SECTION("the URL's own values win, other query parameters stay") {
        auto options = options_of(
            with_network_timeouts("postgresql:///parley?host=/run/postgresql&connect_timeout=3&sslmode=disable"));
        CHECK(options["host"] == "/run/postgresql");
        CHECK(options["connect_timeout"] == "3");
        CHECK(options["sslmode"] == "disable");
        CHECK(options["keepalives_idle"] == "30");
    }
    SECTION("an operator may still accept any server explicitly") {
        auto options = options_of(with_network_timeouts("postgresql://h/d?target_session_attrs=any"));
        CHECK(options["target_session_attrs"] == "any");
    }
    SECTION("an unparsable URL is left for the connect to refuse") {
        CHECK(with_network_timeouts("postgresql://a:b%zz@h/d") == "postgresql://a:b%zz@h/d");
    }
}
