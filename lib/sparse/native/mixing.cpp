// Mixed depthwise neighbourhood sums on the CPU, one pass over the pairs (lib/sparse/mixing_native.py
// drives it; lib/sparse/mixing.py defines the op):
//     y[i, c] = sum_d a[i, d, head(c)] * sum_k w_d[k, c] * x[table_d[i, k], c]
// x is the source v itself, or relu(v * scale + shift) (a folded BatchNorm + ReLU).
//
// Why a kernel: in tensor ops every pair costs several passes over memory (gather, combined weight,
// multiply, scatter; backward twice that); here each pair is read once forward and once backward.
// Work is split by heads: a call handles the channels of heads [h0, h1) for rows [r0, r1), so
// callers run disjoint head ranges in parallel with no shared writes (every gradient below is
// either per channel or per head), and the sums come out the same for any number of threads.
#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

// Mirrors lib/sparse/mixing_native.py's _Op (ctypes): pointers are to contiguous arrays.
struct Op {
    int64_t channels;               // C
    int64_t heads;                  // H (divides C)
    const void* v;                  // [M, C] source (may be null when backward reads no source)
    const void* scale;              // [C] or null: no folded norm
    const void* shift;              // [C]
    const void* a;                  // [rows of a, D, H]
    int64_t a_stride;               // elements between rows of a (0: one row shared by all)
    int64_t groups;                 // G: elements sharing one neighbour table form a group
    // each group's table as lists of its occupied pairs, row by row (the tables are mostly empty:
    // scanning them cost more than the sums): row i's pairs are begin[i] .. begin[i + 1] - 1
    const int64_t* const* begin;    // [G] arrays [N + 1]
    const int32_t* const* offset;   // [G] arrays [P_g]: the pair's offset k
    const int32_t* const* source;   // [G] arrays [P_g]: the pair's source row
    const int64_t* group_begin;     // [G + 1] the group's members in elems
    const int64_t* elems;           // element index d of each member
    const void* const* weights;     // [D] kernels [K_d, C]
};

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

// Flat loops over a call's channels. Their arrays never overlap: `ivdep` tells the compiler so,
// where it would otherwise test every pair of pointers at each call (slower than the loop itself).
template <typename T>
inline void mul(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
#pragma GCC ivdep
    for (int64_t c = 0; c < n; ++c) out[c] = a[c] * b[c];
}
template <typename T>
inline void add_mul(T* __restrict__ acc, const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
#pragma GCC ivdep
    for (int64_t c = 0; c < n; ++c) acc[c] += a[c] * b[c];
}
// One pair of a one-element group, all in one pass over the channels (the common case, CodedVTR's
// elements on supports of their own): x = v or relu(v * s + b) is formed in registers, never stored.
template <typename T, bool Norm>
inline T source_value(const T* __restrict__ v, const T* __restrict__ s, const T* __restrict__ b, int64_t c) {
    if (!Norm) return v[c];
    const T z = v[c] * s[c] + b[c];
    return z > T(0) ? z : T(0);
}

template <typename T, bool Norm>
inline void pair_forward(int64_t n, const T* __restrict__ v, const T* __restrict__ s, const T* __restrict__ b,
                         const T* __restrict__ a, const T* __restrict__ w, T* __restrict__ acc) {
#pragma GCC ivdep
    for (int64_t c = 0; c < n; ++c) acc[c] += a[c] * w[c] * source_value<T, Norm>(v, s, b, c);
}

// y += a w x; gx += a w g; gw += a x g; gz += w x g (gz: the row's per-channel sums for a's gradient)
template <typename T, bool Norm>
inline void pair_backward(int64_t n, const T* __restrict__ v, const T* __restrict__ s, const T* __restrict__ b,
                          const T* __restrict__ a, const T* __restrict__ w, const T* __restrict__ g,
                          T* __restrict__ y, T* __restrict__ gx, T* __restrict__ gw, T* __restrict__ gz) {
#pragma GCC ivdep
    for (int64_t c = 0; c < n; ++c) {
        const T x = source_value<T, Norm>(v, s, b, c);
        const T aw = a[c] * w[c], xg = x * g[c];
        y[c] += aw * x;
        gx[c] += aw * g[c];
        gw[c] += a[c] * xg;
        gz[c] += w[c] * xg;
    }
}

// One call's work on the channels of heads [h0, h1): per row, each element's mixing weight is
// spread over its head's channels once (a_exp), so every per-pair loop runs flat over `width`.
template <typename T>
struct Worker {
    const Op& op;
    int64_t cg, h0, h1, c0, width, elements;
    std::vector<T> xbuf, weff, a_exp, ga_exp, prod;

    Worker(const Op& o, int64_t head0, int64_t head1)
        : op(o), cg(o.channels / o.heads), h0(head0), h1(head1), c0(head0 * cg), width((head1 - head0) * cg),
          elements(o.group_begin[o.groups]), xbuf(width), weff(width), a_exp(elements * width),
          ga_exp(elements * width), prod(width) {}

    // x[j, c0:c0 + width]: v's row, or relu(v * scale + shift) of it
    const T* source(int64_t j) {
        const T* row = static_cast<const T*>(op.v) + j * op.channels + c0;
        if (!op.scale) return row;
        const T* __restrict__ s = static_cast<const T*>(op.scale) + c0;
        const T* __restrict__ b = static_cast<const T*>(op.shift) + c0;
        T* __restrict__ out = xbuf.data();
#pragma GCC ivdep
        for (int64_t c = 0; c < width; ++c) {
            const T z = row[c] * s[c] + b[c];
            out[c] = z > T(0) ? z : T(0);
        }
        return out;
    }

    const T* weight_row(int64_t d, int64_t k) const {
        return static_cast<const T*>(op.weights[d]) + k * op.channels + c0;
    }

    // a_exp[d, c] = a[i, d, head(c)]; a shared by all rows is spread once
    void expand(int64_t i, bool first) {
        if (op.a_stride == 0 && !first) return;
        const T* ai = static_cast<const T*>(op.a) + i * op.a_stride;
        for (int64_t d = 0; d < elements; ++d)
            for (int64_t h = h0; h < h1; ++h)
                std::fill_n(a_exp.data() + d * width + (h - h0) * cg, cg, ai[d * op.heads + h]);
    }

    const T* a_of(int64_t d) const { return a_exp.data() + d * width; }

    // sum over the group's elements of a[i, d, head(c)] * w_d[k, c]
    const T* combined(int64_t g, int64_t k) {
        const int64_t e0 = op.group_begin[g], e1 = op.group_begin[g + 1];
        T* out = weff.data();
        mul(out, a_of(op.elems[e0]), weight_row(op.elems[e0], k), width);
        for (int64_t e = e0 + 1; e < e1; ++e) add_mul(out, a_of(op.elems[e]), weight_row(op.elems[e], k), width);
        return out;
    }

    bool single(int64_t g) const { return op.group_begin[g + 1] - op.group_begin[g] == 1; }
};

template <typename T, bool Norm>
void forward(const Op& op, int64_t r0, int64_t r1, int64_t h0, int64_t h1, T* out) {
    Worker<T> wk(op, h0, h1);
    const int64_t w = wk.width;
    const T* v = static_cast<const T*>(op.v);
    const T* scale = Norm ? static_cast<const T*>(op.scale) + wk.c0 : nullptr;
    const T* shift = Norm ? static_cast<const T*>(op.shift) + wk.c0 : nullptr;
    for (int64_t i = r0; i < r1; ++i) {
        T* acc = out + (i - r0) * op.channels + wk.c0;
        std::fill_n(acc, w, T(0));
        wk.expand(i, i == r0);
        for (int64_t g = 0; g < op.groups; ++g) {
            const int32_t* ks = op.offset[g];
            const int32_t* js = op.source[g];
            const bool one = wk.single(g);
            const int64_t d0 = op.elems[op.group_begin[g]];
            for (int64_t p = op.begin[g][i], p1 = op.begin[g][i + 1]; p < p1; ++p) {
                if (one) {
                    pair_forward<T, Norm>(w, v + int64_t(js[p]) * op.channels + wk.c0, scale, shift, wk.a_of(d0),
                                          wk.weight_row(d0, ks[p]), acc);
                } else {
                    add_mul(acc, wk.combined(g, ks[p]), wk.source(js[p]), w);
                }
            }
        }
    }
}

// gy [r1 - r0, C]: the gradient of y's rows. Each output may be null (not wanted):
// y [r1 - r0, C] the recomputed rows (overwritten); grad_x [M, C], grad_a [rows of a, D, H] (row
// stride ga_stride, 0 when a is shared) and grad_w[d] [K_d, C] are accumulated into.
template <typename T, bool Norm>
void backward(const Op& op, int64_t r0, int64_t r1, int64_t h0, int64_t h1, const T* gy, T* y,
              T* grad_x, T* grad_a, int64_t ga_stride, T* const* grad_w) {
    Worker<T> wk(op, h0, h1);
    const int64_t w = wk.width, c0 = wk.c0, C = op.channels;
    bool any_w = false, all_w = true;
    for (int64_t d = 0; d < wk.elements; ++d) {
        any_w = any_w || grad_w[d];
        all_w = all_w && grad_w[d];
    }
    const bool need_x = y || grad_a || any_w, need_prod = grad_a || any_w;
    const bool everything = y && grad_x && grad_a && all_w;  // training: the fused pair pass
    const T* v = static_cast<const T*>(op.v);
    const T* scale = Norm ? static_cast<const T*>(op.scale) + c0 : nullptr;
    const T* shift = Norm ? static_cast<const T*>(op.shift) + c0 : nullptr;
    T* prod = wk.prod.data();
    for (int64_t i = r0; i < r1; ++i) {
        const T* gi = gy + (i - r0) * C + c0;
        T* yi = y ? y + (i - r0) * C + c0 : nullptr;
        if (yi) std::fill_n(yi, w, T(0));
        if (grad_a) std::fill(wk.ga_exp.begin(), wk.ga_exp.end(), T(0));
        wk.expand(i, i == r0);
        for (int64_t g = 0; g < op.groups; ++g) {
            const int32_t* ks = op.offset[g];
            const int32_t* js = op.source[g];
            const int64_t e0 = op.group_begin[g], e1 = op.group_begin[g + 1];
            for (int64_t p = op.begin[g][i], p1 = op.begin[g][i + 1]; p < p1; ++p) {
                const int64_t k = ks[p], j = js[p];
                if (everything && wk.single(g)) {
                    const int64_t d = op.elems[e0];
                    pair_backward<T, Norm>(w, v + j * C + c0, scale, shift, wk.a_of(d), wk.weight_row(d, k), gi, yi,
                                           grad_x + j * C + c0, grad_w[d] + k * C + c0, wk.ga_exp.data() + d * w);
                    continue;
                }
                const T* x = need_x ? wk.source(j) : nullptr;
                if (yi || grad_x) {
                    const T* weff = wk.combined(g, k);
                    if (yi) add_mul(yi, weff, x, w);
                    if (grad_x) add_mul(grad_x + j * C + c0, weff, gi, w);
                }
                if (!need_prod) continue;
                mul(prod, x, gi, w);
                for (int64_t e = e0; e < e1; ++e) {
                    const int64_t d = op.elems[e];
                    if (grad_w[d]) add_mul(grad_w[d] + k * C + c0, wk.a_of(d), prod, w);
                    if (grad_a) add_mul(wk.ga_exp.data() + d * w, wk.weight_row(d, k), prod, w);
                }
            }
        }
        if (!grad_a) continue;
        T* gai = grad_a + i * ga_stride;  // each head's sum of its channels
        for (int64_t d = 0; d < wk.elements; ++d)
            for (int64_t h = h0; h < h1; ++h) {
                gai[d * op.heads + h] += lane_sum(wk.ga_exp.data() + d * w + (h - h0) * wk.cg, wk.cg);
            }
    }
}

}  // namespace

extern "C" {

int voxseg_mixing_abi() { return 3; }

void voxseg_mixing_forward_f32(const Op* op, int64_t r0, int64_t r1, int64_t h0, int64_t h1, float* out) {
    (op->scale ? forward<float, true> : forward<float, false>)(*op, r0, r1, h0, h1, out);
}

void voxseg_mixing_forward_f64(const Op* op, int64_t r0, int64_t r1, int64_t h0, int64_t h1, double* out) {
    (op->scale ? forward<double, true> : forward<double, false>)(*op, r0, r1, h0, h1, out);
}

void voxseg_mixing_backward_f32(const Op* op, int64_t r0, int64_t r1, int64_t h0, int64_t h1, const float* gy,
                                float* y, float* grad_x, float* grad_a, int64_t ga_stride, float* const* grad_w) {
    (op->scale ? backward<float, true> : backward<float, false>)(*op, r0, r1, h0, h1, gy, y, grad_x, grad_a,
                                                                 ga_stride, grad_w);
}

void voxseg_mixing_backward_f64(const Op* op, int64_t r0, int64_t r1, int64_t h0, int64_t h1, const double* gy,
                                double* y, double* grad_x, double* grad_a, int64_t ga_stride, double* const* grad_w) {
    (op->scale ? backward<double, true> : backward<double, false>)(*op, r0, r1, h0, h1, gy, y, grad_x, grad_a,
                                                                   ga_stride, grad_w);
}

}  // extern "C"
