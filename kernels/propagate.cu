// propagate.cu — the integrators of docs/samplers.md fused with the MLP (docs/model.md): every grid step of one
// resampling interval in a single launch, FS_PPT particles per thread, their state in registers, the
// weights in shared memory (mlp.cuh), SDE noise from Philox in-kernel (docs/random.md, purpose SdeNoise,
// particle = global index, step = grid index, coordinate d from draw d/4 lane d%4).
//
// Defines: FS_SAMPLER (0 euler, 1 midpoint, 2 sde), FS_SDE_FORM (0 marginal, 1 legacy), plus the
// MLP's FS_D/FS_H/FS_L/FS_ACT, FS_BLOCK (threads per block), FS_PPT (particles per thread) and
// FS_INIT_BLOCK (fs_init_noise's block).
//
// Per-launch scalars that change between intervals (the step range) are read from the device
// array `iv` (see src/backend/cuda/mod.rs, IV_*), so one captured CUDA graph replays every
// interval with only a 64-byte host→device copy in between.
//
// Every update is written with the same operations in the same order as src/sampler.rs; the
// module is compiled with --fmad=false so that `x + h*v` is not contracted into an FMA the Rust
// side does not do (the MLP uses explicit fmaf, as the CPU's mul_add).
//
// After the last step, `emit` leaves the reward input ready for potential.cu:
//   emit = 1: x̂1 = x + (1−t)·v(t, x) at t = end/steps (one more MLP evaluation);
//   emit = 2: x_t itself (copy).
//
// Variants (compile time: FS_PPT particles per thread, FS_BLOCK threads per block; run time:
// FLOWSTEER_PROPAGATE=PxB, src/backend/cuda/modules.rs PropagateVariant): 1x256 (default) keeps
// one particle's MLP in registers; 2x128 shares every weight load between two particles
// (kernels/mlp.cuh). ptxas (NVRTC 13.0, sm_90, D = 2, H = 64, L = 3, midpoint): 184 and 202
// registers, no spills, 8 warps/SM each; 0.256 and 0.135 shared loads per FFMA. Numbers, the
// FP32 bounds and how to time both on a GPU: bench/propagate_variants.md. Not yet timed.
#ifndef FS_BLOCK
#define FS_BLOCK 256
#endif
#ifndef FS_INIT_BLOCK
#define FS_INIT_BLOCK 256
#endif
#include "philox.cuh"
#include "mlp.cuh"

#ifndef FS_SAMPLER
#error "FS_SAMPLER must be defined (0 euler, 1 midpoint, 2 sde)"
#endif
#ifndef FS_SDE_FORM
#define FS_SDE_FORM 0
#endif
static_assert(FS_SAMPLER >= 0 && FS_SAMPLER <= 2, "FS_SAMPLER must be 0, 1 or 2");
static_assert(FS_SDE_FORM == 0 || FS_SDE_FORM == 1, "FS_SDE_FORM must be 0 (marginal) or 1 (legacy)");

// Indices into the interval-parameter array `iv` (mirrors IV_* in src/backend/cuda/mod.rs).
#define FS_IV_STEP_BEGIN 0
#define FS_IV_STEP_END 1

// The integrator for the thread's FS_PPT particles from grid step `begin` to `end` (docs/samplers.md):
// per particle exactly the operations of src/sampler.rs in its order. `first + idx` are the
// particles' global indices (the SDE noise's Philox counter; `first` > 0 when the population is
// one MPI rank's share, docs/distributed.md); `scratch` is used by the FS_PPT ≥ 2 MLP only.
#if FS_PPT == 1
typedef fs_vec fs_state;
__device__ __forceinline__ fs_state fs_velocity(const float* w, float*, float t, fs_state x) { return fs_mlp_velocity(w, t, x); }
#define FS_P(s, q) (s)
#else
typedef fs_vecs fs_state;
__device__ __forceinline__ fs_state fs_velocity(const float* w, float* scratch, float t, fs_state x) {
    return fs_mlp_velocities(w, scratch, t, x);
}
#define FS_P(s, q) ((s).p[q])
#endif

__device__ __forceinline__ void fs_integrate(const float* w, float* scratch, fs_state& xs, const unsigned long long (&idx)[FS_PPT],
                                             unsigned long long first, unsigned int begin, unsigned int end, unsigned int steps,
                                             float k, unsigned int key0, unsigned int key1) {
    const float h = 1.0f / (float)steps;
    for (unsigned int step = begin; step < end; ++step) {
        const float t = (float)step / (float)steps;
        const fs_state v0 = fs_velocity(w, scratch, t, xs);
#if FS_SAMPLER == 0
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
#pragma unroll
            for (int d = 0; d < FS_D; ++d) FS_P(xs, q).c[d] = FS_P(xs, q).c[d] + h * FS_P(v0, q).c[d];
        }
#else
        fs_state probe;
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
#pragma unroll
            for (int d = 0; d < FS_D; ++d) FS_P(probe, q).c[d] = FS_P(xs, q).c[d] + 0.5f * h * FS_P(v0, q).c[d];
        }
        const fs_state vm = fs_velocity(w, scratch, t + 0.5f * h, probe);
#if FS_SAMPLER == 1
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
#pragma unroll
            for (int d = 0; d < FS_D; ++d) FS_P(xs, q).c[d] = FS_P(xs, q).c[d] + h * FS_P(vm, q).c[d];
        }
#else
#if FS_SDE_FORM == 0
        const float scale = sqrtf(k * (1.0f - t) * h);
#else
        const float scale = h * sqrtf(k * (1.0f - t));
#endif
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
            float xi[FS_D];
            fs_normal_vector<FS_D>(first + idx[q], step, FS_PURPOSE_SDE_NOISE, key0, key1, xi);
#pragma unroll
            for (int d = 0; d < FS_D; ++d) {
#if FS_SDE_FORM == 0
                const float drift = FS_P(vm, q).c[d] + 0.5f * k * (t * FS_P(v0, q).c[d] - FS_P(xs, q).c[d]);
#else
                const float drift = FS_P(vm, q).c[d] - 0.5f * k * (t * FS_P(vm, q).c[d] - FS_P(xs, q).c[d]);
#endif
                FS_P(xs, q).c[d] = FS_P(xs, q).c[d] + h * drift + scale * xi[d];
            }
        }
#endif
#endif
    }
}

// x: SoA positions [FS_D][stride]; rin: SoA reward input [FS_D][stride] (may alias nothing else).
// Persistent: the host launches at most as many blocks as fit on the device at once
// (src/backend/cuda/modules.rs `propagate_launch`) and each block walks the population in
// strides of gridDim.x·FS_BLOCK·FS_PPT particles, so the weights are staged once per block.
// Thread j of a block handles particles base + j + q·FS_BLOCK (q < FS_PPT): coalesced accesses.
extern "C" __global__ void __launch_bounds__(FS_BLOCK) fs_propagate(
    float* __restrict__ x, unsigned long long total, unsigned long long stride, const unsigned int* __restrict__ iv,
    unsigned int steps, float k, unsigned int key0, unsigned int key1, const float* __restrict__ weights,
    float* __restrict__ rin, int emit, unsigned long long first) {
    extern __shared__ __align__(16) float fs_w[];
    fs_load_weights(fs_w, weights);
    float* scratch = fs_w + FS_MLP_PARAMS_ALIGNED;
    const unsigned int begin = iv[FS_IV_STEP_BEGIN], end = iv[FS_IV_STEP_END];
    const unsigned long long span = (unsigned long long)FS_BLOCK * FS_PPT;
    for (unsigned long long base = (unsigned long long)blockIdx.x * span; base < total; base += (unsigned long long)gridDim.x * span) {
        unsigned long long idx[FS_PPT];
        bool live[FS_PPT];
        fs_state xs;
#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
            idx[q] = base + threadIdx.x + (unsigned long long)q * FS_BLOCK;
            live[q] = idx[q] < total;
            // A thread past the end computes on zeros (FS_PPT ≥ 2 keeps its other particles' work
            // in lockstep) and stores nothing.
#pragma unroll
            for (int d = 0; d < FS_D; ++d) FS_P(xs, q).c[d] = live[q] ? x[d * stride + idx[q]] : 0.0f;
        }
        if (!live[0]) continue;  // no live particle in this thread (idx grows with q)

        fs_integrate(fs_w, scratch, xs, idx, first, begin, end, steps, k, key0, key1);

#pragma unroll
        for (int q = 0; q < FS_PPT; ++q) {
            if (!live[q]) continue;
#pragma unroll
            for (int d = 0; d < FS_D; ++d) x[d * stride + idx[q]] = FS_P(xs, q).c[d];
        }

        if (emit == 1) {
            const float t = (float)end / (float)steps;
            const fs_state v = fs_velocity(fs_w, scratch, t, xs);
#pragma unroll
            for (int q = 0; q < FS_PPT; ++q) {
                if (!live[q]) continue;
#pragma unroll
                for (int d = 0; d < FS_D; ++d) rin[d * stride + idx[q]] = FS_P(xs, q).c[d] + (1.0f - t) * FS_P(v, q).c[d];
            }
        } else if (emit == 2) {
#pragma unroll
            for (int q = 0; q < FS_PPT; ++q) {
                if (!live[q]) continue;
#pragma unroll
                for (int d = 0; d < FS_D; ++d) rin[d * stride + idx[q]] = FS_P(xs, q).c[d];
            }
        }
    }
}

// x0 ~ N(0, I) from Philox, purpose InitialNoise, step 0, particle = global index (docs/random.md).
extern "C" __global__ void __launch_bounds__(FS_INIT_BLOCK) fs_init_noise(float* __restrict__ x, unsigned long long total,
                                                                     unsigned long long stride, unsigned int key0,
                                                                     unsigned int key1) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float z[FS_D];
    fs_normal_vector<FS_D>(i, 0u, FS_PURPOSE_INITIAL_NOISE, key0, key1, z);
#pragma unroll
    for (int d = 0; d < FS_D; ++d) x[d * stride + i] = z[d];
}
