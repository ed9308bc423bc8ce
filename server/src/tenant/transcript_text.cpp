#include "tenant/transcript_text.h"

#include <chrono>
#include <utility>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "parley/server/logging.h"
#include "tenant/errors.h"
#include "base/json_fields.h"

namespace parley::server {

namespace {

// A message's text in transcript.txt. Every line the export writes starts with
// "[date time UTC] #seq", so a message's own line breaks become indented
// continuation lines (a visitor cannot forge a line that looks like an agent's),
// and other control characters are written as \xNN.
void append_transcript_body(std::string& out, std::string_view body) {
    for (std::size_t i = 0; i < body.size(); ++i) {
        auto ch = static_cast<unsigned char>(body[i]);
        bool unicode_break = ch == 0xE2 && i + 2 < body.size() && static_cast<unsigned char>(body[i + 1]) == 0x80 &&
                             (static_cast<unsigned char>(body[i + 2]) == 0xA8 ||
                              static_cast<unsigned char>(body[i + 2]) == 0xA9);  // U+2028, U+2029
        bool next_line = ch == 0xC2 && i + 1 < body.size() && static_cast<unsigned char>(body[i + 1]) == 0x85;
        if (ch == '\r' && i + 1 < body.size() && body[i + 1] == '\n') continue;  // CRLF is one break
        if (ch == '\n' || ch == '\r' || unicode_break || next_line) {
            out += "\n    ";
            i += unicode_break ? 2 : next_line ? 1 : 0;
        } else if ((ch < 0x20 && ch != '\t') || ch == 0x7F) {
            out += fmt::format("\\x{:02X}", ch);
        } else {
            out += static_cast<char>(ch);
        }
    }
}

}  // namespace

// A line per message (see append_transcript_body).
std::string transcript_lines(const std::vector<storage::message_record>& messages) {
    std::string text;
    for (const auto& m : messages) {
        auto seconds = std::chrono::sys_seconds{std::chrono::seconds{m.at / 1000}};
        std::string who = m.sender == storage::sender_kind::agent ? "agent " + m.agent_id.value_or("")
                                                                  : std::string("visitor");
        std::string body = m.body;
        if (m.kind == storage::message_kind::calendar) {
            auto card = nlohmann::json::parse(m.body, nullptr, false);
            body = "[calendar] " + string_field(card, "agent_name") + " " + string_field(card, "booking_url");
        }
        text += fmt::format("[{:%Y-%m-%d %H:%M:%S} UTC] #{} {}: ", seconds, m.seq, who);
        append_transcript_body(text, body);
        text += '\n';
    }
    return text;
}

namespace {

// The pages of transcript.txt after the first, one piece each (see body_stream):
// read and formatted on a storage reader thread when the http_session asks for
// the next, so a download holds one page whatever the conversation's length, and
// a client that stops reading stops the reads. Holds its transcript ticket.
class transcript_text_stream final : public body_stream, public std::enable_shared_from_this<transcript_text_stream> {
public:
    transcript_text_stream(std::shared_ptr<storage::store> store, std::string tenant_id, std::string conversation_id,
                           storage::millis now, std::string first_page, std::int64_t after_seq,
                           std::shared_ptr<const void> ticket)
        : store_(std::move(store)),
          tenant_id_(std::move(tenant_id)),
          conversation_id_(std::move(conversation_id)),
          now_(now),
          pending_(std::move(first_page)),
          after_seq_(after_seq),
          ticket_(std::move(ticket)) {}

    void next(std::function<void(piece)> done) override {
        if (!pending_.empty()) return done({std::exchange(pending_, {})});
        if (!after_seq_) return done({});
        store_->get_transcript(
            tenant_id_, conversation_id_, *after_seq_, transcript_page, now_,
            [self = shared_from_this(), done = std::move(done)](storage::result<storage::message_page> page) {
                if (!page) {
                    // The status line went out with the first page: all that is left is to cut the transfer.
                    logger("store")->warn("tenant {}: transcript.txt of {} cut after seq {}: {}", self->tenant_id_,
                                          self->conversation_id_, *self->after_seq_, storage_message(page.failure()));
                    return done({{}, true});
                }
                self->after_seq_ = page->next_after_seq;
                done({transcript_lines(page->messages)});  // empty only when nothing followed: the end
            });
    }

private:
    const std::shared_ptr<storage::store> store_;
    const std::string tenant_id_;
    const std::string conversation_id_;
    const storage::millis now_;  // one retention window for every page
    std::string pending_;        // the first page, until it is asked for
    std::optional<std::int64_t> after_seq_;  // where the next page starts; nullopt: no more
    std::shared_ptr<const void> ticket_;
};

}  // namespace

std::shared_ptr<body_stream> transcript_text_rest(std::shared_ptr<storage::store> store, std::string tenant_id,
                                                  std::string conversation_id, storage::millis now,
                                                  std::string first_page, std::int64_t after_seq,
                                                  std::shared_ptr<const void> ticket) {
    return std::make_shared<transcript_text_stream>(std::move(store), std::move(tenant_id), std::move(conversation_id),
                                                    now, std::move(first_page), after_seq, std::move(ticket));
}

}  // namespace parley::server
