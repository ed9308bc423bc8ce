#include "support/test_env.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <unistd.h>

namespace parley::test {
namespace {

std::string required_env(const char* name) {
    const char* value = std::getenv(name);
    if (value == nullptr) FAIL(name << " is not set: run this test through ctest");
    return value;
}

}  // namespace

std::map<std::string, std::string> read_pg_cluster_env(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) FAIL("no PostgreSQL test cluster: " << file << " is missing (did pg_cluster.sh start run?)");
    std::map<std::string, std::string> values;
    for (std::string line; std::getline(in, line);) {
        auto eq = line.find('=');
        if (eq != std::string::npos) values[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return values;
}

std::map<std::string, std::string> shared_pg_cluster_env() {
    return read_pg_cluster_env(required_env("PARLEY_TEST_PG_ENV"));
}

std::string postgres_url() { return shared_pg_cluster_env().at("PARLEY_TEST_PG_URL"); }

std::string fresh_postgres_database(const std::string& name_hint) {
    static std::atomic<int> counter{0};
    auto env = shared_pg_cluster_env();
    std::string name = "t_" + name_hint + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    for (auto& c : name) {
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::string command = env.at("PG_BIN") + "/psql -q -h 127.0.0.1 -p " + env.at("PG_PORT") +
                          " -U parley -d parley_test -c 'CREATE DATABASE " + name + "' >/dev/null";
    REQUIRE(std::system(command.c_str()) == 0);
    return "postgresql://parley@127.0.0.1:" + env.at("PG_PORT") + "/" + name;
}

std::filesystem::path parleyd_path() { return required_env("PARLEYD"); }

std::filesystem::path source_dir() { return required_env("PARLEY_SOURCE_DIR"); }

temp_dir::temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "parley-test.XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) FAIL("mkdtemp failed");
    path_ = pattern;
}

temp_dir::~temp_dir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
}

}  // namespace parley::test
