// mlp.cuh — the velocity MLP v(t, x) as a device function (docs/model.md), for 1 or FS_PPT particles per thread.
//
// Shape and activation arrive as -D defines: FS_D (data dimension), FS_H (hidden width), FS_L
// (hidden layers), FS_ACT (0 elu, 1 silu, 2 gelu-tanh, 3 tanh, 4 relu). Every loop is unrolled
// over compile-time bounds, so the two activation vectors (2·FS_H floats) live in registers for
// the whole network; the weights are read from on-chip memory (`w`, shared memory filled once
// per block) with every lane reading the same address, which the hardware broadcasts.
//
// Weight layout (floats, as src/model.rs holds them): for each Linear layer in order, its weight
// [out × in] row-major, then its bias [out]. Layers: (D+1)→H, (L−1)×(H→H), H→D.
//
// Arithmetic mirrors the CPU hot loop (src/backend/cpu/propagate.rs) operation for operation:
// acc = bias; acc = fmaf(w, a_i, acc) for i in order. With --fmad=false nothing else is fused,
// so the linear algebra is bitwise equal to the CPU's; the activations are the CPU hot loop's own
// polynomials (below), so v(t, x) is bitwise the CPU's.
//
// Variants (FS_PPT, particles per thread; chosen at compile time, see propagate.cu):
//   FS_PPT = 1: `fs_mlp_velocity`, one particle, both activation vectors in registers (2·H).
//   FS_PPT ≥ 2: `fs_mlp_velocities`, FS_PPT particles per thread sharing every weight load (one
//     broadcast LDS.128 feeds 4·FS_PPT FFMAs instead of 4). Only the layer's input (FS_PPT·H
//     floats) stays in registers; each layer's outputs go to a per-thread column of shared
//     memory (`scratch`, FS_PPT·H floats per thread, thread-consecutive: no bank conflicts) and
//     are read back as the next layer's input. Per particle the operations and their order are
//     those of FS_PPT = 1, so the result is bitwise the same. D = 2, H = 64, L = 3 on sm_90: 202
//     registers, no spills, 0.135 shared accesses per FFMA against 0.256 (bench/propagate_variants.md).
//
// v1 (FS_PPT = 1) — activations in registers, weights in shared memory. Supports H ≤ 64:
// beyond that the register arrays spill (checked by tests/kernels_compile.rs), and the host
// refuses such models with a message. Measured with ptxas only (no GPU run yet): v0, the same
// code fully inlined with plain loads, had the compiler hoist every weight load out of the step
// loop (35 KB stack, 137 KB of spills, 330 s to compile); v1 has none and compiles in ~10 s.
#pragma once

#ifndef FS_D
#error "FS_D (data dimension) must be defined"
#endif
#ifndef FS_H
#error "FS_H (hidden width) must be defined"
#endif
#ifndef FS_L
#error "FS_L (hidden layers) must be defined"
#endif
#ifndef FS_ACT
#error "FS_ACT (activation) must be defined"
#endif

static_assert(FS_D >= 1 && FS_D <= 16, "FS_D must be in 1..=16 (state is kept in registers)");
static_assert(FS_H >= 1 && FS_H <= 64, "FS_H must be in 1..=64: activations live in registers");
static_assert(FS_L >= 1 && FS_L <= 8, "FS_L must be in 1..=8");
static_assert(FS_ACT >= 0 && FS_ACT <= 4, "FS_ACT must be 0..4 (elu, silu, gelu, tanh, relu)");

// Floats in the packed weight array.
#define FS_MLP_PARAMS ((FS_D + 1) * FS_H + FS_H + (FS_L - 1) * (FS_H * FS_H + FS_H) + FS_H * FS_D + FS_D)
// Floats the weights occupy in shared memory, rounded up to 16 bytes (the scratch follows them).
#define FS_MLP_PARAMS_ALIGNED ((FS_MLP_PARAMS + 3) / 4 * 4)

#ifndef FS_PPT
#define FS_PPT 1
#endif
static_assert(FS_PPT >= 1 && FS_PPT <= 4, "FS_PPT (particles per thread) must be in 1..=4");
static_assert(FS_PPT == 1 || FS_PPT * FS_H <= 128, "FS_PPT·FS_H must be ≤ 128: the layer input lives in registers");

// The activations exactly as the CPU hot loop computes them (src/backend/cpu/propagate.rs,
// `activation_f32`): Cephes-style exp/expm1 polynomials with the same constants and the same
// fused multiply-adds, NaN-keeping max/min, tanh(u) = 1 − 2/(e^{2u} + 1). Mirroring them (rather
// than CUDA's expf/tanhf) makes the whole MLP bitwise equal to the CPU's for the same input.
__device__ __forceinline__ float fs_max_keep_nan(float a, float b) { return a < b ? b : a; }
__device__ __forceinline__ float fs_min_keep_nan(float a, float b) { return a > b ? b : a; }

// x = k·ln2 + r, |r| ≤ ln2/2; returns r and 2^k.
__device__ __forceinline__ float fs_exp_reduce(float x, float* scale) {
    const float LOG2E = 1.44269504f, LN2_HI = 0.6933594f, LN2_LO = -2.1219444e-4f, ROUND = 12582912.0f;
    x = fs_min_keep_nan(fs_max_keep_nan(x, -87.3f), 88.3f);
    const float shifted = fmaf(x, LOG2E, ROUND);
    const float kf = shifted - ROUND;
    const int k = __float_as_int(shifted) - __float_as_int(ROUND);
    *scale = __int_as_float((k + 127) << 23);
    return fmaf(kf, -LN2_LO, fmaf(kf, -LN2_HI, x));
}

__device__ __forceinline__ float fs_exp(float x) {
    float scale;
    const float r = fs_exp_reduce(x, &scale);
    float p = 1.9875691e-4f;
    p = fmaf(p, r, 1.3981999e-3f);
    p = fmaf(p, r, 8.333452e-3f);
    p = fmaf(p, r, 4.1665796e-2f);
    p = fmaf(p, r, 1.6666665e-1f);
    p = fmaf(p, r, 0.5f);  // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
    const float er = fmaf(p * r, r, r) + 1.0f;
    return er * scale;
}

__device__ __forceinline__ float fs_expm1(float x) {
    float scale;
    const float r = fs_exp_reduce(x, &scale);
    float q = 1.0f / 5040.0f;
    q = fmaf(q, r, 1.0f / 720.0f);
    q = fmaf(q, r, 1.0f / 120.0f);
    q = fmaf(q, r, 1.0f / 24.0f);
    q = fmaf(q, r, 1.0f / 6.0f);
    q = fmaf(q, r, 0.5f);
    const float em1_r = fmaf(r * r, q, r);
    return fmaf(scale, em1_r, scale - 1.0f);
}

__device__ __forceinline__ float fs_tanh(float u) { return 1.0f - 2.0f / (fs_exp(2.0f * u) + 1.0f); }

__device__ __forceinline__ float fs_activation(float x) {
#if FS_ACT == 0
    return fs_max_keep_nan(x, 0.0f) + fs_expm1(fs_min_keep_nan(x, 0.0f));
#elif FS_ACT == 1
    return x * (1.0f / (1.0f + fs_exp(-x)));
#elif FS_ACT == 2
    const float c = 0.7978846f, a = 0.044715f;  // sqrt(2/pi) and the cubic coefficient
    return 0.5f * x * (1.0f + fs_tanh(c * x * fmaf(a, x * x, 1.0f)));
#elif FS_ACT == 3
    return fs_tanh(x);
#else
    return fs_max_keep_nan(x, 0.0f);
#endif
}

// acc = fmaf(row[i], a[i], acc) for i = 0..H−1 in order; rows of H % 4 == 0 floats are read as
// float4 (explicit 128-bit shared loads: fewer loads for NVVM to analyse, ~35 % less compile time).
__device__ __forceinline__ void fs_dot(const float* __restrict__ row, const float a[FS_H], float* acc) {
#if FS_H % 4 == 0
    const float4* r4 = reinterpret_cast<const float4*>(row);
#pragma unroll
    for (int i = 0; i < FS_H / 4; ++i) {
        const float4 w = r4[i];
        *acc = fmaf(w.x, a[4 * i], *acc);
        *acc = fmaf(w.y, a[4 * i + 1], *acc);
        *acc = fmaf(w.z, a[4 * i + 2], *acc);
        *acc = fmaf(w.w, a[4 * i + 3], *acc);
    }
#else
#pragma unroll
    for (int i = 0; i < FS_H; ++i) *acc = fmaf(row[i], a[i], *acc);
#endif
}

// A point or a velocity: FS_D floats, passed by value so that the non-inlined MLP call keeps
// them in registers.
struct fs_vec { float c[FS_D]; };

// v(t, x). `w` points at FS_MLP_PARAMS floats in shared memory.
//
// Two things keep this fast and small:
// - __noinline__ for H ≥ 48: the body is ~H²·L FMAs fully unrolled; midpoint and the x̂1
//   emission call it three times, and inlining each copy triples code size and compile time.
//   Smaller widths are inlined: there the call's ABI cost more than the code (measured: D = 3,
//   H = 32 on sm_80 spilled 20 bytes around the call, none inlined).
// - the weight offset is laundered through an empty asm at every call: without it the compiler
//   sees loads from a constant shared array inside the step loop and hoists all of them out of
//   the loop — 35 KB of weights into local memory (a 35 KB stack frame and ~90 KB of spills,
//   measured with ptxas -v for D=2 H=64 L=3). The offset is a multiple of 4 floats, so rows of
//   H floats (H % 4 == 0) can still be read with 128-bit shared loads.
#if FS_H >= 48
#define FS_MLP_INLINE __noinline__
#else
#define FS_MLP_INLINE __forceinline__
#endif
__device__ FS_MLP_INLINE fs_vec fs_mlp_velocity(const float* __restrict__ w0, float t, fs_vec x) {
    unsigned int off = 0;
    asm volatile("" : "+r"(off));
    off &= ~3u;
    const float* __restrict__ w = w0 + off;
    float a[FS_H];
    float b[FS_H];
    // Layer 0: input [t, x].
    {
        const float* W = w;
        const float* B = w + (FS_D + 1) * FS_H;
#pragma unroll
        for (int o = 0; o < FS_H; ++o) {
            float acc = B[o];
            acc = fmaf(W[o * (FS_D + 1)], t, acc);
#pragma unroll
            for (int i = 0; i < FS_D; ++i) acc = fmaf(W[o * (FS_D + 1) + 1 + i], x.c[i], acc);
            a[o] = fs_activation(acc);
        }
    }
    const float* p = w + (FS_D + 1) * FS_H + FS_H;
#pragma unroll 1
    for (int l = 1; l < FS_L; ++l) {
#pragma unroll
        for (int o = 0; o < FS_H; ++o) {
            float acc = p[FS_H * FS_H + o];
            fs_dot(p + o * FS_H, a, &acc);
            b[o] = fs_activation(acc);
        }
#pragma unroll
        for (int o = 0; o < FS_H; ++o) a[o] = b[o];
        p += FS_H * FS_H + FS_H;
    }
    fs_vec v;
#pragma unroll
    for (int o = 0; o < FS_D; ++o) {
        float acc = p[FS_H * FS_D + o];
        fs_dot(p + o * FS_H, a, &acc);
        v.c[o] = acc;
    }
    return v;
}

#if FS_PPT > 1
#ifndef FS_BLOCK
#error "FS_BLOCK (threads per block) must be defined before mlp.cuh when FS_PPT > 1 (scratch stride)"
#endif
// FS_PPT points or velocities, one per particle of the thread.
struct fs_vecs { fs_vec p[FS_PPT]; };

// acc[q] = fmaf(row[i], a[q][i], acc[q]) for i = 0..H−1 in order, each weight loaded once for all q.
__device__ __forceinline__ void fs_dot_multi(const float* __restrict__ row, const float (&a)[FS_PPT][FS_H], float (&acc)[FS_PPT]) {
#if FS_H % 4 == 0
    const float4* r4 = reinterpret_cast<const float4*>(row);
#pragma unroll
    for (int i = 0; i < FS_H / 4; ++i) {
        const float4 w = r4[i];
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
            acc[q] = fmaf(w.x, a[q][4 * i], acc[q]);
            acc[q] = fmaf(w.y, a[q][4 * i + 1], acc[q]);
            acc[q] = fmaf(w.z, a[q][4 * i + 2], acc[q]);
            acc[q] = fmaf(w.w, a[q][4 * i + 3], acc[q]);
        }
    }
#else
#pragma unroll
    for (int i = 0; i < FS_H; ++i) {
        const float w = row[i];
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) acc[q] = fmaf(w, a[q][i], acc[q]);
    }
#endif
}

// v(t, x_q) for the thread's FS_PPT particles. `w0`: the weights in shared memory; `scratch`:
// this block's FS_PPT·FS_H·FS_BLOCK floats of shared memory (16-byte aligned).
__device__ FS_MLP_INLINE fs_vecs fs_mlp_velocities(const float* __restrict__ w0, float* __restrict__ scratch, float t, fs_vecs x) {
    unsigned int off = 0;
    asm volatile("" : "+r"(off));  // see fs_mlp_velocity: keeps weight loads inside the step loop
    off &= ~3u;
    const float* __restrict__ w = w0 + off;
    float a[FS_PPT][FS_H];
    {
        const float* W = w;
        const float* B = w + (FS_D + 1) * FS_H;
#pragma unroll
        for (int o = 0; o < FS_H; ++o) {
#pragma unroll
            for (int q = 0; q < FS_PPT; ++q) {
                float acc = B[o];
                acc = fmaf(W[o * (FS_D + 1)], t, acc);
#pragma unroll
                for (int i = 0; i < FS_D; ++i) acc = fmaf(W[o * (FS_D + 1) + 1 + i], x.p[q].c[i], acc);
                a[q][o] = fs_activation(acc);
            }
        }
    }
    const float* p = w + (FS_D + 1) * FS_H + FS_H;
#pragma unroll 1
    for (int l = 1; l < FS_L; ++l) {
#if FS_H % 4 == 0
        // Column layout: float4 k of particle q of thread j at s4[(q·H/4 + k)·FS_BLOCK + j].
        float4* s4 = reinterpret_cast<float4*>(scratch) + threadIdx.x;
        // Not unrolled: one chunk of 4 outputs at a time keeps the scheduler from hoisting the
        // next chunks' loads and activations (unrolled: 255 registers and 520 B of spills at
        // H = 64 on sm_90; the input a[][] is indexed by the inner, unrolled loops only).
#pragma unroll 1
        for (int k = 0; k < FS_H / 4; ++k) {
            float out[FS_PPT][4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int o = 4 * k + j;
                float acc[FS_PPT];
#pragma unroll
                for (int q = 0; q < FS_PPT; ++q) acc[q] = p[FS_H * FS_H + o];
                fs_dot_multi(p + o * FS_H, a, acc);
#pragma unroll
                for (int q = 0; q < FS_PPT; ++q) out[q][j] = fs_activation(acc[q]);
            }
#pragma unroll
            for (int q = 0; q < FS_PPT; ++q) {
                float4 v;  // (no make_float4: kernels/emulator.hpp's float4 is a plain struct)
                v.x = out[q][0];
                v.y = out[q][1];
                v.z = out[q][2];
                v.w = out[q][3];
                s4[(q * (FS_H / 4) + k) * FS_BLOCK] = v;
            }
        }
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
#pragma unroll
            for (int k = 0; k < FS_H / 4; ++k) {
                const float4 v = s4[(q * (FS_H / 4) + k) * FS_BLOCK];
                a[q][4 * k] = v.x;
                a[q][4 * k + 1] = v.y;
                a[q][4 * k + 2] = v.z;
                a[q][4 * k + 3] = v.w;
            }
        }
#else
        float* s = scratch + threadIdx.x;
        // Not unrolled either (D = 3, H = 30, L = 2 silu on sm_80 spilled 24 B unrolled).
#pragma unroll 1
        for (int o = 0; o < FS_H; ++o) {
            float acc[FS_PPT];
#pragma unroll
            for (int q = 0; q < FS_PPT; ++q) acc[q] = p[FS_H * FS_H + o];
            fs_dot_multi(p + o * FS_H, a, acc);
#pragma unroll
            for (int q = 0; q < FS_PPT; ++q) s[(q * FS_H + o) * FS_BLOCK] = fs_activation(acc[q]);
        }
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
#pragma unroll
            for (int o = 0; o < FS_H; ++o) a[q][o] = s[(q * FS_H + o) * FS_BLOCK];
        }
#endif
        p += FS_H * FS_H + FS_H;
    }
    fs_vecs v;
#pragma unroll
    for (int o = 0; o < FS_D; ++o) {
        float acc[FS_PPT];
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) acc[q] = p[FS_H * FS_D + o];
        fs_dot_multi(p + o * FS_H, a, acc);
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) v.p[q].c[o] = acc[q];
    }
    return v;
}
#endif

// Copies the packed weights from global to shared memory; every thread of the block helps.
__device__ __forceinline__ void fs_load_weights(float* __restrict__ dst, const float* __restrict__ src) {
    for (int i = threadIdx.x; i < FS_MLP_PARAMS; i += blockDim.x) dst[i] = src[i];
    __syncthreads();
}
