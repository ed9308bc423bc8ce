// Tenant administration (the admin API): persisted first, then applied to the
// running router on the strand. Changes hold the tenant's admin turn
// (admin_queue.h) from their checks until they answer, so every check sees what
// the changes before it did.
#include "tenant/tenant_hub.h"

#include <algorithm>

#include "parley/routing/route_graph.h"
#include "parley/routing/schedule.h"
#include "parley/server/logging.h"
#include "tenant/errors.h"
#include "base/json_fields.h"

namespace parley::server {

void tenant_hub::mutate(admin_done done, admin_queue::mutation m) {
    on_strand([self = shared_from_this(), done = std::move(done), m = std::move(m)]() mutable {
        self->admin_queue_->submit(std::move(done), std::move(m));
    });
}

void tenant_hub::admin_put_agent(std::string id, proto::admin::agent_body body, admin_done done) {
    auto record = agent_record_from_body(tenant_id_, id, body);
    auto config = agent_config_from_record(record);
    // Validate against the router's rules (time zone exists, ...) before storing anything.
    try {
        routing::resolved_schedule check(config.schedule);
    } catch (const std::exception& e) {
        return done(admin_error(400, proto::error_code::bad_request, std::string("schedule: ") + e.what()));
    }
    mutate(std::move(done), [self = shared_from_this(), record = std::move(record),
                             config = std::move(config)](admin_done finish) {
        const bool creating = self->agents_.count(record.id) == 0;
        if (creating) {
            const auto limit = self->net_->limits()->max_agents_per_tenant;
            if (self->agents_.size() >= limit) return finish(over_limit("agents", limit, "limits.max_agents_per_tenant"));
        }
        self->store_->put_agent(record, self->back_on_strand<void>([self, record, config, creating,
                                                                   finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            try {
                self->router_->upsert_agent(config, self->wall_now(), actions);
            } catch (const std::exception& e) {
                return finish(admin_error(400, proto::error_code::bad_request, e.what()));
            }
            self->agents_[record.id] = record;
            self->apply(actions);
            logger("route")->info("tenant {}: agent {} {}", self->tenant_id_, record.id, creating ? "created" : "updated");
            finish({creating ? 201 : 200, dump_stored(agent_record_to_json(record))});
        }));
    });
}

void tenant_hub::admin_delete_agent(std::string id, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), id = std::move(id)](admin_done finish) {
        if (self->agents_.count(id) == 0) return finish(admin_error(404, proto::error_code::not_found, "no such agent"));
        self->store_->delete_agent(self->tenant_id_, id, self->back_on_strand<void>([self, id, finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            self->router_->remove_agent(id, self->wall_now(), actions);
            self->agents_.erase(id);
            self->apply(actions);
            // Its sessions lose their standing: close them.
            for (auto sid : self->directory_.sessions_of(client_role::agent, id))
                if (auto* entry = self->directory_.find(sid))
                    entry->session()->close(static_cast<std::uint16_t>(4401), "agent deleted");
            finish({204, ""});
        }));
    });
}

void tenant_hub::admin_list_agents(admin_done done) {
    on_strand([self = shared_from_this(), done = std::move(done)] {
        nlohmann::json list = nlohmann::json::array();
        std::vector<const storage::agent_record*> sorted;
        for (const auto& [id, a] : self->agents_) sorted.push_back(&a);
        std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->id < b->id; });
        const auto now = self->wall_now();
        for (const auto* a : sorted) {
            auto json = agent_record_to_json(*a);
            if (auto availability = self->router_->availability_of(a->id, now))
                json["available"] = availability->available;
            if (auto snapshot = self->router_->agent(a->id)) {
                json["connected"] = snapshot->sessions > 0;
                json["active_chats"] = snapshot->active_conversations.size();
            }
            list.push_back(std::move(json));
        }
        done({200, dump_stored(nlohmann::json{{"agents", list}})});
    });
}

void tenant_hub::admin_put_route(std::string name, proto::admin::route_body body, admin_done done) {
    // Only the normalised route is kept and stored: unknown fields of the body go no further.
    auto route_json = route_json_from_body(body);
    // Parsed back as on load, with the configured defaults: what is accepted here loads again.
    auto parsed = route_config_from_json(name, route_json, routing_settings_);
    if (!parsed) return done({400, proto::admin::encode_admin_error(parsed.error())});
    auto config = std::move(parsed.value());
    storage::route_record record{tenant_id_, name, std::move(route_json)};
    mutate(std::move(done), [self = shared_from_this(), record = std::move(record),
                             config = std::move(config)](admin_done finish) {
        // A fallback_route must exist and must not lead back here.
        if (auto problem = routing::fallback_problem(self->routes_, config.name, config.fallback_route))
            return finish(admin_error(400, proto::error_code::bad_request, *problem));
        const bool creating = self->routes_.count(record.name) == 0;
        if (creating) {
            const auto limit = self->net_->limits()->max_routes_per_tenant;
            if (self->routes_.size() >= limit) return finish(over_limit("routes", limit, "limits.max_routes_per_tenant"));
        }
        self->store_->put_route(record, self->back_on_strand<void>([self, record, config, creating,
                                                                   finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            try {
                self->router_->upsert_route(config, self->wall_now(), actions);
            } catch (const std::exception& e) {
                return finish(admin_error(400, proto::error_code::bad_request, e.what()));
            }
            self->routes_[record.name] = config.fallback_route;
            self->apply(actions);
            logger("route")->info("tenant {}: route {} {}", self->tenant_id_, record.name, creating ? "created" : "updated");
            auto reply = record.config;
            reply["name"] = record.name;
            finish({creating ? 201 : 200, dump_stored(reply)});
        }));
    });
}

void tenant_hub::admin_delete_route(std::string name, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), name = std::move(name)](admin_done finish) {
        if (self->routes_.count(name) == 0) return finish(admin_error(404, proto::error_code::not_found, "no such route"));
        // A route another one falls back to stays: deleting it would leave that one pointing nowhere.
        const auto users = routing::routes_falling_back_to(self->routes_, name);
        if (!users.empty()) {
            std::string list;
            for (const auto& user : users) list += (list.empty() ? "" : ", ") + user;
            return finish(admin_error(409, proto::error_code::conflict,
                                      "route " + name + " is the fallback_route of " + list + "; change or delete " +
                                          (users.size() == 1 ? "it" : "them") + " first"));
        }
        self->store_->delete_route(self->tenant_id_, name, self->back_on_strand<void>([self, name, finish](storage::status s) {
            if (!s) return finish(admin_storage_error(s.failure()));
            routing::actions actions;
            self->router_->remove_route(name, self->wall_now(), actions);
            self->routes_.erase(name);
            self->apply(actions);
            finish({204, ""});
        }));
    });
}

void tenant_hub::admin_list_routes(admin_done done) {
    // From storage, on a reader thread: the running router keeps no copy of the stored form.
    store_->list_routes(tenant_id_, [tenant_id = tenant_id_, done = std::move(done)](
                                        storage::result<std::vector<storage::route_record>> routes) {
        if (!routes) return done(admin_storage_error(routes.failure()));
        auto& records = routes.value();
        std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
        nlohmann::json list = nlohmann::json::array();
        for (const auto& r : records) {
            // Normalised again: a row an older version stored raw shows no unknown field. One
            // that is not a valid route was skipped by load() and is not in effect.
            auto normalised = normalised_route_json(r.config);
            if (!normalised) continue;
            normalised.value()["name"] = r.name;
            list.push_back(std::move(normalised.value()));
        }
        done({200, dump_stored(nlohmann::json{{"routes", std::move(list)}})});
    });
}

namespace {

std::string lowercase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    return text;
}

}  // namespace

void tenant_hub::admin_put_account(std::string key, std::string agent_id, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), domain = lowercase(std::move(key)),
                             agent_id = std::move(agent_id)](admin_done finish) {
        if (self->agents_.count(agent_id) == 0)
            return finish(admin_error(400, proto::error_code::bad_request, "agent_id: no such agent"));
        if (!self->router_->has_account(domain)) {
            const auto limit = self->net_->limits()->max_accounts_per_tenant;
            if (self->router_->account_count() >= limit)
                return finish(over_limit("accounts", limit, "limits.max_accounts_per_tenant"));
        }
        self->store_->put_account({self->tenant_id_, domain, agent_id},
                                  self->back_on_strand<void>([self, domain, agent_id, finish](storage::status s) {
                                      if (!s) return finish(admin_storage_error(s.failure()));
                                      self->router_->upsert_account(domain, agent_id);
                                      finish({200, dump_stored(nlohmann::json{{"domain", domain}, {"agent_id", agent_id}})});
                                  }));
    });
}

void tenant_hub::admin_delete_account(std::string key, admin_done done) {
    mutate(std::move(done), [self = shared_from_this(), domain = lowercase(std::move(key))](admin_done finish) {
        if (!self->router_->has_account(domain))
            return finish(admin_error(404, proto::error_code::not_found, "no such account"));
        self->store_->delete_account(self->tenant_id_, domain,
                                     self->back_on_strand<void>([self, domain, finish](storage::status s) {
                                         if (!s) return finish(admin_storage_error(s.failure()));
                                         self->router_->remove_account(domain);
                                         finish({204, ""});
                                     }));
    });
}

void tenant_hub::admin_put_visitor(std::string id, proto::visitor_profile profile, admin_done done) {
    // The body is the whole card: a field left out is cleared.
    store_->replace_visitor(visitor_record_from(tenant_id_, id, profile, to_millis(wall_now())),
                            back_on_strand<void>([self = shared_from_this(), id, profile, done = std::move(done)](
                                                     storage::status s) {
                                if (!s) return done(admin_storage_error(s.failure()));
                                // A connected visitor and its open conversation show the new card at once.
                                if (auto known = self->visitor_profiles_.find(id); known != self->visitor_profiles_.end())
                                    known->second = profile;
                                if (auto cid = self->router_->open_conversation_of_visitor(id))
                                    if (auto* c = self->find_conversation(*cid)) c->profile = profile;
                                done({200, dump_stored(nlohmann::json{{"id", id}})});
                            }));
}

void tenant_hub::admin_add_activity(std::string visitor_id, proto::admin::activity_body body, admin_done done) {
    storage::activity_record activity;
    activity.tenant_id = tenant_id_;
    activity.visitor_id = visitor_id;
    activity.type = body.type;
    activity.at = body.at;
    if (!body.details_json.empty()) activity.details = nlohmann::json::parse(body.details_json, nullptr, false);
    store_->append_activity(std::move(activity), [done = std::move(done)](storage::status s) {
        if (!s) return done(admin_storage_error(s.failure()));
        done({201, "{}"});
    });
}

}  // namespace parley::server
