#pragma once
// CPU time and resident memory of another process, read from /proc. A pid of 0
// (the server's pid was not given) reads as "unknown": all zero.
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

namespace parley::load {

struct process_sample {
    bool valid = false;
    double cpu_seconds = 0;       // utime + stime
    std::uint64_t rss_kib = 0;    // VmRSS
};

inline process_sample sample_process(pid_t pid) {
    process_sample s;
    if (pid <= 0) return s;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return s;
    // The command name (field 2) may contain spaces and ')': fields are counted
    // after the last ')'. Field 3 is the state; utime and stime are 14 and 15.
    auto close = line.rfind(')');
    if (close == std::string::npos) return s;
    std::istringstream fields(line.substr(close + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int number = 3; fields >> field; ++number) {
        if (number == 14) utime = std::stoull(field);
        if (number == 15) {
            stime = std::stoull(field);
            break;
        }
    }
    s.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    while (std::getline(status, line)) {
        if (line.rfind("VmRSS:", 0) == 0) {
            s.rss_kib = std::stoull(line.substr(6));
            break;
        }
    }
    s.valid = true;
    return s;
}

}  // namespace parley::load
