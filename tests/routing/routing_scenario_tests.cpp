// Scenario tests for the routing rules of protocol.md sections 4 and 7,
// driven by a manual clock.
#include "router_harness.h"

using namespace parley::routing;
using namespace parley::routing::test;

namespace {

tenant_config three_agents_round_robin() {
    tenant_config config;
    config.agents = {make_agent("a1"), make_agent("a2"), make_agent("a3")};
    config.routes = {make_route("sales")};
    return config;
}

}  // namespace

TEST_CASE("round robin rotates over connected agents and offers expire at the route timeout") {
    router_harness h{three_agents_round_robin()};
    for (const auto* agent : {"a1", "a2", "a3"}) h.connect(agent);
    std::vector<std::string> offered;
    for (int i = 0; i < 6; ++i) {
        const auto id = std::to_string(i);
        const auto result = h.request("c" + id, "v" + id, "sales");
        REQUIRE(result.result == outcome::ok);
        CHECK(result.created);
        CHECK(result.state == conversation_state::routing);
        const auto offer = h.only_offer();
        CHECK(offer.expires_at == h.clock.now() + 45s);
        CHECK(offer.conversation_id == "c" + id);
        offered.push_back(offer.agent_id);
    }
    CHECK(offered == std::vector<std::string>{"a1", "a2", "a3", "a1", "a2", "a3"});
}

TEST_CASE("an offer expires at exactly 45 s and the next agent is tried") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.connect("a2");
    h.request("c1", "v1", "sales");
    const auto first = h.only_offer();
    CHECK(h.router.next_deadline() == first.expires_at);

    h.advance(45s - 1ms);
    CHECK(h.all<withdraw_offer>().empty());
    CHECK(h.router.conversation("c1")->offer_id == first.offer_id);

    h.advance(1ms);
    const auto withdrawn = h.all<withdraw_offer>();
    REQUIRE(withdrawn.size() == 1);
    CHECK(withdrawn[0].offer_id == first.offer_id);
    CHECK(withdrawn[0].reason == withdraw_reason::expired);
    const auto missed = h.all<record_activity>();
    REQUIRE(missed.size() == 1);
    CHECK(missed[0].type == activity_type::chat_missed);
    const auto second = h.only_offer();
    CHECK(second.agent_id != first.agent_id);
    CHECK(second.offer_id != first.offer_id);
    CHECK(h.accept(first.offer_id, first.agent_id) == outcome::conflict);
}

TEST_CASE("after max_attempts agents the visitor gets the fallback with the first tried agent's calendar") {
    auto config = three_agents_round_robin();
    config.routes[0].fallback_message = "We'll call you back";
    config.routes[0].fallback_calendar = true;
    router_harness h{config};
    for (const auto* agent : {"a1", "a2", "a3"}) h.connect(agent);
    h.request("c1", "v1", "sales");
    const auto first = h.only_offer();
    CHECK(h.decline(first.offer_id, first.agent_id) == outcome::ok);
    const auto second = h.only_offer();
    CHECK(second.agent_id != first.agent_id);
    h.advance(45s);
    CHECK(h.all<send_offer>().empty());  // max_attempts = 2: a3 is never asked
    const auto fallback = h.visitor_events<visitor_event::fallback>();
    REQUIRE(fallback.size() == 1);
    const auto& event = std::get<visitor_event::fallback>(fallback[0].event);
    CHECK(event.message == "We'll call you back");
    REQUIRE(event.calendar.has_value());
    CHECK(event.calendar->agent_id == first.agent_id);
    CHECK(event.calendar->booking_url == "https://cal.example/" + first.agent_id);
    const auto ended = h.visitor_events<visitor_event::ended>();
    REQUIRE(ended.size() == 1);
    CHECK(std::get<visitor_event::ended>(ended[0].event).reason == end_reason::no_agent);
    CHECK_FALSE(h.router.conversation("c1").has_value());
    CHECK_FALSE(h.router.open_conversation_of_visitor("v1").has_value());
}

TEST_CASE("accepting makes the chat active; stale or foreign answers conflict") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    const auto offer = h.only_offer();
    CHECK(h.accept(offer.offer_id, "a2") == outcome::conflict);
    CHECK(h.accept(offer.offer_id, "a1") == outcome::ok);
    const auto joined = h.visitor_events<visitor_event::agent_joined>();
    REQUIRE(joined.size() == 1);
    CHECK(std::get<visitor_event::agent_joined>(joined[0].event).agent_id == "a1");
    const auto states = h.all<conversation_state_changed>();
    REQUIRE(states.size() == 1);
    CHECK(states[0].state == conversation_state::active);
    CHECK(states[0].agent_id == "a1");
    CHECK(h.router.conversation("c1")->state == conversation_state::active);
    CHECK(h.accept(offer.offer_id, "a1") == outcome::conflict);
    CHECK(h.decline(offer.offer_id, "a1") == outcome::conflict);
    CHECK(h.router.agent("a1")->active_conversations == std::vector<std::string>{"c1"});
}

TEST_CASE("active chats plus pending offers never exceed max_chats") {
    tenant_config config;
    config.agents = {make_agent("a1", 2)};
    config.routes = {make_route("sales")};
    router_harness h{config};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    CHECK(h.accept(h.only_offer().offer_id, "a1") == outcome::ok);
    h.request("c2", "v2", "sales");
    CHECK(h.only_offer().agent_id == "a1");  // 1 active + 1 pending = 2
    h.request("c3", "v3", "sales");
    CHECK(h.all<send_offer>().empty());
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 1);
    CHECK(h.router.stats().capacity_in_use == 2);
    CHECK(h.router.stats().agents_eligible == 0);
}

TEST_CASE("a visitor has one open conversation: request_agent is idempotent") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    REQUIRE(h.request("c1", "v1", "sales").created);
    const auto again = h.request("c2", "v1", "sales");
    CHECK(again.result == outcome::ok);
    CHECK_FALSE(again.created);
    CHECK(again.conversation_id == "c1");
    CHECK(h.out.empty());
    CHECK(h.request("c3", "v2", "nope").result == outcome::not_found);
    CHECK(h.request("c1", "v9", "sales").result == outcome::conflict);
    CHECK(h.request("", "v9", "sales").result == outcome::bad_request);
}

TEST_CASE("team and agent routes only offer to their agents") {
    tenant_config config;
    config.agents = {make_agent("a1", 10, {"red"}), make_agent("a2", 10, {"blue"}), make_agent("a3", 10, {"red"})};
    auto team = make_route("red", route_type::team);
    team.team = "red";
    auto single = make_route("bo", route_type::agent);
    single.agent_id = "a2";
    config.routes = {team, single};
    router_harness h{config};
    for (const auto* agent : {"a1", "a2", "a3"}) h.connect(agent);
    for (int i = 0; i < 4; ++i) {
        h.request("c" + std::to_string(i), "v" + std::to_string(i), "red");
        CHECK(h.only_offer().agent_id != "a2");
    }
    h.request("d1", "w1", "bo");
    CHECK(h.only_offer().agent_id == "a2");
    h.decline(h.only_offer().offer_id, "a2");
    CHECK(h.all<send_offer>().empty());  // the same agent is never asked twice
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 1);
}

TEST_CASE("account ownership is checked before the rules; rules go by priority") {
    tenant_config config;
    config.agents = {make_agent("owner"), make_agent("vip"), make_agent("general")};
    auto rules = make_route("inbound", route_type::rules);
    routing_rule general;
    general.priority = 2;
    general.when = {visitor_field::email, rule_op::contains, "@"};
    general.agents = {"general"};
    routing_rule vip;
    vip.priority = 1;
    vip.when = {visitor_field::crm_status, rule_op::equals, "customer"};
    vip.agents = {"vip"};
    rules.rules = {general, vip};
    config.routes = {rules};
    config.accounts = {{"bigco.com", "owner"}};
    router_harness h{config};
    for (const auto* agent : {"owner", "vip", "general"}) h.connect(agent);

    visitor_profile from_bigco;
    from_bigco.email = "Ann@BigCo.com";
    from_bigco.crm_status = "Customer";
    h.request("c1", "v1", "inbound", from_bigco);
    CHECK(h.only_offer().agent_id == "owner");

    visitor_profile customer;
    customer.email = "x@small.io";
    customer.crm_status = "CUSTOMER";
    h.request("c2", "v2", "inbound", customer);
    CHECK(h.only_offer().agent_id == "vip");

    visitor_profile lead;
    lead.email = "y@small.io";
    lead.crm_status = "lead";
    h.request("c3", "v3", "inbound", lead);
    CHECK(h.only_offer().agent_id == "general");

    visitor_profile company_only;
    company_only.company = "BIGCO.COM";
    h.request("c4", "v4", "inbound", company_only);
    CHECK(h.only_offer().agent_id == "owner");

    h.request("c5", "v5", "inbound");  // matches no rule
    CHECK(h.all<send_offer>().empty());
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 1);
}

namespace {

// Whether a rules route with the single rule `field op value` offers the chat
// of a visitor with `profile` to the rule's agent (otherwise it falls back).
bool rule_matches(visitor_field field, rule_op op, const std::string& value, const visitor_profile& profile) {
    tenant_config config;
    config.agents = {make_agent("ruled")};
    auto route = make_route("inbound", route_type::rules);
    routing_rule rule;
    rule.when = {field, op, value};
    rule.agents = {"ruled"};
    route.rules = {rule};
    config.routes = {route};
    router_harness h{config};
    h.connect("ruled");
    h.request("c1", "v1", "inbound", profile);
    const auto offers = h.all<send_offer>();
    if (offers.empty()) {
        CHECK(h.visitor_events<visitor_event::fallback>().size() == 1);
        return false;
    }
    CHECK(offers.size() == 1);
    CHECK(offers.front().agent_id == "ruled");
    return true;
}

visitor_profile with_crm_status(std::string status) {
    visitor_profile profile;
    profile.email = "ann@small.io";
    profile.crm_status = std::move(status);
    return profile;
}

}  // namespace

TEST_CASE("every rule operator matches a supplied field and never a missing one, not even not_equals") {
    struct operator_case {
        rule_op op;
        const char* rule_value;
        const char* matching;
        const char* not_matching;
    };
    const operator_case cases[] = {
        {rule_op::equals, "Customer", "CUSTOMER", "Lead"},
        {rule_op::not_equals, "Customer", "Lead", "customer"},
        {rule_op::contains, "stom", "Customer", "Lead"},
        {rule_op::starts_with, "cust", "Customer", "Lead"},
        {rule_op::ends_with, "MER", "Customer", "Lead"},
    };
    for (const auto& c : cases) {
        CAPTURE(static_cast<int>(c.op));
        CHECK(rule_matches(visitor_field::crm_status, c.op, c.rule_value, with_crm_status(c.matching)));
        CHECK_FALSE(rule_matches(visitor_field::crm_status, c.op, c.rule_value, with_crm_status(c.not_matching)));
        // Other fields are known; crm_status is not.
        CHECK_FALSE(rule_matches(visitor_field::crm_status, c.op, c.rule_value, with_crm_status("")));
        // Nothing known at all.
        CHECK_FALSE(rule_matches(visitor_field::crm_status, c.op, c.rule_value, visitor_profile{}));
    }

    const visitor_field fields[] = {visitor_field::name, visitor_field::job_title, visitor_field::email,
        visitor_field::email_domain, visitor_field::phone, visitor_field::crm_status, visitor_field::company};
    for (const auto field : fields) {
        CAPTURE(static_cast<int>(field));
        CHECK_FALSE(rule_matches(field, rule_op::not_equals, "Customer", visitor_profile{}));
    }

    // email_domain is absent when email is; a present domain behaves like any field.
    visitor_profile no_email;
    no_email.company = "Small";
    CHECK_FALSE(rule_matches(visitor_field::email_domain, rule_op::not_equals, "bigco.com", no_email));
    CHECK(rule_matches(visitor_field::email_domain, rule_op::not_equals, "bigco.com", with_crm_status("Lead")));
    CHECK_FALSE(rule_matches(visitor_field::email_domain, rule_op::not_equals, "SMALL.io", with_crm_status("Lead")));
}

TEST_CASE("fallback_route is tried when no agent of the route is eligible at all") {
    tenant_config config;
    config.agents = {make_agent("a1", 10, {"red"}), make_agent("a2", 10, {"blue"})};
    auto red = make_route("red", route_type::team);
    red.team = "red";
    red.fallback_route = "blue";
    auto blue = make_route("blue", route_type::team);
    blue.team = "blue";
    config.routes = {red, blue};
    router_harness h{config};
    h.connect("a2");
    h.request("c1", "v1", "red");
    CHECK(h.only_offer().agent_id == "a2");
    CHECK(h.router.conversation("c1")->route == "blue");
}

TEST_CASE("queue: FIFO with live positions, drained the moment capacity frees, fallback after queue_wait") {
    tenant_config config;
    config.agents = {make_agent("a1", 1)};
    auto route = make_route("support");
    route.queue_wait = 5min;
    route.fallback_message = "sorry";
    config.routes = {route};
    router_harness h{config};
    h.connect("a1");
    h.request("c1", "v1", "support");
    h.accept(h.only_offer().offer_id, "a1");

    for (int i = 2; i <= 4; ++i) {
        const auto result = h.request("c" + std::to_string(i), "v" + std::to_string(i), "support");
        CHECK(result.state == conversation_state::queued);
        const auto queued = h.visitor_events<visitor_event::queued>();
        REQUIRE(queued.size() == 1);
        CHECK(std::get<visitor_event::queued>(queued[0].event).position == i - 1);
    }
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c2", "c3", "c4"});
    CHECK(h.router.queue("support")->depth == 3);

    h.clock.advance(1min);
    h.out.clear();
    REQUIRE(h.router.chat_ended("c1", ended_by::agent, h.clock.now(), h.out) == outcome::ok);
    const auto offer = h.only_offer();
    CHECK(offer.conversation_id == "c2");
    const auto positions = h.visitor_events<visitor_event::queued>();
    REQUIRE(positions.size() == 2);
    CHECK(positions[0].conversation_id == "c3");
    CHECK(std::get<visitor_event::queued>(positions[0].event).position == 1);
    CHECK(positions[1].conversation_id == "c4");
    CHECK(std::get<visitor_event::queued>(positions[1].event).position == 2);

    // c2's offer is declined: nobody else can take it, it waits at the head again.
    h.decline(offer.offer_id, "a1");
    // a1 is free but already tried c2, so c3 (next in line) gets it; c2 keeps the head.
    const auto to_c3 = h.only_offer();
    CHECK(to_c3.conversation_id == "c3");
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c2", "c4"});
    CHECK(h.accept(to_c3.offer_id, "a1") == outcome::ok);

    h.advance(4min);  // c2 and c4 waited 5 minutes: fallback
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 2);
    CHECK_FALSE(h.router.conversation("c2").has_value());
    CHECK_FALSE(h.router.conversation("c4").has_value());
}

TEST_CASE("the last session dropping withdraws offers at once and holds chats for the grace period") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1", "tab1");
    h.connect("a1", "tab2");
    h.connect("a2");
    h.request("c1", "v1", "sales");
    h.accept(h.only_offer().offer_id, "a1");
    h.request("c2", "v2", "sales");
    const auto to_a2 = h.only_offer();
    CHECK(to_a2.agent_id == "a2");
    h.request("c3", "v3", "sales");
    const auto to_a1 = h.only_offer();
    CHECK(to_a1.agent_id == "a1");
    CHECK(h.accept(to_a2.offer_id, "a2") == outcome::ok);

    h.disconnect("a1", "tab1");
    CHECK(h.all<withdraw_offer>().empty());  // still one session
    h.disconnect("a1", "tab2");
    const auto withdrawn = h.all<withdraw_offer>();
    REQUIRE(withdrawn.size() == 1);
    CHECK(withdrawn[0].offer_id == to_a1.offer_id);
    CHECK(withdrawn[0].reason == withdraw_reason::agent_unavailable);
    const auto rerouted = h.only_offer();  // at once
    CHECK(rerouted.agent_id == "a2");
    CHECK(rerouted.conversation_id == "c3");
    const auto away = h.visitor_events<visitor_event::agent_away>();
    REQUIRE(away.size() == 1);
    CHECK(away[0].conversation_id == "c1");
    CHECK(h.accept(rerouted.offer_id, "a2") == outcome::ok);
    CHECK(h.router.agent("a1")->in_grace);

    SECTION("back within the grace period: chats stay, visitor told agent_back") {
        h.advance(59s);
        h.connect("a1");
        CHECK(h.visitor_events<visitor_event::agent_back>().size() == 1);
        h.advance(10s);
        CHECK(h.router.conversation("c1")->agent_id == "a1");
    }
    SECTION("grace runs out: the chat is routed again to someone else") {
        h.connect("a3");
        h.advance(60s);
        const auto states = h.all<conversation_state_changed>();
        REQUIRE_FALSE(states.empty());
        CHECK(states[0].state == conversation_state::routing);
        const auto offer = h.only_offer();
        CHECK(offer.conversation_id == "c1");
        CHECK(offer.agent_id != "a1");
        CHECK(h.router.agent("a1")->active_conversations.empty());
    }
}

TEST_CASE("a conversation idle for 10 minutes ends with idle_timeout; messages reset the timer") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    h.accept(h.only_offer().offer_id, "a1");
    h.advance(9min);
    h.out.clear();
    h.router.message_seen("c1", h.clock.now(), h.out);
    h.advance(10min - 1ms);
    CHECK(h.router.conversation("c1").has_value());
    h.advance(1ms);
    const auto ended = h.visitor_events<visitor_event::ended>();
    REQUIRE(ended.size() == 1);
    CHECK(std::get<visitor_event::ended>(ended[0].event).reason == end_reason::idle_timeout);
    CHECK_FALSE(h.router.conversation("c1").has_value());
    CHECK(h.router.stats().capacity_in_use == 0);
}

TEST_CASE("visitor leaving withdraws the pending offer with reason visitor_left") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    const auto offer = h.only_offer();
    h.out.clear();
    CHECK(h.router.visitor_left("c1", h.clock.now(), h.out) == outcome::ok);
    const auto withdrawn = h.all<withdraw_offer>();
    REQUIRE(withdrawn.size() == 1);
    CHECK(withdrawn[0].reason == withdraw_reason::visitor_left);
    CHECK(h.accept(offer.offer_id, "a1") == outcome::conflict);
    CHECK(h.router.chat_ended("c1", ended_by::visitor, h.clock.now(), h.out) == outcome::not_found);
}

TEST_CASE("auto-away after N consecutive missed offers") {
    auto config = three_agents_round_robin();
    config.settings.auto_away_after_missed = 2;
    config.agents = {make_agent("a1")};
    config.routes[0].max_attempts = 1;
    router_harness h{config};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    h.advance(45s);
    CHECK(h.all<notify_agent_availability>().empty());
    h.request("c2", "v2", "sales");
    h.advance(45s);
    const auto changes = h.all<notify_agent_availability>();
    REQUIRE(changes.size() == 1);
    CHECK_FALSE(changes[0].state.available);
    CHECK(changes[0].state.source == availability_source::override);
    h.request("c3", "v3", "sales");
    CHECK(h.all<send_offer>().empty());
}

TEST_CASE("queue: one event tells each visitor still waiting its position once, however often the queue moved") {
    tenant_config config;
    auto route = make_route("support");
    route.queue_wait = 5min;
    config.routes = {route};
    router_harness h{config};
    // No agent: 300 wait, the first 200 enqueued a second before the last 100.
    for (int i = 0; i < 300; ++i) {
        if (i == 200) h.clock.advance(1s);
        CHECK(h.request("c" + std::to_string(i), "v" + std::to_string(i), "support").state ==
              conversation_state::queued);
    }
    // The first 200 time out in one event: 200 removals from the head.
    h.out.clear();
    h.clock.advance(5min - 1s);
    h.router.timer_fired(h.clock.now(), h.out);
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 200);
    const auto positions = h.visitor_events<visitor_event::queued>();
    REQUIRE(positions.size() == 100);  // not one per visitor behind each removal (about 20,000)
    for (std::size_t i = 0; i < positions.size(); ++i) {
        CHECK(positions[i].conversation_id == "c" + std::to_string(200 + i));
        CHECK(std::get<visitor_event::queued>(positions[i].event).position == static_cast<int>(i + 1));
    }
}

TEST_CASE("queue: a route's queue is bounded by max_queue_length; beyond it a request falls back") {
    tenant_config config;
    config.settings.max_queue_length = 3;
    auto route = make_route("support");
    route.queue_wait = 5min;
    route.fallback_message = "too many waiting";
    config.routes = {route};
    router_harness h{config};
    for (int i = 1; i <= 3; ++i)
        CHECK(h.request("c" + std::to_string(i), "v" + std::to_string(i), "support").state ==
              conversation_state::queued);
    h.request("c4", "v4", "support");
    const auto fallbacks = h.visitor_events<visitor_event::fallback>();
    REQUIRE(fallbacks.size() == 1);
    CHECK(fallbacks[0].conversation_id == "c4");
    CHECK(std::get<visitor_event::fallback>(fallbacks[0].event).message == "too many waiting");
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c1", "c2", "c3"});
}

TEST_CASE("toggling unavailable withdraws pending offers; toggling back drains the queue") {
    tenant_config config;
    config.agents = {make_agent("a1")};
    auto route = make_route("support");
    route.queue_wait = 10min;
    config.routes = {route};
    router_harness h{config};
    h.connect("a1");
    h.request("c1", "v1", "support");
    const auto offer = h.only_offer();
    h.out.clear();
    const auto off = h.router.set_availability("a1", false, h.clock.now(), h.out);
    REQUIRE(off.has_value());
    CHECK_FALSE(off->available);
    const auto withdrawn = h.all<withdraw_offer>();
    REQUIRE(withdrawn.size() == 1);
    CHECK(withdrawn[0].offer_id == offer.offer_id);
    CHECK(h.router.conversation("c1")->state == conversation_state::queued);
    h.request("c2", "v2", "support");
    h.out.clear();
    h.router.set_availability("a1", true, h.clock.now(), h.out);
    // c1 already tried a1, so the next in line is offered.
    CHECK(h.only_offer().conversation_id == "c2");
}

TEST_CASE("config changes keep live state") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.connect("a2");
    h.request("c1", "v1", "sales");
    h.accept(h.only_offer().offer_id, "a1");
    h.request("c2", "v2", "sales");
    CHECK(h.only_offer().agent_id == "a2");

    SECTION("removing an agent withdraws its offers and routes its chats again") {
        h.connect("a3");
        h.out.clear();
        CHECK(h.router.remove_agent("a1", h.clock.now(), h.out) == outcome::ok);
        const auto offer = h.only_offer();
        CHECK(offer.conversation_id == "c1");
        CHECK(offer.agent_id == "a2");  // least recently offered first
        CHECK_FALSE(h.router.agent("a1").has_value());
        CHECK(h.router.agent_session_opened("a1", "x", h.clock.now(), h.out) == outcome::not_found);
    }
    SECTION("updating an agent keeps its chats and sessions") {
        auto changed = make_agent("a1", 1, {"red"});
        h.out.clear();
        h.router.upsert_agent(changed, h.clock.now(), h.out);
        CHECK(h.router.agent("a1")->active_conversations == std::vector<std::string>{"c1"});
        CHECK(h.router.agent("a1")->sessions == 1);
        h.request("c3", "v3", "sales");
        CHECK(h.only_offer().agent_id == "a2");  // a1 is at its new max_chats = 1
    }
    SECTION("removing a route falls back its queue; unknown routes are not_found") {
        CHECK(h.router.remove_route("nope", h.clock.now(), h.out) == outcome::not_found);
        CHECK(h.router.remove_route("sales", h.clock.now(), h.out) == outcome::ok);
        CHECK(h.request("c9", "v9", "sales").result == outcome::not_found);
        CHECK(h.router.conversation("c1")->state == conversation_state::active);
    }
    SECTION("invalid configuration is rejected") {
        CHECK_THROWS_AS(h.router.upsert_agent(make_agent("a9", 11), h.clock.now(), h.out), std::invalid_argument);
        auto bad_zone = make_agent("a9");
        bad_zone.schedule.tz = "Mars/Olympus";
        CHECK_THROWS_AS(h.router.upsert_agent(bad_zone, h.clock.now(), h.out), std::invalid_argument);
    }
}

TEST_CASE("offer ids carry the instance prefix and never repeat") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    std::vector<std::string> ids;
    for (int i = 0; i < 20; ++i) {
        h.request("c" + std::to_string(i), "v" + std::to_string(i), "sales");
        const auto offer = h.only_offer();
        ids.push_back(offer.offer_id);
        h.decline(offer.offer_id, "a1");
    }
    std::sort(ids.begin(), ids.end());
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
    CHECK(ids.front().rfind("o_t_", 0) == 0);
}

TEST_CASE("restart recovery restores chats and overrides, then routes what was routing") {
    tenant_config config = three_agents_round_robin();
    router_harness h{config};
    restored_conversation active;
    active.conversation_id = "c1";
    active.visitor_id = "v1";
    active.route = "sales";
    active.state = conversation_state::active;
    active.agent_id = "a1";
    active.requested_at = h.clock.now() - 5min;
    active.last_activity_at = h.clock.now() - 1min;
    restored_conversation routing;
    routing.conversation_id = "c2";
    routing.visitor_id = "v2";
    routing.route = "sales";
    routing.tried_agents = {"a2"};
    routing.requested_at = h.clock.now() - 1min;
    routing.last_activity_at = routing.requested_at;
    REQUIRE(h.router.restore_conversation(active, h.clock.now()) == outcome::ok);
    REQUIRE(h.router.restore_conversation(routing, h.clock.now()) == outcome::ok);
    CHECK(h.router.restore_conversation(routing, h.clock.now()) == outcome::conflict);
    h.router.restore_availability_override("a3", false, h.clock.now() + 1h, h.clock.now());
    CHECK_FALSE(h.router.availability_of("a3", h.clock.now())->available);
    h.connect("a2");
    h.connect("a3");
    h.out.clear();
    h.router.finish_restore(h.clock.now(), h.out);
    // a2 was tried, a3 is unavailable (restored override): nobody is eligible.
    CHECK(h.all<send_offer>().empty());
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 1);
    CHECK(h.router.agent("a1")->active_conversations == std::vector<std::string>{"c1"});
    CHECK(h.router.agent("a1")->in_grace);
    h.connect("a1");
    CHECK(h.visitor_events<visitor_event::agent_back>().size() == 1);
}

// ---- visitor presence: a visitor who goes away stops holding a place ----------------------

namespace {

// One agent (max_chats 1) on a queue route "support" (queue_wait 10 min).
tenant_config one_agent_queue() {
    tenant_config config;
    config.agents = {make_agent("a1", 1)};
    auto route = make_route("support");
    route.queue_wait = 10min;
    config.routes = {route};
    return config;
}

outcome open_visitor(router_harness& h, const std::string& conversation, const std::string& session) {
    h.out.clear();
    return h.router.visitor_session_opened(conversation, session, h.clock.now(), h.out);
}

outcome close_visitor(router_harness& h, const std::string& conversation, const std::string& session) {
    h.out.clear();
    return h.router.visitor_session_closed(conversation, session, h.clock.now(), h.out);
}

end_reason ended_reason(const notify_visitor& notice) { return std::get<visitor_event::ended>(notice.event).reason; }

}  // namespace

TEST_CASE("visitor presence: the last of its sessions closing starts visitor_grace; then the offer goes, visitor_left") {
    router_harness h{three_agents_round_robin()};  // visitor_grace: 30 s by default
    h.connect("a1");
    h.request("c1", "v1", "sales");
    const auto offer = h.only_offer();
    CHECK(open_visitor(h, "c1", "tab1") == outcome::ok);
    CHECK(open_visitor(h, "c1", "tab2") == outcome::ok);
    CHECK(open_visitor(h, "c1", "tab2") == outcome::ok);  // twice: still one session
    CHECK(h.router.conversation("c1")->visitor_sessions == 2);

    // One tab of two closes: the visitor is still there.
    CHECK(close_visitor(h, "c1", "tab1") == outcome::ok);
    CHECK_FALSE(h.router.conversation("c1")->visitor_grace_ends_at.has_value());
    CHECK(close_visitor(h, "c1", "tab1") == outcome::not_found);  // not attached any more
    h.clock.advance(10s);
    CHECK(close_visitor(h, "c1", "tab2") == outcome::ok);
    CHECK(h.router.conversation("c1")->visitor_grace_ends_at == h.clock.now() + 30s);
    // The router's one wakeup moves to the visitor grace (before the offer's expiry at 45 s).
    const auto wakeups = h.all<schedule_wakeup>();
    REQUIRE(wakeups.size() == 1);
    CHECK(wakeups[0].at == h.clock.now() + 30s);

    h.advance(30s - 1ms);  // within the grace nothing changes
    CHECK(h.out.empty());
    CHECK(h.router.conversation("c1")->offer_id == offer.offer_id);
    h.advance(1ms);
    const auto withdrawn = h.all<withdraw_offer>();
    REQUIRE(withdrawn.size() == 1);
    CHECK(withdrawn[0].offer_id == offer.offer_id);
    CHECK(withdrawn[0].reason == withdraw_reason::visitor_left);
    const auto ended = h.visitor_events<visitor_event::ended>();
    REQUIRE(ended.size() == 1);
    CHECK(ended_reason(ended[0]) == end_reason::visitor_ended);
    const auto states = h.all<conversation_state_changed>();
    REQUIRE(states.size() == 1);
    CHECK(states[0].state == conversation_state::ended);
    CHECK(states[0].reason == end_reason::visitor_ended);
    const auto activities = h.all<record_activity>();
    REQUIRE(activities.size() == 1);
    CHECK(activities[0].type == activity_type::chat_ended);
    CHECK_FALSE(h.router.conversation("c1").has_value());
    CHECK_FALSE(h.router.open_conversation_of_visitor("v1").has_value());
    CHECK(h.accept(offer.offer_id, "a1") == outcome::conflict);
    CHECK(h.router.stats().capacity_in_use == 0);
    // The conversation is gone: its sessions are too.
    CHECK(open_visitor(h, "c1", "tab2") == outcome::not_found);
    CHECK(close_visitor(h, "c1", "tab2") == outcome::not_found);
}

TEST_CASE("visitor presence: a session back within visitor_grace keeps the queue place and the pending offer") {
    router_harness h{one_agent_queue()};
    h.connect("a1");
    h.request("c1", "v1", "support");
    const auto offer = h.only_offer();
    h.request("c2", "v2", "support");
    h.request("c3", "v3", "support");
    for (const auto* id : {"c1", "c2", "c3"}) REQUIRE(open_visitor(h, id, "s") == outcome::ok);

    // A page navigation: c2 (queued, position 1) and c1 (holding the offer) drop and come back.
    CHECK(close_visitor(h, "c2", "s") == outcome::ok);
    CHECK(close_visitor(h, "c1", "s") == outcome::ok);
    h.advance(29s);
    CHECK(open_visitor(h, "c2", "s2") == outcome::ok);
    CHECK(open_visitor(h, "c1", "s2") == outcome::ok);
    CHECK_FALSE(h.router.conversation("c1")->visitor_grace_ends_at.has_value());
    CHECK_FALSE(h.router.conversation("c2")->visitor_grace_ends_at.has_value());
    h.advance(10s);  // past where the grace would have ended, before the offer expires (45 s)
    CHECK(h.out.empty());
    CHECK(h.router.conversation("c1")->offer_id == offer.offer_id);
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c2", "c3"});
    CHECK(h.router.conversation("c2")->queue_position == 1);
    CHECK(h.accept(offer.offer_id, "a1") == outcome::ok);
}

TEST_CASE("visitor presence: visitors who went away leave the queue; those behind hear their new place once") {
    router_harness h{one_agent_queue()};
    h.connect("a1");
    h.request("c0", "v0", "support");
    h.accept(h.only_offer().offer_id, "a1");  // a1 is full: the rest wait
    for (int i = 1; i <= 4; ++i) {
        const auto id = "c" + std::to_string(i);
        REQUIRE(h.request(id, "v" + std::to_string(i), "support").state == conversation_state::queued);
        REQUIRE(open_visitor(h, id, "s") == outcome::ok);
    }
    // c1 and c2 close their widget at the same moment; c3 and c4 stay.
    CHECK(close_visitor(h, "c1", "s") == outcome::ok);
    CHECK(h.visitor_events<visitor_event::queued>().empty());  // nobody moves yet
    CHECK(close_visitor(h, "c2", "s") == outcome::ok);
    h.advance(30s);
    const auto ended = h.visitor_events<visitor_event::ended>();
    REQUIRE(ended.size() == 2);
    CHECK(ended_reason(ended[0]) == end_reason::visitor_ended);
    CHECK(ended_reason(ended[1]) == end_reason::visitor_ended);
    // One event moved the queue twice: c3 and c4 are each told once.
    const auto positions = h.visitor_events<visitor_event::queued>();
    REQUIRE(positions.size() == 2);
    CHECK(positions[0].conversation_id == "c3");
    CHECK(std::get<visitor_event::queued>(positions[0].event).position == 1);
    CHECK(positions[1].conversation_id == "c4");
    CHECK(std::get<visitor_event::queued>(positions[1].event).position == 2);
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c3", "c4"});
    CHECK(h.router.queue("support")->depth == 2);
    // The agent frees up: the next visitor who is still there gets it.
    h.out.clear();
    REQUIRE(h.router.chat_ended("c0", ended_by::agent, h.clock.now(), h.out) == outcome::ok);
    CHECK(h.only_offer().conversation_id == "c3");
}

TEST_CASE("visitor presence: anonymous visitors who request and leave do not fill the queue") {
    auto config = one_agent_queue();
    config.settings.max_queue_length = 3;
    router_harness h{config};
    for (int i = 1; i <= 3; ++i) {
        const auto id = "c" + std::to_string(i);
        REQUIRE(h.request(id, "v" + std::to_string(i), "support").state == conversation_state::queued);
        REQUIRE(open_visitor(h, id, "s") == outcome::ok);
        REQUIRE(close_visitor(h, id, "s") == outcome::ok);
    }
    h.request("c4", "v4", "support");  // full meanwhile: fallback
    CHECK(h.visitor_events<visitor_event::fallback>().size() == 1);
    h.advance(30s);
    CHECK(h.router.queue("support")->depth == 0);
    CHECK(h.request("c5", "v5", "support").state == conversation_state::queued);
}

TEST_CASE("visitor presence: active chats are not affected; an offer accepted during the grace makes it active") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    const auto offer = h.only_offer();
    REQUIRE(open_visitor(h, "c1", "s") == outcome::ok);
    REQUIRE(close_visitor(h, "c1", "s") == outcome::ok);
    h.advance(10s);
    CHECK(h.accept(offer.offer_id, "a1") == outcome::ok);
    CHECK_FALSE(h.router.conversation("c1")->visitor_grace_ends_at.has_value());
    h.advance(5min);
    CHECK(h.router.conversation("c1")->state == conversation_state::active);

    // An active chat's visitor closing its last session starts nothing: the idle timeout ends it.
    h.request("c2", "v2", "sales");
    h.accept(h.only_offer().offer_id, "a1");
    REQUIRE(open_visitor(h, "c2", "s") == outcome::ok);
    REQUIRE(close_visitor(h, "c2", "s") == outcome::ok);
    CHECK_FALSE(h.router.conversation("c2")->visitor_grace_ends_at.has_value());
    h.advance(10min - 1ms);
    CHECK(h.router.conversation("c2")->state == conversation_state::active);
    h.advance(1ms);
    const auto ended = h.visitor_events<visitor_event::ended>();
    REQUIRE(ended.size() == 1);
    CHECK(ended[0].conversation_id == "c2");
    CHECK(ended_reason(ended[0]) == end_reason::idle_timeout);
}

TEST_CASE("visitor presence: a chat routed again while its visitor is away gets a visitor grace from then") {
    router_harness h{three_agents_round_robin()};
    h.connect("a1");
    h.connect("a2");
    h.request("c1", "v1", "sales");
    h.accept(h.only_offer().offer_id, "a1");
    REQUIRE(open_visitor(h, "c1", "s") == outcome::ok);
    REQUIRE(close_visitor(h, "c1", "s") == outcome::ok);
    h.advance(5min);
    h.disconnect("a1");
    h.advance(60s);  // a1's grace runs out: offered to a2, and the visitor's grace starts now
    const auto offer = h.only_offer();
    CHECK(offer.agent_id == "a2");
    CHECK(h.router.conversation("c1")->visitor_grace_ends_at == h.clock.now() + 30s);

    SECTION("nobody comes back: the offer is withdrawn, visitor_left") {
        h.advance(30s);
        const auto withdrawn = h.all<withdraw_offer>();
        REQUIRE(withdrawn.size() == 1);
        CHECK(withdrawn[0].offer_id == offer.offer_id);
        CHECK(withdrawn[0].reason == withdraw_reason::visitor_left);
        CHECK_FALSE(h.router.conversation("c1").has_value());
    }
    SECTION("the visitor comes back in time: the chat goes on") {
        h.advance(20s);
        REQUIRE(open_visitor(h, "c1", "s2") == outcome::ok);
        CHECK(h.accept(offer.offer_id, "a2") == outcome::ok);
        h.advance(1min);
        CHECK(h.router.conversation("c1")->agent_id == "a2");
    }
}

TEST_CASE("visitor presence: visitor_grace 0 ends the conversation as the last session closes") {
    auto config = three_agents_round_robin();
    config.settings.visitor_grace = duration::zero();
    router_harness h{config};
    h.connect("a1");
    h.request("c1", "v1", "sales");
    const auto offer = h.only_offer();
    REQUIRE(open_visitor(h, "c1", "s") == outcome::ok);
    REQUIRE(close_visitor(h, "c1", "s") == outcome::ok);
    const auto withdrawn = h.all<withdraw_offer>();
    REQUIRE(withdrawn.size() == 1);
    CHECK(withdrawn[0].reason == withdraw_reason::visitor_left);
    CHECK_FALSE(h.router.conversation("c1").has_value());
    CHECK(h.accept(offer.offer_id, "a1") == outcome::conflict);
}

TEST_CASE("visitor presence: conversations whose visitor sessions were never reported are not affected") {
    router_harness h{one_agent_queue()};
    h.request("c1", "v1", "support");
    h.advance(5min);
    CHECK(h.router.conversation("c1")->state == conversation_state::queued);
    CHECK(open_visitor(h, "nope", "s") == outcome::not_found);
    CHECK(close_visitor(h, "c1", "s") == outcome::not_found);
}

TEST_CASE("visitor presence after a restart: waiting chats without a visitor session get their grace at finish_restore") {
    router_harness h{one_agent_queue()};
    auto restored = [&](std::string id, std::string visitor, conversation_state state, std::string agent = {}) {
        restored_conversation r;
        r.conversation_id = std::move(id);
        r.visitor_id = std::move(visitor);
        r.route = "support";
        r.state = state;
        r.agent_id = std::move(agent);
        r.requested_at = h.clock.now() - 2min;
        r.last_activity_at = r.requested_at;
        REQUIRE(h.router.restore_conversation(r, h.clock.now()) == outcome::ok);
    };
    restored("c1", "v1", conversation_state::active, "a1");
    restored("c2", "v2", conversation_state::routing);  // comes back before finish_restore
    restored("c3", "v3", conversation_state::queued);   // does not come back
    CHECK(open_visitor(h, "c2", "s") == outcome::ok);
    h.connect("a1");
    h.clock.advance(10s);  // the restore window
    h.out.clear();
    h.router.finish_restore(h.clock.now(), h.out);
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c2", "c3"});
    CHECK_FALSE(h.router.conversation("c2")->visitor_grace_ends_at.has_value());
    CHECK(h.router.conversation("c3")->visitor_grace_ends_at == h.clock.now() + 30s);
    CHECK_FALSE(h.router.conversation("c1")->visitor_grace_ends_at.has_value());  // active: not affected
    h.advance(30s);
    const auto ended = h.visitor_events<visitor_event::ended>();
    REQUIRE(ended.size() == 1);
    CHECK(ended[0].conversation_id == "c3");
    CHECK(ended_reason(ended[0]) == end_reason::visitor_ended);
    CHECK(h.router.queued_conversations("support") == std::vector<std::string>{"c2"});

    // c1's visitor never came back either: routed again (a1 removed), its visitor grace starts.
    h.out.clear();
    h.router.upsert_agent(make_agent("a2", 1), h.clock.now(), h.out);
    h.connect("a2");  // takes c2, the head of the queue
    h.out.clear();
    REQUIRE(h.router.remove_agent("a1", h.clock.now(), h.out) == outcome::ok);
    CHECK(h.router.conversation("c1")->visitor_grace_ends_at == h.clock.now() + 30s);
}

TEST_CASE("restart recovery: a restored chat that ended before finish_restore is not routed, nor the one in its slot") {
    router_harness h{three_agents_round_robin()};
    restored_conversation r;
    r.conversation_id = "c1";
    r.visitor_id = "v1";
    r.route = "sales";
    r.requested_at = h.clock.now() - 1min;
    r.last_activity_at = r.requested_at;
    REQUIRE(h.router.restore_conversation(r, h.clock.now()) == outcome::ok);
    h.connect("a1");
    REQUIRE(h.router.chat_ended("c1", ended_by::visitor, h.clock.now(), h.out) == outcome::ok);
    h.request("c2", "v2", "sales");  // may reuse c1's slot
    const auto offer = h.only_offer();
    h.out.clear();
    h.router.finish_restore(h.clock.now(), h.out);
    CHECK(h.all<send_offer>().empty());
    CHECK(h.all<withdraw_offer>().empty());
    REQUIRE(h.router.conversation("c2").has_value());
    CHECK(h.router.conversation("c2")->offer_id == offer.offer_id);
    CHECK(h.accept(offer.offer_id, "a1") == outcome::ok);
}

TEST_CASE("a state change carries the agents tried so far, as the router call leaves them") {
    router_harness h{three_agents_round_robin()};
    for (const auto* agent : {"a1", "a2", "a3"}) h.connect(agent);
    h.request("c1", "v1", "sales");
    // The chat's first change (to routing) comes before its first offer, in the same call:
    // persisting it must already name the agent offered.
    auto states = h.all<conversation_state_changed>();
    REQUIRE(states.size() == 1);
    const auto first = h.only_offer();
    CHECK(states[0].tried_agents == std::vector<std::string>{first.agent_id});
    CHECK(h.decline(first.offer_id, first.agent_id) == outcome::ok);
    const auto second = h.only_offer();
    CHECK(h.accept(second.offer_id, second.agent_id) == outcome::ok);
    states = h.all<conversation_state_changed>();
    REQUIRE(states.size() == 1);
    CHECK(states[0].state == conversation_state::active);
    CHECK(states[0].tried_agents == std::vector<std::string>{first.agent_id, second.agent_id});
    CHECK(h.router.conversation("c1")->tried_agents == states[0].tried_agents);
}
