#pragma once
// Test hooks. Not for production code.
#include <string>

#include "parley/storage/result.h"

namespace parley::storage::testing {

// Records `version` as the database's schema version (to test that a binary
// refuses a schema newer than itself).
status force_schema_version(const std::string& url, int version);

// Migrates an empty database to an older schema `version`, and runs SQL on it
// as it is: to build a database as an older parleyd left it.
status migrate_to(const std::string& url, int version);
status exec_sql(const std::string& url, const std::string& script);

}  // namespace parley::storage::testing
