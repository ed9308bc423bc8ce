#include "parley/server/client_address.h"

#include <algorithm>

#include <boost/asio/error.hpp>

namespace parley::server {

namespace ip = boost::asio::ip;

namespace {

std::string_view trimmed(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::optional<ip::address> parse_address(std::string_view text) {
    boost::system::error_code ec;
    auto address = ip::make_address(std::string(text), ec);
    if (ec) return std::nullopt;
    return unmapped(address);
}

// One X-Forwarded-For entry: an address, optionally with a port.
std::optional<ip::address> parse_forwarded_entry(std::string_view entry) {
    entry = trimmed(entry);
    if (!entry.empty() && entry.front() == '[') {
        auto close = entry.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        auto rest = entry.substr(close + 1);
        if (!rest.empty() && rest.front() != ':') return std::nullopt;
        return parse_address(entry.substr(1, close - 1));
    }
    if (std::count(entry.begin(), entry.end(), ':') == 1) entry = entry.substr(0, entry.find(':'));
    return parse_address(entry);
}

bool v6_in(const ip::address_v6& address, const ip::network_v6& network) {
    const auto a = address.to_bytes();
    const auto n = network.network().to_bytes();
    unsigned bits = network.prefix_length();
    for (std::size_t i = 0; i < a.size() && bits > 0; ++i) {
        const unsigned take = std::min(bits, 8u);
        const auto mask = static_cast<unsigned char>(0xff << (8 - take));
        if ((a[i] & mask) != (n[i] & mask)) return false;
        bits -= take;
    }
    return true;
}

}  // namespace

ip::address unmapped(const ip::address& address) {
    if (address.is_v6() && address.to_v6().is_v4_mapped())
        return ip::make_address_v4(ip::v4_mapped, address.to_v6());
    return address;
}

ip::address connection_limit_key(const ip::address& address) {
    const auto a = unmapped(address);
    if (a.is_v4()) return a;
    auto bytes = a.to_v6().to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);  // keep the network, drop the interface id
    return ip::address_v6(bytes);
}

std::optional<trusted_proxies> trusted_proxies::parse(const std::vector<std::string>& entries,
                                                      std::string* bad_entry) {
    trusted_proxies proxies;
    for (const auto& entry : entries) {
        boost::system::error_code ec;
        if (entry.find('/') == std::string::npos) {
            if (auto address = parse_address(entry); address && address->is_v4())
                proxies.v4_.emplace_back(address->to_v4(), 32);
            else if (address)
                proxies.v6_.emplace_back(address->to_v6(), 128);
            else
                ec = boost::asio::error::invalid_argument;
        } else if (entry.find(':') == std::string::npos) {
            proxies.v4_.push_back(ip::make_network_v4(entry, ec));
        } else {
            proxies.v6_.push_back(ip::make_network_v6(entry, ec));
        }
        if (ec) {
            if (bad_entry != nullptr) *bad_entry = entry;
            return std::nullopt;
        }
    }
    return proxies;
}

bool trusted_proxies::contains(const ip::address& address) const {
    const auto a = unmapped(address);
    if (a.is_v4()) {
        const auto value = a.to_v4().to_uint();
        return std::any_of(v4_.begin(), v4_.end(), [value](const ip::network_v4& n) {
            const auto mask = n.netmask().to_uint();
            return (value & mask) == (n.address().to_uint() & mask);
        });
    }
    return std::any_of(v6_.begin(), v6_.end(), [&](const ip::network_v6& n) { return v6_in(a.to_v6(), n); });
}

ip::address client_address(const ip::address& peer, std::string_view x_forwarded_for,
                           const trusted_proxies& proxies) {
    auto believed = unmapped(peer);
    if (!proxies.contains(believed)) return believed;
    while (!x_forwarded_for.empty()) {
        const auto comma = x_forwarded_for.rfind(',');
        const auto entry = comma == std::string_view::npos ? x_forwarded_for : x_forwarded_for.substr(comma + 1);
        x_forwarded_for = comma == std::string_view::npos ? std::string_view{} : x_forwarded_for.substr(0, comma);
        if (trimmed(entry).empty()) continue;  // "a, , b" and a trailing comma: nothing said there
        auto address = parse_forwarded_entry(entry);
        if (!address) return believed;
        believed = *address;
        if (!proxies.contains(believed)) return believed;
    }
    return believed;
}

}  // namespace parley::server
