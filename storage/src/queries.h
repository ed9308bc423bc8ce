#pragma once
// Every query of the storage library, written once for both dialects.
// Write functions run inside the caller's transaction; read functions run
// outside one. All throw on failure (see sql_connection::classify).
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "sql.h"
#include "store_rules.h"

namespace parley::storage::detail {

int known_schema_version();
std::vector<std::string> migrations_for(dialect d);
// Applies missing migrations (up to `target`, 0 for all) in one exclusive
// transaction and returns the version. Throws storage_error when the database
// is newer than this binary.
int migrate(sql_connection& c, int target = 0);
// 0 for an empty database.
int current_schema_version(sql_connection& c);
void force_schema_version(sql_connection& c, int version);

void put_tenant(sql_connection& c, const tenant_record& tenant);
void put_agent(sql_connection& c, const agent_record& agent);
bool delete_agent(sql_connection& c, const std::string& tenant_id, const std::string& agent_id);
void put_route(sql_connection& c, const route_record& route);
bool delete_route(sql_connection& c, const std::string& tenant_id, const std::string& name);
void put_account(sql_connection& c, const account_record& account);
bool delete_account(sql_connection& c, const std::string& tenant_id, const std::string& domain);
void put_visitor(sql_connection& c, const visitor_record& visitor);
void replace_visitor(sql_connection& c, const visitor_record& visitor);
void save_conversation(sql_connection& c, const conversation_record& conversation);
void put_offer(sql_connection& c, const offer_record& offer);
error_kind resolve_offer(sql_connection& c, const std::string& tenant_id, const std::string& offer_id,
                         offer_outcome outcome, millis at);
// `unless_stored`: insert only if an identical row is not there (a retry after an unknown COMMIT outcome).
void append_activity(sql_connection& c, const activity_record& activity, bool unless_stored = false);
void set_override(sql_connection& c, const availability_override& value);
bool clear_override(sql_connection& c, const std::string& tenant_id, const std::string& agent_id);

// Single-row message insert, shared by the default append_messages.
result<append_outcome> append_message_row(sql_connection& c, const message_record& message);
// After an insert that did nothing: the stored duplicate, or a conflict.
result<append_outcome> resolve_message_conflict(sql_connection& c, const message_record& message);

std::vector<tenant_record> list_tenants(sql_connection& c);
std::vector<agent_record> list_agents(sql_connection& c, const std::string& tenant_id);
std::vector<route_record> list_routes(sql_connection& c, const std::string& tenant_id);
std::vector<account_record> list_accounts(sql_connection& c, const std::string& tenant_id);
result<visitor_record> get_visitor(sql_connection& c, const std::string& tenant_id, const std::string& visitor_id);
result<conversation_record> get_conversation(sql_connection& c, const std::string& tenant_id,
                                             const std::string& conversation_id);
result<conversation_page> list_conversations(sql_connection& c, const conversation_query& query, int retention_days);
result<activity_page> get_activity(sql_connection& c, const activity_query& query, int retention_days);
result<message_page> get_transcript(sql_connection& c, const std::string& tenant_id,
                                    const std::string& conversation_id, std::int64_t after_seq, int limit, millis now,
                                    int retention_days);
result<std::vector<message_record>> messages_after(sql_connection& c, const std::string& tenant_id,
                                                   const std::string& conversation_id, std::int64_t after_seq,
                                                   int limit, millis now, int retention_days);
open_state load_open_state(sql_connection& c, const std::optional<std::string>& tenant_id, millis now,
                           int retention_days);
prune_report prune(sql_connection& c, millis now, int retention_days, std::size_t batch,
                   const std::function<bool()>& stop_requested = {});

}  // namespace parley::storage::detail
