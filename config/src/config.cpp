#include "parley/config/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>
#include <toml.hpp>

#include "parley/storage/url.h"

extern char** environ;

namespace parley::config {
namespace {

// Reads the keys of one TOML table into struct fields. Every key read is
// remembered so that finish() can report the ones nobody asked for: a typo in
// a config key must fail start-up, not be silently ignored.
class section_reader {
public:
    section_reader(const toml::value* table, std::string prefix, const std::string& file,
                   std::vector<problem>& problems)
        : table_(table), prefix_(std::move(prefix)), file_(file), problems_(problems) {}

    ~section_reader() { finish(); }
    section_reader(const section_reader&) = delete;
    section_reader& operator=(const section_reader&) = delete;

    // `why_bounded`, when given, is appended to the out-of-range reason.
    template <typename Integer>
    void integer(const std::string& key, Integer& out, std::int64_t min, std::int64_t max,
                 const std::string& why_bounded = {}) {
        const toml::value* v = find(key);
        if (v == nullptr) return;
        if (!v->is_integer()) return report(key, "must be an integer");
        auto n = v->as_integer();
        if (n < min || n > max)
            return report(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
                                   std::to_string(n) + (why_bounded.empty() ? "" : ": " + why_bounded));
        out = static_cast<Integer>(n);
    }

    template <typename Duration>
    void duration(const std::string& key, Duration& out, std::int64_t min, std::int64_t max) {
        std::int64_t count = out.count();
        integer(key, count, min, max);
        out = Duration{count};
    }

    void string(const std::string& key, std::string& out, std::size_t max_length = 4096,
                const std::set<std::string>& allowed = {}) {
        const toml::value* v = find(key);
        if (v == nullptr) return;
        if (!v->is_string()) return report(key, "must be a string");
        const std::string& s = v->as_string().str;
        if (s.size() > max_length)
            return report(key, "must be at most " + std::to_string(max_length) + " bytes");
        if (!allowed.empty() && allowed.count(s) == 0) {
            std::string list;
            for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
            return report(key, "must be one of " + list + ", got \"" + s + "\"");
        }
        out = s;
    }

    void string_list(const std::string& key, std::vector<std::string>& out, std::size_t max_items,
                     std::size_t max_length) {
        const toml::value* v = find(key);
        if (v == nullptr) return;
        if (!v->is_array()) return report(key, "must be an array of strings");
        const auto& items = v->as_array();
        if (items.size() > max_items) return report(key, "must have at most " + std::to_string(max_items) + " entries");
        std::vector<std::string> values;
        for (const auto& item : items) {
            if (!item.is_string() || item.as_string().str.size() > max_length)
                return report(key, "must be an array of strings of at most " + std::to_string(max_length) + " bytes");
            values.push_back(item.as_string().str);
        }
        out = std::move(values);
    }

    void boolean(const std::string& key, bool& out) {
        const toml::value* v = find(key);
        if (v == nullptr) return;
        if (!v->is_boolean()) return report(key, "must be true or false");
        out = v->as_boolean();
    }

    void report(const std::string& key, const std::string& reason) {
        problems_.push_back({file_, path(key), reason});
    }

    std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

private:
    const toml::value* find(const std::string& key) {
        seen_.insert(key);
        if (table_ == nullptr) return nullptr;
        const auto& t = table_->as_table();
        auto it = t.find(key);
        return it == t.end() ? nullptr : &it->second;
    }

    void finish() {
        if (table_ == nullptr) return;
        for (const auto& [key, value] : table_->as_table())
            if (seen_.count(key) == 0) report(key, "unknown key");
    }

    const toml::value* table_;
    std::string prefix_;
    const std::string& file_;
    std::vector<problem>& problems_;
    std::set<std::string> seen_;
};

// Returns the sub-table `key` of `root`, or nullptr when absent; reports a
// problem when present but not a table.
const toml::value* sub_table(const toml::value& root, const std::string& key, const std::string& file,
                             std::vector<problem>& problems) {
    const auto& t = root.as_table();
    auto it = t.find(key);
    if (it == t.end()) return nullptr;
    if (!it->second.is_table()) {
        problems.push_back({file, key, "must be a table ([" + key + "])"});
        return nullptr;
    }
    return &it->second;
}

// What the server's asio::ip::make_address accepts: a dotted-quad IPv4 address,
// or an IPv6 address with an optional %scope (interface name or number). Host
// names are refused: the server binds to an address, it does not resolve one.
bool valid_listen_address(const std::string& address) {
    unsigned char bytes[16];
    if (::inet_pton(AF_INET, address.c_str(), bytes) == 1) return true;
    const auto percent = address.find('%');
    if (percent != std::string::npos && percent + 1 == address.size()) return false;
    return ::inet_pton(AF_INET6, address.substr(0, percent).c_str(), bytes) == 1;
}

// An entry of server.trusted_proxies: an address as above (no scope), or one
// with a prefix length: 10.0.0.0/8, fd00::/8.
bool valid_proxy_network(const std::string& entry) {
    const auto slash = entry.find('/');
    const auto address = entry.substr(0, slash);
    unsigned char bytes[16];
    unsigned max_prefix = 0;
    if (::inet_pton(AF_INET, address.c_str(), bytes) == 1) max_prefix = 32;
    else if (::inet_pton(AF_INET6, address.c_str(), bytes) == 1) max_prefix = 128;
    else return false;
    if (slash == std::string::npos) return true;
    const auto digits = entry.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(), [](unsigned char ch) { return std::isdigit(ch) != 0; }))
        return false;
    return std::stoul(digits) <= max_prefix;
}

// server.public_url is informational only (printed at start-up), but a value
// that is no URL is a typo worth failing on: empty, or
// http(s)/ws(s)://host... without spaces, control characters or user info.
bool valid_public_url(const std::string& url) {
    if (url.empty()) return true;
    if (!std::all_of(url.begin(), url.end(), [](unsigned char ch) { return ch > 0x20 && ch < 0x7f; })) return false;
    const auto scheme_end = url.find("://");
    if (scheme_end == std::string::npos) return false;
    static const std::set<std::string> schemes{"http", "https", "ws", "wss"};
    if (schemes.count(url.substr(0, scheme_end)) == 0) return false;
    const auto host_start = scheme_end + 3;
    const auto authority = url.substr(host_start, url.find_first_of("/?#", host_start) - host_start);
    return !authority.empty() && authority.front() != ':' && authority.find('@') == std::string::npos;
}

// This platform's hard open-file limit is 20,000, and the unit sets
// LimitNOFILE=20000. Each connection holds one descriptor; parleyd keeps the
// rest for the listener, the event loop, its storage connections and SQLite
// files, and logging. A larger value would have accept() fail with EMFILE
// before max_connections refuses connections cleanly. (This is a pure parser:
// the server is the place to compare with the process's RLIMIT_NOFILE.)
constexpr std::int64_t max_connections_ceiling = 20'000 - 500;

void parse_server(const toml::value* t, const std::string& file, std::vector<problem>& p, server_config& c) {
    section_reader r(t, "server", file, p);
    r.string("listen_address", c.listen_address, 255);
    if (!valid_listen_address(c.listen_address))
        r.report("listen_address", "must be an IPv4 or IPv6 address such as 0.0.0.0, 127.0.0.1 or ::, got \"" +
                                       c.listen_address + "\" (host names are not resolved)");
    r.integer("port", c.port, 0, 65535);
    r.integer("threads", c.threads, 0, 256);
    r.string("public_url", c.public_url, 1024);
    if (!valid_public_url(c.public_url))
        r.report("public_url", "must be empty or an http://, https://, ws:// or wss:// URL with a host and no "
                               "user info, e.g. wss://chat.example.com");
    // The SIGTERM drain takes half of it; systemd's TimeoutStopSec (30 s in
    // deploy/parleyd.service) must stay above it, which a drop-in can raise.
    r.duration("shutdown_timeout_s", c.shutdown_timeout, 1, 3600);
    r.duration("secret_rotation_grace_s", c.secret_rotation_grace, 0, 86400);
    r.string_list("trusted_proxies", c.trusted_proxies, 256, 64);
    for (const auto& entry : c.trusted_proxies)
        if (!valid_proxy_network(entry))
            r.report("trusted_proxies", "\"" + entry + "\" is neither an IPv4/IPv6 address nor a network such as "
                                        "10.0.0.0/8 or fd00::/8");
}

void parse_web(const toml::value* t, const std::string& file, std::vector<problem>& p, web_config& c) {
    section_reader r(t, "web", file, p);
    r.boolean("enabled", c.enabled);
    r.string("directory", c.directory, 1024);
    if (c.directory.empty()) return;
    // Checked at start-up rather than on the first request: a typo must not show up as 404s.
    std::error_code ec;
    if (c.directory.front() != '/')
        r.report("directory", "must be an absolute path, got \"" + c.directory + "\"");
    else if (!std::filesystem::is_directory(c.directory, ec))
        r.report("directory", "\"" + c.directory + "\" is not a directory that parleyd can read");
}

void parse_log(const toml::value* t, const std::string& file, std::vector<problem>& p, log_config& c) {
    section_reader r(t, "log", file, p);
    r.string("level", c.level, 16, {"trace", "debug", "info", "warn", "error", "critical", "off"});
}

void parse_storage(const toml::value* t, const std::string& file, std::vector<problem>& p, storage_config& c) {
    section_reader r(t, "storage", file, p);
    r.string("url", c.url, 4096);
    std::string durability_name = c.durability == durability::commit ? "commit" : "relaxed";
    r.string("durability", durability_name, 16, {"commit", "relaxed"});
    c.durability = durability_name == "relaxed" ? durability::relaxed : durability::commit;
    r.integer("batch_max", c.batch_max, 1, 100'000);
    r.duration("batch_delay_ms", c.batch_delay, 0, 1000);
    r.integer("queue_max", c.queue_max, 1, 10'000'000);
    r.integer("retention_days", c.retention_days, 1, 36'500);
    r.duration("prune_interval_s", c.prune_interval, 1, 7 * 24 * 3600);
    r.duration("start_wait_s", c.start_wait, 0, 3600);
    r.duration("unavailable_after_s", c.unavailable_after, 1, 300);
}

void parse_limits(const toml::value* t, const std::string& file, std::vector<problem>& p, limits_config& c) {
    section_reader r(t, "limits", file, p);
    r.integer("max_frame_bytes", c.max_frame_bytes, 1024, 16 * 1024 * 1024);
    r.integer("max_text_chars", c.max_text_chars, 1, 1'000'000);
    r.duration("hello_timeout_s", c.hello_timeout, 1, 3600);
    r.duration("handshake_timeout_s", c.handshake_timeout, 1, 3600);
    r.duration("ping_interval_s", c.ping_interval, 1, 3600);
    r.duration("peer_silence_timeout_s", c.peer_silence_timeout, 2, 3600);
    r.integer("frames_per_second", c.frames_per_second, 1, 100'000);
    r.integer("frame_burst", c.frame_burst, 1, 1'000'000);
    r.integer("abuse_close_after", c.abuse_close_after, 1, 1'000'000);
    r.integer("outbound_max_bytes", c.outbound_max_bytes, 4096, 1LL << 32);
    r.integer("outbound_max_frames", c.outbound_max_frames, 1, 1'000'000);
    r.integer("max_connections", c.max_connections, 1, max_connections_ceiling,
              "each connection holds an open file, the process may have at most 20000 (LimitNOFILE in "
              "parleyd.service) and parleyd keeps some for itself");
    r.integer("max_connections_per_ip", c.max_connections_per_ip, 0, 10'000'000);
    r.integer("http_body_max_bytes", c.http_body_max_bytes, 1024, 64 * 1024 * 1024);
    r.integer("max_agents_per_tenant", c.max_agents_per_tenant, 1, 1'000'000);
    r.integer("max_routes_per_tenant", c.max_routes_per_tenant, 1, 1'000'000);
    r.integer("max_sessions_per_identity", c.max_sessions_per_identity, 1, 10'000);
    r.integer("max_accounts_per_tenant", c.max_accounts_per_tenant, 1, 1'000'000);
    r.integer("max_messages_per_conversation", c.max_messages_per_conversation, 1, 1'000'000);
    r.integer("max_transcript_reads_per_tenant", c.max_transcript_reads_per_tenant, 1, 10'000);
    if (t != nullptr && c.peer_silence_timeout <= c.ping_interval)
        r.report("peer_silence_timeout_s", "must be longer than ping_interval_s");
}

void parse_routing(const toml::value* t, const std::string& file, std::vector<problem>& p, routing_config& c) {
    section_reader r(t, "routing", file, p);
    r.duration("offer_timeout_s", c.offer_timeout, 1, 3600);
    r.integer("max_attempts", c.max_attempts, 1, 100);
    r.duration("grace_period_s", c.grace_period, 0, 24 * 3600);
    r.duration("conversation_idle_timeout_s", c.conversation_idle_timeout, 1, 7 * 24 * 3600);
    r.integer("auto_away_after_missed", c.auto_away_after_missed, 0, 1000);
    r.integer("max_queue_length", c.max_queue_length, 1, 100'000);
    r.duration("restore_window_s", c.restore_window, 0, 3600);
    r.duration("visitor_grace_s", c.visitor_grace, 0, 3600);
}

bool valid_tenant_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](unsigned char ch) {
        return std::isalnum(ch) || ch == '-' || ch == '_';
    });
}

std::string env_name(const std::string& tenant_id, const std::string& suffix) {
    std::string name = "PARLEY_TENANT_";
    for (unsigned char ch : tenant_id) name += ch == '-' ? '_' : static_cast<char>(std::toupper(ch));
    return name + "_" + suffix;
}

// A tenant secret as configured, for the checks across tenants. The value
// itself never appears in a message; where it came from does.
struct tenant_secret {
    std::string tenant_id;
    std::string key;  // admin_token, agent_secret or widget_secret
    std::string source;  // "the file" or the environment variable
    std::string value;
};

// Tenant ids that differ only in case or in '-' against '_' read the same
// PARLEY_TENANT_<ID>_* variables, so one environment would silently give both
// tenants the same admin token and signing secrets.
void check_environment_names(const std::string& file, std::vector<problem>& p,
                             const std::map<std::string, tenant_config>& tenants) {
    std::map<std::string, std::string> first_id_of;  // PARLEY_TENANT_<ID> -> first tenant id (sorted)
    for (const auto& [id, tenant] : tenants) {
        const std::string stem = env_name(id, "");
        const auto [first, inserted] = first_id_of.emplace(stem, id);
        if (inserted) continue;
        p.push_back({file, "tenants." + id,
                     "tenant ids \"" + first->second + "\" and \"" + id + "\" both read their secrets from " + stem +
                         "{ADMIN_TOKEN,AGENT_SECRET,WIDGET_SECRET} (ids are upper-cased, '-' as '_'), so they "
                         "would share them; rename one of the two tenants"});
    }
}

// A secret must belong to one tenant and one use: a tenant whose agent_secret
// equals its widget_secret lets whoever mints visitor tokens (the customer's
// web backend) sign agent tokens too; an admin_token equal to a signing secret
// hands the admin API to whoever signs tokens; two tenants sharing a secret
// accept each other's credentials.
void check_secrets_distinct(const std::string& file, std::vector<problem>& p, std::vector<tenant_secret> secrets) {
    std::sort(secrets.begin(), secrets.end(), [](const tenant_secret& a, const tenant_secret& b) {
        return std::tie(a.tenant_id, a.key) < std::tie(b.tenant_id, b.key);
    });
    std::map<std::string, const tenant_secret*> first_use;  // value -> first tenant/key holding it
    for (const auto& secret : secrets) {
        const auto [found, inserted] = first_use.emplace(secret.value, &secret);
        if (inserted) continue;
        const tenant_secret& first = *found->second;
        const std::string first_key = "tenants." + first.tenant_id + "." + first.key;
        const std::string key = "tenants." + secret.tenant_id + "." + secret.key;
        if (first.tenant_id == secret.tenant_id) {
            // Sorted by key (admin_token, agent_secret, widget_secret), so `first` is the one to
            // change: the widget secret is already in the customer's web backend.
            const std::string why = first.key == "admin_token"
                                        ? "whoever signs " + std::string(secret.key == "agent_secret" ? "agent" : "visitor") +
                                              " tokens could call the admin API"
                                        : "whoever mints visitor tokens could sign agent tokens too";
            p.push_back({file, first_key,
                         "must differ from " + key + " (" + first.key + " from " + first.source + ", " + secret.key +
                             " from " + secret.source + "): " + why});
        } else {
            p.push_back({file, key,
                         "is the same secret as " + first_key + " (this one from " + secret.source + ", that one from " +
                             first.source + "): tenants \"" + first.tenant_id + "\" and \"" + secret.tenant_id +
                             "\" would accept each other's credentials; give each tenant its own secrets"});
        }
    }
}

void parse_tenants(const toml::value* t, const std::string& file, std::vector<problem>& p,
                   const std::map<std::string, std::string>& env, std::map<std::string, tenant_config>& out) {
    if (t == nullptr) return;
    std::vector<tenant_secret> secrets;
    for (const auto& entry : t->as_table()) {
        // Named, not a structured binding: lambdas below capture it (clang 14, used for fuzzing, cannot).
        const std::string& id = entry.first;
        const auto& value = entry.second;
        std::string prefix = "tenants." + id;
        if (!valid_tenant_id(id)) {
            p.push_back({file, prefix, "tenant id must be 1..64 letters, digits, '-' or '_'"});
            continue;
        }
        if (!value.is_table()) {
            p.push_back({file, prefix, "must be a table ([tenants." + id + "])"});
            continue;
        }
        tenant_config tenant;
        tenant.id = id;
        tenant.name = id;
        {
            section_reader r(&value, prefix, file, p);
            r.string("name", tenant.name, 200);
            r.string("admin_token", tenant.admin_token, 1024);
            r.string("agent_secret", tenant.agent_secret, 1024);
            r.string("widget_secret", tenant.widget_secret, 1024);
            r.boolean("allow_anonymous", tenant.allow_anonymous);
        }
        // Secrets from the environment win, so they need not be written in the file.
        auto override_from_env = [&](const char* suffix, std::string& field) {
            auto it = env.find(env_name(id, suffix));
            if (it != env.end()) field = it->second;
        };
        override_from_env("ADMIN_TOKEN", tenant.admin_token);
        override_from_env("AGENT_SECRET", tenant.agent_secret);
        override_from_env("WIDGET_SECRET", tenant.widget_secret);
        // Returns whether the secret is usable; a refused one is left out of
        // the checks across secrets (its problem is already reported).
        auto require_secret = [&](const char* key, const std::string& value_of, const char* suffix) {
            if (value_of.size() < 16) {
                p.push_back({file, prefix + "." + key,
                             "must be set (here or in " + env_name(id, suffix) + ") to at least 16 characters"});
                return false;
            }
            // The example file's secrets are public: a server must never run with them.
            if (value_of.find("change-me") != std::string::npos) {
                p.push_back({file, prefix + "." + key,
                             "is still the example's placeholder; set a random one (here or in " +
                                 env_name(id, suffix) + "), e.g. from `head -c 32 /dev/urandom | base64`"});
                return false;
            }
            return true;
        };
        auto source_of = [&](const char* suffix) {
            const auto name = env_name(id, suffix);
            return env.count(name) != 0 ? name : std::string("the file");
        };
        if (require_secret("admin_token", tenant.admin_token, "ADMIN_TOKEN"))
            secrets.push_back({id, "admin_token", source_of("ADMIN_TOKEN"), tenant.admin_token});
        if (require_secret("agent_secret", tenant.agent_secret, "AGENT_SECRET"))
            secrets.push_back({id, "agent_secret", source_of("AGENT_SECRET"), tenant.agent_secret});
        if (require_secret("widget_secret", tenant.widget_secret, "WIDGET_SECRET"))
            secrets.push_back({id, "widget_secret", source_of("WIDGET_SECRET"), tenant.widget_secret});
        out[id] = std::move(tenant);
    }
    check_environment_names(file, p, out);
    check_secrets_distinct(file, p, std::move(secrets));
}

// Refuses what storage::open_store would refuse, with storage's own check
// (parley/storage/url.h), so that check-config catches it instead of `serve`.
// The reason never quotes the URL (it holds the database password); it names
// where the value came from instead.
void validate_storage_url(const std::string& file, std::vector<problem>& p, const std::string& url,
                          const std::string& source) {
    if (auto parsed = parley::storage::parse_url(url); !parsed)
        p.push_back({file, "storage.url", "from " + source + ": " + parsed.failure().message});
}

}  // namespace

std::string problem::to_string() const { return file + ": " + key + ": " + reason; }

parse_result parse_text(const std::string& toml_text, const std::string& file_name,
                        const std::map<std::string, std::string>& environment) {
    parse_result result;
    result.value.source_file = file_name;
    auto& problems = result.problems;
    toml::value root;
    try {
        std::istringstream in(toml_text);
        root = toml::parse(in, file_name);
    } catch (const std::exception& e) {
        problems.push_back({file_name, "(syntax)", e.what()});
        return result;
    }
    config& c = result.value;
    static const std::set<std::string> sections{"server", "log", "storage", "limits", "routing", "web", "tenants"};
    for (const auto& [key, value] : root.as_table())
        if (sections.count(key) == 0) problems.push_back({file_name, key, "unknown section or key"});

    parse_server(sub_table(root, "server", file_name, problems), file_name, problems, c.server);
    parse_log(sub_table(root, "log", file_name, problems), file_name, problems, c.log);
    parse_storage(sub_table(root, "storage", file_name, problems), file_name, problems, c.storage);
    parse_limits(sub_table(root, "limits", file_name, problems), file_name, problems, c.limits);
    parse_routing(sub_table(root, "routing", file_name, problems), file_name, problems, c.routing);
    parse_web(sub_table(root, "web", file_name, problems), file_name, problems, c.web);
    parse_tenants(sub_table(root, "tenants", file_name, problems), file_name, problems, environment, c.tenants);

    std::string storage_url_source = "the file";
    if (auto it = environment.find("PARLEY_STORAGE_URL"); it != environment.end()) {
        c.storage.url = it->second;
        storage_url_source = "PARLEY_STORAGE_URL";
    }
    validate_storage_url(file_name, problems, c.storage.url, storage_url_source);
    if (c.tenants.empty()) problems.push_back({file_name, "tenants", "at least one [tenants.<id>] is required"});
    return result;
}

parse_result parse_file(const std::string& path, const std::map<std::string, std::string>& environment) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        parse_result result;
        result.problems.push_back({path, "(file)", "cannot be read"});
        return result;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse_text(text.str(), path, environment);
}

std::map<std::string, std::string> process_environment() {
    std::map<std::string, std::string> env;
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
        std::string_view kv(*entry);
        auto eq = kv.find('=');
        if (eq != std::string_view::npos) env.emplace(kv.substr(0, eq), kv.substr(eq + 1));
    }
    return env;
}

}  // namespace parley::config
