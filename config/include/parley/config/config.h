#pragma once
// Parley's configuration: plain structs with defaults, filled by one parse
// function per section. Every problem is collected (file, key, reason) so an
// operator sees all of them at once; unknown keys are errors, not warnings.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace parley::config {

struct server_config {
    std::string listen_address = "0.0.0.0";
    std::uint16_t port = 8080;
    unsigned threads = 0;  // 0: one per hardware thread
    std::string public_url;  // how clients reach us; checked, but not used by the server
    std::chrono::seconds shutdown_timeout{20};
    // A reload that rotates a tenant's agent_secret: sessions of agents authenticated with the old
    // one end (4401) this long after, unless they present a token of the new one (reauth).
    std::chrono::seconds secret_rotation_grace{300};
    // Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For is
    // believed for WebSocket connections: limits.max_connections_per_ip then
    // counts the client's address rather than the proxy's.
    std::vector<std::string> trusted_proxies;
};

struct log_config {
    std::string level = "info";  // trace|debug|info|warn|error|critical|off
};

enum class durability { commit, relaxed };

struct storage_config {
    std::string url = "sqlite:///var/lib/parley/parley.db";
    enum durability durability = durability::commit;
    unsigned batch_max = 1000;
    std::chrono::milliseconds batch_delay{2};
    unsigned queue_max = 100'000;
    unsigned retention_days = 90;
    std::chrono::seconds prune_interval{3600};
    // How long `serve` waits at start for a PostgreSQL that cannot be reached yet (0: not at all).
    std::chrono::seconds start_wait{120};
    // A write not stored this long after it was queued (database down or not
    // answering) fails with `unavailable`, so its sender can retry.
    std::chrono::seconds unavailable_after{5};
};

// Protocol limits (protocol.md section 1). All configurable, all enforced.
struct limits_config {
    std::size_t max_frame_bytes = 64 * 1024;
    std::size_t max_text_chars = 4000;
    std::chrono::seconds hello_timeout{10};
    std::chrono::seconds handshake_timeout{10};
    std::chrono::seconds ping_interval{20};
    std::chrono::seconds peer_silence_timeout{60};
    unsigned frames_per_second = 20;  // token bucket refill
    unsigned frame_burst = 40;        // token bucket size
    unsigned abuse_close_after = 200;  // rate-limited frames before close 1008
    std::size_t outbound_max_bytes = 1024 * 1024;
    std::size_t outbound_max_frames = 1024;
    unsigned max_connections = 19'000;
    // Per client address; 0 = no limit. Behind a reverse proxy, list it in
    // server.trusted_proxies, or every client counts as the proxy's address.
    // The default keeps one address from taking every slot (19,000) while an
    // office of hundreds of agents and visitors behind one NAT still fits.
    unsigned max_connections_per_ip = 1000;
    std::size_t http_body_max_bytes = 1024 * 1024;
    // Objects one tenant may define through the admin API; a PUT that would
    // create one more is refused (each is kept in memory and in storage).
    std::size_t max_agents_per_tenant = 1000;
    std::size_t max_routes_per_tenant = 1000;
    std::size_t max_accounts_per_tenant = 1000;
    // Open sessions of one visitor (tabs sharing a resume token) or one agent (tabs, devices).
    std::size_t max_sessions_per_identity = 32;
    // Messages one conversation may hold (seq 1..this); a `send` or `share_calendar`
    // beyond it is refused with `capacity`. Bounds what a transcript or a resume reads.
    std::size_t max_messages_per_conversation = 10'000;
    // get_transcript requests and transcript.txt downloads of one tenant in
    // progress at once; more are refused (rate_limited, HTTP 503) until one ends.
    std::size_t max_transcript_reads_per_tenant = 16;
};

struct routing_config {
    std::chrono::seconds offer_timeout{45};
    unsigned max_attempts = 2;
    std::chrono::seconds grace_period{60};
    std::chrono::seconds conversation_idle_timeout{600};
    unsigned auto_away_after_missed = 0;  // 0: off
    // Per route: a chat request that would wait behind this many gets the fallback instead.
    unsigned max_queue_length = 1000;
    // After a restart, agents get this long to reconnect before waiting chats are routed again.
    std::chrono::seconds restore_window{10};
    // A waiting (routing or queued) chat whose visitor's last connection closed keeps its place
    // this long, then ends as if the visitor had left; 0: at once.
    std::chrono::seconds visitor_grace{30};
};

// The web clients (inbox at /inbox/, widget at /widget.js, demo at /demo/).
struct web_config {
    bool enabled = true;
    // Empty: the files built into parleyd. Otherwise an absolute path to a directory laid out
    // like web/ (inbox/, widget/, demo/), served instead, for an operator's own branding.
    std::string directory;
};

struct tenant_config {
    std::string id;
    std::string name;
    std::string admin_token;    // bearer token of the admin API
    std::string agent_secret;   // HS256 key of agent JWTs
    std::string widget_secret;  // HS256 key of visitor JWTs and resume tokens
    bool allow_anonymous = true;
};

struct config {
    std::string source_file;  // where it came from, for messages
    server_config server;
    log_config log;
    storage_config storage;
    limits_config limits;
    routing_config routing;
    web_config web;
    std::map<std::string, tenant_config> tenants;
};

struct problem {
    std::string file;
    std::string key;  // dotted path, e.g. "limits.max_frame_bytes"
    std::string reason;
    std::string to_string() const;
};

struct parse_result {
    config value;
    std::vector<problem> problems;  // empty: valid
    bool ok() const { return problems.empty(); }
};

// Parses the TOML file at `path`, then applies environment overrides for
// secrets and URLs (see deploy/parley.toml): PARLEY_STORAGE_URL,
// PARLEY_TENANT_<ID>_ADMIN_TOKEN, _AGENT_SECRET, _WIDGET_SECRET (ID upper-cased,
// '-' as '_'). `environment` is injected so tests need not touch the process's.
// Refused: two tenant ids that map to the same <ID>, and an agent_secret or
// widget_secret used twice (a tenant's agent_secret equal to its
// widget_secret, or a secret shared by two tenants).
parse_result parse_file(const std::string& path,
                        const std::map<std::string, std::string>& environment);

// Same, from TOML text; `file_name` is only used in problem reports.
parse_result parse_text(const std::string& toml_text, const std::string& file_name,
                        const std::map<std::string, std::string>& environment);

// The process environment as a map, for parse_file.
std::map<std::string, std::string> process_environment();

}  // namespace parley::config
