#pragma once
// Translations between the vocabularies of the libraries server/ wires
// together: admin bodies and wire messages (proto), the routing core's config
// and events (routing), and stored rows (storage). Kept in one place so each
// library stays independent of the others.
#include <chrono>
#include <optional>
#include <string>

#include "parley/config/config.h"
#include "parley/proto/admin.h"
#include "parley/proto/encode.h"
#include "parley/routing/actions.h"
#include "parley/routing/config.h"
#include "parley/storage/records.h"

namespace parley::server {

routing::time_point to_time_point(storage::millis ms);
storage::millis to_millis(routing::time_point t);

// Agents: admin body -> stored row -> routing config. The stored schedule is
// the wire form ({tz, blocks:[{day:"mon",start:"08:00",end:"12:00"}]}).
storage::agent_record agent_record_from_body(const std::string& tenant, const std::string& id,
                                             const proto::admin::agent_body& body);
nlohmann::json agent_record_to_json(const storage::agent_record& agent);
routing::agent_config agent_config_from_record(const storage::agent_record& agent);

// Routes are stored as the normalised form of their admin body: only the fields
// protocol.md defines, as parsed (unknown fields dropped, null left out, so a
// stored route holds no more than a route needs). offer_timeout_s and
// max_attempts stay absent when the body left them out, so the configured
// defaults keep applying. This is also what the PUT reply echoes.
nlohmann::json route_json_from_body(const proto::admin::route_body& body);
// A stored route in that normalised form, or why it is not a valid route (rows
// written by older builds hold the body as it was sent: unknown fields, nulls).
proto::parse_result<nlohmann::json> normalised_route_json(const nlohmann::json& stored);
// The body parser validates stored routes again on load.
proto::parse_result<routing::route_config> route_config_from_json(const std::string& name, const nlohmann::json& body,
                                                                  const config::routing_config& defaults);

routing::tenant_settings tenant_settings_from(const config::routing_config& routing);

routing::visitor_profile routing_profile(const proto::visitor_profile& profile);
proto::visitor_profile proto_profile(const storage::visitor_record& visitor);
storage::visitor_record visitor_record_from(const std::string& tenant, const std::string& id,
                                            const proto::visitor_profile& profile, storage::millis written_at);

proto::conversation_state to_proto(routing::conversation_state state);
proto::conversation_state to_proto(storage::conversation_state state);
storage::conversation_state to_storage(routing::conversation_state state);
routing::conversation_state to_routing(storage::conversation_state state);
proto::end_reason to_proto(routing::end_reason reason);
proto::withdraw_reason to_proto(routing::withdraw_reason reason);
proto::availability to_proto(const routing::availability& availability);
const char* activity_name(routing::activity_type type);
std::string end_reason_name(routing::end_reason reason);

proto::chat_message chat_message_from(const storage::message_record& message);

}  // namespace parley::server
