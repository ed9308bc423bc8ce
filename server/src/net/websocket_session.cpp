#include "net/websocket_session.h"

#include <atomic>

#include "base/metrics.h"
#include "parley/server/logging.h"

namespace parley::server {

namespace {
std::atomic<std::uint64_t> next_session_id{1};
constexpr auto close_grace = std::chrono::seconds(5);  // a close that cannot be sent in time becomes a TCP close
}  // namespace

websocket_session::websocket_session(tcp::socket&& socket, connection_slot&& slot, std::shared_ptr<net_context> context,
                                     client_role role)
    : context_(std::move(context)),
      executor_(socket.get_executor()),
      ws_(std::in_place, std::move(socket)),
      slot_(std::move(slot)),
      role_(role),
      handler_(context_->websocket_handler),
      id_(next_session_id++),
      hello_timer_(executor_),
      ping_timer_(executor_),
      close_deadline_(executor_),
      last_heard_(context_->time->monotonic()),
      rate_tokens_(context_->limits()->frame_burst),
      rate_refilled_at_(last_heard_) {
    global_metrics().websocket_session_objects++;
}

websocket_session::~websocket_session() { global_metrics().websocket_session_objects--; }

void websocket_session::run(http::request<http::string_body> upgrade_request) {
    const auto limits_snapshot = context_->limits();
    const auto& limits = *limits_snapshot;
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = limits.handshake_timeout;  // upgrade and close handshakes
    timeouts.idle_timeout = websocket::stream_base::none();  // our own ping timer decides silence
    timeouts.keep_alive_pings = false;
    ws_->set_option(timeouts);
    ws_->read_message_max(limits.max_frame_bytes);  // larger: Beast closes with 1009
    ws_->auto_fragment(false);
    ws_->set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
        res.set(http::field::server, "parleyd");
    }));
    ws_->control_callback([this](websocket::frame_type, beast::string_view) {
        last_heard_ = context_->time->monotonic();
        ping_in_flight_ = false;
    });
    ws_->async_accept(upgrade_request, beast::bind_front_handler(&websocket_session::on_accept, shared_from_this()));
}

void websocket_session::on_accept(error_code ec) {
    if (finished_) return;
    if (ec) return fail(ec, "accept");
    // Registered before draining is checked: a shutdown either finds this session or is seen here.
    context_->websockets.add(id_, weak_from_this());
    registered_ = true;
    if (context_->draining.load()) {
        do_read();
        return begin_close({websocket::close_code::going_away, "server shutting down"});
    }
    hello_timer_.expires_after(context_->limits()->hello_timeout);
    hello_timer_.async_wait(beast::bind_front_handler(&websocket_session::on_hello_deadline, shared_from_this()));
    schedule_ping();
    do_read();
}

void websocket_session::on_hello_deadline(error_code ec) {
    if (ec || authenticated_ || closing_) return;
    begin_close({static_cast<websocket::close_code>(4408), "no hello in time"});
}

void websocket_session::schedule_ping() {
    ping_timer_.expires_after(context_->limits()->ping_interval);
    ping_timer_.async_wait(beast::bind_front_handler(&websocket_session::on_ping_timer, shared_from_this()));
}

void websocket_session::on_ping_timer(error_code ec) {
    if (ec || finished_) return;
    auto silent_for = context_->time->monotonic() - last_heard_;
    if (silent_for >= context_->limits()->peer_silence_timeout) {
        logger("net")->info("[C{}] peer silent for {}s: dropped", id_,
                            std::chrono::duration_cast<std::chrono::seconds>(silent_for).count());
        return finish();  // not waiting for Beast's operations to notice (see begin_close)
    }
    // A ping is a write: never start one beside another write or the close.
    if (!writing_ && !ping_in_flight_ && !closing_) {
        ping_in_flight_ = true;
        ws_->async_ping({}, [self = shared_from_this()](error_code ping_ec) {
            if (ping_ec) self->fail(ping_ec, "ping");
        });
    }
    schedule_ping();
}

void websocket_session::do_read() {
    ws_->async_read(buffer_, beast::bind_front_handler(&websocket_session::on_read, shared_from_this()));
}

void websocket_session::on_read(error_code ec, std::size_t) {
    if (ec) return fail(ec, "read");
    if (finished_) return;
    last_heard_ = context_->time->monotonic();
    if (closing_) {
        buffer_.consume(buffer_.size());
        return do_read();  // keep reading so the peer's close reply is seen
    }
    if (!ws_->got_text()) {
        buffer_.consume(buffer_.size());
        begin_close({websocket::close_code::unknown_data, "binary frames are not accepted"});
        return do_read();
    }
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    handler_->on_text(shared_from_this(), std::move(text));
    do_read();
}

bool websocket_session::authenticate(identity who, std::shared_ptr<frame_handler> handler) {
    if (authenticated_) return false;
    authenticated_ = true;
    identity_ = std::move(who);
    handler_ = std::move(handler);
    return true;
}

void websocket_session::expire_credentials_at(std::chrono::system_clock::time_point expires_at, outbound_frame warning) {
    if (finished_ || closing_) return;
    credentials_expire_at_ = expires_at;
    credentials_warning_ = std::move(warning);
    credentials_warned_ = false;
    if (!credentials_timer_) credentials_timer_ = std::make_unique<asio::steady_timer>(executor_);
    arm_credentials_timer();
}

// Wall-clock expiry, waited for on the monotonic clock: re-armed after each wait, so a clock
// step moves the close by at most one warning lead.
void websocket_session::arm_credentials_timer() {
    const auto left = *credentials_expire_at_ - std::chrono::system_clock::time_point(context_->time->wall());
    if (!credentials_warned_ && left <= credentials_warning_lead) {
        credentials_warned_ = true;
        if (left > std::chrono::seconds(0)) send(credentials_warning_);
    }
    if (left <= std::chrono::seconds(0))
        return begin_close({static_cast<websocket::close_code>(4401), "credentials expired"});
    credentials_timer_->expires_after(credentials_warned_ ? left : left - credentials_warning_lead);
    credentials_timer_->async_wait([self = shared_from_this()](error_code ec) {
        if (ec || self->finished_ || self->closing_) return;
        self->arm_credentials_timer();
    });
}

bool websocket_session::admit_client_frame() {
    const auto limits_snapshot = context_->limits();
    const auto& limits = *limits_snapshot;
    auto now = context_->time->monotonic();
    std::chrono::duration<double> elapsed = now - rate_refilled_at_;
    rate_refilled_at_ = now;
    rate_tokens_ = std::min<double>(limits.frame_burst, rate_tokens_ + elapsed.count() * limits.frames_per_second);
    if (rate_tokens_ >= 1.0) {
        rate_tokens_ -= 1.0;
        consecutive_refusals_ = 0;
        return true;
    }
    if (++consecutive_refusals_ >= limits.abuse_close_after)
        begin_close({websocket::close_code::policy_error, "rate limit exceeded"});
    return false;
}

void websocket_session::send(outbound_frame message) {
    asio::post(executor_, [self = shared_from_this(), message = std::move(message)]() mutable {
        if (self->closing_ || self->finished_) return;
        const auto limits_snapshot = self->context_->limits();
        const auto& limits = *limits_snapshot;
        self->outbound_bytes_ += message->size();
        self->outbound_.push_back(std::move(message));
        // The byte bound counts what waits behind the head: one large reply alone is not a slow consumer.
        const bool over_bytes = self->outbound_bytes_ > limits.outbound_max_bytes && self->outbound_.size() > 1;
        if (self->outbound_.size() > limits.outbound_max_frames || over_bytes) {
            logger("net")->info("[C{}] slow consumer: {} frames / {} bytes queued, closing 1013", self->id_,
                                self->outbound_.size(), self->outbound_bytes_);
            global_metrics().slow_consumer_closes++;
            // The frame being written must outlive its write; everything after it is dropped
            // (it stays in storage for resume).
            auto keep = self->writing_ ? 1 : 0;
            self->outbound_.erase(self->outbound_.begin() + keep, self->outbound_.end());
            self->outbound_bytes_ = keep ? self->outbound_.front()->size() : 0;
            self->begin_close({websocket::close_code::try_again_later, "slow consumer"});
            return;
        }
        self->do_write();
    });
}

void websocket_session::send_paced(std::vector<outbound_frame> frames, std::function<void()> done) {
    asio::post(executor_, [self = shared_from_this(), frames = std::move(frames), done = std::move(done)]() mutable {
        if (self->closing_ || self->finished_) return;
        self->paced_.push_back({{std::make_move_iterator(frames.begin()), std::make_move_iterator(frames.end())},
                                std::move(done)});
        self->feed_paced();
        self->do_write();
    });
}

void websocket_session::feed_paced() {
    // A replay leaves room for a reply and held live events beside it (paced_share).
    const auto share = paced_share(*context_->limits());
    while (!paced_.empty()) {
        auto& batch = paced_.front();
        while (!batch.frames.empty() && outbound_.size() < share.frames && outbound_bytes_ < share.bytes) {
            outbound_bytes_ += batch.frames.front()->size();
            outbound_.push_back(std::move(batch.frames.front()));
            batch.frames.pop_front();
        }
        if (!batch.frames.empty()) return;
        auto done = std::move(batch.done);
        paced_.pop_front();
        if (done) done();
    }
}

void websocket_session::do_write() {
    if (writing_ || finished_) return;
    if (outbound_.empty()) {
        if (pending_close_) {
            auto reason = *pending_close_;
            pending_close_.reset();
            writing_ = true;
            ws_->async_close(reason, [self = shared_from_this()](error_code ec) {
                self->writing_ = false;
                if (ec) self->fail(ec, "close");
            });
        }
        return;
    }
    writing_ = true;
    ws_->text(true);
    if (outbound_.size() > 1) ws_->next_layer().more_follows();
    ws_->async_write(asio::buffer(*outbound_.front()),
                    beast::bind_front_handler(&websocket_session::on_write, shared_from_this()));
}

void websocket_session::on_write(error_code ec, std::size_t) {
    writing_ = false;
    if (ec) return fail(ec, "write");
    if (!outbound_.empty()) {
        outbound_bytes_ -= outbound_.front()->size();
        outbound_.pop_front();
    }
    feed_paced();
    do_write();
}

void websocket_session::close_unless_authenticated(websocket::close_code code, std::string reason) {
    asio::post(executor_, [self = shared_from_this(), code, reason = std::move(reason)] {
        if (!self->authenticated_) self->begin_close({code, reason});
    });
}

void websocket_session::close(websocket::close_code code, std::string reason) {
    asio::post(executor_, [self = shared_from_this(), code, reason = std::move(reason)] {
        self->begin_close({code, reason});
    });
}

// Sends what is already queued, then the close frame. If that cannot happen
// within close_grace (a peer that stopped reading), the TCP connection is cut
// and the session finishes then and there: when our close crosses the peer's,
// Beast 1.81's read and close operations can each wait for the other's lock
// for ever, and closing the socket does not wake them (seen under load with
// ThreadSanitizer and gdb). Those two then keep this object alive, but it no
// longer holds a connection's place, a hub's entry or a gauge.
void websocket_session::begin_close(websocket::close_reason reason) {
    if (closing_ || finished_) return;
    closing_ = true;
    pending_close_ = reason;
    paced_.clear();
    hello_timer_.cancel();
    if (credentials_timer_) credentials_timer_->cancel();
    close_deadline_.expires_after(close_grace);
    close_deadline_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec || self->finished_) return;
        self->finish();
    });
    do_write();
}

void websocket_session::fail(error_code ec, const char* what) {
    if (ec != websocket::error::closed && ec != asio::error::operation_aborted && ec != asio::error::eof &&
        ec != asio::error::connection_reset && ec != beast::error::timeout)
        logger("net")->debug("[C{}] {}: {}", id_, what, ec.message());
    finish();
}

void websocket_session::finish() {
    if (finished_) return;
    finished_ = true;
    if (registered_) context_->websockets.remove(id_);
    hello_timer_.cancel();
    ping_timer_.cancel();
    close_deadline_.cancel();
    if (credentials_timer_) credentials_timer_->cancel();
    error_code ignored;
    ws_->next_layer().close(ignored);
    paced_.clear();
    // A write still in flight completes (aborted) later and may touch its frame: keep that one.
    outbound_.erase(outbound_.begin() + (writing_ && !outbound_.empty() ? 1 : 0), outbound_.end());
    slot_.release();
    handler_->on_closed(shared_from_this());
    // Operations Beast parked on each other's locks hold this object for ever
    // (see begin_close); destroying the stream destroys them. Not here: finish()
    // may run inside a Beast operation. A moment later every operation that was
    // still on the socket has completed (aborted), and the timer's handler holds
    // no reference, so a session nothing else holds is simply gone by then.
    close_deadline_.expires_after(std::chrono::seconds(1));
    close_deadline_.async_wait([weak = weak_from_this()](error_code) {
        if (auto self = weak.lock()) self->release_stream();
    });
}

// Only after finish(), on the strand: every use of ws_ checks finished_ first.
// Safe because finish() closed the socket a second earlier: Beast's TCP
// teardown keeps a plain reference to the socket while it waits, and it has
// completed (aborted) by now.
void websocket_session::release_stream() {
    if (finished_ && ws_) ws_.reset();
}

}  // namespace parley::server
