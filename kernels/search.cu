// search.cu — the search methods' kernels (docs/search.md): zeroth-order candidates around a pivot,
// renoising (docs/samplers.md), per-group arg-max of scores (best-of-N, top-1), the gather of a selected
// subset (top-k) and in-place replication (search over paths).
//
// Scores order: larger first, NaN last, ties to the lower index (Backend::select_top).
//
// Variants: v1 (this). Top-k for k > 1 sorts on the host (scores come back anyway); a device
// segmented sort is the next variant. Not yet measured on a GPU.
#include "philox.cuh"
#include "block.cuh"

#ifndef FS_D
#error "FS_D must be defined"
#endif

// x_s = a·x_t + b·ξ, ξ ~ N(0, I) with purpose Renoising, step = round, particle = global index.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_renoise(float* __restrict__ x, unsigned long long total,
                                                                  unsigned long long stride, float a, float b,
                                                                  unsigned int round, unsigned int key0, unsigned int key1) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float z[FS_D];
    fs_normal_vector<FS_D>(i, round, FS_PURPOSE_RENOISING, key0, key1, z);
#pragma unroll
    for (int d = 0; d < FS_D; ++d) x[d * stride + i] = a * x[d * stride + i] + b * z[d];
}

// Zeroth-order candidates: candidate j of group g is pivot_g + u with u uniform in the ball of
// radius `radius` (direction: a normalised normal vector from draws 0..; radius·v^(1/D) with v
// the uniform of draw FS_CAND_RADIUS_DRAW, lane 0), purpose SearchPerturbation, step = cycle,
// particle = global index. Candidate 0 of each group is the pivot itself.
#define FS_CAND_RADIUS_DRAW ((FS_D + 3) / 4)
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_candidates(
    float* __restrict__ x, const float* __restrict__ pivot, unsigned long long n, unsigned long long total,
    unsigned long long stride, float radius, unsigned int cycle, unsigned int key0, unsigned int key1) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const unsigned long long g = i / n, j = i - g * n;
    // As candidate_around_pivot (src/backend/cpu/mod.rs): pivot + r·z/|z|, r = ρ·u^(1/D).
    float out[FS_D];
#pragma unroll
    for (int d = 0; d < FS_D; ++d) out[d] = pivot[g * FS_D + d];
    if (j != 0 && radius != 0.0f) {
        float z[FS_D];
        fs_normal_vector<FS_D>(i, cycle, FS_PURPOSE_SEARCH_PERTURBATION, key0, key1, z);
        float norm2 = 0.0f;
#pragma unroll
        for (int d = 0; d < FS_D; ++d) norm2 = norm2 + z[d] * z[d];
        const float norm = sqrtf(norm2);
        if (norm != 0.0f) {
            const float u = fs_uniform1(i, cycle, FS_PURPOSE_SEARCH_PERTURBATION, FS_CAND_RADIUS_DRAW, key0, key1);
            const float r = radius * powf(u, 1.0f / (float)FS_D);
#pragma unroll
            for (int d = 0; d < FS_D; ++d) out[d] = out[d] + r * z[d] / norm;
        }
    }
#pragma unroll
    for (int d = 0; d < FS_D; ++d) x[d * stride + i] = out[d];
}

// Is (s, i) better than (t, k)? Larger score first, NaN last, ties to the lower index.
__device__ __forceinline__ bool fs_better(float s, unsigned long long i, float t, unsigned long long k) {
    const bool sn = isnan(s), tn = isnan(t);
    if (sn != tn) return tn;
    if (!sn && s != t) return s > t;
    return i < k;
}

// The block's best (score, index) pair by fs_better, left in ss[0], si[0]: a shared-memory tree
// over FS_RBLOCK threads, each starting from its own candidate (index ~0 = none).
__device__ __forceinline__ void fs_block_argmax(float* ss, unsigned long long* si, float best, unsigned long long bi) {
    ss[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int o = FS_RBLOCK / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) {
            const float s = ss[threadIdx.x + o];
            const unsigned long long k = si[threadIdx.x + o];
            if (k != ~0ull && (si[threadIdx.x] == ~0ull || fs_better(s, k, ss[threadIdx.x], si[threadIdx.x]))) {
                ss[threadIdx.x] = s;
                si[threadIdx.x] = k;
            }
        }
        __syncthreads();
    }
}

// Per-tile best (score, index): a block per tile of a group (fs_block_index).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_argmax_tiles(
    const float* __restrict__ score, unsigned long long n, float* __restrict__ tile_score,
    unsigned long long* __restrict__ tile_index, unsigned int tiles, unsigned long long groups) {
    __shared__ float ss[FS_RBLOCK];
    __shared__ unsigned long long si[FS_RBLOCK];
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    float best = __int_as_float(0x7fc00000);
    unsigned long long bi = ~0ull;
    for (unsigned long long j = (unsigned long long)tile * FS_RBLOCK * 4 + threadIdx.x;
         j < n && j < (unsigned long long)(tile + 1) * FS_RBLOCK * 4; j += FS_RBLOCK) {
        const float s = score[(unsigned long long)g * n + j];
        if (bi == ~0ull || fs_better(s, j, best, bi)) { best = s; bi = j; }
    }
    fs_block_argmax(ss, si, best, bi);
    if (threadIdx.x == 0) {
        tile_score[(unsigned long long)g * tiles + tile] = ss[0];
        tile_index[(unsigned long long)g * tiles + tile] = si[0];
    }
}

// One block per group: the best of the tiles → sel[g] (within-group index), best[g] (score).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_argmax_groups(
    const float* __restrict__ tile_score, const unsigned long long* __restrict__ tile_index, unsigned int tiles,
    unsigned int* __restrict__ sel, float* __restrict__ best, unsigned long long groups) {
    __shared__ float ss[FS_RBLOCK];
    __shared__ unsigned long long si[FS_RBLOCK];
    const unsigned long long g = fs_block_index();
    if (g >= groups) return;
    float b = __int_as_float(0x7fc00000);
    unsigned long long bi = ~0ull;
    for (unsigned int t = threadIdx.x; t < tiles; t += FS_RBLOCK) {
        const float s = tile_score[(unsigned long long)g * tiles + t];
        const unsigned long long k = tile_index[(unsigned long long)g * tiles + t];
        if (k != ~0ull && (bi == ~0ull || fs_better(s, k, b, bi))) { b = s; bi = k; }
    }
    fs_block_argmax(ss, si, b, bi);
    if (threadIdx.x == 0) {
        sel[g] = (unsigned int)si[0];
        best[g] = ss[0];
    }
}

// New particle g·keep + k ← old particle g·n_old + sel[g·keep + k], every per-particle field,
// into the scratch rows `alt` (x_0..x_{D−1}, carried as f64 in two rows, root); fs_select_commit
// copies back. The log-weights and acc (f64 each) follow in a second round
// (fs_select_gather_lw / fs_select_commit_lw: rows 0–3) so that the scratch stays D + 3 rows
// (the memory budget, src/backend/cuda/device.rs).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_select_gather(
    const float* __restrict__ x, const double* __restrict__ carried,
    const unsigned int* __restrict__ root, const unsigned int* __restrict__ sel,
    float* __restrict__ alt, unsigned long long n_old, unsigned long long keep, unsigned long long total_new,
    unsigned long long stride) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total_new) return;
    const unsigned long long g = i / keep;
    const unsigned long long src = g * n_old + sel[i];
#pragma unroll
    for (int d = 0; d < FS_D; ++d) alt[d * stride + i] = x[d * stride + src];
    fs_store_f64_rows(alt, FS_D, stride, i, carried[src]);
    alt[(FS_D + 2) * stride + i] = __uint_as_float(root[src]);
}

extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_select_commit(
    float* __restrict__ x, double* __restrict__ carried,
    unsigned int* __restrict__ root, const float* __restrict__ alt, unsigned long long total_new,
    unsigned long long stride) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total_new) return;
#pragma unroll
    for (int d = 0; d < FS_D; ++d) x[d * stride + i] = alt[d * stride + i];
    carried[i] = fs_load_f64_rows(alt, FS_D, stride, i);
    root[i] = __float_as_uint(alt[(FS_D + 2) * stride + i]);
}

extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_select_gather_lw(
    const double* __restrict__ lw, const double* __restrict__ acc, const unsigned int* __restrict__ sel,
    float* __restrict__ alt, unsigned long long n_old, unsigned long long keep, unsigned long long total_new,
    unsigned long long stride) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total_new) return;
    const unsigned long long src = (i / keep) * n_old + sel[i];
    fs_store_f64_rows(alt, 0, stride, i, lw[src]);
    fs_store_f64_rows(alt, 2, stride, i, acc[src]);
}

extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_select_commit_lw(double* __restrict__ lw, double* __restrict__ acc,
                                                                           const float* __restrict__ alt,
                                                                           unsigned long long total_new, unsigned long long stride) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total_new) return;
    lw[i] = fs_load_f64_rows(alt, 0, stride, i);
    acc[i] = fs_load_f64_rows(alt, 2, stride, i);
}

// Replication into freshly allocated buffers: new particle i·copies + c ← old particle i.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_replicate(
    const float* __restrict__ x, const double* __restrict__ carried, const double* __restrict__ acc,
    const double* __restrict__ lw, const unsigned int* __restrict__ root, float* __restrict__ nx,
    double* __restrict__ ncarried, double* __restrict__ nacc, double* __restrict__ nlw, unsigned int* __restrict__ nroot,
    unsigned long long total_old, unsigned long long stride_old, unsigned long long stride_new, unsigned int copies) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total_old * copies) return;
    const unsigned long long src = i / copies;
#pragma unroll
    for (int d = 0; d < FS_D; ++d) nx[d * stride_new + i] = x[d * stride_old + src];
    ncarried[i] = carried[src];
    nacc[i] = acc[src];
    nlw[i] = lw[src];
    nroot[i] = root[src];
}

// In-place replication within the buffers' capacity: sel[i] = the old within-group index of new
// particle i (group size n_new = n_old·copies), for fs_select_gather.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_replicate_index(unsigned int* __restrict__ sel, unsigned long long n_new,
                                                                          unsigned int copies, unsigned long long total_new) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total_new) return;
    sel[i] = (unsigned int)((i % n_new) / copies);
}
