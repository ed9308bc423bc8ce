// The storage contract: every test here runs against SQLite (storage_sqlite_tests),
// PostgreSQL (storage_pg_tests) and the memory store (storage_memory_tests), each
// test case on an empty database. The memory store skips only the tests tagged
// PARLEY_NEEDS_DATABASE (test_database.h), each with its reason above it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <future>
#include <sstream>
#include <thread>
#include <vector>

#include "parley/storage/store.h"
#include "parley/storage/testing.h"
#include "test_database.h"

using namespace parley::storage;
using parley::storage::test::make_test_database;
using parley::storage::test::wait_for;

namespace {

constexpr millis day = 24LL * 3600 * 1000;
constexpr millis now = 1'750'000'000'000;  // a fixed "now"; tests move time by passing other values

std::unique_ptr<store> open_ok(const test::test_database& db, store_options options = {}) {
    auto opened = test::open_test_store(db, options);
    INFO((opened.ok() ? std::string() : opened.failure().message));
    REQUIRE(opened.ok());
    return std::move(opened).value();
}

void require_ok(const status& s) {
    INFO((s.ok() ? std::string() : s.failure().message));
    REQUIRE(s.ok());
}

status put_agent(store& s, agent_record a) { return wait_for<void>([&](auto done) { s.put_agent(a, done); }); }

message_record text_message(const std::string& tenant, const std::string& conversation, std::int64_t seq, millis at,
                            std::optional<std::string> client_msg_id = std::nullopt) {
    message_record m;
    m.tenant_id = tenant;
    m.conversation_id = conversation;
    m.seq = seq;
    m.sender = seq % 2 ? sender_kind::visitor : sender_kind::agent;
    if (m.sender == sender_kind::agent) m.agent_id = "a1";
    m.body = "message " + std::to_string(seq) + " \"quoted\" \\ {braces}, commas";
    m.client_msg_id = std::move(client_msg_id);
    m.at = at;
    return m;
}

result<append_outcome> append(store& s, message_record m) {
    return wait_for<append_outcome>([&](auto done) { s.append_message(m, done); });
}

// A whole transcript, read as every caller must: a page (`page` messages) at a time.
result<std::vector<message_record>> whole_transcript(store& s, const std::string& tenant,
                                                     const std::string& conversation_id, millis at,
                                                     int page = max_message_page) {
    std::vector<message_record> all;
    std::int64_t after_seq = 0;
    for (;;) {
        auto next = wait_for<message_page>(
            [&](auto done) { s.get_transcript(tenant, conversation_id, after_seq, page, at, done); });
        if (!next) return next.failure();
        for (auto& m : next->messages) all.push_back(std::move(m));
        if (!next->next_after_seq) return all;
        after_seq = *next->next_after_seq;
    }
}

conversation_record conversation(const std::string& tenant, const std::string& id, millis started_at,
                                 conversation_state state = conversation_state::active,
                                 std::optional<std::string> agent = "a1") {
    conversation_record c;
    c.tenant_id = tenant;
    c.id = id;
    c.visitor_id = "v-" + id;
    c.route = "sales";
    c.state = state;
    c.agent_id = std::move(agent);
    c.started_at = started_at;
    return c;
}

status save(store& s, conversation_record c) {
    return wait_for<void>([&](auto done) { s.save_conversation(c, done); });
}

// Retention tests: 90 days, `prune_batch` rows per delete; `old` is past the window.
constexpr millis old = now - 91 * day;

std::unique_ptr<store> open_for_retention(const test::test_database& db, std::size_t prune_batch) {
    store_options options;
    options.retention_days = 90;
    options.prune_batch = prune_batch;
    return open_ok(db, options);
}

}  // namespace

// Needs a database: SQL schema migrations and their version table; a memory store has no schema.
TEST_CASE("migrations are idempotent and a newer schema is refused",
          "[storage][migrations]" PARLEY_NEEDS_DATABASE) {
    auto db = make_test_database("migrations");
    {
        auto s = open_ok(db);
        CHECK(s->backend_name() == test::backend_name());
        auto version = s->schema_version();
        REQUIRE(version.ok());
        CHECK(version.value() == binary_schema_version());
        CHECK(s->ready());
    }
    // Applying again changes nothing.
    auto again = migrate(db.url);
    REQUIRE(again.ok());
    CHECK(again.value() == binary_schema_version());
    { open_ok(db); }

    require_ok(testing::force_schema_version(db.url, binary_schema_version() + 1));
    auto refused = open_store(db.url);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.failure().kind == error_kind::internal);
    CHECK_THAT(refused.failure().message, Catch::Contains("newer than this parleyd"));
    auto refused_migrate = migrate(db.url);
    REQUIRE_FALSE(refused_migrate.ok());
    CHECK_THAT(refused_migrate.failure().message, Catch::Contains("newer"));
}

// Needs a database: it builds an old schema with SQL and migrates it; a memory store has no schema.
TEST_CASE("a database an older parleyd left (schema 2) migrates with its data",
          "[storage][migrations]" PARLEY_NEEDS_DATABASE) {
    auto db = make_test_database("migrate_v2");
    require_ok(testing::migrate_to(db.url, 2));
    // Schema 2 stored client_msg_ids raw and visitor cards without a date.
    require_ok(testing::exec_sql(
        db.url,
        "INSERT INTO visitors (tenant_id, id, name, email) VALUES ('acme', 'v-c1', 'Ada', 'ada@x.io'), "
        "('acme', 'v-lonely', 'Bo', NULL);"
        "INSERT INTO conversations (tenant_id, id, visitor_id, route, state, agent_id, started_at) "
        "VALUES ('acme', 'c1', 'v-c1', 'sales', 'active', 'a1', 1749999999000);"
        "INSERT INTO messages (tenant_id, conversation_id, seq, sender, agent_id, kind, body, client_msg_id, at) VALUES "
        "('acme', 'c1', 1, 'visitor', NULL, 'text', 'hello', 'm-1', 1749999999500),"
        "('acme', 'c1', 2, 'agent', 'a1', 'text', 'hi', 'm-2', 1749999999600);"));

    auto s = open_ok(db);
    CHECK(s->schema_version().value() == binary_schema_version());
    auto card = wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "v-c1", done); });
    REQUIRE(card.ok());
    CHECK(card->name == std::optional<std::string>("Ada"));
    // The stored ids are now scoped by sender, as the server sends them.
    auto visitor_resend = append(*s, text_message("acme", "c1", 3, now, "v:m-1"));
    REQUIRE(visitor_resend.ok());
    CHECK(visitor_resend->duplicate);
    CHECK(visitor_resend->seq == 1);
    auto agent_resend = append(*s, text_message("acme", "c1", 3, now, "a:2:a1:m-2"));
    REQUIRE(agent_resend.ok());
    CHECK(agent_resend->duplicate);
    CHECK(agent_resend->seq == 2);
    auto agents_own = append(*s, text_message("acme", "c1", 3, now, "a:2:a1:m-1"));  // not the visitor's m-1
    REQUIRE(agents_own.ok());
    CHECK_FALSE(agents_own->duplicate);
    CHECK(agents_own->seq == 3);
    // A card from before the migration counts as written at the migration (today, after the
    // tests' fixed `now`): no prune takes it until a full window has passed since.
    store_options options;
    options.retention_days = 90;
    auto pruning = open_ok(db, options);
    auto exists = [&](const char* id) {
        return wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", id, done); }).ok();
    };
    REQUIRE(pruning->prune(now).ok());
    CHECK(exists("v-lonely"));
    auto far_future = pruning->prune(now + 10 * 365 * day);
    REQUIRE(far_future.ok());
    CHECK(far_future->visitors == 1);
    CHECK_FALSE(exists("v-lonely"));
    CHECK(exists("v-c1"));  // still in use: its conversation is open
}

// Needs a database: migrate_on_open and `parleyd migrate`; a memory store has no schema to be behind.
TEST_CASE("a database without the schema is refused when migrating on open is off",
          "[storage][migrations]" PARLEY_NEEDS_DATABASE) {
    auto db = make_test_database("nomigrate");
    store_options options;
    options.migrate_on_open = false;
    auto refused = open_store(db.url, options);
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(refused.failure().message, Catch::Contains("parleyd migrate"));
    REQUIRE(migrate(db.url).ok());
    open_ok(db, options);
}

// Needs a database: storage URLs (memory_store_tests.cpp checks the options part for the memory store).
TEST_CASE("bad URLs and options are refused with a clear error", "[storage]" PARLEY_NEEDS_DATABASE) {
    auto unknown = open_store("mysql://localhost/db");
    REQUIRE_FALSE(unknown.ok());
    CHECK(unknown.failure().kind == error_kind::bad_request);
    CHECK_THAT(unknown.failure().message, Catch::Contains("postgresql://"));

    auto relative = open_store("sqlite://relative.db");
    REQUIRE_FALSE(relative.ok());
    CHECK(relative.failure().kind == error_kind::bad_request);
    CHECK_THAT(relative.failure().message, Catch::Contains("absolute path"));

    auto missing_dir = open_store("sqlite:///nonexistent-dir-for-parley/x.db");
    REQUIRE_FALSE(missing_dir.ok());
    CHECK_THAT(missing_dir.failure().message, Catch::Contains("does not exist"));

    auto bad_pg = open_store("postgresql://parley@127.0.0.1:1/db?no_such_option=1");
    REQUIRE_FALSE(bad_pg.ok());
    CHECK(bad_pg.failure().kind == error_kind::bad_request);

    // Nobody listens on port 1: the database is unreachable, which is not the caller's fault.
    auto unreachable = open_store("postgresql://parley@127.0.0.1:1/none?connect_timeout=2");
    REQUIRE_FALSE(unreachable.ok());
    CHECK(unreachable.failure().kind == error_kind::unavailable);

    auto db = make_test_database("options");
    store_options options;
    options.batch_max = 0;
    auto bad_options = open_store(db.url, options);
    REQUIRE_FALSE(bad_options.ok());
    CHECK(bad_options.failure().kind == error_kind::bad_request);
}

// Needs a database: storage URLs; a memory store is made without one.
TEST_CASE("a refused storage URL's error quotes neither the URL nor its password",
          "[storage]" PARLEY_NEEDS_DATABASE) {
    // libpq's own parse message quotes the bad part: `invalid percent-encoded token: "Sup3r%Secret"`.
    const std::vector<std::string> urls{
        "postgresql://parley:Sup3r%Secret@127.0.0.1:1/db",
        "postgres://parley@127.0.0.1:1/db?password=Sup3r%Secret",
        "postgresql://parley:Sup3r/Secret@127.0.0.1:1/db",  // bare '/': "Sup3r" would be the port
        "postgresql://parley:Sup3r@Secret@127.0.0.1:1/db",  // bare '@': "Secret@127.0.0.1" would be the host
        "sqlite://Sup3rSecret.db",
        "sqlite:///tmp/Sup3rSecret.db?mode=ro",
        "mysql://parley:Sup3rSecret@127.0.0.1/db",
    };
    for (const auto& url : urls) {
        INFO(url);
        auto opened = open_store(url);
        REQUIRE_FALSE(opened.ok());
        CHECK(opened.failure().kind == error_kind::bad_request);
        CHECK_THAT(opened.failure().message, !Catch::Contains("Sup3r") && !Catch::Contains("Secret"));
        auto migrated = migrate(url);
        REQUIRE_FALSE(migrated.ok());
        CHECK(migrated.failure().kind == error_kind::bad_request);
        CHECK_THAT(migrated.failure().message, !Catch::Contains("Sup3r") && !Catch::Contains("Secret"));
    }
    CHECK_THAT(open_store(urls[0]).failure().message, Catch::Contains("percent-encoding"));
}

TEST_CASE("tenants, agents, routes and accounts: upsert, list, delete, per tenant", "[storage][admin]") {
    auto db = make_test_database("admin");
    auto s = open_ok(db);

    require_ok(wait_for<void>([&](auto done) { s->put_tenant({"acme", {{"anonymous", true}}}, done); }));
    require_ok(wait_for<void>([&](auto done) { s->put_tenant({"globex", {}}, done); }));
    auto tenants = wait_for<std::vector<tenant_record>>([&](auto done) { s->list_tenants(done); });
    REQUIRE(tenants.ok());
    REQUIRE(tenants->size() == 2);
    CHECK(tenants->at(0).id == "acme");
    CHECK(tenants->at(0).settings["anonymous"] == true);

    agent_record ada{"acme", "a1", "Ada", "ada@acme.io", 3, {"sales", "emea"},
                     {{"tz", "Europe/Paris"}, {"blocks", {{{"day", "mon"}, {"start", "08:00"}, {"end", "12:00"}}}}},
                     "https://cal/ada", std::nullopt};
    require_ok(put_agent(*s, ada));
    require_ok(put_agent(*s, {"acme", "a2", "Bo", std::nullopt, 10, {}, nullptr, std::nullopt, "https://img/bo"}));
    require_ok(put_agent(*s, {"globex", "a1", "Other Ada", std::nullopt, 1, {}, nullptr, std::nullopt, std::nullopt}));
    ada.name = "Ada L.";
    ada.max_chats = 4;
    require_ok(put_agent(*s, ada));  // upsert

    auto agents = wait_for<std::vector<agent_record>>([&](auto done) { s->list_agents("acme", done); });
    REQUIRE(agents.ok());
    REQUIRE(agents->size() == 2);
    const auto& first = agents->at(0);
    CHECK(first.id == "a1");
    CHECK(first.name == "Ada L.");
    CHECK(first.max_chats == 4);
    CHECK(first.email == std::optional<std::string>("ada@acme.io"));
    CHECK(first.teams == std::vector<std::string>{"sales", "emea"});
    CHECK(first.schedule["tz"] == "Europe/Paris");
    CHECK(first.schedule["blocks"][0]["start"] == "08:00");
    CHECK(first.calendar_url == std::optional<std::string>("https://cal/ada"));
    CHECK_FALSE(first.avatar_url.has_value());
    CHECK(agents->at(1).schedule.is_null());
    CHECK(agents->at(1).avatar_url == std::optional<std::string>("https://img/bo"));

    require_ok(wait_for<void>([&](auto done) { s->delete_agent("acme", "a2", done); }));
    auto gone = wait_for<void>([&](auto done) { s->delete_agent("acme", "a2", done); });
    CHECK(gone.kind() == error_kind::not_found);
    // Deleting acme's a1 from another tenant is impossible: globex's a1 is its own row.
    require_ok(wait_for<void>([&](auto done) { s->delete_agent("globex", "a1", done); }));
    agents = wait_for<std::vector<agent_record>>([&](auto done) { s->list_agents("acme", done); });
    REQUIRE(agents->size() == 1);
    CHECK(agents->at(0).id == "a1");

    route_record sales{"acme", "sales", {{"type", "round_robin"}, {"offer_timeout_s", 45}}};
    require_ok(wait_for<void>([&](auto done) { s->put_route(sales, done); }));
    sales.config["offer_timeout_s"] = 30;
    require_ok(wait_for<void>([&](auto done) { s->put_route(sales, done); }));
    auto routes = wait_for<std::vector<route_record>>([&](auto done) { s->list_routes("acme", done); });
    REQUIRE(routes->size() == 1);
    CHECK(routes->at(0).config["offer_timeout_s"] == 30);
    CHECK(wait_for<std::vector<route_record>>([&](auto done) { s->list_routes("globex", done); })->empty());
    require_ok(wait_for<void>([&](auto done) { s->delete_route("acme", "sales", done); }));
    CHECK(wait_for<void>([&](auto done) { s->delete_route("acme", "sales", done); }).kind() == error_kind::not_found);

    require_ok(wait_for<void>([&](auto done) { s->put_account({"acme", "bigcorp.com", "a1"}, done); }));
    require_ok(wait_for<void>([&](auto done) { s->put_account({"acme", "bigcorp.com", "a3"}, done); }));
    auto accounts = wait_for<std::vector<account_record>>([&](auto done) { s->list_accounts("acme", done); });
    REQUIRE(accounts->size() == 1);
    CHECK(accounts->at(0).agent_id == "a3");
    CHECK(wait_for<std::vector<account_record>>([&](auto done) { s->list_accounts("globex", done); })->empty());
    require_ok(wait_for<void>([&](auto done) { s->delete_account("acme", "bigcorp.com", done); }));
    CHECK(wait_for<std::vector<account_record>>([&](auto done) { s->list_accounts("acme", done); })->empty());
}

TEST_CASE("visitors: unsupplied fields are null and partial updates keep the rest", "[storage][visitors]") {
    auto db = make_test_database("visitors");
    auto s = open_ok(db);
    visitor_record v;
    v.tenant_id = "acme";
    v.id = "v1";
    v.name = "Ada";
    v.email = "ada@x.io";
    require_ok(wait_for<void>([&](auto done) { s->put_visitor(v, done); }));

    auto got = wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "v1", done); });
    REQUIRE(got.ok());
    CHECK(got->name == std::optional<std::string>("Ada"));
    CHECK(got->email == std::optional<std::string>("ada@x.io"));
    CHECK_FALSE(got->job_title.has_value());
    CHECK_FALSE(got->phone.has_value());
    CHECK_FALSE(got->crm_status.has_value());

    visitor_record update;
    update.tenant_id = "acme";
    update.id = "v1";
    update.crm_status = "Lead";
    require_ok(wait_for<void>([&](auto done) { s->put_visitor(update, done); }));
    got = wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "v1", done); });
    CHECK(got->name == std::optional<std::string>("Ada"));
    CHECK(got->crm_status == std::optional<std::string>("Lead"));

    // replace_visitor writes the whole card: what it leaves out is cleared.
    visitor_record whole;
    whole.tenant_id = "acme";
    whole.id = "v1";
    whole.phone = "+33 1";
    require_ok(wait_for<void>([&](auto done) { s->replace_visitor(whole, done); }));
    got = wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "v1", done); });
    CHECK(got->phone == std::optional<std::string>("+33 1"));
    CHECK_FALSE(got->name.has_value());
    CHECK_FALSE(got->email.has_value());
    CHECK_FALSE(got->crm_status.has_value());

    CHECK(wait_for<visitor_record>([&](auto done) { s->get_visitor("globex", "v1", done); }).kind() ==
          error_kind::not_found);
    CHECK(wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "nobody", done); }).kind() ==
          error_kind::not_found);
}

TEST_CASE("messages: transcript in seq order, resume after seq, client_msg_id idempotency", "[storage][messages]") {
    auto db = make_test_database("messages");
    auto s = open_ok(db);
    require_ok(save(*s, conversation("acme", "c1", now - 1000)));
    require_ok(save(*s, conversation("globex", "c1", now - 1000)));

    for (int seq = 1; seq <= 5; ++seq) {
        auto stored = append(*s, text_message("acme", "c1", seq, now + seq, "m-" + std::to_string(seq)));
        REQUIRE(stored.ok());
        CHECK(stored->seq == seq);
        CHECK(stored->at == now + seq);
        CHECK_FALSE(stored->duplicate);
        CHECK(stored->durable);
    }
    // A resend with the same client_msg_id (the server gave it a new seq) returns the stored seq.
    auto resent = append(*s, text_message("acme", "c1", 6, now + 100, "m-3"));
    REQUIRE(resent.ok());
    CHECK(resent->duplicate);
    CHECK(resent->seq == 3);
    CHECK(resent->at == now + 3);
    // A different message on a taken seq is a conflict.
    auto clash = append(*s, text_message("acme", "c1", 2, now + 100, "m-other"));
    CHECK(clash.kind() == error_kind::conflict);
    // The same client_msg_id in another conversation or tenant is unrelated.
    REQUIRE(append(*s, text_message("globex", "c1", 1, now, "m-3")).ok());

    auto transcript =
        whole_transcript(*s, "acme", "c1", now);
    REQUIRE(transcript.ok());
    REQUIRE(transcript->size() == 5);
    for (std::size_t i = 0; i < 5; ++i) CHECK(transcript->at(i).seq == static_cast<std::int64_t>(i + 1));
    CHECK(transcript->at(1).sender == sender_kind::agent);
    CHECK(transcript->at(1).agent_id == std::optional<std::string>("a1"));
    CHECK(transcript->at(0).body == "message 1 \"quoted\" \\ {braces}, commas");
    CHECK(transcript->at(0).client_msg_id == std::optional<std::string>("m-1"));

    auto after = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "c1", 3, 100, now, done); });
    REQUIRE(after.ok());
    REQUIRE(after->size() == 2);
    CHECK(after->at(0).seq == 4);
    CHECK(after->at(1).seq == 5);
    auto limited = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "c1", 0, 2, now, done); });
    REQUIRE(limited->size() == 2);

    auto other_tenant =
        whole_transcript(*s, "globex", "c1", now);
    REQUIRE(other_tenant->size() == 1);
    CHECK(whole_transcript(*s, "initech", "c1", now)
              .kind() == error_kind::not_found);

    // Calendar messages keep their JSON body.
    message_record calendar = text_message("acme", "c1", 6, now + 10);
    calendar.kind = message_kind::calendar;
    calendar.sender = sender_kind::agent;
    calendar.body = R"({"agent_id":"a2","agent_name":"Bo","booking_url":"https://cal/bo"})";
    REQUIRE(append(*s, calendar).ok());
    auto last = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "c1", 5, 10, now, done); });
    REQUIRE(last->size() == 1);
    CHECK(last->at(0).kind == message_kind::calendar);
    CHECK(nlohmann::json::parse(last->at(0).body)["agent_name"] == "Bo");
}

TEST_CASE("transcript pages: after_seq and limit in seq order, next_after_seq null exactly at the end",
          "[storage][messages]") {
    auto db = make_test_database("transcriptpages");
    auto s = open_ok(db);
    require_ok(save(*s, conversation("acme", "c1", now - 1000)));
    require_ok(save(*s, conversation("acme", "empty", now - 1000)));
    require_ok(save(*s, conversation("globex", "c1", now - 1000)));
    for (int seq = 1; seq <= 7; ++seq) REQUIRE(append(*s, text_message("acme", "c1", seq, now + seq)).ok());
    REQUIRE(append(*s, text_message("globex", "c1", 1, now)).ok());

    auto page = [&](const std::string& tenant, const std::string& conversation_id, std::int64_t after_seq, int limit) {
        return wait_for<message_page>(
            [&](auto done) { s->get_transcript(tenant, conversation_id, after_seq, limit, now, done); });
    };
    auto seqs = [](const message_page& p) {
        std::vector<std::int64_t> out;
        for (const auto& m : p.messages) out.push_back(m.seq);
        return out;
    };
    using seq_list = std::vector<std::int64_t>;

    auto first = page("acme", "c1", 0, 3);
    REQUIRE(first.ok());
    CHECK(seqs(first.value()) == seq_list{1, 2, 3});
    CHECK(first->next_after_seq == std::optional<std::int64_t>(3));
    CHECK(first->messages[0].body == "message 1 \"quoted\" \\ {braces}, commas");
    CHECK(first->messages[1].agent_id == std::optional<std::string>("a1"));
    auto second = page("acme", "c1", 3, 3);
    CHECK(seqs(second.value()) == seq_list{4, 5, 6});
    CHECK(second->next_after_seq == std::optional<std::int64_t>(6));
    auto last = page("acme", "c1", 6, 3);
    CHECK(seqs(last.value()) == seq_list{7});
    CHECK_FALSE(last->next_after_seq.has_value());
    // A page that ends with the last message says so: no empty page to read after it.
    auto exact = page("acme", "c1", 4, 3);
    CHECK(seqs(exact.value()) == seq_list{5, 6, 7});
    CHECK_FALSE(exact->next_after_seq.has_value());
    for (std::int64_t after : {std::int64_t{7}, std::int64_t{1000}, INT64_MAX}) {
        auto beyond = page("acme", "c1", after, 3);
        REQUIRE(beyond.ok());
        CHECK(beyond->messages.empty());
        CHECK_FALSE(beyond->next_after_seq.has_value());
    }
    auto none = page("acme", "empty", 0, 10);
    REQUIRE(none.ok());
    CHECK(none->messages.empty());
    CHECK_FALSE(none->next_after_seq.has_value());
    auto everything = page("acme", "c1", 0, max_message_page);
    CHECK(seqs(everything.value()) == seq_list{1, 2, 3, 4, 5, 6, 7});
    CHECK_FALSE(everything->next_after_seq.has_value());

    // Pages of one, and of two, put together: every message once, in order.
    for (int size : {1, 2}) {
        auto whole = whole_transcript(*s, "acme", "c1", now, size);
        REQUIRE(whole.ok());
        seq_list got;
        for (const auto& m : whole.value()) got.push_back(m.seq);
        CHECK(got == seq_list{1, 2, 3, 4, 5, 6, 7});
    }

    CHECK(seqs(page("globex", "c1", 0, 10).value()) == seq_list{1});
    CHECK(page("initech", "c1", 0, 10).kind() == error_kind::not_found);
    CHECK(page("acme", "nope", 0, 10).kind() == error_kind::not_found);
    CHECK(page("acme", "c1", 0, 0).kind() == error_kind::bad_request);
    CHECK(page("acme", "c1", 0, max_message_page + 1).kind() == error_kind::bad_request);
}

TEST_CASE("a batch with duplicates and conflicts settles every write correctly", "[storage][messages][group-commit]") {
    auto db = make_test_database("batchdup");
    store_options options;
    options.batch_delay = std::chrono::milliseconds(200);  // everything below lands in one batch
    auto s = open_ok(db, options);
    std::vector<std::future<result<append_outcome>>> outcomes;
    auto submit = [&](message_record m) {
        auto promise = std::make_shared<std::promise<result<append_outcome>>>();
        outcomes.push_back(promise->get_future());
        s->append_message(std::move(m), [promise](result<append_outcome> r) { promise->set_value(std::move(r)); });
    };
    submit(text_message("acme", "c1", 1, now, "x"));
    submit(text_message("acme", "c1", 2, now, "y"));
    submit(text_message("acme", "c1", 3, now, "x"));  // duplicate of seq 1 inside the same batch
    submit(text_message("acme", "c1", 2, now, "z"));  // seq 2 taken by another message
    submit(text_message("acme", "c1", 4, now, std::nullopt));
    CHECK(outcomes[0].get()->seq == 1);
    CHECK(outcomes[1].get()->seq == 2);
    auto duplicate = outcomes[2].get();
    REQUIRE(duplicate.ok());
    CHECK(duplicate->duplicate);
    CHECK(duplicate->seq == 1);
    CHECK(outcomes[3].get().kind() == error_kind::conflict);
    CHECK(outcomes[4].get()->seq == 4);
    auto transcript =
        whole_transcript(*s, "acme", "c1", now);
    CHECK(transcript.kind() == error_kind::not_found);  // no conversation row: the transcript does not exist
    auto after = wait_for<std::vector<message_record>>([&](auto done) { s->messages_after("acme", "c1", 0, 100, now, done); });
    CHECK(after.kind() == error_kind::not_found);
    require_ok(save(*s, conversation("acme", "c1", now)));
    transcript = whole_transcript(*s, "acme", "c1", now);
    REQUIRE(transcript->size() == 3);
    CHECK(transcript->at(1).client_msg_id == std::optional<std::string>("y"));
}

// A batch whose COMMIT landed but whose reply was lost is retried: each message
// then finds its own row. That is a success under the same seq, not a duplicate
// (which would make the server give the seq back and reuse it) and not a conflict.
TEST_CASE("a retried write that finds its own row is a success, alone or in a batch", "[storage][messages][retry]") {
    auto db = make_test_database("ownrow");
    store_options options;
    options.batch_delay = std::chrono::milliseconds(200);  // the runs below land in one batch each
    auto s = open_ok(db, options);
    require_ok(save(*s, conversation("acme", "c1", now)));
    auto submit_all = [&](const std::vector<message_record>& messages) {
        std::vector<std::future<result<append_outcome>>> outcomes;
        for (const auto& m : messages) {
            auto promise = std::make_shared<std::promise<result<append_outcome>>>();
            outcomes.push_back(promise->get_future());
            s->append_message(m, [promise](result<append_outcome> r) { promise->set_value(std::move(r)); });
        }
        std::vector<result<append_outcome>> settled;
        for (auto& f : outcomes) settled.push_back(f.get());
        return settled;
    };
    const std::vector<message_record> first = {text_message("acme", "c1", 1, now, "k1"),
                                               text_message("acme", "c1", 2, now + 1, std::nullopt),
                                               text_message("acme", "c1", 3, now + 2, "k3")};
    for (const auto& r : submit_all(first)) REQUIRE(r.ok());
    SECTION("the same run again") {
        auto again = submit_all(first);
        for (std::size_t i = 0; i < again.size(); ++i) {
            INFO("message " << i);
            REQUIRE(again[i].ok());
            CHECK(again[i]->seq == first[i].seq);
            CHECK(again[i]->at == first[i].at);
            CHECK_FALSE(again[i]->duplicate);
        }
    }
    SECTION("one message again, alone") {
        for (const auto& m : first) {
            auto again = append(*s, m);
            REQUIRE(again.ok());
            CHECK(again->seq == m.seq);
            CHECK_FALSE(again->duplicate);
        }
    }
    // Not its own row: another text under a taken seq is still a conflict, a resend still a duplicate.
    auto other = text_message("acme", "c1", 2, now + 1, std::nullopt);
    other.body = "something else";
    CHECK(append(*s, other).kind() == error_kind::conflict);
    auto resend = append(*s, text_message("acme", "c1", 4, now + 5, "k3"));
    REQUIRE(resend.ok());
    CHECK(resend->duplicate);
    CHECK(resend->seq == 3);
    auto transcript = whole_transcript(*s, "acme", "c1", now);
    REQUIRE(transcript.ok());
    CHECK(transcript->size() == 3);
}

TEST_CASE("conversations: save, update, list active and all with cursor paging", "[storage][conversations]") {
    auto db = make_test_database("conversations");
    auto s = open_ok(db);
    visitor_record v;
    v.tenant_id = "acme";
    v.id = "v-c0";
    v.name = "Ada";
    require_ok(wait_for<void>([&](auto done) { s->put_visitor(v, done); }));

    // 25 conversations: c0..c24, started one minute apart; a1 has the even ones active.
    for (int i = 0; i < 25; ++i) {
        auto state = i % 2 ? conversation_state::ended : conversation_state::active;
        auto c = conversation("acme", "c" + std::to_string(i), now - (25 - i) * 60'000, state,
                              i % 4 == 0 ? "a1" : "a2");
        if (state == conversation_state::ended) {
            c.ended_at = c.started_at + 30'000;
            c.end_reason = "visitor_ended";
        }
        require_ok(save(*s, c));
    }
    require_ok(save(*s, conversation("globex", "g1", now, conversation_state::active, "a1")));
    require_ok(append(*s, text_message("acme", "c24", 1, now - 10)).ok() ? status() : status(error{}));
    require_ok(append(*s, text_message("acme", "c24", 2, now - 5)).ok() ? status() : status(error{}));

    // Update: score and end.
    auto c0 = conversation("acme", "c0", now - 25 * 60'000, conversation_state::ended, "a1");
    c0.score = 3;
    c0.ended_at = now - 1000;
    c0.end_reason = "agent_ended";
    c0.tried_agents = {"a2", "a1"};
    require_ok(save(*s, c0));
    auto got = wait_for<conversation_record>([&](auto done) { s->get_conversation("acme", "c0", done); });
    REQUIRE(got.ok());
    CHECK(got->state == conversation_state::ended);
    CHECK(got->score == std::optional<int>(3));
    CHECK(got->end_reason == std::optional<std::string>("agent_ended"));
    CHECK(got->tried_agents == std::vector<std::string>{"a2", "a1"});
    CHECK(wait_for<conversation_record>([&](auto done) { s->get_conversation("globex", "c0", done); }).kind() ==
          error_kind::not_found);

    conversation_query active{"acme", "a1", conversation_filter::active, 100, std::nullopt, now};
    auto mine = wait_for<conversation_page>([&](auto done) { s->list_conversations(active, done); });
    REQUIRE(mine.ok());
    // a1's active: c4, c8, c12, c16, c20, c24 (c0 ended above); newest first.
    REQUIRE(mine->conversations.size() == 6);
    CHECK(mine->conversations.front().conversation.id == "c24");
    CHECK(mine->conversations.back().conversation.id == "c4");
    CHECK_FALSE(mine->next_cursor.has_value());
    REQUIRE(mine->conversations.front().last_message.has_value());
    CHECK(mine->conversations.front().last_message->seq == 2);
    CHECK(mine->conversations.front().conversation.last_seq == 2);

    // All, in pages of 10: 25 conversations, no duplicates, newest first, never globex's.
    conversation_query all{"acme", "a1", conversation_filter::all, 10, std::nullopt, now};
    std::vector<std::string> seen;
    for (int page = 0; page < 5; ++page) {
        auto r = wait_for<conversation_page>([&](auto done) { s->list_conversations(all, done); });
        REQUIRE(r.ok());
        for (const auto& summary : r->conversations) seen.push_back(summary.conversation.id);
        if (!r->next_cursor) break;
        all.cursor = r->next_cursor;
    }
    REQUIRE(seen.size() == 25);
    CHECK(seen.front() == "c24");
    CHECK(seen.back() == "c0");
    for (std::size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == "c" + std::to_string(24 - i));

    all.cursor = std::nullopt;
    all.limit = 100;
    auto whole = wait_for<conversation_page>([&](auto done) { s->list_conversations(all, done); });
    REQUIRE(whole->conversations.back().visitor.has_value());
    CHECK(whole->conversations.back().visitor->name == std::optional<std::string>("Ada"));
    CHECK_FALSE(whole->conversations.front().visitor.has_value());

    all.limit = 101;
    CHECK(wait_for<conversation_page>([&](auto done) { s->list_conversations(all, done); }).kind() ==
          error_kind::bad_request);
    all.limit = 10;
    all.cursor = "garbage";
    CHECK(wait_for<conversation_page>([&](auto done) { s->list_conversations(all, done); }).kind() ==
          error_kind::bad_request);
}

TEST_CASE("offers: resolved once; a second answer is a conflict", "[storage][offers]") {
    auto db = make_test_database("offers");
    auto s = open_ok(db);
    offer_record offer{"acme", "o1", "c1", "a1", now, now + 45'000, offer_outcome::pending, std::nullopt};
    require_ok(wait_for<void>([&](auto done) { s->put_offer(offer, done); }));
    require_ok(wait_for<void>([&](auto done) { s->resolve_offer("acme", "o1", offer_outcome::accepted, now + 5, done); }));
    CHECK(wait_for<void>([&](auto done) { s->resolve_offer("acme", "o1", offer_outcome::expired, now + 6, done); })
              .kind() == error_kind::conflict);
    CHECK(wait_for<void>([&](auto done) { s->resolve_offer("acme", "nope", offer_outcome::declined, now, done); })
              .kind() == error_kind::not_found);
    CHECK(wait_for<void>([&](auto done) { s->resolve_offer("globex", "o1", offer_outcome::declined, now, done); })
              .kind() == error_kind::not_found);
}

TEST_CASE("activities: newest first, cursor paging, only the retention window", "[storage][activities]") {
    auto db = make_test_database("activities");
    auto s = open_ok(db);
    // 30 activities one day apart (ages 0..29 days), two at the same instant, plus one 100 days old.
    for (int i = 0; i < 30; ++i) {
        activity_record a{"acme", "v1", "visited_webpage", now - i * day, std::nullopt, {{"n", i}}, 0};
        require_ok(wait_for<void>([&](auto done) { s->append_activity(a, done); }));
    }
    activity_record same{"acme", "v1", "chat_requested", now, "c1", {{"n", 100}}, 0};
    require_ok(wait_for<void>([&](auto done) { s->append_activity(same, done); }));
    activity_record old{"acme", "v1", "opened_email", now - 100 * day, std::nullopt, {}, 0};
    require_ok(wait_for<void>([&](auto done) { s->append_activity(old, done); }));
    activity_record other{"globex", "v1", "opened_email", now, std::nullopt, {}, 0};
    require_ok(wait_for<void>([&](auto done) { s->append_activity(other, done); }));

    activity_query q{"acme", "v1", 7, std::nullopt, now};
    std::vector<activity_record> seen;
    for (int page = 0; page < 10; ++page) {
        auto r = wait_for<activity_page>([&](auto done) { s->get_activity(q, done); });
        REQUIRE(r.ok());
        CHECK(r->activities.size() <= 7);
        seen.insert(seen.end(), r->activities.begin(), r->activities.end());
        if (!r->next_cursor) break;
        q.cursor = r->next_cursor;
    }
    REQUIRE(seen.size() == 31);  // the 100-day-old one is outside the window, globex's is another tenant
    CHECK(seen.front().type == "chat_requested");  // same instant: the later insert first
    CHECK(seen.front().conversation_id == std::optional<std::string>("c1"));
    CHECK(seen[1].details["n"] == 0);
    for (std::size_t i = 1; i < seen.size(); ++i) CHECK(seen[i - 1].at >= seen[i].at);
    CHECK(seen.back().details["n"] == 29);

    // Move time forward 70 days: only those at most 20 days old then remain (ages 0..20, plus the extra one).
    activity_query later{"acme", "v1", 100, std::nullopt, now + 70 * day};
    auto r = wait_for<activity_page>([&](auto done) { s->get_activity(later, done); });
    CHECK(r->activities.size() == 22);
}

TEST_CASE("one tenant's flood of reads cannot get another tenant's read refused", "[storage][reads]") {
    auto db = make_test_database("read_fairness");
    store_options options;
    options.reader_threads = 1;
    options.reader_queue_max = 10;  // a tenant may queue 5
    auto s = open_ok(db, options);
    std::atomic<int> flood_done{0}, flood_refused{0};
    constexpr int flood = 300;
    for (int i = 0; i < flood; ++i)
        s->get_visitor("flood", "v" + std::to_string(i), [&](result<visitor_record> r) {
            if (!r && r.kind() == error_kind::unavailable) ++flood_refused;
            ++flood_done;
        });
    // Queued right behind the flood, while the flood still fills its share.
    auto other = wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", "v1", done); });
    CHECK(other.kind() == error_kind::not_found);  // answered, not refused as unavailable
    while (flood_done.load() < flood) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    INFO(flood_refused.load() << " of the flood's reads refused");
    CHECK(flood_refused.load() < flood);
}

TEST_CASE("retention: old rows are invisible before the prune and deleted by it in batches", "[storage][retention]") {
    auto db = make_test_database("retention");
    auto s = open_for_retention(db, 7);
    auto ended_old = conversation("acme", "old", old - 1000, conversation_state::ended);
    ended_old.ended_at = old;
    require_ok(save(*s, ended_old));
    require_ok(save(*s, conversation("acme", "new", now - 1000)));
    for (int seq = 1; seq <= 20; ++seq) REQUIRE(append(*s, text_message("acme", "old", seq, old)).ok());
    for (int seq = 1; seq <= 20; ++seq)  // a long-running conversation: first half old
        REQUIRE(append(*s, text_message("acme", "new", seq, seq <= 10 ? old : now - 500)).ok());
    for (int i = 0; i < 16; ++i) {
        activity_record a{"acme", "v1", "visited_webpage", i < 15 ? old : now, std::nullopt, {}, 0};
        require_ok(wait_for<void>([&](auto done) { s->append_activity(a, done); }));
    }
    offer_record offer{"acme", "o-old", "old", "a1", old, old + 45'000, offer_outcome::expired, old};
    require_ok(wait_for<void>([&](auto done) { s->put_offer(offer, done); }));

    auto check_visible = [&] {
        CHECK(whole_transcript(*s, "acme", "old", now)
                  .kind() == error_kind::not_found);
        auto recent =
            whole_transcript(*s, "acme", "new", now);
        REQUIRE(recent.ok());
        REQUIRE(recent->size() == 10);
        CHECK(recent->front().seq == 11);
        auto resumed = wait_for<std::vector<message_record>>(
            [&](auto done) { s->messages_after("acme", "new", 0, 100, now, done); });
        CHECK(resumed->size() == 10);
        auto activities =
            wait_for<activity_page>([&](auto done) { s->get_activity({"acme", "v1", 100, std::nullopt, now}, done); });
        CHECK(activities->activities.size() == 1);
        auto all = wait_for<conversation_page>([&](auto done) {
            s->list_conversations({"acme", "", conversation_filter::all, 100, std::nullopt, now}, done);
        });
        REQUIRE(all->conversations.size() == 1);
        CHECK(all->conversations[0].conversation.id == "new");
    };
    check_visible();  // before the job ran

    auto report = s->prune(now);
    REQUIRE(report.ok());
    CHECK(report->messages == 30);
    CHECK(report->activities == 15);
    CHECK(report->conversations == 1);
    CHECK(report->offers == 1);
    // 30 messages in batches of 7 take 5 transactions, 15 activities 3, conversations 1, offers 1.
    CHECK(report->batches == 10);
    check_visible();

    auto second = s->prune(now);
    REQUIRE(second.ok());
    CHECK(second->messages == 0);
    CHECK(second->activities == 0);

    // Looking from a time when they were all young: the pruned rows are really gone.
    auto history = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "new", 0, 100, old, done); });
    CHECK(history->size() == 10);
}

TEST_CASE("retention: a visitor card goes once it is old and nothing else of the visitor is left", "[storage][retention]") {
    auto db = make_test_database("retention_visitors");
    auto s = open_for_retention(db, 2);
    auto put_card = [&](const std::string& id, millis written_at) {
        visitor_record v;
        v.tenant_id = "acme";
        v.id = id;
        v.email = id + "@x.io";
        v.seen_at = written_at;
        require_ok(wait_for<void>([&](auto done) { s->put_visitor(v, done); }));
    };
    for (int i = 0; i < 5; ++i) put_card("gone-" + std::to_string(i), old);  // old, nothing else: deleted
    put_card("recent", now - day);                                            // written lately: kept
    put_card("v-chatting", old);  // an old card, but a conversation still open: kept
    require_ok(save(*s, conversation("acme", "chatting", old)));
    put_card("v-ended", old);  // its only conversation ended long ago: both go
    auto ended = conversation("acme", "ended", old - 1000, conversation_state::ended);
    ended.ended_at = old;
    require_ok(save(*s, ended));
    put_card("active-elsewhere", old);  // an integration still records activity: kept
    activity_record a{"acme", "active-elsewhere", "visited_webpage", now - day, std::nullopt, {}, 0};
    require_ok(wait_for<void>([&](auto done) { s->append_activity(a, done); }));
    put_card("rewritten", old);  // written again (a new hello with a profile): kept
    put_card("rewritten", now - day);

    auto report = s->prune(now);
    REQUIRE(report.ok());
    CHECK(report->visitors == 6);
    CHECK(report->conversations == 1);
    auto exists = [&](const std::string& id) {
        return wait_for<visitor_record>([&](auto done) { s->get_visitor("acme", id, done); }).ok();
    };
    for (int i = 0; i < 5; ++i) CHECK_FALSE(exists("gone-" + std::to_string(i)));
    CHECK_FALSE(exists("v-ended"));
    CHECK(exists("recent"));
    CHECK(exists("v-chatting"));
    CHECK(exists("active-elsewhere"));
    CHECK(exists("rewritten"));
    CHECK(s->prune(now)->visitors == 0);
}

TEST_CASE("retention: a prune asked to stop does so between batches; the next run goes on", "[storage][retention]") {
    auto db = make_test_database("retention_stop");
    auto s = open_for_retention(db, 7);
    require_ok(save(*s, conversation("acme", "c", old - 1000)));
    for (int seq = 1; seq <= 30; ++seq) REQUIRE(append(*s, text_message("acme", "c", seq, old)).ok());

    int asked = 0;
    auto first = s->prune(now, [&] { return ++asked > 2; });  // two batches, then stop
    REQUIRE(first.ok());
    CHECK(first->stopped);
    CHECK(first->messages == 14);
    CHECK(first->batches == 2);
    CHECK(asked == 3);  // asked once more and stopped: nothing after that, not even the other tables

    auto rest = s->prune(now);
    REQUIRE(rest.ok());
    CHECK_FALSE(rest->stopped);
    CHECK(rest->messages == 16);
}

TEST_CASE("retention: a message stamped in the future does not hold back older ones", "[storage][retention]") {
    // A clock stepped back leaves a young row before old ones in insertion order.
    auto db = make_test_database("retention_skew");
    auto s = open_for_retention(db, 2);
    require_ok(save(*s, conversation("acme", "c", old - 1000)));
    int seq = 0;
    for (int i = 0; i < 5; ++i) REQUIRE(append(*s, text_message("acme", "c", ++seq, old)).ok());
    REQUIRE(append(*s, text_message("acme", "c", ++seq, now + 365 * day)).ok());
    for (int i = 0; i < 5; ++i) REQUIRE(append(*s, text_message("acme", "c", ++seq, old + i)).ok());
    for (int i = 0; i < 3; ++i) REQUIRE(append(*s, text_message("acme", "c", ++seq, now - 100)).ok());

    auto report = s->prune(now);
    REQUIRE(report.ok());
    CHECK(report->messages == 10);
    auto left = wait_for<std::vector<message_record>>(
        [&](auto done) { s->messages_after("acme", "c", 0, 100, old - 1, done); });
    REQUIRE(left.ok());
    REQUIRE(left->size() == 4);
    CHECK(left->at(0).seq == 6);
    CHECK(left->at(1).seq == 12);
    CHECK(s->prune(now)->messages == 0);
}

TEST_CASE("load_open_state brings back open conversations, seq counters, pending offers and overrides",
          "[storage][recovery]") {
    auto db = make_test_database("openstate");
    {
        auto s = open_ok(db);
        auto open = conversation("acme", "c1", now - 5000);
        open.tried_agents = {"a2", "a1"};
        require_ok(save(*s, open));
        require_ok(save(*s, conversation("acme", "c2", now - 4000, conversation_state::routing, std::nullopt)));
        auto ended = conversation("acme", "c3", now - 3000, conversation_state::ended);
        ended.ended_at = now - 100;
        require_ok(save(*s, ended));
        require_ok(save(*s, conversation("globex", "g1", now - 2000, conversation_state::queued, std::nullopt)));
        for (int seq = 1; seq <= 7; ++seq) REQUIRE(append(*s, text_message("acme", "c1", seq, now)).ok());
        visitor_record ada{"acme", "v-c1", "Ada", "CTO", std::nullopt, std::nullopt, std::nullopt, std::nullopt};
        require_ok(wait_for<void>([&](auto done) { s->put_visitor(ada, done); }));

        require_ok(wait_for<void>([&](auto done) {
            s->put_offer({"acme", "o1", "c2", "a3", now - 1000, now + 44'000, offer_outcome::pending, std::nullopt}, done);
        }));
        require_ok(wait_for<void>([&](auto done) {
            s->put_offer({"acme", "o0", "c2", "a2", now - 50'000, now - 5'000, offer_outcome::expired, now - 5000}, done);
        }));
        require_ok(wait_for<void>([&](auto done) { s->set_override({"acme", "a1", false, now + 3'600'000, now}, done); }));
        require_ok(wait_for<void>([&](auto done) { s->set_override({"acme", "a2", true, std::nullopt, now}, done); }));
        require_ok(wait_for<void>([&](auto done) { s->set_override({"acme", "a4", true, now - 1, now - 100}, done); }));
        require_ok(wait_for<void>([&](auto done) { s->set_override({"acme", "a5", true, std::nullopt, now}, done); }));
        require_ok(wait_for<void>([&](auto done) { s->clear_override("acme", "a5", done); }));
        require_ok(wait_for<void>([&](auto done) { s->set_override({"globex", "b1", true, std::nullopt, now}, done); }));
    }
    auto s = open_ok(db);  // as after a restart
    auto state = s->load_open_state(std::string("acme"), now);
    REQUIRE(state.ok());
    REQUIRE(state->conversations.size() == 2);
    const auto& c1 = state->conversations[0];
    CHECK(c1.conversation.id == "c1");
    CHECK(c1.conversation.state == conversation_state::active);
    CHECK(c1.conversation.agent_id == std::optional<std::string>("a1"));
    CHECK(c1.conversation.last_seq == 7);
    CHECK(c1.conversation.tried_agents == std::vector<std::string>{"a2", "a1"});
    REQUIRE(c1.last_message.has_value());  // the inbox preview survives the restart
    CHECK(c1.last_message->seq == 7);
    CHECK(c1.last_message->body == text_message("acme", "c1", 7, now).body);
    REQUIRE(c1.visitor.has_value());
    CHECK(c1.visitor->name == std::optional<std::string>("Ada"));
    const auto& c2 = state->conversations[1];
    CHECK(c2.conversation.id == "c2");
    CHECK(c2.conversation.last_seq == 0);
    CHECK_FALSE(c2.last_message.has_value());
    CHECK_FALSE(c2.visitor.has_value());  // no visitor row: null, not an error
    REQUIRE(state->pending_offers.size() == 1);
    CHECK(state->pending_offers[0].id == "o1");
    CHECK(state->pending_offers[0].expires_at == now + 44'000);
    REQUIRE(state->overrides.size() == 2);  // a4's has expired, a5's was cleared
    CHECK(state->overrides[0].agent_id == "a1");
    CHECK_FALSE(state->overrides[0].available);
    CHECK(state->overrides[0].until_at == std::optional<millis>(now + 3'600'000));
    CHECK(state->overrides[1].agent_id == "a2");
    CHECK(state->overrides[1].available);

    auto everything = s->load_open_state(std::nullopt, now);
    REQUIRE(everything.ok());
    CHECK(everything->conversations.size() == 3);
    CHECK(everything->overrides.size() == 3);
}

// Needs a database: a killed process's memory is gone; only a database outside it can keep the messages.
TEST_CASE("acknowledged messages survive kill -9 of the writing process",
          "[storage][recovery]" PARLEY_NEEDS_DATABASE) {
    auto db = make_test_database("kill9");
    { open_ok(db); }  // migrate up front
    int pipe_fds[2];
    REQUIRE(::pipe(pipe_fds) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // The child appends as fast as it can and reports every acknowledged seq.
        ::close(pipe_fds[0]);
        auto opened = open_store(db.url);
        if (!opened.ok()) ::_exit(2);
        auto& s = *opened.value();
        conversation_record c;
        c.tenant_id = "acme";
        c.id = "c1";
        c.visitor_id = "v1";
        c.route = "sales";
        c.state = conversation_state::active;
        c.agent_id = "a1";
        c.started_at = now;
        s.save_conversation(c, {});
        std::atomic<std::int64_t> next{1};
        for (;;) {
            std::promise<void> acked;
            auto seq = next++;
            message_record m;
            m.tenant_id = "acme";
            m.conversation_id = "c1";
            m.seq = seq;
            m.body = "m";
            m.at = now;
            m.client_msg_id = "k" + std::to_string(seq);
            s.append_message(m, [&, seq](result<append_outcome> r) {
                if (r.ok()) {
                    std::int64_t value = seq;
                    if (::write(pipe_fds[1], &value, sizeof value) != sizeof value) ::_exit(3);
                }
                acked.set_value();
            });
            acked.get_future().wait();
        }
    }
    ::close(pipe_fds[1]);
    std::int64_t highest = 0, value = 0;
    while (highest < 200 && ::read(pipe_fds[0], &value, sizeof value) == sizeof value) highest = value;
    ::kill(child, SIGKILL);
    int child_status = 0;
    ::waitpid(child, &child_status, 0);
    while (::read(pipe_fds[0], &value, sizeof value) == sizeof value) highest = std::max(highest, value);
    ::close(pipe_fds[0]);
    REQUIRE(highest >= 200);

    auto s = open_ok(db);
    auto state = s->load_open_state(std::string("acme"), now);
    REQUIRE(state.ok());
    REQUIRE(state->conversations.size() == 1);
    CHECK(state->conversations[0].conversation.last_seq >= highest);
    auto messages =
        wait_for<std::vector<message_record>>([&](auto done) { s->messages_after("acme", "c1", 0, 100000, now, done); });
    REQUIRE(messages.ok());
    REQUIRE(messages->size() >= static_cast<std::size_t>(highest));
    for (std::size_t i = 0; i < messages->size(); ++i) CHECK(messages->at(i).seq == static_cast<std::int64_t>(i + 1));
}

TEST_CASE("group commit: many concurrent writes take far fewer transactions", "[storage][group-commit]") {
    auto db = make_test_database("groupcommit");
    store_options options;
    options.batch_max = 500;
    auto s = open_ok(db, options);
    constexpr int producers = 8, per_producer = 500;
    std::atomic<int> acknowledged{0}, failed{0};
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (int i = 1; i <= per_producer; ++i)
                s->append_message(text_message("acme", "c" + std::to_string(p), i, now),
                                  [&](result<append_outcome> r) { (r.ok() ? acknowledged : failed)++; });
        });
    }
    for (auto& t : threads) t.join();
    s->flush();
    CHECK(failed == 0);
    CHECK(acknowledged == producers * per_producer);
    auto stats = s->stats();
    CHECK(stats.writes_committed == producers * per_producer);
    CHECK(stats.transactions_committed < producers * per_producer / 10);
    CHECK(stats.largest_batch > 1);
    CHECK(stats.largest_batch <= 500);
    CHECK(stats.queue_depth == 0);
    auto after = whole_transcript(*s, "acme", "c3", now);
    CHECK(after.kind() == error_kind::not_found);  // messages exist, conversation row does not
    require_ok(save(*s, conversation("acme", "c3", now)));
    after = whole_transcript(*s, "acme", "c3", now);
    CHECK(after->size() == per_producer);
}

TEST_CASE("durability commit acknowledges after the commit, relaxed once queued", "[storage][durability]") {
    auto db = make_test_database("durability");
    SECTION("commit") {
        store_options options;
        options.durability = durability::commit;
        options.batch_delay = std::chrono::milliseconds(300);
        auto s = open_ok(db, options);
        std::atomic<bool> called{false};
        std::optional<append_outcome> outcome;
        s->append_message(text_message("acme", "c1", 1, now), [&](result<append_outcome> r) {
            outcome = r.ok() ? std::optional(r.value()) : std::nullopt;
            called = true;
        });
        CHECK_FALSE(called);  // still waiting for its batch to fill or the delay to pass
        s->flush();
        REQUIRE(called);
        REQUIRE(outcome.has_value());
        CHECK(outcome->durable);
        CHECK(s->stats().transactions_committed == 1);
    }
    SECTION("relaxed") {
        store_options options;
        options.durability = durability::relaxed;
        options.batch_delay = std::chrono::milliseconds(300);
        auto s = open_ok(db, options);
        bool called = false;
        std::optional<append_outcome> outcome;
        s->append_message(text_message("acme", "c1", 1, now), [&](result<append_outcome> r) {
            outcome = r.ok() ? std::optional(r.value()) : std::nullopt;
            called = true;
        });
        REQUIRE(called);  // acknowledged when queued, before append_message returned
        REQUIRE(outcome.has_value());
        CHECK_FALSE(outcome->durable);
        CHECK(outcome->seq == 1);
        CHECK(s->stats().transactions_committed == 0);
        s->flush();
        CHECK(s->stats().transactions_committed == 1);
        require_ok(save(*s, conversation("acme", "c1", now)));
        auto t = whole_transcript(*s, "acme", "c1", now);
        CHECK(t->size() == 1);
    }
}

// A storage outage under durability relaxed fails every queued message, and
// nobody but the log hears of it: a few lines a second, the rest counted.
TEST_CASE("relaxed writes failing after acknowledgement: a few log lines a second, the rest counted",
          "[storage][durability]") {
    auto db = make_test_database("relaxedlog");
    std::ostringstream log_text;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text);
    sink->set_pattern("%v");
    spdlog::register_logger(std::make_shared<spdlog::logger>("store", sink));
    struct unregister {
        ~unregister() { spdlog::drop("store"); }
    } unregister_store_logger;

    constexpr int failing = 300;
    const auto started = std::chrono::steady_clock::now();
    {
        store_options options;
        options.durability = durability::relaxed;
        auto s = open_ok(db, options);
        REQUIRE(append(*s, text_message("acme", "c1", 1, now, "first")).ok());
        s->flush();
        // Each takes seq 1 again with another client_msg_id: acknowledged, then a conflict.
        int acknowledged = 0;
        for (int i = 0; i < failing; ++i)
            s->append_message(text_message("acme", "c1", 1, now, "other-" + std::to_string(i)),
                              [&](result<append_outcome> r) { acknowledged += r.ok() ? 1 : 0; });
        CHECK(acknowledged == failing);
        s->flush();
    }  // closing the store logs the count still held back
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started);

    int one_by_one = 0;
    long long counted = 0;
    std::istringstream lines(log_text.str());
    for (std::string line; std::getline(lines, line);) {
        if (line.find("failed after acknowledgement: ") != std::string::npos)
            ++one_by_one;
        else if (line.find(" more relaxed message write(s) failed after acknowledgement") != std::string::npos)
            counted += std::stoll(line);
    }
    INFO(log_text.str());
    CHECK(one_by_one >= 1);
    CHECK(one_by_one <= 5 * (seconds.count() + 1));  // at most 5 in each second the failures spanned
    CHECK(one_by_one + counted == failing);
}

TEST_CASE("the write queue is bounded: beyond queue_max writes fail with unavailable", "[storage][backpressure]") {
    auto db = make_test_database("queuebound");
    store_options options;
    options.queue_max = 10;
    options.batch_delay = std::chrono::milliseconds(1000);  // the writer holds off while we fill the queue
    auto s = open_ok(db, options);
    std::atomic<int> ok{0}, unavailable{0}, other{0};
    for (int i = 1; i <= 15; ++i)
        s->append_message(text_message("acme", "c1", i, now), [&](result<append_outcome> r) {
            if (r.ok())
                ++ok;
            else if (r.kind() == error_kind::unavailable)
                ++unavailable;
            else
                ++other;
        });
    CHECK(unavailable == 5);  // refused at once, on the calling thread
    s->flush();
    CHECK(ok == 10);
    CHECK(other == 0);
    CHECK(s->stats().rejected_queue_full == 5);
}
