// Sparse convolution on the CPU, gather-GEMM-scatter fused (lib/sparse/conv_native.py drives it;
// lib/sparse/engines/torch_engine.py's _SparseConv calls it):
//     y[o] += x[i] @ w[k]   for every pair (k, i, o) of a kernel map
// plus its weight gradient gw[k] += x[i]^T g[o] over the same pairs. The input gradient is the
// same sum over the transposed pairs with w[k]^T, so it is `forward` on the transposed plan.
//
// Why a kernel: the tensor-op path copies every gathered row into a buffer, writes every GEMM
// product to memory and scatters it back through a sparse product (three extra passes over the
// pairs' rows). Here a register tile of MR pairs x NV vectors reads its input rows where they lie
// and adds into the output rows while they sit in cache: per pair only the arithmetic is left.
//
// Work: output rows are cut into tiles of `tile_rows`; a tile's rows are zeroed (or kept, to
// accumulate), then receive the centre (identity pairs) and each offset k in ascending order.
// Callers run disjoint tile ranges side by side (no shared writes); the weight gradient is split by
// input channels. Every sum runs in the same order for any number of threads, so the results are the
// same bit for bit.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

#if defined(__AVX512F__)
constexpr int kBytes = 64;  // one vector register
constexpr int kNV = 4;      // vectors per register tile row: 6 x 4 accumulators of 32 registers
#else
constexpr int kBytes = 32;
constexpr int kNV = 2;      // 6 x 2 accumulators of 16 registers
#endif
constexpr int kMR = 6;       // pairs (rows) per register tile
constexpr int kPairBlock = 96;  // weight gradient: pairs whose rows stay in cache across channel tiles

template <typename T>
struct Vec {
    typedef T type __attribute__((vector_size(kBytes)));
    static constexpr int lanes = kBytes / sizeof(T);
};

template <typename T>
inline typename Vec<T>::type load(const T* p) {
    typename Vec<T>::type v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename T>
inline void store(T* p, typename Vec<T>::type v) {
    std::memcpy(p, &v, sizeof v);
}

// bfloat16 storage (torch.bfloat16's bits): read as float32 (its upper half), sums run in float32
struct bf16 {
    uint16_t bits;
};

inline float widen(float v) { return v; }
inline double widen(double v) { return v; }
inline float widen(bf16 v) {
    const uint32_t u = uint32_t(v.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// float32 -> bfloat16 rounded to nearest even, as torch's .to(torch.bfloat16)
inline void narrow(float v, bf16* out) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        out->bits = uint16_t((u >> 16) | 0x40u);  // NaN stays a (quiet) NaN
        return;
    }
    out->bits = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// a vector of float32 from as many bfloat16 values
inline Vec<float>::type load(const bf16* p) {
    typedef uint16_t Half __attribute__((vector_size(kBytes / 2)));
    typedef uint32_t Word __attribute__((vector_size(kBytes)));
    Half h;
    std::memcpy(&h, p, sizeof h);
    const Word w = __builtin_convertvector(h, Word) << 16;
    Vec<float>::type f;
    std::memcpy(&f, &w, sizeof f);
    return f;
}

// every lane = s: s - 0 is exactly s for every s, so the compiler drops the subtraction and keeps
// one broadcast (`V{} + s` is not: -0 + 0 = +0, so it adds the zero)
template <typename T>
inline typename Vec<T>::type splat(T s) {
    return s - typename Vec<T>::type{};
}

// Mirrors lib/sparse/conv_native.py's _Plan (ctypes).
struct Plan {
    int64_t offsets;              // K
    int64_t center;               // the identity offset (pairs (i, i) for every row), or -1
    int64_t rows;                 // output rows
    int64_t tile_rows;            // rows per tile
    int64_t tiles;                // ceil(rows / tile_rows)
    const int64_t* const* in;     // [K] arrays of input rows (null at the centre / an empty offset)
    const int64_t* const* out;    // [K] arrays of output rows, ascending
    const int64_t* cuts;          // [K, tiles + 1] offset k's pairs of tile t: cuts[k][t] .. cuts[k][t + 1] - 1
};

// y[yr[r], n0:n0 + NV * L] += x[xr[r], :cin] @ w[:cin, n0:n0 + NV * L] for r < MR (Store: = instead
// of +=, for a tile's first contribution: no zeroing pass and no read of the rows)
template <typename T, int MR, int NV, bool Store, typename TI>
inline void tile(const TI* const* xr, T* const* yr, const T* w, int64_t cin, int64_t ldw, int64_t n0) {
    using V = typename Vec<T>::type;
    constexpr int L = Vec<T>::lanes;
    V acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = V{};
    for (int64_t c = 0; c < cin; ++c) {
        const T* wc = w + c * ldw + n0;
        V b[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) b[v] = load(wc + v * L);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const V a = splat<T>(widen(xr[r][c]));
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) store(yr[r] + n0 + v * L, Store ? acc[r][v] : load(yr[r] + n0 + v * L) + acc[r][v]);
}

// the last `width` (< one vector) columns from n0
template <typename T, int MR, bool Store, typename TI>
inline void tail(const TI* const* xr, T* const* yr, const T* w, int64_t cin, int64_t ldw, int64_t n0, int64_t width) {
    constexpr int L = Vec<T>::lanes;
    T acc[MR][L] = {};
    for (int64_t c = 0; c < cin; ++c)
        for (int r = 0; r < MR; ++r) {
            const T a = widen(xr[r][c]);
            for (int64_t n = 0; n < width; ++n) acc[r][n] += a * w[c * ldw + n0 + n];
        }
    for (int r = 0; r < MR; ++r)
        for (int64_t n = 0; n < width; ++n) yr[r][n0 + n] = Store ? acc[r][n] : yr[r][n0 + n] + acc[r][n];
}

template <typename T, int MR, bool Store, typename TI>
void rows(const TI* const* xr, T* const* yr, const T* w, int64_t cin, int64_t cout) {
    constexpr int L = Vec<T>::lanes;
    int64_t n0 = 0;
    for (; n0 + kNV * L <= cout; n0 += kNV * L) tile<T, MR, kNV, Store>(xr, yr, w, cin, cout, n0);
    for (; n0 + L <= cout; n0 += L) tile<T, MR, 1, Store>(xr, yr, w, cin, cout, n0);
    if (n0 < cout) tail<T, MR, Store>(xr, yr, w, cin, cout, n0, cout - n0);
}

// pairs p < m: y[out[p] - row0] += x[in[p]] @ w (in / out null: the identity rows first .. first + m - 1;
// Store: = instead of +=)
template <typename T, bool Store = false, typename TI>
void pairs(const TI* x, T* y, int64_t row0, const T* w, int64_t cin, int64_t cout, const int64_t* in,
           const int64_t* out, int64_t first, int64_t m) {
    const TI* xr[kMR];
    T* yr[kMR];
    for (int64_t p = 0; p < m; p += kMR) {
        const int mr = int(std::min<int64_t>(kMR, m - p));
        for (int r = 0; r < mr; ++r) {
            const int64_t i = in ? in[p + r] : first + p + r, o = out ? out[p + r] : first + p + r;
            xr[r] = x + i * cin;
            yr[r] = y + (o - row0) * cout;
        }
        switch (mr) {
            case 6: rows<T, 6, Store, TI>(xr, yr, w, cin, cout); break;
            case 5: rows<T, 5, Store, TI>(xr, yr, w, cin, cout); break;
            case 4: rows<T, 4, Store, TI>(xr, yr, w, cin, cout); break;
            case 3: rows<T, 3, Store, TI>(xr, yr, w, cin, cout); break;
            case 2: rows<T, 2, Store, TI>(xr, yr, w, cin, cout); break;
            default: rows<T, 1, Store, TI>(xr, yr, w, cin, cout); break;
        }
    }
}

// tiles [t0, t1) of y [rows, cout] from x [*, cin] and w [K, cin, cout]; y of another type than the
// sums (bfloat16) gets each tile summed in a float buffer, then rounded once
template <typename T, typename TI, typename TO>
void forward(const Plan& plan, int64_t t0, int64_t t1, const TI* x, const T* w, TO* y, int64_t cin, int64_t cout,
             int accumulate) {
    constexpr bool direct = std::is_same<T, TO>::value;
    const int64_t K = plan.offsets, stride = plan.tiles + 1;
    std::vector<T> buffer(direct ? 0 : plan.tile_rows * cout);
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * plan.tile_rows, r1 = std::min(plan.rows, r0 + plan.tile_rows);
        T* yt = direct ? reinterpret_cast<T*>(y) + r0 * cout : buffer.data();  // row r0 of the tile
        if (!direct && accumulate)
            for (int64_t e = 0; e < (r1 - r0) * cout; ++e) yt[e] = widen(y[r0 * cout + e]);
        const T* wc = w + plan.center * cin * cout;
        if (plan.center >= 0 && !accumulate) {  // the centre covers every row: it writes them first
            pairs<T, true>(x, yt, r0, wc, cin, cout, nullptr, nullptr, r0, r1 - r0);
        } else {
            if (!accumulate) std::fill(yt, yt + (r1 - r0) * cout, T(0));
            if (plan.center >= 0) pairs(x, yt, r0, wc, cin, cout, nullptr, nullptr, r0, r1 - r0);
        }
        for (int64_t k = 0; k < K; ++k) {
            if (k == plan.center || !plan.in[k]) continue;
            const int64_t a = plan.cuts[k * stride + t], b = plan.cuts[k * stride + t + 1];
            if (b > a) pairs(x, yt, r0, w + k * cin * cout, cin, cout, plan.in[k] + a, plan.out[k] + a, 0, b - a);
        }
        if constexpr (!direct)
            for (int64_t e = 0; e < (r1 - r0) * cout; ++e) narrow(yt[e], y + r0 * cout + e);
    }
}

// gw[c0:c0 + MR, n0:n0 + NV * L] += sum_p x[in[p], c0:c0 + MR]^T g[out[p], n0:...] over p < m
template <typename T, int MR, int NV, typename TI>
inline void grad_tile(const TI* x, const TI* g, T* gw, int64_t cin, int64_t cout, const int64_t* in,
                      const int64_t* out, int64_t first, int64_t m, int64_t c0, int64_t n0) {
    using V = typename Vec<T>::type;
    constexpr int L = Vec<T>::lanes;
    V acc[MR][NV];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = load(gw + (c0 + r) * cout + n0 + v * L);
    for (int64_t p = 0; p < m; ++p) {
        const TI* gp = g + (out ? out[p] : first + p) * cout + n0;
        const TI* xp = x + (in ? in[p] : first + p) * cin + c0;
        V b[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) b[v] = load(gp + v * L);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
            const V a = splat<T>(widen(xp[r]));
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) store(gw + (c0 + r) * cout + n0 + v * L, acc[r][v]);
}

// channel rows c0 .. c0 + MR - 1 of gw, every column
template <typename T, int MR, typename TI>
void grad_rows(const TI* x, const TI* g, T* gw, int64_t cin, int64_t cout, const int64_t* in, const int64_t* out,
               int64_t first, int64_t m, int64_t c0) {
    constexpr int L = Vec<T>::lanes;
    int64_t n0 = 0;
    for (; n0 + kNV * L <= cout; n0 += kNV * L) grad_tile<T, MR, kNV, TI>(x, g, gw, cin, cout, in, out, first, m, c0, n0);
    for (; n0 + L <= cout; n0 += L) grad_tile<T, MR, 1, TI>(x, g, gw, cin, cout, in, out, first, m, c0, n0);
    for (; n0 < cout; ++n0)  // the last columns (< one vector), one at a time
        for (int64_t p = 0; p < m; ++p) {
            const T gv = widen(g[(out ? out[p] : first + p) * cout + n0]);
            const TI* xp = x + (in ? in[p] : first + p) * cin + c0;
            for (int r = 0; r < MR; ++r) gw[(c0 + r) * cout + n0] += widen(xp[r]) * gv;
        }
}

// rows [ch0, ch1) of gw[k] [cin, cout] += x[in]^T g[out] over offset k's pairs, every k; the pairs
// go in blocks whose rows stay in cache while every channel tile reads them. Callers split the
// input channels (offsets are unequal: the centre holds every row), and each element sums its
// pairs in one order whatever the split.
template <typename T, typename TI>
void grad_weight(const Plan& plan, int64_t ch0, int64_t ch1, const TI* x, const TI* g, T* gw, int64_t cin,
                 int64_t cout) {
    const int64_t k0 = 0, k1 = plan.offsets;
    const int64_t stride = plan.tiles + 1;
    for (int64_t k = k0; k < k1; ++k) {
        const bool centre = k == plan.center;
        if (!centre && !plan.in[k]) continue;
        const int64_t total = centre ? plan.rows : plan.cuts[k * stride + plan.tiles];
        const int64_t* in = centre ? nullptr : plan.in[k];
        const int64_t* out = centre ? nullptr : plan.out[k];
        T* gwk = gw + k * cin * cout;
        for (int64_t p0 = 0; p0 < total; p0 += kPairBlock) {
            const int64_t m = std::min<int64_t>(kPairBlock, total - p0);
            const int64_t* bi = in ? in + p0 : nullptr;
            const int64_t* bo = out ? out + p0 : nullptr;
            int64_t c0 = ch0;
            for (; c0 + kMR <= ch1; c0 += kMR) grad_rows<T, kMR, TI>(x, g, gwk, cin, cout, bi, bo, p0, m, c0);
            switch (ch1 - c0) {
                case 5: grad_rows<T, 5, TI>(x, g, gwk, cin, cout, bi, bo, p0, m, c0); break;
                case 4: grad_rows<T, 4, TI>(x, g, gwk, cin, cout, bi, bo, p0, m, c0); break;
                case 3: grad_rows<T, 3, TI>(x, g, gwk, cin, cout, bi, bo, p0, m, c0); break;
                case 2: grad_rows<T, 2, TI>(x, g, gwk, cin, cout, bi, bo, p0, m, c0); break;
                case 1: grad_rows<T, 1, TI>(x, g, gwk, cin, cout, bi, bo, p0, m, c0); break;
                default: break;
            }
        }
    }
}

}  // namespace

extern "C" {

int voxseg_conv_abi() { return 3; }

void voxseg_conv_forward_f32(const Plan* plan, int64_t t0, int64_t t1, const float* x, const float* w, float* y,
                             int64_t cin, int64_t cout, int accumulate) {
    forward<float, float, float>(*plan, t0, t1, x, w, y, cin, cout, accumulate);
}

void voxseg_conv_forward_f64(const Plan* plan, int64_t t0, int64_t t1, const double* x, const double* w, double* y,
                             int64_t cin, int64_t cout, int accumulate) {
    forward<double, double, double>(*plan, t0, t1, x, w, y, cin, cout, accumulate);
}

// x, y bfloat16; w float32
void voxseg_conv_forward_bf16(const Plan* plan, int64_t t0, int64_t t1, const bf16* x, const float* w, bf16* y,
                              int64_t cin, int64_t cout, int accumulate) {
    forward<float, bf16, bf16>(*plan, t0, t1, x, w, y, cin, cout, accumulate);
}

void voxseg_conv_grad_weight_f32(const Plan* plan, int64_t ch0, int64_t ch1, const float* x, const float* g,
                                 float* gw, int64_t cin, int64_t cout) {
    grad_weight<float, float>(*plan, ch0, ch1, x, g, gw, cin, cout);
}

void voxseg_conv_grad_weight_f64(const Plan* plan, int64_t ch0, int64_t ch1, const double* x, const double* g,
                                 double* gw, int64_t cin, int64_t cout) {
    grad_weight<double, double>(*plan, ch0, ch1, x, g, gw, cin, cout);
}

// x, g bfloat16; gw float32
void voxseg_conv_grad_weight_bf16(const Plan* plan, int64_t ch0, int64_t ch1, const bf16* x, const bf16* g,
                                  float* gw, int64_t cin, int64_t cout) {
    grad_weight<float, bf16>(*plan, ch0, ch1, x, g, gw, cin, cout);
}

}  // extern "C"
