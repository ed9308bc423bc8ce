#pragma once
// Reading fields of JSON that did not come through proto's validators (token
// claims, stored route and card bodies). nlohmann's value() throws when a key
// holds another type, and a throw on the I/O thread would take down every
// tenant, so these never throw: a missing or mistyped field reads as empty.
#include <nlohmann/json.hpp>

#include <string>

namespace parley::server {

inline std::string string_field(const nlohmann::json& object, const char* key) {
    if (!object.is_object()) return {};
    auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

// JSON text of a value built from stored strings. Ids written before paths were
// checked for UTF-8 may hold invalid bytes, on which dump() throws; such a
// record must not make every listing fail, so they are written as U+FFFD.
inline std::string dump_stored(const nlohmann::json& value) {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace parley::server
