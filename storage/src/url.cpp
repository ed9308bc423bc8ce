#include "parley/storage/url.h"

#include <libpq-fe.h>

#include <string_view>

namespace parley::storage {
namespace {

bool starts_with(const std::string& text, std::string_view prefix) { return text.rfind(prefix, 0) == 0; }

// A '/' or '@' left unencoded in the password moves the rest of it into the
// host, port or database name ("u:se/cret@db-host/parley" parses as host "u",
// port "se", database "cret@db-host/parley"), which a connection error would
// then quote. Refused like a parse error: a port that is not digits, an '@' in
// a host or database.
bool misparsed_credentials(const PQconninfoOption* parsed) {
    for (const auto* option = parsed; option->keyword != nullptr; ++option) {
        if (option->val == nullptr) continue;
        const std::string_view key(option->keyword), value(option->val);
        if ((key == "host" || key == "dbname") && value.find('@') != std::string_view::npos) return true;
        if (key == "port" && value.find_first_not_of("0123456789,") != std::string_view::npos) return true;
    }
    return false;
}

}  // namespace

result<parsed_url> parse_url(const std::string& url) {
    auto refuse = [](std::string reason) { return error{error_kind::bad_request, std::move(reason)}; };
    if (starts_with(url, "postgresql://") || starts_with(url, "postgres://")) {
        char* message = nullptr;  // may quote the password: freed unread
        PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &message);
        PQfreemem(message);
        const bool valid = parsed != nullptr && !misparsed_credentials(parsed);
        PQconninfoFree(parsed);
        if (!valid)
            return refuse("not a valid PostgreSQL connection URI; check the percent-encoding of user and password "
                          "('%' is written %25, '@' %40, '/' %2F) and the port and query parameter names");
        return parsed_url{backend_kind::postgresql, {}};
    }
    if (starts_with(url, "sqlite://")) {
        std::string path = url.substr(std::string_view("sqlite://").size());
        if (path.empty() || path.front() != '/')
            return refuse("SQLite needs an absolute path: sqlite:///var/lib/parley/parley.db");
        if (path.find('?') != std::string::npos) return refuse("query parameters are not supported in a sqlite:// URL");
        return parsed_url{backend_kind::sqlite, std::move(path)};
    }
    return refuse("must start with postgresql://, postgres:// or sqlite://");
}

}  // namespace parley::storage
