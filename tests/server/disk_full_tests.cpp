// The disk under the embedded SQLite store fills up while visitors chat: the
// real daemon on a database that lives on a small tmpfs of the test's own.
// Writes fail with `unavailable` and nothing acknowledged is lost; reads keep
// working; when space returns the daemon recovers by itself, without a restart.
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "e2e_support.h"

using namespace parley::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// A tmpfs of `size` mounted on a new directory, unmounted by the destructor.
// The test runs as root (as CI and the README's test command do); without the
// right to mount it fails, it does not skip.
class small_filesystem {
public:
    explicit small_filesystem(const std::string& size) {
        INFO("mount -t tmpfs -o size=" << size << " " << dir_.path() << ": " << std::strerror(errno));
        const std::string options = "size=" + size + ",mode=0700";
        REQUIRE(::mount("tmpfs", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0);
    }
    ~small_filesystem() { ::umount2(dir_.path().c_str(), MNT_DETACH); }
    small_filesystem(const small_filesystem&) = delete;
    small_filesystem& operator=(const small_filesystem&) = delete;
    const std::filesystem::path& path() const { return dir_.path(); }

private:
    temp_dir dir_;
};

// Writes a file until the file system says it is full; returns the bytes written.
std::size_t fill(const std::filesystem::path& file) {
    std::FILE* out = std::fopen(file.c_str(), "wb");
    REQUIRE(out != nullptr);
    std::string block(4096, 'x');
    std::size_t written = 0;
    while (std::fwrite(block.data(), 1, block.size(), out) == block.size() && std::fflush(out) == 0) written += block.size();
    std::fclose(out);
    return written;
}

// seq -> body of every message of one conversation, read from the SQLite file.
std::multimap<std::int64_t, std::string> stored_messages(const std::filesystem::path& db, const std::string& conversation) {
    sqlite3* handle = nullptr;
    REQUIRE(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* statement = nullptr;
    REQUIRE(sqlite3_prepare_v2(handle, "SELECT seq, body FROM messages WHERE conversation_id = ?1 ORDER BY seq", -1,
                               &statement, nullptr) == SQLITE_OK);
    sqlite3_bind_text(statement, 1, conversation.c_str(), -1, SQLITE_TRANSIENT);
    std::multimap<std::int64_t, std::string> rows;
    while (sqlite3_step(statement) == SQLITE_ROW)
        rows.emplace(sqlite3_column_int64(statement, 0), reinterpret_cast<const char*>(sqlite3_column_text(statement, 1)));
    sqlite3_finalize(statement);
    sqlite3_close(handle);
    return rows;
}

}  // namespace

TEST_CASE("disk full under SQLite: writes get unavailable, nothing acknowledged is lost, reads go on, recovery is automatic",
          "[ops][disk-full]") {
    small_filesystem disk("6m");
    const auto db = disk.path() / "parley.db";
    std::map<std::int64_t, std::string> acknowledged;  // seq -> text of every `ok` a sender got
    std::string conversation_id;
    {
        chat_server server({}, "sqlite://" + db.string(), "unavailable_after_s = 2\n");
        server.put_agent("a1", {{"name", "Ann"}});
        server.put_route("web", {{"type", "round_robin"}});
        auto agent = server.connect_agent("a1");
        auto chat = server.start_chat(agent, "web");
        conversation_id = chat.conversation_id;
        const std::string padding(2000, 'p');  // so the WAL must grow, not reuse its slack
        int sent = 0;
        auto send = [&](const std::string& label) {
            const auto text = label + " " + std::to_string(++sent) + " " + padding;
            const auto id = "m-" + std::to_string(sent);
            chat.visitor->send_json({{"type", "send"}, {"id", id}, {"conversation_id", conversation_id}, {"text", text},
                                     {"client_msg_id", id}});
            // Within unavailable_after_s (2 s here) and a margin: ok, or refused.
            json reply;
            const auto deadline = std::chrono::steady_clock::now() + 10s;
            while (!reply.is_object() && std::chrono::steady_clock::now() < deadline)
                if (auto frame = chat.visitor->receive(250ms)) {
                    auto message = json::parse(*frame, nullptr, false);
                    if (message.is_object() && message.value("re", "") == id) reply = std::move(message);
                }
            if (!reply.is_object()) {
                const auto log = server.daemon().log();
                FAIL("no reply to send " << id << " in 10 s; daemon log tail:\n"
                                         << log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
            }
            INFO(reply.dump().substr(0, 300));
            if (reply["type"] == "ok") acknowledged[reply["seq"].get<std::int64_t>()] = text;
            else CHECK(reply["code"] == "unavailable");
            return reply;
        };
        for (int i = 0; i < 5; ++i) REQUIRE(send("before")["type"] == "ok");

        const auto filler = disk.path() / "filler";
        REQUIRE(fill(filler) > 0);
        int refused = 0;
        for (int i = 0; i < 40 && refused < 3; ++i) refused += send("while full")["type"] == "error" ? 1 : 0;
        INFO(server.daemon().log().substr(server.daemon().log().size() > 3000 ? server.daemon().log().size() - 3000 : 0));
        REQUIRE(refused == 3);  // the disk is full: writes are refused, not acknowledged

        // Reads and relays go on: the agent's transcript, a visitor's resume, typing, health.
        auto transcript = agent->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", conversation_id}});
        REQUIRE(transcript["type"] == "ok");
        CHECK(transcript["messages"].size() >= acknowledged.size());
        auto resumed = chat.visitor->request({{"type", "resume"}, {"id", "r"}, {"conversation_id", conversation_id}, {"after_seq", 0}});
        CHECK(resumed["type"] == "ok");
        CHECK(chat.visitor->request({{"type", "typing"}, {"id", "ty"}, {"conversation_id", conversation_id}, {"on", true}})["type"] ==
              "ok");
        CHECK(http_request(server.port(), "GET", "/healthz").status == 200);

        // Space returns: the daemon recovers by itself; a send is acknowledged again.
        std::filesystem::remove(filler);
        bool recovered = false;
        for (int i = 0; i < 60 && !recovered; ++i) {
            recovered = send("after")["type"] == "ok";
            if (!recovered) std::this_thread::sleep_for(250ms);
        }
        REQUIRE(recovered);
        REQUIRE(send("after")["type"] == "ok");
        server.daemon().signal(SIGTERM);
        CHECK(server.daemon().wait_exit(20s) == std::optional<int>(0));
    }

    // Every acknowledged message is stored once, with its text; the seqs have no gap.
    auto stored = stored_messages(db, conversation_id);
    REQUIRE(stored.size() == acknowledged.size());
    std::int64_t expected_seq = 1;
    for (const auto& [seq, body] : stored) {
        CHECK(seq == expected_seq++);
        auto it = acknowledged.find(seq);
        REQUIRE(it != acknowledged.end());
        CHECK(it->second == body);
    }

    // A restarted daemon replays the same messages.
    chat_server restarted({}, "sqlite://" + db.string());
    restarted.put_agent("a1", {{"name", "Ann"}});
    auto agent = restarted.connect_agent("a1");
    auto transcript = agent->request({{"type", "get_transcript"}, {"id", "t"}, {"conversation_id", conversation_id}});
    REQUIRE(transcript["type"] == "ok");
    REQUIRE(transcript["messages"].size() == acknowledged.size());
    for (const auto& m : transcript["messages"]) CHECK(acknowledged.at(m["seq"].get<std::int64_t>()) == m["text"]);
}
