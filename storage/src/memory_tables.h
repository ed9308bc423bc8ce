#pragma once
// The tables of a memory store and every query on them: what queries.cpp says
// in SQL, said again over maps, with the same keys, orders, retention window
// and cursors (store_rules.h) and the same outcomes (a resent client_msg_id,
// a taken seq, an offer no longer pending). Ids compare as bytes, as SQLite's
// do. As in the schema, messages do not need a conversation row (a transcript
// without one is not_found), and deleting a row deletes nothing else but an
// agent's availability override. Not thread-safe: the memory store holds its
// database's lock around every call.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "parley/storage/records.h"
#include "parley/storage/result.h"

namespace parley::storage::detail {

class memory_tables {
public:
    // --- writes ---
    void put_tenant(const tenant_record& tenant);
    void put_agent(const agent_record& agent);
    // False when there was no such agent. Its availability override goes with it.
    bool delete_agent(const std::string& tenant_id, const std::string& agent_id);
    void put_route(const route_record& route);
    bool delete_route(const std::string& tenant_id, const std::string& name);
    void put_account(const account_record& account);
    bool delete_account(const std::string& tenant_id, const std::string& domain);
    void put_visitor(const visitor_record& visitor);      // a field left nullopt keeps its stored value
    void replace_visitor(const visitor_record& visitor);  // the whole card
    void save_conversation(const conversation_record& conversation);
    void put_offer(const offer_record& offer);
    // ok, not_found, or conflict when the offer is no longer pending.
    error_kind resolve_offer(const std::string& tenant_id, const std::string& offer_id, offer_outcome outcome,
                             millis at);
    void append_activity(activity_record activity);  // numbered here, in the order stored
    void set_override(const availability_override& value);
    void clear_override(const std::string& tenant_id, const std::string& agent_id);
    // Stored; or the message already is (a retry: success, same seq); or its
    // client_msg_id is (duplicate, the stored seq); or another holds its seq (conflict).
    result<append_outcome> append_message(const message_record& message);

    // --- reads ---
    std::vector<tenant_record> list_tenants() const;
    std::vector<agent_record> list_agents(const std::string& tenant_id) const;
    std::vector<route_record> list_routes(const std::string& tenant_id) const;
    std::vector<account_record> list_accounts(const std::string& tenant_id) const;
    result<visitor_record> get_visitor(const std::string& tenant_id, const std::string& visitor_id) const;
    result<conversation_record> get_conversation(const std::string& tenant_id,
                                                 const std::string& conversation_id) const;
    result<conversation_page> list_conversations(const conversation_query& query, int retention_days) const;
    result<activity_page> get_activity(const activity_query& query, int retention_days) const;
    result<message_page> get_transcript(const std::string& tenant_id, const std::string& conversation_id,
                                        std::int64_t after_seq, int limit, millis now, int retention_days) const;
    result<std::vector<message_record>> messages_after(const std::string& tenant_id, const std::string& conversation_id,
                                                       std::int64_t after_seq, int limit, millis now,
                                                       int retention_days) const;
    open_state load_open_state(const std::optional<std::string>& tenant_id, millis now, int retention_days) const;

    // --- retention ---
    // What a prune deletes, in this order: a visitor's card goes with the last
    // of its conversations and activities, so after them.
    enum class prunable { messages, activities, conversations, offers, visitors };
    // Deletes at most `batch` rows of `what` older than `cutoff` (see
    // store::prune for which); returns how many it deleted.
    std::size_t prune_some(prunable what, millis cutoff, std::size_t batch);

private:
    using key = std::pair<std::string, std::string>;  // tenant id, then the row's own id
    // One conversation's messages, and its client_msg_ids (unique per conversation).
    struct message_log {
        std::map<std::int64_t, message_record> by_seq;
        std::unordered_map<std::string, std::int64_t> seq_of_client_id;
    };

    std::optional<visitor_record> visitor_of(const std::string& tenant_id, const std::string& visitor_id) const;
    // The newest message not older than `cutoff`, and the highest seq at all.
    std::optional<message_record> last_message(const key& conversation, millis cutoff) const;
    std::int64_t last_seq(const key& conversation) const;

    std::map<std::string, nlohmann::json> tenants_;
    std::map<key, agent_record> agents_;
    std::map<key, route_record> routes_;
    std::map<key, account_record> accounts_;
    std::map<key, visitor_record> visitors_;
    std::map<key, conversation_record> conversations_;
    std::map<key, message_log> messages_;  // by conversation
    std::map<key, offer_record> offers_;
    std::map<std::int64_t, activity_record> activities_;  // by id
    std::int64_t last_activity_id_ = 0;                   // never reused, as a serial column
    std::map<key, availability_override> overrides_;      // by agent
};

}  // namespace parley::storage::detail
