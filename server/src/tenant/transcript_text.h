#pragma once
// transcript.txt: the plain-text export of a conversation, a line per message
// ("[date time UTC] #seq who: text"), produced a page at a time so that a
// download holds one page whatever the conversation's length.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/body_stream.h"
#include "parley/storage/store.h"

namespace parley::server {

// Messages per storage read of a get_transcript or a transcript.txt download: what one of
// them holds at a time besides its reply (at most 200 × max_text_chars, 3.2 MB of 4-byte characters).
inline constexpr int transcript_page = 200;

// One page of transcript.txt.
std::string transcript_lines(const std::vector<storage::message_record>& messages);

// The pages after `first_page`, read from `after_seq` on when the HTTP session asks for
// them; holds `ticket` (the tenant's transcript read) until the download ends.
std::shared_ptr<body_stream> transcript_text_rest(std::shared_ptr<storage::store> store, std::string tenant_id,
                                                  std::string conversation_id, storage::millis now,
                                                  std::string first_page, std::int64_t after_seq,
                                                  std::shared_ptr<const void> ticket);

}  // namespace parley::server
