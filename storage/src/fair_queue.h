#pragma once
// Jobs queued per key (a tenant) and served round robin: one tenant's flood of
// reads waits behind itself, not in front of every other tenant's, and fills
// only its own share of the bound, so it cannot get the others refused.
// Not thread-safe: the caller holds its lock.
#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace parley::storage::detail {

template <class Job>
class fair_queue {
public:
    fair_queue(std::size_t total_max, std::size_t per_key_max) : total_max_(total_max), per_key_max_(per_key_max) {}

    // False, and `job` untouched, when the key or the whole queue is full.
    bool push(std::string_view key, Job& job) {
        if (size_ >= total_max_) return false;
        auto [it, inserted] = queues_.try_emplace(std::string(key));
        if (it->second.size() >= per_key_max_) return false;
        if (it->second.empty()) turn_.push_back(it->first);
        it->second.push_back(std::move(job));
        ++size_;
        return true;
    }

    bool empty() const { return size_ == 0; }
    std::size_t size() const { return size_; }

    // The next key's oldest job; the key then waits for its next turn behind the others.
    // Precondition: !empty().
    Job pop() {
        std::string key = std::move(turn_.front());
        turn_.pop_front();
        auto it = queues_.find(key);
        Job job = std::move(it->second.front());
        it->second.pop_front();
        if (it->second.empty())
            queues_.erase(it);
        else
            turn_.push_back(std::move(key));
        --size_;
        return job;
    }

private:
    std::size_t total_max_;
    std::size_t per_key_max_;
    std::unordered_map<std::string, std::deque<Job>> queues_;  // only keys with jobs
    std::deque<std::string> turn_;                             // those keys, in serving order
    std::size_t size_ = 0;
};

}  // namespace parley::storage::detail
