#include "app/http_api.h"

#include <openssl/crypto.h>

#include "base/metrics.h"
#include "parley/proto/admin.h"
#include "parley/proto/decode.h"
#include "parley/server/auth.h"
#include "app/static_files.h"
#include "tenant/tenant_hub.h"

namespace parley::server {

namespace {

http_response make_response(const http_request& request, int status, std::string body,
                            std::string_view content_type = "application/json") {
    http_response response{static_cast<http::status>(status), request.version()};
    response.set(http::field::server, "parleyd");
    response.set("X-Content-Type-Options", "nosniff");
    if (!body.empty() || status != 204) response.set(http::field::content_type, content_type);
    response.keep_alive(request.keep_alive());
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
}

http_response error_response(const http_request& request, int status, proto::error_code code, std::string_view message) {
    return make_response(request, status, proto::admin::encode_admin_error(code, message));
}

std::vector<std::string> split_path(std::string_view path) {
    std::vector<std::string> parts;
    std::size_t start = 1;
    while (start <= path.size()) {
        auto end = path.find('/', start);
        if (end == std::string_view::npos) end = path.size();
        parts.emplace_back(path.substr(start, end - start));
        start = end + 1;
    }
    return parts;
}

// Ids in paths: 1..128 bytes (account domains: 1..253), no '/', no control
// characters. Every path segment was checked for UTF-8 when it was decoded.
bool valid_path_id(const std::string& id, std::size_t max_bytes = 128) {
    if (id.empty() || id.size() > max_bytes) return false;
    for (unsigned char ch : id)
        if (ch < 0x20 || ch == 0x7f || ch == '/') return false;
    return true;
}

bool same_secret(const std::string& a, const std::string& b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

enum class caller_kind { none, admin, agent, other_tenant };

struct caller {
    caller_kind kind = caller_kind::none;
    std::string agent_id;  // for caller_kind::agent: the token's subject
};

// Who is calling, for tenant `tenant_id`: its admin, one of its agents
// (agent JWT), somebody of another tenant, or nobody we know.
caller identify(const shared_state& state, const std::string& tenant_id, const http_request& request) {
    auto header = request[http::field::authorization];
    if (header.substr(0, 7) != "Bearer ") return {};
    std::string token(header.substr(7));
    const auto now = std::chrono::system_clock::now();
    auto hubs = state.hubs();
    if (auto own = hubs->find(tenant_id); own != hubs->end()) {
        auto tenant = own->second->tenant();
        if (same_secret(token, tenant->admin_token)) return {caller_kind::admin, {}};
        if (auto agent = verify_agent_token(tenant->agent_secret, token, now, tenant_id); agent.claims)
            return {caller_kind::agent, agent.claims->agent_id};
    }
    for (const auto& [id, hub] : *hubs) {
        if (id == tenant_id) continue;
        auto other = hub->tenant();
        if (same_secret(token, other->admin_token)) return {caller_kind::other_tenant, {}};
        if (verify_agent_token(other->agent_secret, token, now, id).claims) return {caller_kind::other_tenant, {}};
    }
    return {};
}

}  // namespace

void http_api::handle(const http_request& request, std::function<void(http_answer)> done) {
    std::string_view target = request.target();
    if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
    const auto method = request.method();
    const bool is_get = method == http::verb::get || method == http::verb::head;

    // The WebSocket endpoints reach here only when the upgrade was not taken.
    if (target == "/v1/visitor" || target == "/v1/agent") {
        if (state_.draining.load()) {
            auto response = error_response(request, 503, proto::error_code::unavailable,
                                           "server shutting down; reconnect in a moment");
            response.set(http::field::retry_after, "1");
            return done(std::move(response));
        }
        auto response = error_response(request, 426, proto::error_code::bad_request,
                                       "this endpoint speaks WebSocket: send an Upgrade request");
        response.set(http::field::upgrade, "websocket");
        return done(std::move(response));
    }
    if (target == "/healthz") {
        if (!is_get) return done(error_response(request, 405, proto::error_code::bad_request, "use GET"));
        return done(make_response(request, 200, "ok\n", "text/plain; charset=utf-8"));
    }
    if (target == "/readyz") {
        if (state_.draining.load()) return done(make_response(request, 503, "draining\n", "text/plain; charset=utf-8"));
        bool ready = state_.ready.load() && state_.store && state_.store->ready();
        std::string body = ready ? "ready\n" : "storage not ready\n";
        // In an outage, state writes (chat ends, scores, activities) wait for the database: say how many.
        if (state_.store)
            if (auto waiting = state_.store->stats().state_writes_waiting; waiting > 0 && !ready)
                body += std::to_string(waiting) + " state writes waiting for storage\n";
        return done(make_response(request, ready ? 200 : 503, std::move(body), "text/plain; charset=utf-8"));
    }
    if (target == "/metrics") {
        std::string body = global_metrics().render();
        body += "# HELP parley_open_connections Open TCP connections of every kind (HTTP, WebSocket before and "
                "after hello): what limits.max_connections bounds.\n# TYPE parley_open_connections gauge\n"
                "parley_open_connections " + std::to_string(state_.open_connections.load()) + "\n";
        if (state_.store) {
            auto s = state_.store->stats();
            body += "# HELP parley_storage_queue_depth Writes queued for the storage thread.\n"
                    "# TYPE parley_storage_queue_depth gauge\nparley_storage_queue_depth " +
                    std::to_string(s.queue_depth) + "\n";
            body += "# HELP parley_storage_state_writes_waiting State writes (conversation saves, offers, "
                    "activities, admin changes) queued; in an outage they wait for the database.\n"
                    "# TYPE parley_storage_state_writes_waiting gauge\nparley_storage_state_writes_waiting " +
                    std::to_string(s.state_writes_waiting) + "\n";
            body += "# HELP parley_storage_transactions_total Group-commit transactions committed.\n"
                    "# TYPE parley_storage_transactions_total counter\nparley_storage_transactions_total " +
                    std::to_string(s.transactions_committed) + "\n";
            body += "# HELP parley_storage_writes_committed_total Writes committed.\n"
                    "# TYPE parley_storage_writes_committed_total counter\nparley_storage_writes_committed_total " +
                    std::to_string(s.writes_committed) + "\n";
            body += "# HELP parley_storage_unavailable_total Writes refused or expired while storage was down.\n"
                    "# TYPE parley_storage_unavailable_total counter\nparley_storage_unavailable_total " +
                    std::to_string(s.rejected_queue_full + s.expired_unavailable) + "\n";
            body += "# HELP parley_storage_ready Storage reachable and migrated (1) or not (0).\n"
                    "# TYPE parley_storage_ready gauge\nparley_storage_ready " +
                    std::string(state_.store->ready() ? "1" : "0") + "\n";
        }
        return done(make_response(request, 200, std::move(body), "text/plain; version=0.0.4; charset=utf-8"));
    }

    if (state_.web_files)
        if (auto answer = state_.web_files->answer(request)) return done(std::move(*answer));

    auto parts = split_path(target);
    if (parts.size() < 3 || parts[0] != "v1" || parts[1] != "tenants")
        return done(error_response(request, 404, proto::error_code::not_found, "no such endpoint"));
    for (auto& p : parts) {
        auto decoded = proto::admin::percent_decode(p);
        if (!decoded) return done(error_response(request, 400, proto::error_code::bad_request, "bad percent-encoding in path"));
        // Ids end up in JSON replies and events, which must be UTF-8 (a stored
        // id with a stray byte used to make every listing of its kind fail).
        if (!proto::is_valid_utf8(*decoded))
            return done(error_response(request, 400, proto::error_code::bad_request,
                                       "path is not valid UTF-8 once percent-decoded"));
        p = std::move(*decoded);
    }
    const std::string& tenant_id = parts[2];
    auto who = identify(state_, tenant_id, request);
    if (who.kind == caller_kind::none)
        return done(error_response(request, 401, proto::error_code::unauthorized, "missing or invalid bearer token"));
    if (who.kind == caller_kind::other_tenant)
        return done(error_response(request, 403, proto::error_code::forbidden, "this token is for another tenant"));
    auto hubs = state_.hubs();
    auto hub_it = hubs->find(tenant_id);
    if (hub_it == hubs->end())
        return done(error_response(request, 404, proto::error_code::not_found, "no such tenant"));
    auto hub = hub_it->second;

    auto reply = [request_version = request.version(), keep_alive = request.keep_alive(), done](admin_reply r) {
        if (r.rest && request_version < 11) {
            // HTTP/1.0 has no chunks, and a body cut short by the connection's end would look complete.
            r = {505, proto::admin::encode_admin_error(proto::error_code::bad_request,
                                                       "this body is sent in chunks: ask again with HTTP/1.1")};
        }
        http_response response{static_cast<http::status>(r.status), request_version};
        response.set(http::field::server, "parleyd");
        response.set("X-Content-Type-Options", "nosniff");
        if (r.status != 204) response.set(http::field::content_type, r.content_type);
        if (r.retry_after_s > 0) response.set(http::field::retry_after, std::to_string(r.retry_after_s));
        response.keep_alive(keep_alive);
        if (r.rest) {
            response.chunked(true);  // the http_session pulls the body from r.rest
            return done(http_answer(std::move(response), std::move(r.rest)));
        }
        response.body() = std::move(r.body);
        response.prepare_payload();
        done(std::move(response));
    };

    // GET /v1/tenants/{t}/conversations/{id}/transcript.txt: admin or agent token.
    if (parts.size() == 6 && parts[3] == "conversations" && parts[5] == "transcript.txt") {
        if (!is_get) return done(error_response(request, 405, proto::error_code::bad_request, "use GET"));
        if (!valid_path_id(parts[4])) return done(error_response(request, 400, proto::error_code::bad_request, "bad conversation id"));
        return hub->transcript_text(parts[4], who.agent_id, reply);
    }
    if (who.kind != caller_kind::admin)
        return done(error_response(request, 403, proto::error_code::forbidden, "the admin API needs the tenant's admin token"));

    const auto& limits = *state_.limits();
    proto::limits proto_limits;
    proto_limits.max_frame_bytes = limits.http_body_max_bytes;
    proto_limits.max_text_chars = limits.max_text_chars;
    const std::string& body = request.body();
    auto bad = [&](const proto::protocol_error& e) {
        done(make_response(request, 400, proto::admin::encode_admin_error(e)));
    };
    const std::string resource = parts[3];

    if (resource == "agents" && parts.size() == 4) {
        if (!is_get) return done(error_response(request, 405, proto::error_code::bad_request, "use GET"));
        return hub->admin_list_agents(reply);
    }
    if (parts.size() == 5 && resource == "agents") {
        if (!valid_path_id(parts[4])) return done(error_response(request, 400, proto::error_code::bad_request, "bad agent id"));
        if (method == http::verb::put) {
            auto parsed = proto::admin::parse_agent_body(body, proto_limits);
            if (!parsed) return bad(parsed.error());
            return hub->admin_put_agent(parts[4], std::move(parsed.value()), reply);
        }
        if (method == http::verb::delete_) return hub->admin_delete_agent(parts[4], reply);
    }
    if (resource == "routes" && parts.size() == 4) {
        if (!is_get) return done(error_response(request, 405, proto::error_code::bad_request, "use GET"));
        return hub->admin_list_routes(reply);
    }
    if (parts.size() == 5 && resource == "routes") {
        if (!proto::is_valid_route_name(parts[4]))
            return done(error_response(request, 400, proto::error_code::bad_request,
                                       "route name must be 1..64 of A-Z a-z 0-9 . _ -"));
        if (method == http::verb::put) {
            auto parsed = proto::admin::parse_route_body(body, proto_limits);
            if (!parsed) return bad(parsed.error());
            return hub->admin_put_route(parts[4], std::move(parsed.value()), reply);
        }
        if (method == http::verb::delete_) return hub->admin_delete_route(parts[4], reply);
    }
    if (parts.size() == 5 && resource == "accounts") {
        if (!valid_path_id(parts[4], 253))
            return done(error_response(request, 400, proto::error_code::bad_request, "bad account domain"));
        if (method == http::verb::put) {
            auto parsed = proto::admin::parse_account_body(body, proto_limits);
            if (!parsed) return bad(parsed.error());
            return hub->admin_put_account(parts[4], parsed.value().agent_id, reply);
        }
        if (method == http::verb::delete_) return hub->admin_delete_account(parts[4], reply);
    }
    if (resource == "visitors" && parts.size() >= 5) {
        if (!valid_path_id(parts[4])) return done(error_response(request, 400, proto::error_code::bad_request, "bad visitor id"));
        if (parts.size() == 5 && method == http::verb::put) {
            auto parsed = proto::admin::parse_visitor_profile_body(body, proto_limits);
            if (!parsed) return bad(parsed.error());
            return hub->admin_put_visitor(parts[4], std::move(parsed.value()), reply);
        }
        if (parts.size() == 6 && parts[5] == "activities" && method == http::verb::post) {
            auto parsed = proto::admin::parse_activity_body(body, proto_limits);
            if (!parsed) return bad(parsed.error());
            return hub->admin_add_activity(parts[4], std::move(parsed.value()), reply);
        }
    }
    done(error_response(request, 404, proto::error_code::not_found, "no such endpoint or method"));
}

}  // namespace parley::server
