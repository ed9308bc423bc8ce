#pragma once
// The form of a storage URL, checked without connecting. open_store checks
// every URL with this first; config checks storage.url with it too, so that
// `parleyd check-config` refuses exactly what `serve` would (one exception:
// that a SQLite database's directory exists is checked only by open_store,
// since systemd creates /var/lib/parley only when the service starts).
#include <string>

#include "parley/storage/result.h"

namespace parley::storage {

enum class backend_kind { postgresql, sqlite };

struct parsed_url {
    backend_kind backend = backend_kind::postgresql;
    std::string sqlite_path;  // absolute path of the database file; empty for PostgreSQL
};

// A bad_request error for a URL open_store cannot use: not postgresql://,
// postgres:// or sqlite://; a PostgreSQL URI libpq cannot parse, or whose
// credentials it misparses (an unencoded '/' or '@' in the password); a
// relative SQLite path or one with query parameters.
//
// The URL holds the database password, so the reason never quotes it, nor
// libpq's parse message (which quotes the offending part, e.g. a password
// with a bare '%'); callers add where the URL came from.
result<parsed_url> parse_url(const std::string& url);

}  // namespace parley::storage
