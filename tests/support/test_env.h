#pragma once
// Environment the ctest registration passes to every test (tests/CMakeLists.txt).
#include <filesystem>
#include <map>
#include <string>

namespace parley::test {

// The KEY=value lines that tests/support/pg_cluster.sh writes about a cluster
// it started (PARLEY_TEST_PG_URL, PG_PORT, PG_DIR, PG_BIN). Fails the test when
// the file is missing.
std::map<std::string, std::string> read_pg_cluster_env(const std::filesystem::path& file);
// The same for the shared cluster of the `pg_cluster` ctest fixture.
std::map<std::string, std::string> shared_pg_cluster_env();

// URL of the throwaway PostgreSQL cluster the `pg_cluster` ctest fixture
// started. Fails the calling test (not skips) when the fixture did not run.
std::string postgres_url();

// A PostgreSQL database of its own for one test: created empty on the fixture's
// cluster, so tests never see each other's rows. Returns its URL.
std::string fresh_postgres_database(const std::string& name_hint);

// Path of the parleyd binary under test.
std::filesystem::path parleyd_path();

// Path of the source tree (for example configs under deploy/).
std::filesystem::path source_dir();

// A new empty directory under the system temp dir, removed by the destructor.
class temp_dir {
public:
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace parley::test
