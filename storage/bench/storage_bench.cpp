// storage_bench <storage-url> [--producers N] [--seconds S] [--batches 1,10,100,1000]
//
// N producers each keep one message in flight (durability commit): when its
// acknowledgement arrives the producer sends the next one. For every batch_max
// it prints acknowledged messages per second and p50/p99 acknowledge latency
// (append_message call to callback).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "parley/storage/store.h"

using namespace parley::storage;
using steady = std::chrono::steady_clock;

namespace {

struct run_result {
    double messages_per_second = 0;
    double p50_ms = 0;
    double p99_ms = 0;
    std::uint64_t transactions = 0;
    std::uint64_t failures = 0;
};

class bench_run {
public:
    bench_run(store& s, std::string run_id, int producers, std::chrono::seconds duration)
        : store_(s), run_id_(std::move(run_id)), producers_(producers), duration_(duration), next_seq_(producers, 0) {
        latencies_.reserve(4'000'000);
    }

    run_result go() {
        start_ = steady::now();
        deadline_ = start_ + duration_;
        for (int p = 0; p < producers_; ++p) send(p);
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return in_flight_ == 0; });
        const double seconds = std::chrono::duration<double>(last_ack_ - start_).count();
        run_result r;
        r.messages_per_second = static_cast<double>(latencies_.size()) / seconds;
        std::sort(latencies_.begin(), latencies_.end());
        auto percentile = [&](double q) {
            if (latencies_.empty()) return 0.0;
            auto index = static_cast<std::size_t>(q * static_cast<double>(latencies_.size() - 1));
            return static_cast<double>(latencies_[index]) / 1000.0;
        };
        r.p50_ms = percentile(0.50);
        r.p99_ms = percentile(0.99);
        r.failures = failures_;
        return r;
    }

private:
    void send(int producer) {
        message_record m;
        m.tenant_id = "bench";
        m.conversation_id = run_id_ + "-" + std::to_string(producer);
        m.seq = ++next_seq_[static_cast<std::size_t>(producer)];
        m.body = "benchmark message body, about sixty bytes long....";
        m.client_msg_id = "k" + std::to_string(m.seq);
        m.at = 1'750'000'000'000;
        {
            std::lock_guard lock(mutex_);
            ++in_flight_;
        }
        const auto sent = steady::now();
        store_.append_message(std::move(m), [this, producer, sent](result<append_outcome> r) {
            const auto now = steady::now();
            bool again = false;
            {
                std::lock_guard lock(mutex_);
                --in_flight_;
                if (r.ok()) {
                    latencies_.push_back(std::chrono::duration_cast<std::chrono::microseconds>(now - sent).count());
                    last_ack_ = now;
                } else {
                    ++failures_;
                }
                again = now < deadline_;
                if (!again && in_flight_ == 0) done_.notify_all();
            }
            if (again) send(producer);
        });
    }

    store& store_;
    const std::string run_id_;
    const int producers_;
    const std::chrono::seconds duration_;
    std::vector<std::int64_t> next_seq_;  // touched only by the producer's own chain of callbacks
    std::mutex mutex_;
    std::condition_variable done_;
    int in_flight_ = 0;
    std::vector<std::int64_t> latencies_;
    std::uint64_t failures_ = 0;
    steady::time_point start_, deadline_, last_ack_;
};

std::vector<std::size_t> parse_list(const std::string& text) {
    std::vector<std::size_t> values;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) values.push_back(std::stoul(item));
    return values;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s <storage-url> [--producers N] [--seconds S] [--batches 1,10,100,1000]\n",
                     argv[0]);
        return 2;
    }
    const std::string url = argv[1];
    int producers = 2000;
    int seconds = 10;
    std::vector<std::size_t> batches{1, 10, 100, 1000};
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--producers")
            producers = std::atoi(argv[i + 1]);
        else if (flag == "--seconds")
            seconds = std::atoi(argv[i + 1]);
        else if (flag == "--batches")
            batches = parse_list(argv[i + 1]);
        else {
            std::fprintf(stderr, "unknown option %s\n", flag.c_str());
            return 2;
        }
    }
    std::printf("backend url: %s, producers: %d, %d s per run, durability commit\n", url.c_str(), producers, seconds);
    std::printf("%10s %14s %10s %10s %14s %10s\n", "batch_max", "acked msgs/s", "p50 ms", "p99 ms", "msgs/commit",
                "failures");
    const auto run_stamp = std::to_string(steady::now().time_since_epoch().count());
    for (auto batch_max : batches) {
        store_options options;
        options.durability = durability::commit;
        options.batch_max = batch_max;
        options.queue_max = static_cast<std::size_t>(producers) * 2;
        options.unavailable_after = std::chrono::seconds(60);
        auto opened = open_store(url, options);
        if (!opened.ok()) {
            std::fprintf(stderr, "cannot open %s: %s\n", url.c_str(), opened.failure().message.c_str());
            return 1;
        }
        auto& s = *opened.value();
        bench_run run(s, run_stamp + "-" + std::to_string(batch_max), producers, std::chrono::seconds(seconds));
        auto r = run.go();
        auto stats = s.stats();
        std::printf("%10zu %14.0f %10.2f %10.2f %14.1f %10llu\n", batch_max, r.messages_per_second, r.p50_ms, r.p99_ms,
                    static_cast<double>(stats.writes_committed) /
                        static_cast<double>(std::max<std::uint64_t>(1, stats.transactions_committed)),
                    static_cast<unsigned long long>(r.failures));
        std::fflush(stdout);
    }
    return 0;
}
