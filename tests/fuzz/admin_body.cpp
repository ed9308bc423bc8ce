// The admin API's JSON bodies: agents, routes, accounts, visitor profiles, activities.
// The first byte picks the parser, so one corpus covers them all.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "parley/proto/admin.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
    namespace admin = parley::proto::admin;
    switch (data[0] % 5) {
        case 0: (void)admin::parse_agent_body(body); break;
        case 1: (void)admin::parse_route_body(body); break;
        case 2: (void)admin::parse_account_body(body); break;
        case 3: (void)admin::parse_visitor_profile_body(body); break;
        default: (void)admin::parse_activity_body(body); break;
    }
    return 0;
}
