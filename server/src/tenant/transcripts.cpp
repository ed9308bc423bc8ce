// Reading stored conversations back: accept's history, resume's paced replay
// behind the session's hold, get_transcript, and the transcript.txt download;
// and the per-tenant bound on transcript reads in progress.
#include "tenant/tenant_hub.h"

#include <algorithm>
#include <limits>

#include "base/metrics.h"
#include "parley/proto/encode.h"
#include "parley/server/logging.h"
#include "tenant/errors.h"
#include "tenant/transcript_text.h"

namespace parley::server {

namespace {

constexpr int resume_page = 200;  // messages per storage read while replaying
// An accept's reply carries at most the latest this many messages (fewer when they do not fit).
constexpr int accept_history = 200;
constexpr std::size_t max_waiting_resumes = 64;  // per session, behind the one replaying

}  // namespace

void tenant_hub::on_accept(const request_context& cx, const std::string& offer_id) {
    const auto now = cx.now;
    routing::actions actions;
    auto result = router_->offer_accepted(offer_id, cx.from.principal, now, actions);
    if (result.result != routing::outcome::ok)
        return reply_error(cx, proto::error_code::conflict, "the offer expired, was withdrawn or was taken");
    if (auto o = offers_.find(offer_id); o != offers_.end()) {
        global_metrics().offer_to_accept_seconds.observe(
            std::chrono::duration<double>(monotonic_now() - o->second.offered_at).count());
        offers_.erase(o);
    }
    store_->resolve_offer(tenant_id_, offer_id, storage::offer_outcome::accepted, to_millis(now), [](auto) {});
    apply(actions);
    // The agent's other tabs see the offer gone.
    to_agent(cx.from.principal, make_frame(proto::encode_offer_withdrawn_event(offer_id, proto::withdraw_reason::taken)), cx.session_id);
    auto* c = find_conversation(result.conversation_id);
    if (c == nullptr) return reply_error(cx, proto::error_code::conflict, "the conversation ended");
    auto entry = entry_of(*c);
    // Messages the visitor sent while waiting; the ok carries them so the agent starts with the
    // context. Until it is sent, this session's live messages of the chat are held, then those
    // past the ok's last message follow it: none comes before the ok, none twice.
    directory_.hold(cx.session_id, c->id);
    // The latest accept_history messages at most: seq is gap-free, so they start after last_seq minus that.
    const std::int64_t after_seq = std::max<std::int64_t>(0, c->messages.last_seq() - accept_history);
    store_->get_transcript(
        tenant_id_, c->id, after_seq, accept_history, to_millis(now),
        [self = shared_from_this(), sid = cx.session_id, re = cx.re, entry = std::move(entry),
         budget = reply_budget()](storage::result<storage::message_page> page) {
            std::vector<proto::chat_message> list;
            if (page)
                for (const auto& m : page->messages) list.push_back(chat_message_from(m));
            auto text = proto::encode_accept_ok(re.value_or(""), entry, list);
            // Too long for one frame: the latest messages that fit. Their seqs show
            // what is left out, and resume reads it.
            while (text.size() > budget && !list.empty()) {
                list.erase(list.begin(), list.begin() + static_cast<std::ptrdiff_t>((list.size() + 1) / 2));
                text = proto::encode_accept_ok(re.value_or(""), entry, list);
            }
            const std::int64_t through = list.empty() ? 0 : list.back().seq;
            self->on_strand([self, sid, text = std::move(text), cid = entry.id, through]() mutable {
                auto* accepter = self->directory_.find(sid);
                if (accepter == nullptr) return;
                // Paced like a transcript (which see); the held events follow once it is queued.
                global_metrics().frames_out++;
                accepter->session()->send_paced({make_frame(std::move(text))}, [self, sid, cid, through] {
                    self->on_strand([self, sid, cid, through] {
                        self->directory_.release_hold(sid, cid, through);
                    });
                });
            });
        });
}

// One `resume`: pages of stored messages handed to the session paced by its
// outbound queue (client_session::send_paced), so a long gap never trips
// the slow-consumer bound; then `ok`. Each step holds the next by shared_ptr
// only: if the session goes away, the chain is dropped with it.
// Live events of the conversation are held by the hub meanwhile (begin_replay)
// and sent after the last page, before the `ok` (end_replay).
struct tenant_hub::resume_replay : std::enable_shared_from_this<resume_replay> {
    resume_replay(std::shared_ptr<tenant_hub> h, std::shared_ptr<client_session> s, std::optional<std::string> r,
                  std::string c)
        : hub(std::move(h)), session(std::move(s)), re(std::move(r)), conversation_id(std::move(c)) {}

    void finish(std::int64_t replayed_through, frame_ptr final_frame) {
        hub->on_strand([hub = hub, sid = session->id(), conversation_id = conversation_id, replayed_through,
                        final_frame = std::move(final_frame)]() mutable {
            hub->directory_.end_replay(sid, conversation_id, replayed_through, std::move(final_frame));
        });
    }

    void read_after(std::int64_t after_seq) {
        hub->store_->messages_after(
            hub->tenant_id_, conversation_id, after_seq, resume_page, to_millis(hub->wall_now()),
            [self = shared_from_this(), after_seq](storage::result<std::vector<storage::message_record>> page) {
                if (!page) {
                    self->finish(after_seq, make_frame(proto::encode_error(
                                                self->re ? std::optional<std::string_view>(*self->re) : std::nullopt,
                                                to_proto_error(page.kind()), "cannot read messages now")));
                    return;
                }
                // Encoded here, on the storage thread; the session only queues them.
                std::vector<frame_ptr> frames;
                frames.reserve(page->size());
                for (const auto& m : page.value()) frames.push_back(make_frame(proto::encode_message_event(chat_message_from(m))));
                global_metrics().frames_out += frames.size();
                const bool more = page->size() == static_cast<std::size_t>(resume_page);
                const std::int64_t last = page->empty() ? after_seq : page->back().seq;
                self->session->send_paced(std::move(frames), [self, more, last] {
                    if (more) return self->read_after(last);
                    self->finish(last, self->re ? make_frame(proto::encode_ok(*self->re)) : nullptr);
                });
            });
    }

    std::shared_ptr<tenant_hub> hub;
    std::shared_ptr<client_session> session;
    std::optional<std::string> re;
    std::string conversation_id;
};

// One `get_transcript`: pages of at most transcript_page messages, read on the
// storage reader threads and written straight into the reply, which ends at the
// request's `limit` or before it would grow past the reply budget (a page holds
// at least one message, so a reader always gets on). Without `limit` the reply
// is the whole transcript or `too_large`, decided having held no more than the
// budget and one page. The reply is queued paced (client_session::send_paced):
// the replies of pipelined requests take turns in the session's queue instead of
// piling up past its slow-consumer bound, and the ticket goes once it is queued.
struct tenant_hub::transcript_read : std::enable_shared_from_this<transcript_read> {
    transcript_read(std::shared_ptr<tenant_hub> h, std::shared_ptr<client_session> s, std::optional<std::string> r,
                    proto::requests::get_transcript q, std::size_t b, storage::millis n, transcript_ticket t)
        : hub(std::move(h)),
          session(std::move(s)),
          re(std::move(r)),
          request(std::move(q)),
          budget(b),
          now(n),
          ticket(std::move(t)),
          after_seq(request.after_seq),
          reply(re.value_or("")) {}

    void read_page() {
        int page = transcript_page;
        if (request.limit) page = std::min(page, *request.limit - static_cast<int>(reply.message_count()));
        hub->store_->get_transcript(hub->tenant_id_, request.conversation_id, after_seq, page, now,
                                    [self = shared_from_this()](storage::result<storage::message_page> read) {
                                        self->on_page(std::move(read));
                                    });
    }

    void on_page(storage::result<storage::message_page> page) {
        if (!page) {
            if (page.kind() != storage::error_kind::not_found) global_metrics().storage_errors++;
            return finish_with_error(to_proto_error(page.kind()), storage_message(page.failure()));
        }
        for (const auto& m : page->messages) {
            const bool first_of_page = request.limit && reply.message_count() == 0;
            if (!reply.add(chat_message_from(m), first_of_page ? std::numeric_limits<std::size_t>::max() : budget)) {
                if (!request.limit)
                    return finish_with_error(proto::error_code::too_large,
                                             "transcript larger than one reply; read it in pages with limit and "
                                             "after_seq");
                return finish(after_seq);  // full: the next page starts behind the last message it holds
            }
            after_seq = m.seq;
        }
        if (!page->next_after_seq) return finish(std::nullopt);
        if (request.limit && static_cast<int>(reply.message_count()) >= *request.limit) return finish(after_seq);
        read_page();
    }

    void finish(std::optional<std::int64_t> next_after_seq) {
        queue(std::move(reply).finish(next_after_seq));
    }
    void finish_with_error(proto::error_code code, std::string_view message) {
        global_metrics().protocol_errors++;
        queue(proto::encode_error(re ? std::optional<std::string_view>(*re) : std::nullopt, code, message));
    }
    void queue(std::string text) {
        global_metrics().frames_out++;
        session->send_paced({make_frame(std::move(text))}, [ticket = std::move(ticket)] {});
    }

    std::shared_ptr<tenant_hub> hub;
    std::shared_ptr<client_session> session;
    std::optional<std::string> re;
    proto::requests::get_transcript request;
    std::size_t budget;
    storage::millis now;
    transcript_ticket ticket;
    std::int64_t after_seq;  // the last seq in the reply so far (the request's after_seq before any)
    proto::transcript_reply_writer reply;
};

void tenant_hub::on_get_transcript(const request_context& cx, proto::requests::get_transcript& r) {
    const auto& from = cx.from;
    const auto sid = cx.session_id;
    const auto& re = cx.re;
    const auto now = cx.now;
    auto ticket = try_begin_transcript_read();
    if (!ticket)
        return reply_error(sid, re, proto::error_code::rate_limited, std::string(too_many_transcript_reads));
    std::make_shared<transcript_read>(shared_from_this(), from.session(), re, r, reply_budget(),
                                      to_millis(now), std::move(ticket))
        ->read_page();
}

tenant_hub::transcript_ticket tenant_hub::try_begin_transcript_read() {
    const auto limit = net_->limits()->max_transcript_reads_per_tenant;
    if (transcript_reads_->fetch_add(1) >= limit) {
        transcript_reads_->fetch_sub(1);
        global_metrics().transcript_reads_refused++;
        return nullptr;
    }
    global_metrics().transcript_reads++;
    return {transcript_reads_.get(), [reads = transcript_reads_](const void*) {
                reads->fetch_sub(1);
                global_metrics().transcript_reads--;
            }};
}

void tenant_hub::on_resume(const request_context& cx, const proto::requests::resume& r) {
    auto replay = [self = shared_from_this(), session = cx.from.session(), re = cx.re, conversation_id = r.conversation_id,
                   after = r.after_seq] {
        std::make_shared<resume_replay>(self, session, re, conversation_id)->read_after(after);
    };
    std::function<void()> start = replay;
    if (auto* c = find_conversation(r.conversation_id)) {
        bool allowed = cx.from.role == client_role::visitor ? c->visitor_id == cx.from.principal : c->agent_id == cx.from.principal;
        if (!allowed) return reply_error(cx, proto::error_code::not_found, "no such conversation of yours");
    } else {
        // Not open any more: ownership is checked in storage, as the first step of this replay's
        // turn, so that the session's resumes still run and answer in the order they came.
        start = [self = shared_from_this(), sid = cx.session_id, re = cx.re, replay, conversation_id = r.conversation_id, role = cx.from.role,
                 principal = cx.from.principal] {
            auto refuse = [self, sid, re, conversation_id](proto::error_code code, const std::string& message) {
                global_metrics().protocol_errors++;
                self->directory_.end_replay(sid, conversation_id, 0,
                                 make_frame(proto::encode_error(
                                     re ? std::optional<std::string_view>(*re) : std::nullopt, code, message)));
            };
            self->store_->get_conversation(
                self->tenant_id_, conversation_id,
                self->back_on_strand<storage::conversation_record>(
                    [replay, refuse, role, principal](storage::result<storage::conversation_record> stored) {
                        if (!stored && stored.kind() != storage::error_kind::not_found)
                            return refuse(to_proto_error(stored.kind()), storage_message(stored.failure()));
                        bool allowed = stored && (role == client_role::visitor
                                                      ? stored->visitor_id == principal
                                                      : true /* agents read the tenant's history */);
                        if (!allowed) return refuse(proto::error_code::not_found, "no such conversation of yours");
                        replay();
                    }));
        };
    }
    // From here on, live events of the conversation for this session wait for the replay
    // to end; those it did not contain follow it, so nothing falls in between or comes twice.
    if (!directory_.begin_replay(cx.session_id, r.conversation_id, max_waiting_resumes, std::move(start)))
        reply_error(cx, proto::error_code::rate_limited, "too many resumes waiting");
}


void tenant_hub::transcript_text(std::string conversation_id, std::string agent_id, admin_done done) {
    if (!agent_id.empty()) {
        // A signed token outlives its agent: a deleted (or never created) agent reads nothing.
        return on_strand([self = shared_from_this(), conversation_id = std::move(conversation_id),
                          agent_id = std::move(agent_id), done = std::move(done)]() mutable {
            if (self->agents_.count(agent_id) == 0)
                return done(admin_error(401, proto::error_code::unauthorized, "unknown agent"));
            self->transcript_text(std::move(conversation_id), {}, std::move(done));
        });
    }
    auto ticket = try_begin_transcript_read();
    if (!ticket) {
        auto refused = admin_error(503, proto::error_code::rate_limited, too_many_transcript_reads);
        refused.retry_after_s = 1;
        return done(std::move(refused));
    }
    const auto now = to_millis(wall_now());
    // The first page decides the status: an unknown conversation is a 404, not a cut 200. A
    // transcript of one page is sent whole (with its Content-Length), a longer one in chunks.
    store_->get_transcript(
        tenant_id_, conversation_id, 0, transcript_page, now,
        [store = store_, tenant_id = tenant_id_, conversation_id, now, ticket = std::move(ticket),
         done = std::move(done)](storage::result<storage::message_page> page) {
            if (!page) return done(admin_storage_error(page.failure()));
            admin_reply reply{200, transcript_lines(page->messages), "text/plain; charset=utf-8"};
            if (page->next_after_seq)
                reply.rest = transcript_text_rest(store, tenant_id, conversation_id, now,
                                                  std::exchange(reply.body, {}),
                                                  *page->next_after_seq, ticket);
            done(std::move(reply));
        });
}

}  // namespace parley::server
