// parleyd: the Parley live-chat routing daemon and its operator subcommands.
#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>

#include "parley/config/config.h"
#include "parley/server/app.h"
#include "parley/server/auth.h"
#include "parley/server/logging.h"
#include "parley/storage/store.h"

namespace {

constexpr const char* default_config_path = "/etc/parley/parley.toml";

// Loads and validates the config; prints every problem to stderr.
std::optional<parley::config::config> load_config(const std::string& path) {
    auto parsed = parley::config::parse_file(path, parley::config::process_environment());
    if (!parsed.ok()) {
        for (const auto& p : parsed.problems) std::cerr << "config error: " << p.to_string() << "\n";
        return std::nullopt;
    }
    return std::move(parsed.value);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"parleyd: live-chat routing server"};
    cli.require_subcommand(0, 1);
    cli.fallthrough();

    std::string config_path = default_config_path;
    std::string log_level;
    cli.add_option("-c,--config", config_path, "configuration file (TOML)")->capture_default_str();
    cli.add_option("-l,--log-level", log_level, "override log.level: trace|debug|info|warn|error|critical|off");

    auto* serve = cli.add_subcommand("serve", "run the server (the default)");
    parley::server::app_options options;
    int port_override = -1;
    serve->add_option("--port", port_override, "override server.port (0: any free port)")->check(CLI::Range(0, 65535));
    serve->add_flag("--seed-demo", options.seed_demo, "create a demo agent and route for tenant \"demo\" if missing");
    serve->add_option("--port-file", options.port_file, "write the bound port to this file once listening");

    auto* check = cli.add_subcommand("check-config", "validate the configuration and print every problem");

    auto* migrate = cli.add_subcommand("migrate", "apply database schema migrations and exit");

    auto* prune = cli.add_subcommand("prune", "delete data older than storage.retention_days now and exit");

    auto* token = cli.add_subcommand("token", "mint a development agent token for a tenant");
    std::string token_tenant, token_agent;
    long token_ttl_hours = 24;
    token->add_option("--tenant", token_tenant, "tenant id")->required();
    token->add_option("--agent", token_agent, "agent id (the token's sub)")->required();
    token->add_option("--ttl-hours", token_ttl_hours, "validity in hours")->check(CLI::Range(1, 24 * 365));

    auto* version = cli.add_subcommand("version", "print the version");

    CLI11_PARSE(cli, argc, argv);

    if (version->parsed()) {
        std::cout << "parleyd " << PARLEY_VERSION << "\n";
        return 0;
    }

    auto cfg = load_config(config_path);
    if (!cfg) return check->parsed() ? 1 : 2;
    if (!log_level.empty()) cfg->log.level = log_level;
    if (!parley::server::setup_logging(cfg->log.level)) {
        std::cerr << "config error: --log-level: unknown level \"" << log_level << "\"\n";
        return 2;
    }

    if (check->parsed()) {
        std::cout << config_path << ": ok (" << cfg->tenants.size() << " tenant(s), storage "
                  << cfg->storage.url.substr(0, cfg->storage.url.find(':')) << ")\n";
        return 0;
    }

    if (token->parsed()) {
        auto tenant = cfg->tenants.find(token_tenant);
        if (tenant == cfg->tenants.end()) {
            std::cerr << "no tenant \"" << token_tenant << "\" in " << config_path << "\n";
            return 2;
        }
        std::cout << parley::server::mint_agent_token(tenant->second.agent_secret, token_tenant, token_agent,
                                                      std::chrono::hours(token_ttl_hours),
                                                      std::chrono::system_clock::now())
                  << "\n";
        return 0;
    }

    if (migrate->parsed()) {
        auto schema_version = parley::storage::migrate(cfg->storage.url);
        if (!schema_version) {
            std::cerr << "migrate: " << schema_version.failure().message << "\n";
            return 1;
        }
        std::cout << "schema at version " << schema_version.value() << "\n";
        return 0;
    }

    if (prune->parsed()) {
        auto store = parley::storage::open_store(cfg->storage.url, parley::server::store_options_from(*cfg));
        if (!store) {
            std::cerr << "prune: " << store.failure().message << "\n";
            return 1;
        }
        auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
        auto report = store.value()->prune(now);
        if (!report) {
            std::cerr << "prune: " << report.failure().message << "\n";
            return 1;
        }
        std::cout << "pruned " << report->messages << " message(s), " << report->activities << " activit(ies), "
                  << report->conversations << " conversation(s), " << report->offers << " offer(s) in "
                  << report->batches << " batch(es)\n";
        return 0;
    }

    if (port_override >= 0) {
        cfg->server.port = static_cast<std::uint16_t>(port_override);
        options.port_from_command_line = true;
    }
    parley::server::app server(std::move(*cfg), options);
    return server.run();
}
