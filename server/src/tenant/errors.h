#pragma once
// One place for how failures are told to clients: storage errors as protocol
// error codes, HTTP statuses and client-facing words (the database's own text
// stays in the log), and the admin API's error replies. The WebSocket and HTTP
// answers to the same failure are worded here once.
#include <cstddef>
#include <string>
#include <string_view>

#include "parley/proto/common.h"
#include "parley/storage/store.h"
#include "tenant/admin_queue.h"

namespace parley::server {

// Over limits.max_transcript_reads_per_tenant, on the WebSocket and over HTTP alike.
inline constexpr std::string_view too_many_transcript_reads =
    "too many transcripts being read at once in this tenant (limits.max_transcript_reads_per_tenant); retry in a moment";

proto::error_code to_proto_error(storage::error_kind kind);
int http_status(storage::error_kind kind);

// What a client is told about a storage error. not_found, conflict and
// bad_request carry our own words; the database's own text (host names, paths,
// SQL) stays in the log.
std::string storage_message(const storage::error& e);

admin_reply admin_error(int status, proto::error_code code, std::string_view message);
// A storage failure as an admin reply (counted in storage_errors).
admin_reply admin_storage_error(const storage::error& e);
// A PUT that would create one more agent, route or account than the tenant may have.
admin_reply over_limit(std::string_view what, std::size_t limit, std::string_view key);

}  // namespace parley::server
