#include <charconv>

#include "parley/storage/records.h"
#include "parley/storage/result.h"
#include "sql.h"

namespace parley::storage {
namespace {

template <class Enum, std::size_t N>
std::optional<Enum> parse_named(std::string_view text, const std::string_view (&names)[N]) {
    for (std::size_t i = 0; i < N; ++i)
        if (names[i] == text) return static_cast<Enum>(i);
    return std::nullopt;
}

constexpr std::string_view error_names[] = {"ok", "not_found", "conflict", "unavailable", "bad_request", "internal"};
constexpr std::string_view state_names[] = {"routing", "queued", "active", "ended"};
constexpr std::string_view sender_names[] = {"visitor", "agent", "system"};
constexpr std::string_view kind_names[] = {"text", "calendar"};
constexpr std::string_view outcome_names[] = {"pending", "accepted", "declined", "expired", "withdrawn"};

}  // namespace

std::string_view to_string(error_kind kind) { return error_names[static_cast<std::size_t>(kind)]; }
std::string_view to_string(conversation_state state) { return state_names[static_cast<std::size_t>(state)]; }
std::string_view to_string(sender_kind sender) { return sender_names[static_cast<std::size_t>(sender)]; }
std::string_view to_string(message_kind kind) { return kind_names[static_cast<std::size_t>(kind)]; }
std::string_view to_string(offer_outcome outcome) { return outcome_names[static_cast<std::size_t>(outcome)]; }

std::optional<conversation_state> parse_conversation_state(std::string_view text) {
    return parse_named<conversation_state>(text, state_names);
}
std::optional<sender_kind> parse_sender_kind(std::string_view text) { return parse_named<sender_kind>(text, sender_names); }
std::optional<message_kind> parse_message_kind(std::string_view text) { return parse_named<message_kind>(text, kind_names); }
std::optional<offer_outcome> parse_offer_outcome(std::string_view text) {
    return parse_named<offer_outcome>(text, outcome_names);
}

namespace detail {

sql_value nullable(const std::optional<std::string>& value) { return value ? sql_value{*value} : sql_value{}; }
sql_value nullable(const std::optional<std::int64_t>& value) { return value ? sql_value{*value} : sql_value{}; }

const std::string& sql_row::text(std::size_t column) const {
    const auto& cell = cells.at(column);
    if (!cell) throw storage_error(error_kind::internal, "unexpected NULL in column " + std::to_string(column));
    return *cell;
}

std::int64_t sql_row::integer(std::size_t column) const {
    const auto& cell = text(column);
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), value);
    if (ec != std::errc{} || end != cell.data() + cell.size())
        throw storage_error(error_kind::internal, "not an integer in column " + std::to_string(column) + ": " + cell);
    return value;
}

std::optional<std::int64_t> sql_row::opt_integer(std::size_t column) const {
    if (is_null(column)) return std::nullopt;
    return integer(column);
}

}  // namespace detail
}  // namespace parley::storage
