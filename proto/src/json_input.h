#pragma once
// Private helpers shared by the frame and admin-body decoders: safe parsing of
// untrusted JSON text and a field reader that turns every problem into one
// protocol_error naming the field.
#include <cstddef>
#include <cstdint>
#include <span>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "parley/proto/common.h"
#include "parley/proto/decode.h"

namespace parley::proto::detail {

// True when `text` is well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF).
bool is_valid_utf8(std::string_view text);

// Number of code points in `text`, which must be valid UTF-8.
std::size_t count_code_points(std::string_view text);

// Loose email check (something@something): CRM data is messy, and only
// display and account routing (the domain after the last '@') rely on it.
bool looks_like_email(std::string_view text);

// Deepest nesting of arrays/objects in JSON text, ignoring brackets inside
// strings. Scans without recursion so hostile input cannot exhaust the stack.
std::size_t nesting_depth(std::string_view json_text);

// Parses untrusted text into a JSON object: size (too_large), UTF-8, nesting
// depth, syntax and "is an object" (bad_request) are checked; never throws.
// `what` names the input in messages ("frame", "body").
parse_result<nlohmann::json> parse_json_object(std::string_view text, std::size_t max_bytes,
                                               std::size_t max_nesting_depth, std::string_view what);

struct string_rule {
    std::size_t max_chars = 0;
    std::size_t min_chars = 1;
    // Code to report when the value exceeds max_chars: message text is
    // too_large by protocol.md section 2, everything else bad_request.
    error_code too_long_code = error_code::bad_request;
    // Optional format check, and the phrase completing "<field> must ...".
    bool (*is_well_formed)(std::string_view) = nullptr;
    std::string_view format_description{};
};

// Reads fields of one JSON object. The first problem is recorded in the
// shared `error` slot and later reads only return neutral values, so parsers
// read straight through and check once at the end. Nested readers share the
// slot and extend the path ("schedule.blocks[1].start").
class field_reader {
public:
    field_reader(const nlohmann::json& object, std::string path_prefix, std::optional<protocol_error>& error);

    // A reader for a nested object that records into the same error slot.
    field_reader nested(const nlohmann::json& object, std::string path) const {
        return field_reader(object, std::move(path), error_);
    }

    bool failed() const { return error_.has_value(); }
    void fail(error_code code, std::string message);
    std::string path_of(std::string_view name) const;

    // The member's value, or nullptr when absent or JSON null.
    const nlohmann::json* find(std::string_view name) const;

    std::string required_string(std::string_view name, const string_rule& rule);
    std::optional<std::string> optional_string(std::string_view name, const string_rule& rule);

    bool required_bool(std::string_view name);
    std::optional<bool> optional_bool(std::string_view name);

    std::int64_t required_integer(std::string_view name, std::int64_t min, std::int64_t max);
    std::int64_t optional_integer(std::string_view name, std::int64_t min, std::int64_t max, std::int64_t fallback);

    // Index of the value within `choices`; enums list their wire names in
    // declaration order so the index converts directly.
    std::size_t required_choice(std::string_view name, std::span<const std::string_view> choices);
    std::size_t optional_choice(std::string_view name, std::span<const std::string_view> choices,
                                std::size_t fallback);

    // nullptr when absent/null (optional_) or on a recorded error.
    const nlohmann::json* required_object(std::string_view name);
    const nlohmann::json* optional_object(std::string_view name);
    const nlohmann::json* required_array(std::string_view name);
    const nlohmann::json* optional_array(std::string_view name);

    // Check an already-found value; `path` is its full JSON path.
    std::optional<std::string> check_string(const nlohmann::json& value, const std::string& path,
                                            const string_rule& rule);
    std::optional<std::int64_t> check_integer(const nlohmann::json& value, const std::string& path,
                                              std::int64_t min, std::int64_t max);

private:
    const nlohmann::json* require(std::string_view name);
    std::size_t check_choice(const nlohmann::json& value, const std::string& path,
                             std::span<const std::string_view> choices);

    const nlohmann::json& object_;
    std::string prefix_;
    std::optional<protocol_error>& error_;
};

inline constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();

// Shared string rules, so one cap means one thing everywhere.
inline constexpr string_rule object_id_rule{128};
inline constexpr string_rule short_key_rule{64};  // envelope id, client_msg_id, client_key, tenant
inline constexpr string_rule token_rule{4096};
inline constexpr string_rule cursor_rule{256};
inline constexpr string_rule route_name_rule{64, 1, error_code::bad_request, &is_valid_route_name,
                                             "contain only letters, digits, '.', '_' and '-'"};

// Reads the optional visitor profile fields of `object` (hello.profile, the
// admin visitor PUT body) with their caps.
visitor_profile read_visitor_profile(field_reader& reader);

}  // namespace parley::proto::detail
