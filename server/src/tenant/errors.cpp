#include "tenant/errors.h"

#include <fmt/format.h>

#include "base/metrics.h"
#include "parley/proto/admin.h"
#include "parley/server/logging.h"
#include "parley/storage/log_throttle.h"

namespace parley::server {

proto::error_code to_proto_error(storage::error_kind kind) {
    switch (kind) {
        case storage::error_kind::not_found: return proto::error_code::not_found;
        case storage::error_kind::conflict: return proto::error_code::conflict;
        case storage::error_kind::unavailable: return proto::error_code::unavailable;
        case storage::error_kind::bad_request: return proto::error_code::bad_request;
        default: return proto::error_code::internal;
    }
}

int http_status(storage::error_kind kind) {
    switch (kind) {
        case storage::error_kind::not_found: return 404;
        case storage::error_kind::conflict: return 409;
        case storage::error_kind::unavailable: return 503;
        case storage::error_kind::bad_request: return 400;
        default: return 500;
    }
}

std::string storage_message(const storage::error& e) {
    switch (e.kind) {
        case storage::error_kind::not_found:
        case storage::error_kind::conflict:
        case storage::error_kind::bad_request: return e.message;
        case storage::error_kind::unavailable:
            // The store logs an outage once when it begins; one line per refused request would flood.
            return "storage unavailable, retry";
        default: {
            static storage::log_throttle throttle{10, "storage errors", spdlog::level::info};
            auto log = logger("store");
            if (throttle.admit(*log)) log->error("storage error: {}", e.message);
            return "internal storage error";
        }
    }
}

admin_reply admin_error(int status, proto::error_code code, std::string_view message) {
    return {status, proto::admin::encode_admin_error(code, message)};
}

admin_reply admin_storage_error(const storage::error& e) {
    if (e.kind != storage::error_kind::ok) global_metrics().storage_errors++;
    return admin_error(http_status(e.kind), to_proto_error(e.kind), storage_message(e));
}

admin_reply over_limit(std::string_view what, std::size_t limit, std::string_view key) {
    return admin_error(400, proto::error_code::capacity,
                       fmt::format("the tenant already has {} {}, the most allowed ({}); delete one first", limit,
                                   what, key));
}

}  // namespace parley::server
