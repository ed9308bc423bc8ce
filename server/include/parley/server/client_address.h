#pragma once
// Who a connection is from when it arrives through a reverse proxy. Behind
// nginx, HAProxy or a cloud load balancer every peer address is the proxy's;
// the client's is in X-Forwarded-For, which the proxy appends to. Only what
// trusted proxies appended is believed: the header is read from the right,
// and the first address not itself a trusted proxy is the client's (what
// nginx's real_ip_recursive does). Anything to the left of it may be forged.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>

namespace parley::server {

class trusted_proxies {
public:
    // Entries are addresses or CIDR networks ("10.0.0.0/8", "::1", "fd00::/8").
    // nullopt names the first entry that is neither.
    static std::optional<trusted_proxies> parse(const std::vector<std::string>& entries,
                                                std::string* bad_entry = nullptr);

    bool empty() const { return v4_.empty() && v6_.empty(); }
    bool contains(const boost::asio::ip::address& address) const;

private:
    std::vector<boost::asio::ip::network_v4> v4_;
    std::vector<boost::asio::ip::network_v6> v6_;
};

// IPv4 peers of a dual-stack socket arrive as ::ffff:a.b.c.d; they are IPv4 clients.
boost::asio::ip::address unmapped(const boost::asio::ip::address& address);

// What limits.max_connections_per_ip counts by: an IPv4 address, or the /64
// network of an IPv6 address. A /64 is one subscriber's allocation, whose host
// may take any of its 2^64 addresses: counting per /128 would not limit it.
boost::asio::ip::address connection_limit_key(const boost::asio::ip::address& address);

// The client's address: `peer` itself unless it is a trusted proxy; then the
// rightmost address of `x_forwarded_for` (all header lines joined by commas)
// that is not a trusted proxy, or its leftmost address when all are. An entry
// that is no address (a port is allowed: "1.2.3.4:5", "[::1]:5") ends the
// walk: the last address believed so far is the answer.
boost::asio::ip::address client_address(const boost::asio::ip::address& peer, std::string_view x_forwarded_for,
                                        const trusted_proxies& proxies);

}  // namespace parley::server
