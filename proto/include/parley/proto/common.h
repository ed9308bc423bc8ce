#pragma once
// Vocabulary shared by the decoders and encoders of protocol v1: error codes,
// the error value every parser returns, the result wrapper and the limits.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace parley::proto {

// Error codes of protocol.md section 2, spelled on the wire by to_string().
enum class error_code {
    bad_request,
    unknown_type,
    unauthorized,
    forbidden,
    not_found,
    conflict,
    capacity,
    rate_limited,
    too_large,
    unavailable,
    internal,
};

std::string_view to_string(error_code code);

// Which WebSocket endpoint a frame arrived on; decides which types it may send.
enum class role { visitor, agent };

// What a parser reports instead of a value. `message` is human-readable and
// names the offending field by its JSON path ("text is required",
// "schedule.blocks[1].end must be after start"). `re` is the request's
// envelope id when it could be read, so the error reply can echo it.
struct protocol_error {
    error_code code = error_code::bad_request;
    std::string message;
    std::optional<std::string> re;
};

// Either a parsed value or the error that prevented it. Untrusted input never
// throws: every parser in this library returns one of these.
template <typename T>
class parse_result {
public:
    parse_result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
    parse_result(protocol_error error) : state_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const { return state_.index() == 0; }
    explicit operator bool() const { return ok(); }

    // Precondition: ok().
    T& value() & { return std::get<0>(state_); }
    const T& value() const& { return std::get<0>(state_); }
    T&& value() && { return std::get<0>(std::move(state_)); }

    // Precondition: !ok().
    const protocol_error& error() const { return std::get<1>(state_); }

private:
    std::variant<T, protocol_error> state_;
};

// A visitor's profile, as supplied by a widget or CRM sync and as shown in
// visitor cards. A field is nullopt when it was absent, JSON null or ""
// ("nobody supplied it").
struct visitor_profile {
    std::optional<std::string> name;        // <= 200 characters
    std::optional<std::string> job_title;   // <= 200 characters
    std::optional<std::string> email;       // <= 254 characters, contains '@'
    std::optional<std::string> phone;       // <= 64 characters
    std::optional<std::string> crm_status;  // <= 64 characters
    std::optional<std::string> company;     // <= 200 characters

    bool operator==(const visitor_profile&) const = default;
};

// Limits enforced while decoding. Defaults match protocol.md section 1 and
// parley::config::limits_config; the server copies its configured values in.
struct limits {
    // A larger frame is refused with too_large before parsing. The WebSocket
    // layer normally closes with 1009 first; this is the backstop.
    std::size_t max_frame_bytes = 64 * 1024;
    // Message text cap, counted in Unicode code points.
    std::size_t max_text_chars = 4000;
    // Deepest array/object nesting accepted anywhere in a frame or body, so
    // that no later recursive walk (dump, storage) can exhaust the stack.
    std::size_t max_nesting_depth = 32;
};

}  // namespace parley::proto
