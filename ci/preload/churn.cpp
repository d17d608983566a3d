// std::map / std::string / std::unordered_map churn on 4 threads (operator new calls malloc).
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

static unsigned long work(unsigned seed, int ops) {
    std::map<std::string, std::vector<int>> m;
    std::unordered_map<std::string, std::string> u;
    unsigned long x = seed, sum = 0;
    for (int i = 0; i < ops; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        std::string k = "key-" + std::to_string((x >> 33) % 50000);
        if ((x >> 20) % 4 == 0) {
            m.erase(k);
            u.erase(k);
        } else {
            auto &v = m[k];
            v.push_back(i);
            if (v.size() > 32) v.clear();
            u[k] += std::to_string(i % 97);
            if (u[k].size() > 200) u[k].assign(k);
        }
    }
    for (auto &kv : m) sum += kv.first.size() * 31 + kv.second.size();
    for (auto &kv : u) sum += kv.second.size();
    return sum;
}

int main(int argc, char **argv) {
    int ops = argc > 1 ? std::atoi(argv[1]) : 1000000;
    std::vector<unsigned long> out(4);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; t++) ts.emplace_back([&, t] { out[t] = work(t + 1, ops); });
    for (auto &t : ts) t.join();
    for (auto s : out) std::printf("%lu\n", s);
}
