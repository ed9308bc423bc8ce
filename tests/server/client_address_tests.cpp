#include <catch2/catch.hpp>

#include "app/shared_state.h"
#include "parley/server/client_address.h"

using namespace parley::server;
namespace ip = boost::asio::ip;

namespace {
trusted_proxies proxies(const std::vector<std::string>& entries) {
    auto parsed = trusted_proxies::parse(entries);
    REQUIRE(parsed);
    return *parsed;
}
std::string client(const std::string& peer, std::string_view forwarded, const trusted_proxies& trusted) {
    return client_address(ip::make_address(peer), forwarded, trusted).to_string();
}
}  // namespace

TEST_CASE("trusted_proxies: addresses and networks, IPv4 and IPv6", "[client_address]") {
    auto trusted = proxies({"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1", "172.16.5.9/12"});
    CHECK(trusted.contains(ip::make_address("10.255.0.1")));
    CHECK_FALSE(trusted.contains(ip::make_address("11.0.0.1")));
    CHECK(trusted.contains(ip::make_address("192.168.1.7")));
    CHECK_FALSE(trusted.contains(ip::make_address("192.168.1.8")));
    CHECK(trusted.contains(ip::make_address("fd12:3456::1")));
    CHECK_FALSE(trusted.contains(ip::make_address("fe80::1")));
    CHECK(trusted.contains(ip::make_address("::1")));
    CHECK(trusted.contains(ip::make_address("172.31.0.1")));  // host bits in the entry are ignored
    CHECK_FALSE(trusted.contains(ip::make_address("172.32.0.1")));
    // A dual-stack socket's IPv4 peer.
    CHECK(trusted.contains(ip::make_address("::ffff:10.1.2.3")));
    CHECK(proxies({}).empty());
    CHECK_FALSE(proxies({}).contains(ip::make_address("127.0.0.1")));
    CHECK(proxies({"0.0.0.0/0"}).contains(ip::make_address("8.8.8.8")));

    for (const std::string bad : {"10.0.0.0/33", "fd00::/129", "proxy.example", "10.0.0.0/", "10.0.0/8", "1.2.3.4/x"}) {
        std::string named;
        CHECK_FALSE(trusted_proxies::parse({"127.0.0.1", bad}, &named));
        CHECK(named == bad);
    }
}

TEST_CASE("client_address believes only what trusted proxies appended", "[client_address]") {
    auto trusted = proxies({"10.0.0.0/8", "fd00::/8"});
    // Not through a trusted proxy: the header is the client's own word and is ignored.
    CHECK(client("203.0.113.1", "198.51.100.9", trusted) == "203.0.113.1");
    CHECK(client("::ffff:203.0.113.1", "", trusted) == "203.0.113.1");
    // Through one: the rightmost address that is not a trusted proxy.
    CHECK(client("10.0.0.2", "198.51.100.9", trusted) == "198.51.100.9");
    CHECK(client("10.0.0.2", "1.1.1.1, 198.51.100.9", trusted) == "198.51.100.9");
    CHECK(client("10.0.0.2", "1.1.1.1, 198.51.100.9, 10.0.0.3", trusted) == "198.51.100.9");
    CHECK(client("10.0.0.2", "1.1.1.1,198.51.100.9,10.0.0.3,", trusted) == "198.51.100.9");
    CHECK(client("10.0.0.2", "2001:db8::5, fd00::7", trusted) == "2001:db8::5");
    // Ports, and bracketed IPv6 with and without them.
    CHECK(client("10.0.0.2", "198.51.100.9:5555", trusted) == "198.51.100.9");
    CHECK(client("10.0.0.2", "[2001:db8::5]:443", trusted) == "2001:db8::5");
    CHECK(client("10.0.0.2", "[2001:db8::5]", trusted) == "2001:db8::5");
    CHECK(client("10.0.0.2", "::ffff:198.51.100.9", trusted) == "198.51.100.9");
    // Every hop trusted: the leftmost.
    CHECK(client("10.0.0.2", "10.0.0.9, 10.0.0.3", trusted) == "10.0.0.9");
    // No header, or garbage where the next address should be: the last hop believed.
    CHECK(client("10.0.0.2", "", trusted) == "10.0.0.2");
    CHECK(client("10.0.0.2", "unknown", trusted) == "10.0.0.2");
    CHECK(client("10.0.0.2", "198.51.100.9, unknown, 10.0.0.3", trusted) == "10.0.0.3");
    CHECK(client("10.0.0.2", "[2001:db8::5", trusted) == "10.0.0.2");
    CHECK(client("10.0.0.2", "[2001:db8::5]x", trusted) == "10.0.0.2");
    CHECK(client("10.0.0.2", "1.2.3.4:5:6", trusted) == "10.0.0.2");
}

TEST_CASE("connection limits count IPv4 per address and IPv6 per /64", "[client_address]") {
    auto key = [](const char* address) { return connection_limit_key(ip::make_address(address)).to_string(); };
    CHECK(key("192.0.2.7") == "192.0.2.7");
    CHECK(key("::ffff:192.0.2.7") == "192.0.2.7");  // a v4 client on a dual-stack socket
    CHECK(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd") == "2001:db8:1:2::");
    CHECK(key("2001:db8:1:2::1") == key("2001:db8:1:2:ffff::9"));  // one /64: one count
    CHECK(key("2001:db8:1:2::1") != key("2001:db8:1:3::1"));      // the next /64: another
    CHECK(key("::1") == "::");
}

TEST_CASE("max_connections_per_ip: a host cannot walk its /64 past the limit", "[client_address]") {
    address_counts counts;
    CHECK(counts.try_add(ip::make_address("2001:db8:1:2::1"), 2));
    CHECK(counts.try_add(ip::make_address("2001:db8:1:2::2"), 2));
    CHECK_FALSE(counts.try_add(ip::make_address("2001:db8:1:2:dead:beef::3"), 2));
    CHECK(counts.try_add(ip::make_address("2001:db8:1:3::1"), 2));  // another subscriber
    CHECK(counts.count(ip::make_address("2001:db8:1:2::99")) == 2);
    counts.remove(ip::make_address("2001:db8:1:2::1"));
    CHECK(counts.try_add(ip::make_address("2001:db8:1:2::7"), 2));  // a slot of the /64 came free
    CHECK(counts.try_add(ip::make_address("192.0.2.1"), 1));
    CHECK_FALSE(counts.try_add(ip::make_address("::ffff:192.0.2.1"), 1));  // the same v4 client
    CHECK(counts.try_add(ip::make_address("192.0.2.2"), 1));
}
