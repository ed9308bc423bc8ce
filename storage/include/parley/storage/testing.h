#pragma once
// Test hooks. Not for production code.
#include <string>

#include "parley/storage/result.h"

namespace parley::storage::testing {

// Records `version` as the database's schema version (to test that a binary
// refuses a schema newer than itself).
status force_schema_version(const std::string& url, int version);

}  // namespace parley::storage::testing
