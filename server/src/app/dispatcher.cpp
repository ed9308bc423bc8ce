#include "app/dispatcher.h"

#include "base/metrics.h"
#include "parley/proto/encode.h"
#include "parley/server/auth.h"
#include "parley/server/logging.h"

namespace parley::server {

namespace {
std::optional<std::string_view> re_of(const std::optional<std::string>& re) {
    return re ? std::optional<std::string_view>(*re) : std::nullopt;
}
}  // namespace

namespace {

// An agent token is accepted until its exp plus the leeway: the session closes (4401) then.
std::chrono::system_clock::time_point agent_credentials_end(std::int64_t exp_s) {
    return std::chrono::system_clock::time_point(std::chrono::seconds(exp_s + token_leeway_s));
}

std::int64_t to_ms(std::chrono::system_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

void watch_agent_credentials(websocket_session& session, std::chrono::system_clock::time_point end) {
    session.expire_credentials_at(end, make_frame(proto::encode_credentials_expiring_event(to_ms(end))));
}

// The frames of an authenticated session, for the hub of its hello.
class hub_binding final : public frame_handler {
public:
    hub_binding(const dispatcher& decoder, std::weak_ptr<tenant_hub> hub) : decoder_(decoder), hub_(std::move(hub)) {}
    void on_text(const std::shared_ptr<websocket_session>& session, std::string&& text) override {
        auto frame = decoder_.decode(*session, text);
        if (!frame) return;
        if (auto* reauth = std::get_if<proto::requests::reauth>(&frame->request))
            return renew(*session, frame->id, reauth->token);
        if (auto hub = hub_.lock()) hub->request(session, std::move(*frame));
    }
    // A fresh token for the same agent of the same tenant moves the session's end; a bad one
    // is refused and changes nothing (the session still ends when its token does).
    void renew(websocket_session& session, const std::optional<std::string>& re, const std::string& token) {
        auto refuse = [&](const std::string& why) {
            global_metrics().hello_refusals++;
            session.send(make_frame(proto::encode_error(re_of(re), proto::error_code::unauthorized, why)));
        };
        auto hub = hub_.lock();
        if (!hub) return refuse("the tenant is gone");
        auto verified = verify_agent_token(hub->tenant()->agent_secret, token, std::chrono::system_clock::now(),
                                           session.who().tenant);
        if (!verified.claims) return refuse(to_string(verified.error));
        if (verified.claims->agent_id != session.who().principal) return refuse("the token is for another agent");
        const auto end = agent_credentials_end(verified.claims->expires_at_s);
        watch_agent_credentials(session, end);
        if (re) session.send(make_frame(proto::encode_reauth_ok(*re, to_ms(end))));
    }
    void on_closed(const std::shared_ptr<websocket_session>& session) override {
        if (auto hub = hub_.lock()) hub->session_closed(session);
    }

private:
    const dispatcher& decoder_;  // owned by the net_context, which the session owns
    std::weak_ptr<tenant_hub> hub_;
};
}  // namespace

dispatcher::dispatcher(shared_state& state) : state_(state) {}

proto::limits dispatcher::current_limits() const {
    auto configured = state_.limits();
    proto::limits limits;
    limits.max_frame_bytes = configured->max_frame_bytes;
    limits.max_text_chars = configured->max_text_chars;
    return limits;
}

std::optional<proto::client_frame> dispatcher::decode(websocket_session& session, const std::string& text) const {
    auto& m = global_metrics();
    m.frames_in++;
    auto role = session.role() == client_role::agent ? proto::role::agent : proto::role::visitor;
    auto parsed = proto::parse_client_frame(text, role, current_limits());
    if (!session.admit_client_frame()) {
        m.rate_limited_frames++;
        std::optional<std::string> re = parsed ? parsed.value().id : parsed.error().re;
        session.send(make_frame(proto::encode_error(re_of(re), proto::error_code::rate_limited,
                                                    "too many frames; slow down")));
        return std::nullopt;
    }
    if (!parsed) {
        m.protocol_errors++;
        session.send(make_frame(proto::encode_error(parsed.error())));
        return std::nullopt;
    }
    return std::move(parsed.value());
}

// Frames before the hello's success.
void dispatcher::on_text(const std::shared_ptr<websocket_session>& session, std::string&& text) {
    auto frame = decode(*session, text);
    if (!frame) return;
    bool is_hello = std::holds_alternative<proto::requests::visitor_hello>(frame->request) ||
                    std::holds_alternative<proto::requests::agent_hello>(frame->request);
    if (!is_hello) {
        global_metrics().protocol_errors++;
        session->send(make_frame(
            proto::encode_error(re_of(frame->id), proto::error_code::unauthorized, "the first frame must be hello")));
        return;
    }
    hello(session, *frame);
}

void dispatcher::refuse(const std::shared_ptr<websocket_session>& session, const std::optional<std::string>& re,
                        const std::string& why) {
    global_metrics().hello_refusals++;
    auto log = logger("net");
    if (refusal_log_.admit(*log)) log->info("[C{}] hello refused: {}", session->id(), why);
    session->send(make_frame(proto::encode_error(re_of(re), proto::error_code::unauthorized, why)));
    session->close(static_cast<std::uint16_t>(4401), "bad or expired credentials");
}

void dispatcher::hello(const std::shared_ptr<websocket_session>& session, proto::client_frame& frame) {
    if (state_.draining.load()) {
        session->send(make_frame(proto::encode_error(re_of(frame.id), proto::error_code::unavailable,
                                                     "server shutting down; reconnect")));
        return session->close(websocket::close_code::going_away, "server shutting down");
    }
    const auto now = std::chrono::system_clock::now();
    if (auto* agent = std::get_if<proto::requests::agent_hello>(&frame.request)) {
        // The tenant is read from the unverified token only to pick the key that verifies it.
        auto tenant = unverified_claim(agent->token, "tenant");
        auto hubs = state_.hubs();
        auto hub = tenant ? hubs->find(*tenant) : hubs->end();
        if (hub == hubs->end()) return refuse(session, frame.id, "token names no known tenant");
        auto verified = verify_agent_token(hub->second->tenant()->agent_secret, agent->token, now, *tenant);
        if (!verified.claims) return refuse(session, frame.id, to_string(verified.error));
        session->authenticate({*tenant, verified.claims->agent_id, std::nullopt},
                              std::make_shared<hub_binding>(*this, hub->second));
        watch_agent_credentials(*session, agent_credentials_end(verified.claims->expires_at_s));
        hub->second->agent_hello(session, frame.id, verified.claims->agent_id);
        return;
    }
    auto& visitor = std::get<proto::requests::visitor_hello>(frame.request);
    auto hubs = state_.hubs();
    auto hub = hubs->find(visitor.tenant);
    if (hub == hubs->end()) return refuse(session, frame.id, "unknown tenant");
    const auto tenant_snapshot = hub->second->tenant();
    const auto& tenant = *tenant_snapshot;
    std::string visitor_id;
    std::optional<std::int64_t> expires_at_s;
    auto profile = visitor.profile;
    if (visitor.visitor_token) {
        // exp and tenant are required: a token that never expires, or that does not say which
        // tenant it is for, is a credential that can only be revoked by rotating the secret.
        auto verified = verify_hs256(tenant.widget_secret, *visitor.visitor_token, now, true);
        if (!verified.claims) return refuse(session, frame.id, std::string("visitor_token: ") + to_string(verified.error));
        const auto& claims = *verified.claims;
        auto sub = claims.find("sub");
        if (sub == claims.end() || !sub->is_string() || sub->get_ref<const std::string&>().empty() ||
            sub->get_ref<const std::string&>().size() > 128)
            return refuse(session, frame.id, "visitor_token: sub must be the visitor id");
        auto t = claims.find("tenant");
        if (t == claims.end()) return refuse(session, frame.id, "visitor_token: the tenant claim is required");
        if (!t->is_string() || *t != tenant.id) return refuse(session, frame.id, "visitor_token: issued for another tenant");
        visitor_id = *sub;
        if (auto exp = claims.find("exp"); exp != claims.end() && exp->is_number_integer())
            expires_at_s = exp->get<std::int64_t>();
        // The tenant vouches for these: they win over what the widget says.
        auto claim = [&](const char* name, std::optional<std::string>& field) {
            if (auto c = claims.find(name); c != claims.end() && c->is_string() && c->get_ref<const std::string&>().size() <= 254)
                field = c->get<std::string>();
        };
        claim("name", profile.name);
        claim("job_title", profile.job_title);
        claim("email", profile.email);
        claim("phone", profile.phone);
        claim("crm_status", profile.crm_status);
        claim("company", profile.company);
    } else if (visitor.resume_token) {
        auto resumed = verify_resume_token(tenant.widget_secret, tenant.id, *visitor.resume_token, now);
        if (!resumed) return refuse(session, frame.id, "resume_token is invalid or expired");
        visitor_id = resumed->visitor_id;
        expires_at_s = resumed->expires_at_s;
    } else if (tenant.allow_anonymous) {
        visitor_id = random_id("v_");
    } else {
        return refuse(session, frame.id, "this tenant requires a visitor_token");
    }
    bool profile_given = profile != proto::visitor_profile{};
    session->authenticate({tenant.id, visitor_id, expires_at_s}, std::make_shared<hub_binding>(*this, hub->second));
    hub->second->visitor_hello(session, frame.id, visitor_id, std::move(profile), profile_given);
}

// A session that never passed its hello: no hub knows it.
void dispatcher::on_closed(const std::shared_ptr<websocket_session>&) {}

}  // namespace parley::server
