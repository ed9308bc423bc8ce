#pragma once
// Results of storage operations. Nothing crosses the storage interface as an
// exception: backend errors (pqxx, SQLite) are caught inside the library and
// turned into one of these error kinds, which map 1:1 onto protocol error codes.
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace parley::storage {

enum class error_kind {
    ok,
    not_found,    // the row does not exist (or is older than the retention window)
    conflict,     // state changed: offer already resolved, duplicate key with other content
    unavailable,  // storage cannot accept or answer now (database down, queue full); retry
    bad_request,  // caller error: bad URL, limit out of range, malformed cursor
    internal,     // anything else (bug, unexpected database error)
};

std::string_view to_string(error_kind kind);

struct error {
    error_kind kind = error_kind::internal;
    std::string message;
};

template <class T>
class result {
public:
    result(T value) : value_(std::move(value)) {}  // NOLINT: implicit on purpose
    result(error failure) : error_(std::move(failure)) {}  // NOLINT

    bool ok() const { return value_.has_value(); }
    explicit operator bool() const { return ok(); }
    error_kind kind() const { return ok() ? error_kind::ok : error_->kind; }

    // Preconditions: ok() for value(), !ok() for failure().
    const T& value() const& { return *value_; }
    T& value() & { return *value_; }
    T&& value() && { return std::move(*value_); }
    const T* operator->() const { return &*value_; }
    T* operator->() { return &*value_; }
    const error& failure() const { return *error_; }

private:
    std::optional<T> value_;
    std::optional<error> error_;
};

template <>
class result<void> {
public:
    result() = default;
    result(error failure) : error_(std::move(failure)) {}  // NOLINT

    bool ok() const { return !error_.has_value(); }
    explicit operator bool() const { return ok(); }
    error_kind kind() const { return ok() ? error_kind::ok : error_->kind; }
    const error& failure() const { return *error_; }

private:
    std::optional<error> error_;
};

using status = result<void>;

}  // namespace parley::storage
