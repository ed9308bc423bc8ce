#include <parley/routing/schedule.h>

#include <date/tz.h>

#include <stdexcept>

namespace parley::routing {

namespace {

const date::time_zone* locate_zone_or_throw(const std::string& name) {
    try {
        return date::locate_zone(name.empty() ? std::string{"UTC"} : name);
    } catch (const std::exception& error) {
        throw std::invalid_argument("unknown time zone '" + name + "': " + error.what());
    }
}

// Local times that do not exist (a spring-forward gap) map to the instant of
// the transition; ambiguous ones (fall-back) to their first occurrence.
time_point local_to_sys(const date::time_zone* zone, date::local_time<duration> local) {
    return zone->to_sys(local, date::choose::earliest);
}

}  // namespace

resolved_schedule::resolved_schedule(const weekly_schedule& schedule)
    : zone_(locate_zone_or_throw(schedule.tz)), blocks_(schedule.blocks) {
    for (const auto& block : blocks_) {
        if (block.day > 6 || block.start_minute < 0 || block.end_minute > 24 * 60 ||
            block.start_minute >= block.end_minute) {
            throw std::invalid_argument("bad schedule block (day 0..6, 0 <= start < end <= 1440)");
        }
    }
}

bool resolved_schedule::available_at(time_point now) const {
    if (blocks_.empty()) return true;
    const auto local = zone_->to_local(now);
    const auto local_day = date::floor<date::days>(local);
    const auto minute = std::chrono::floor<std::chrono::minutes>(local - local_day).count();
    const unsigned weekday = date::weekday{local_day}.c_encoding();
    for (const auto& block : blocks_) {
        if (block.day == weekday && block.start_minute <= minute && minute < block.end_minute) return true;
    }
    return false;
}

std::optional<time_point> resolved_schedule::next_block_boundary(time_point now) const {
    if (blocks_.empty()) return std::nullopt;
    const auto local_day = date::floor<date::days>(zone_->to_local(now));
    std::optional<time_point> best;
    // Eight local days always contain the next boundary of a non-empty weekly schedule.
    for (int offset = 0; offset <= 7; ++offset) {
        const auto day = local_day + date::days{offset};
        const unsigned weekday = date::weekday{day}.c_encoding();
        for (const auto& block : blocks_) {
            if (block.day != weekday) continue;
            for (const int minute : {block.start_minute, block.end_minute}) {
                const auto at = local_to_sys(zone_, day + std::chrono::minutes{minute});
                if (at > now && (!best || at < *best)) best = at;
            }
        }
        if (best) break;  // later local days only give later instants
    }
    return best;
}

time_point resolved_schedule::next_midnight(time_point now) const {
    const auto local_day = date::floor<date::days>(zone_->to_local(now));
    auto at = local_to_sys(zone_, local_day + date::days{1});
    if (at <= now) at = local_to_sys(zone_, local_day + date::days{2});
    return at;
}

time_point resolved_schedule::override_expiry(time_point now) const {
    const auto midnight = next_midnight(now);
    const auto boundary = next_block_boundary(now);
    return boundary && *boundary < midnight ? *boundary : midnight;
}

}  // namespace parley::routing
