#include "json_input.h"

#include <algorithm>

namespace parley::proto::detail {

bool is_valid_utf8(std::string_view text) {
    // Well-formed byte sequences per Unicode 15, table 3-7. The narrowed
    // ranges after E0, ED, F0 and F4 exclude overlong forms, UTF-16
    // surrogates and code points above U+10FFFF.
    const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
    const std::size_t size = text.size();
    std::size_t i = 0;
    while (i < size) {
        const unsigned char lead = bytes[i];
        if (lead < 0x80) {
            ++i;
            continue;
        }
        std::size_t continuation_count = 0;
        unsigned char second_min = 0x80;
        unsigned char second_max = 0xBF;
        if (lead >= 0xC2 && lead <= 0xDF) {
            continuation_count = 1;
        } else if (lead >= 0xE0 && lead <= 0xEF) {
            continuation_count = 2;
            if (lead == 0xE0) second_min = 0xA0;
            if (lead == 0xED) second_max = 0x9F;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            continuation_count = 3;
            if (lead == 0xF0) second_min = 0x90;
            if (lead == 0xF4) second_max = 0x8F;
        } else {
            return false;
        }
        if (size - i <= continuation_count) return false;
        if (bytes[i + 1] < second_min || bytes[i + 1] > second_max) return false;
        for (std::size_t k = 2; k <= continuation_count; ++k)
            if (bytes[i + k] < 0x80 || bytes[i + k] > 0xBF) return false;
        i += continuation_count + 1;
    }
    return true;
}

std::size_t count_code_points(std::string_view text) {
    // Every code point has exactly one byte that is not a continuation byte.
    return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
        return (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    }));
}

std::size_t nesting_depth(std::string_view json_text) {
    std::size_t depth = 0;
    std::size_t deepest = 0;
    bool in_string = false;
    bool escaped = false;
    for (const char c : json_text) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        switch (c) {
            case '"':
                in_string = true;
                break;
            case '[':
            case '{':
                deepest = std::max(deepest, ++depth);
                break;
            case ']':
            case '}':
                if (depth > 0) --depth;  // unbalanced text is left to the parser to reject
                break;
            default:
                break;
        }
    }
    return deepest;
}

parse_result<nlohmann::json> parse_json_object(std::string_view text, std::size_t max_bytes,
                                               std::size_t max_nesting_depth, std::string_view what) {
    const auto error = [&](error_code code, std::string message) {
        return protocol_error{code, std::move(message), std::nullopt};
    };
    if (text.size() > max_bytes)
        return error(error_code::too_large,
                     std::string(what) + " must be at most " + std::to_string(max_bytes) + " bytes");
    if (!is_valid_utf8(text)) return error(error_code::bad_request, std::string(what) + " is not valid UTF-8");
    if (nesting_depth(text) > max_nesting_depth)
        return error(error_code::bad_request, std::string(what) + " nests deeper than " +
                                                  std::to_string(max_nesting_depth) + " levels");
    auto value = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded()) return error(error_code::bad_request, std::string(what) + " is not valid JSON");
    if (!value.is_object()) return error(error_code::bad_request, std::string(what) + " must be a JSON object");
    return value;
}

namespace {

std::string integer_phrase(std::int64_t min, std::int64_t max) {
    if (max == int64_max) return "an integer >= " + std::to_string(min);
    return "an integer " + std::to_string(min) + ".." + std::to_string(max);
}

std::string choices_phrase(std::span<const std::string_view> choices) {
    std::string phrase = "one of: ";
    bool first = true;
    for (const auto choice : choices) {
        if (!first) phrase += ", ";
        phrase += choice;
        first = false;
    }
    return phrase;
}

}  // namespace

field_reader::field_reader(const nlohmann::json& object, std::string path_prefix,
                           std::optional<protocol_error>& error)
    : object_(object), prefix_(std::move(path_prefix)), error_(error) {}

void field_reader::fail(error_code code, std::string message) {
    if (!error_) error_ = protocol_error{code, std::move(message), std::nullopt};
}

std::string field_reader::path_of(std::string_view name) const {
    if (prefix_.empty()) return std::string(name);
    std::string path = prefix_;
    path += '.';
    path += name;
    return path;
}

const nlohmann::json* field_reader::find(std::string_view name) const {
    const auto it = object_.find(name);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
}

const nlohmann::json* field_reader::require(std::string_view name) {
    if (failed()) return nullptr;
    const auto* value = find(name);
    if (!value) fail(error_code::bad_request, path_of(name) + " is required");
    return value;
}

std::optional<std::string> field_reader::check_string(const nlohmann::json& value, const std::string& path,
                                                      const string_rule& rule) {
    if (failed()) return std::nullopt;
    if (!value.is_string()) {
        fail(error_code::bad_request, path + " must be a string");
        return std::nullopt;
    }
    const auto& text = value.get_ref<const std::string&>();
    // The parser only produces valid UTF-8, so counting lead bytes is exact.
    const std::size_t chars = count_code_points(text);
    if (chars < rule.min_chars) {
        fail(error_code::bad_request, rule.min_chars == 1
                                          ? path + " must not be empty"
                                          : path + " must be at least " + std::to_string(rule.min_chars) +
                                                " characters");
        return std::nullopt;
    }
    if (chars > rule.max_chars) {
        fail(rule.too_long_code, path + " must be at most " + std::to_string(rule.max_chars) + " characters");
        return std::nullopt;
    }
    // PostgreSQL text columns cannot hold NUL; refusing it here keeps a
    // storage failure from surfacing as `internal` much later.
    if (text.find('\0') != std::string::npos) {
        fail(error_code::bad_request, path + " must not contain U+0000");
        return std::nullopt;
    }
    if (rule.is_well_formed && !rule.is_well_formed(text)) {
        fail(error_code::bad_request, path + " must " + std::string(rule.format_description));
        return std::nullopt;
    }
    return text;
}

std::optional<std::int64_t> field_reader::check_integer(const nlohmann::json& value, const std::string& path,
                                                        std::int64_t min, std::int64_t max) {
    if (failed()) return std::nullopt;
    std::optional<std::int64_t> number;
    if (value.is_number_unsigned()) {
        // Values above int64 arrive as unsigned; anything past the int64 range
        // (or beyond uint64, which the parser turns into a float) is rejected.
        const auto unsigned_value = value.get<std::uint64_t>();
        if (unsigned_value <= static_cast<std::uint64_t>(int64_max)) number = static_cast<std::int64_t>(unsigned_value);
    } else if (value.is_number_integer()) {
        number = value.get<std::int64_t>();
    }
    if (!number || *number < min || *number > max) {
        fail(error_code::bad_request, path + " must be " + integer_phrase(min, max));
        return std::nullopt;
    }
    return number;
}

std::string field_reader::required_string(std::string_view name, const string_rule& rule) {
    const auto* value = require(name);
    if (!value) return {};
    return check_string(*value, path_of(name), rule).value_or(std::string{});
}

std::optional<std::string> field_reader::optional_string(std::string_view name, const string_rule& rule) {
    const auto* value = find(name);
    if (!value || failed()) return std::nullopt;
    return check_string(*value, path_of(name), rule);
}

bool field_reader::required_bool(std::string_view name) {
    const auto* value = require(name);
    if (!value) return false;
    if (!value->is_boolean()) {
        fail(error_code::bad_request, path_of(name) + " must be true or false");
        return false;
    }
    return value->get<bool>();
}

std::optional<bool> field_reader::optional_bool(std::string_view name) {
    const auto* value = find(name);
    if (!value || failed()) return std::nullopt;
    if (!value->is_boolean()) {
        fail(error_code::bad_request, path_of(name) + " must be true or false");
        return std::nullopt;
    }
    return value->get<bool>();
}

std::int64_t field_reader::required_integer(std::string_view name, std::int64_t min, std::int64_t max) {
    const auto* value = require(name);
    if (!value) return min;
    return check_integer(*value, path_of(name), min, max).value_or(min);
}

std::int64_t field_reader::optional_integer(std::string_view name, std::int64_t min, std::int64_t max,
                                            std::int64_t fallback) {
    const auto* value = find(name);
    if (!value || failed()) return fallback;
    return check_integer(*value, path_of(name), min, max).value_or(fallback);
}

std::size_t field_reader::check_choice(const nlohmann::json& value, const std::string& path,
                                       std::span<const std::string_view> choices) {
    if (value.is_string()) {
        const auto& text = value.get_ref<const std::string&>();
        std::size_t index = 0;
        for (const auto choice : choices) {
            if (text == choice) return index;
            ++index;
        }
    }
    fail(error_code::bad_request, path + " must be " + choices_phrase(choices));
    return 0;
}

std::size_t field_reader::required_choice(std::string_view name, std::span<const std::string_view> choices) {
    const auto* value = require(name);
    if (!value) return 0;
    return check_choice(*value, path_of(name), choices);
}

std::size_t field_reader::optional_choice(std::string_view name, std::span<const std::string_view> choices,
                                          std::size_t fallback) {
    const auto* value = find(name);
    if (!value || failed()) return fallback;
    const auto index = check_choice(*value, path_of(name), choices);
    return failed() ? fallback : index;
}

const nlohmann::json* field_reader::required_object(std::string_view name) {
    const auto* value = require(name);
    if (value && !value->is_object()) {
        fail(error_code::bad_request, path_of(name) + " must be an object");
        return nullptr;
    }
    return value;
}

const nlohmann::json* field_reader::optional_object(std::string_view name) {
    const auto* value = find(name);
    if (!value || failed()) return nullptr;
    if (!value->is_object()) {
        fail(error_code::bad_request, path_of(name) + " must be an object");
        return nullptr;
    }
    return value;
}

const nlohmann::json* field_reader::required_array(std::string_view name) {
    const auto* value = require(name);
    if (value && !value->is_array()) {
        fail(error_code::bad_request, path_of(name) + " must be an array");
        return nullptr;
    }
    return value;
}

const nlohmann::json* field_reader::optional_array(std::string_view name) {
    const auto* value = find(name);
    if (!value || failed()) return nullptr;
    if (!value->is_array()) {
        fail(error_code::bad_request, path_of(name) + " must be an array");
        return nullptr;
    }
    return value;
}

bool looks_like_email(std::string_view text) {
    const auto at = text.rfind('@');
    return at != std::string_view::npos && at > 0 && at + 1 < text.size();
}

visitor_profile read_visitor_profile(field_reader& reader) {
    // Empty strings count as "not supplied": CRM exports send "" for blanks.
    const auto read = [&](std::string_view name, std::size_t max_chars,
                          bool (*is_well_formed)(std::string_view) = nullptr,
                          std::string_view format_description = {}) -> std::optional<std::string> {
        auto value = reader.optional_string(name, string_rule{max_chars, 0});
        if (!value || value->empty()) return std::nullopt;
        if (is_well_formed && !is_well_formed(*value)) {
            reader.fail(error_code::bad_request, reader.path_of(name) + " must " + std::string(format_description));
            return std::nullopt;
        }
        return value;
    };
    visitor_profile profile;
    profile.name = read("name", 200);
    profile.job_title = read("job_title", 200);
    profile.email = read("email", 254, &looks_like_email, "be an email address (local@domain)");
    profile.phone = read("phone", 64);
    profile.crm_status = read("crm_status", 64);
    profile.company = read("company", 200);
    return profile;
}

}  // namespace parley::proto::detail
