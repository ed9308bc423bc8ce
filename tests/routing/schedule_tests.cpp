// Weekly schedules in IANA time zones, overrides and their reverts, across
// the 2026 Europe/Paris DST changes.
#include "router_harness.h"

#include <date/date.h>
#include <parley/routing/schedule.h>

using namespace parley::routing;
using namespace parley::routing::test;

namespace {

// Sunday 09:00-17:00, Monday 09:00-12:00 and 14:00-18:00, Paris time.
weekly_schedule paris_schedule() {
    weekly_schedule schedule;
    schedule.tz = "Europe/Paris";
    schedule.blocks = {{0, 9 * 60, 17 * 60}, {1, 9 * 60, 12 * 60}, {1, 14 * 60, 18 * 60}};
    return schedule;
}

time_point utc(date::year_month_day day, std::chrono::minutes time_of_day) {
    return time_point{date::sys_days{day} + time_of_day};
}

using date::March;
using date::October;
using date::year;

}  // namespace

TEST_CASE("schedule blocks are evaluated in the agent's zone, several per day") {
    const resolved_schedule schedule{paris_schedule()};
    const auto monday = year{2026} / March / 30;  // CEST, UTC+2
    CHECK_FALSE(schedule.available_at(utc(monday, 6h + 59min)));  // 08:59 local
    CHECK(schedule.available_at(utc(monday, 7h)));                  // 09:00 local
    CHECK_FALSE(schedule.available_at(utc(monday, 10h)));          // 12:00 local: lunch
    CHECK(schedule.available_at(utc(monday, 12h)));                 // 14:00 local
    CHECK_FALSE(schedule.available_at(utc(monday, 16h)));          // 18:00 local
    CHECK(schedule.next_block_boundary(utc(monday, 8h)) == utc(monday, 10h));
    CHECK(schedule.next_block_boundary(utc(monday, 10h)) == utc(monday, 12h));
}

TEST_CASE("no schedule means always available; UTC when no zone is given") {
    const resolved_schedule always{weekly_schedule{}};
    CHECK(always.available_at(utc(year{2026} / 1 / 1, 3h)));
    CHECK_FALSE(always.next_block_boundary(utc(year{2026} / 1 / 1, 3h)).has_value());
    CHECK(always.next_midnight(utc(year{2026} / 1 / 1, 3h)) == utc(year{2026} / 1 / 2, 0min));
    CHECK_THROWS_AS(resolved_schedule(weekly_schedule{"Nowhere/Atlantis", {}}), std::invalid_argument);
    CHECK_THROWS_AS(resolved_schedule(weekly_schedule{"UTC", {{7, 0, 60}}}), std::invalid_argument);
}

TEST_CASE("spring forward in Paris (2026-03-29): boundaries and midnight use the new offset") {
    const resolved_schedule schedule{paris_schedule()};
    const auto saturday = year{2026} / March / 28;
    const auto sunday = year{2026} / March / 29;
    const auto before_change = utc(saturday, 23h + 30min);  // 00:30 CET on Sunday
    // 09:00 on Sunday is already CEST (UTC+2): 07:00 UTC, not 08:00.
    CHECK(schedule.next_block_boundary(before_change) == utc(sunday, 7h));
    // The Sunday is 23 hours long: next midnight is 22:00 UTC.
    CHECK(schedule.next_midnight(before_change) == utc(sunday, 22h));
    CHECK(schedule.override_expiry(before_change) == utc(sunday, 7h));
    CHECK(schedule.available_at(utc(sunday, 7h)));
    CHECK_FALSE(schedule.available_at(utc(sunday, 6h + 59min)));
}

TEST_CASE("fall back in Paris (2026-10-25): the 25-hour day") {
    const resolved_schedule schedule{paris_schedule()};
    const auto saturday = year{2026} / October / 24;
    const auto sunday = year{2026} / October / 25;
    const auto before_change = utc(saturday, 22h + 30min);  // 00:30 CEST on Sunday
    CHECK(schedule.next_block_boundary(before_change) == utc(sunday, 8h));  // 09:00 CET
    CHECK(schedule.next_midnight(before_change) == utc(sunday, 23h));
    const auto evening = utc(sunday, 20h);  // 21:00 CET, after Sunday's block
    CHECK(schedule.override_expiry(evening) == utc(sunday, 23h));  // midnight comes before Monday 09:00
}

TEST_CASE("a toggle overrides the schedule until the next block boundary and reverts with a notification") {
    tenant_config config;
    auto agent = make_agent("a1");
    agent.schedule = paris_schedule();
    config.agents = {agent};
    config.routes = {make_route("sales")};
    config.settings.idle_timeout = std::chrono::hours{24};
    const auto sunday = year{2026} / March / 29;
    router_harness h{config, utc(year{2026} / March / 28, 23h + 30min)};
    h.connect("a1");
    CHECK_FALSE(h.router.availability_of("a1", h.clock.now())->available);
    h.request("c1", "v1", "sales");
    CHECK(h.all<send_offer>().empty());  // outside the schedule

    h.out.clear();
    const auto on = h.router.set_availability("a1", true, h.clock.now(), h.out);
    REQUIRE(on.has_value());
    CHECK(on->available);
    CHECK(on->source == availability_source::override);
    CHECK(on->until_at == utc(sunday, 7h));
    REQUIRE(h.all<notify_agent_availability>().size() == 1);

    h.request("c2", "v2", "sales");
    h.accept(h.only_offer().offer_id, "a1");

    h.advance(utc(sunday, 7h) - h.clock.now() - 1ms);
    CHECK(h.all<notify_agent_availability>().empty());
    h.advance(1ms);
    const auto reverted = h.all<notify_agent_availability>();
    REQUIRE(reverted.size() == 1);
    CHECK(reverted[0].state.available);  // the block starts: available by schedule now
    CHECK(reverted[0].state.source == availability_source::schedule);
    CHECK_FALSE(reverted[0].state.until_at.has_value());

    // 17:00 CEST = 15:00 UTC: the block ends and the schedule turns unavailable.
    h.advance(utc(sunday, 15h) - h.clock.now());
    const auto closed = h.all<notify_agent_availability>();
    REQUIRE(closed.size() == 1);
    CHECK_FALSE(closed[0].state.available);
    const auto chat = h.router.conversation("c2");
    REQUIRE(chat.has_value());
    CHECK(chat->state == conversation_state::active);  // chats unaffected
}

TEST_CASE("a toggle with no block boundary ahead that day reverts at local midnight") {
    tenant_config config;
    auto agent = make_agent("a1");
    agent.schedule = paris_schedule();
    config.agents = {agent};
    config.routes = {make_route("sales")};
    const auto sunday = year{2026} / October / 25;
    router_harness h{config, utc(sunday, 20h)};  // 21:00 CET
    h.connect("a1");
    h.out.clear();
    const auto on = h.router.set_availability("a1", true, h.clock.now(), h.out);
    CHECK(on->until_at == utc(sunday, 23h));
    SECTION("switching back ends the override at once") {
        h.out.clear();
        const auto off = h.router.set_availability("a1", false, h.clock.now(), h.out);
        CHECK(off->source == availability_source::schedule);
        CHECK_FALSE(off->available);
    }
    SECTION("midnight reverts it") {
        h.advance(3h);
        const auto reverted = h.all<notify_agent_availability>();
        REQUIRE(reverted.size() == 1);
        CHECK_FALSE(reverted[0].state.available);
        CHECK(reverted[0].state.source == availability_source::schedule);
    }
}
