// Helpers shared by the kernels in this folder (compiled into each; part of their build key).
#pragma once
#include <cstdint>

namespace voxseg {

// sum of v[0:n] in a fixed order that vectorises: 16 running lanes, then a pairwise fold (a plain
// running sum is one dependent add per element, and the compiler may not reorder it)
template <typename T>
inline T lane_sum(const T* v, int64_t n) {
    constexpr int kLanes = 16;
    T lanes[kLanes] = {};
    int64_t c = 0;
    for (; c + kLanes <= n; c += kLanes)
        for (int l = 0; l < kLanes; ++l) lanes[l] += v[c + l];
    for (int l = 0; c < n; ++c, ++l) lanes[l] += v[c];
    for (int w = kLanes / 2; w > 0; w /= 2)
        for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
    return lanes[0];
}

// Ask for row `row` of n elements ahead of its use (rows are gathered at random: the hardware
// prefetcher cannot guess them).
template <typename T>
inline void prefetch_row(const T* row, int64_t n, bool write) {
    const char* p = reinterpret_cast<const char*>(row);
    for (int64_t b = 0; b < int64_t(n * sizeof(T)); b += 64) {
        if (write) __builtin_prefetch(p + b, 1);
        else __builtin_prefetch(p + b, 0);
    }
}

}  // namespace voxseg
