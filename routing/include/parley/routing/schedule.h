#pragma once
// Weekly availability schedules evaluated in the agent's IANA time zone with
// Howard Hinnant's date/tz (the OS tz database). Pure functions of `now`.
#include <optional>

#include <parley/routing/config.h>

namespace date {
class time_zone;
}

namespace parley::routing {

// A schedule bound to its resolved time zone. Construction throws
// std::invalid_argument for an unknown zone or a malformed block.
class resolved_schedule {
public:
    explicit resolved_schedule(const weekly_schedule& schedule);

    bool has_blocks() const { return !blocks_.empty(); }

    // Whether `now` falls inside a block (always true without blocks).
    bool available_at(time_point now) const;

    // The first block start or end strictly after `now`; nullopt without blocks.
    std::optional<time_point> next_block_boundary(time_point now) const;

    // The next local midnight strictly after `now`.
    time_point next_midnight(time_point now) const;

    // When a toggle made at `now` reverts by itself: the next block boundary
    // or the next local midnight, whichever comes first.
    time_point override_expiry(time_point now) const;

private:
    const date::time_zone* zone_;
    std::vector<schedule_block> blocks_;
};

}  // namespace parley::routing
