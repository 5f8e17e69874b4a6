// block.cuh — warp and block primitives shared by potential.cu, resample.cu and search.cu:
// sums, inclusive/exclusive scans and (max, sum) pairs, in f64 or u64. No CUB (NVRTC has no
// C++ standard library); written with __shfl_*_sync on full warps, block size FS_RBLOCK.
#pragma once

#ifndef FS_RBLOCK
#define FS_RBLOCK 256
#endif
static_assert(FS_RBLOCK % 32 == 0 && FS_RBLOCK <= 1024, "FS_RBLOCK must be a multiple of 32, at most 1024");
#define FS_WARPS (FS_RBLOCK / 32)

#define FS_NEG_INF_F __int_as_float(0xff800000)
#define FS_POS_INF_F __int_as_float(0x7f800000)
#define FS_NEG_INF_D __longlong_as_double(0xfff0000000000000ull)
#define FS_POS_INF_D __longlong_as_double(0x7ff0000000000000ull)

// An f64 kept in two f32 rows of the scratch rows (`row`: low word, `row + 1`: high word), bit
// for bit: the rows' float offsets need not be 8-byte aligned (log-weights and potential states
// are f64, docs/steering.md).
__device__ __forceinline__ void fs_store_f64_rows(float* rows, unsigned long long row, unsigned long long stride,
                                                  unsigned long long i, double v) {
    const unsigned long long b = (unsigned long long)__double_as_longlong(v);
    rows[row * stride + i] = __uint_as_float((unsigned int)b);
    rows[(row + 1) * stride + i] = __uint_as_float((unsigned int)(b >> 32));
}

__device__ __forceinline__ double fs_load_f64_rows(const float* rows, unsigned long long row, unsigned long long stride,
                                                   unsigned long long i) {
    const unsigned long long lo = __float_as_uint(rows[row * stride + i]);
    const unsigned long long hi = __float_as_uint(rows[(row + 1) * stride + i]);
    return __longlong_as_double((long long)(lo | (hi << 32)));
}

// The block's index on a grid numbered x first, then y: the host lays tiles × groups (up to
// (2^31 − 1) × 65,535 blocks) along grid.x and spills into grid.y only past the x limit, so no
// count of groups meets the 65,535 of a grid's y alone (issue 11).
__device__ __forceinline__ unsigned long long fs_block_index() {
    return blockIdx.x + (unsigned long long)blockIdx.y * gridDim.x;
}

template <typename T>
__device__ __forceinline__ T fs_warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ __forceinline__ T fs_warp_max(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        T u = __shfl_down_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    return v;
}

// Sum over the block; the result is valid in thread 0 (and returned to every thread).
template <typename T>
__device__ __forceinline__ T fs_block_sum(T v) {
    __shared__ T part[FS_WARPS];
    __shared__ T result;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = fs_warp_sum(v);
    __syncthreads();  // `part` may still be read by a previous call
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T u = lane < FS_WARPS ? part[lane] : (T)0;
        u = fs_warp_sum(u);
        if (lane == 0) result = u;
    }
    __syncthreads();
    return result;
}

template <typename T>
__device__ __forceinline__ T fs_block_max(T v, T lowest) {
    __shared__ T part[FS_WARPS];
    __shared__ T result;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = fs_warp_max(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T u = lane < FS_WARPS ? part[lane] : lowest;
        u = fs_warp_max(u);
        if (lane == 0) result = u;
    }
    __syncthreads();
    return result;
}

// Inclusive scan over the block in thread order; `total` receives the block's sum.
template <typename T>
__device__ __forceinline__ T fs_block_inclusive_scan(T v, T* total) {
    __shared__ T part[FS_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += u;
    }
    __syncthreads();
    if (lane == 31) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        T u = lane < FS_WARPS ? part[lane] : (T)0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            T w = __shfl_up_sync(0xffffffffu, u, o);
            if (lane >= o) u += w;
        }
        if (lane < FS_WARPS) part[lane] = u;  // inclusive prefix of warp totals
    }
    __syncthreads();
    if (warp > 0) v += part[warp - 1];
    *total = part[FS_WARPS - 1];
    return v;
}

// (max, Σ exp(v − max)) pairs in f64, combined without overflow; −inf max means an empty sum.
struct fs_lse { double m, s; };

__device__ __forceinline__ fs_lse fs_lse_combine(fs_lse a, fs_lse b) {
    if (a.m == FS_NEG_INF_D) return b;
    if (b.m == FS_NEG_INF_D) return a;
    if (a.m >= b.m) {
        fs_lse r = {a.m, a.s + b.s * exp(b.m - a.m)};
        return r;
    }
    fs_lse r = {b.m, b.s + a.s * exp(a.m - b.m)};
    return r;
}
