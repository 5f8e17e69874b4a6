// resample.cu — ancestors for the four schemes of docs/resampling.md from f64 prefix sums of the weights,
// segmented per group, then one gather of every per-particle state. Mirrors src/resample.rs.
//
// Per group g of n particles: W_j = exp(lw_j − max lw) in f64 (all −inf → W_j = 1),
// C_j = Σ_{l≤j} W_l (f64), search(p) = smallest j with C_j > p·C_{n−1} (n−1 if none), clamped
// to the last j with W_j > 0. Uniforms are Philox lane 0, purpose Resampling, step = the grid
// index of the resampling point (docs/random.md):
//   multinomial: E_i = −ln u(g·n+i, draw 0), i < n, E_n = −ln u(g·n, draw 1); S_i = Σ_{l≤i} E_l;
//                a_i = search(S_i / (S_{n−1} + E_n)) — the order statistics of n uniforms from
//                exponential spacings, so the ancestors come out sorted and exact (no Metropolis).
//   systematic:  U = u(g, draw 0) − 2^-24; a_i = search((i + U)/n).
//   stratified:  U_i = u(g·n+i, draw 0) − 2^-24; a_i = search((i + U_i)/n).
//   residual:    w_j = W_j/C_{n−1}; floor(n·w_j) copies of j first, in order of j (one thread
//                per slot, a binary search in the inclusive prefix of the counts); the R remaining
//                slots by the multinomial rule on the residuals n·w_j − floor(n·w_j), draws 2
//                (E_i, particle g·n+i, i < R) and 3 (the extra, particle g·n), clamped to the last
//                j with a positive residual — or, when rounding leaves every residual at 0 with
//                slots unfilled, on the weights themselves (as the CPU), so a dead particle never
//                gets a slot.
// Groups whose resample flag (set by fs_weigh_finalize, on the device) is 0 are skipped whole.
//
// Scans are reduce-then-scan: (1) per-tile sums, (2) one block per group scans its tile sums,
// (3) each tile rescans itself from its offset. Nothing but the tile sums is stored besides the
// CDF itself, which lives in the scratch rows `alt` (reused by the gather afterwards), and for
// residual the u64 prefix of the counts (the next 8 bytes per particle of `alt`).
// Tiled kernels number their blocks tile + tiles·g by fs_block_index (grid.x first, then grid.y),
// so any count of groups fits the grid (groups on grid.y stopped at 65,535); per-group kernels
// number groups the same way.
//
// Variants: v1 (this): binary search of each sorted uniform in the CDF (O(log n) per slot; the
// merge-path search is the next variant to try). Not yet measured on a GPU.
#include "philox.cuh"
#include "block.cuh"

#ifndef FS_ITEMS
#define FS_ITEMS 4
#endif
#define FS_TILE (FS_RBLOCK * FS_ITEMS)
#define FS_GR_MAX_LW 2
#define FS_GR_ALL_NEG_INF 4
#define FS_GR_RESAMPLE 6
#define FS_GR_DISTINCT 7
#define FS_GR_SLOTS 8
#define FS_IV_RESAMPLE_STEP 4

__device__ __forceinline__ bool fs_group_resamples(const double* gr, unsigned long long g) {
    return gr[(unsigned long long)g * FS_GR_SLOTS + FS_GR_RESAMPLE] != 0.0;
}

// Smallest j in [0, n) with c[j] > target (n−1 if none), then at most `last`.
__device__ __forceinline__ unsigned long long fs_search(const double* __restrict__ c, unsigned long long n, double target,
                                                        long long last) {
    unsigned long long lo = 0, hi = n - 1;
    while (lo < hi) {
        const unsigned long long mid = lo + (hi - lo) / 2;
        if (c[mid] > target) hi = mid; else lo = mid + 1;
    }
    if (last >= 0 && lo > (unsigned long long)last) lo = (unsigned long long)last;
    return lo;
}

// (1) W_j into `w` (f64, indexed like the particles), per-tile Σ W and last j with W_j > 0.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_resample_weights(
    const double* __restrict__ lw, unsigned long long n, const double* __restrict__ gr, double* __restrict__ w,
    double* __restrict__ tile_sum, long long* __restrict__ tile_last, unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const double m = gr[(unsigned long long)g * FS_GR_SLOTS + FS_GR_MAX_LW];
    const bool all = gr[(unsigned long long)g * FS_GR_SLOTS + FS_GR_ALL_NEG_INF] != 0.0;
    double s = 0.0;
    long long last = -1;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = (unsigned long long)tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (j >= n) continue;
        const unsigned long long i = (unsigned long long)g * n + j;
        const double l = lw[i];
        const bool dead = l == FS_NEG_INF_D || l == FS_POS_INF_D || isnan(l);  // NaN/+inf count as −inf
        const double wj = all ? 1.0 : (dead ? 0.0 : exp(l - m));
        w[i] = wj;
        s += wj;
        if (wj > 0.0) last = (long long)j;
    }
    s = fs_block_sum(s);
    last = fs_block_max(last, -1ll);
    if (threadIdx.x == 0) {
        tile_sum[(unsigned long long)g * tiles + tile] = s;
        tile_last[(unsigned long long)g * tiles + tile] = last;
    }
}

// (2) One block per group: exclusive scan of the tile sums in place, the group's total and the
// last positive index. `tile_count` (optional) is scanned the same way, in u64.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_scan_tiles(
    const double* __restrict__ gr, double* __restrict__ tile_sum, unsigned long long* __restrict__ tile_count,
    const long long* __restrict__ tile_last, unsigned int tiles, double* __restrict__ group_total,
    unsigned long long* __restrict__ group_count, long long* __restrict__ group_last, unsigned long long groups) {
    const unsigned long long g = fs_block_index();
    if (g >= groups) return;
    if (!fs_group_resamples(gr, g)) return;
    double carry = 0.0;
    unsigned long long ccarry = 0;
    long long last = -1;
    for (unsigned int base = 0; base < tiles; base += FS_RBLOCK) {
        const unsigned int t = base + threadIdx.x;
        const unsigned long long at = (unsigned long long)g * tiles + t;
        const double v = t < tiles ? tile_sum[at] : 0.0;
        double total;
        const double incl = fs_block_inclusive_scan(v, &total);
        if (t < tiles) tile_sum[at] = carry + incl - v;
        carry += total;
        if (tile_count) {
            const unsigned long long cv = t < tiles ? tile_count[at] : 0ull;
            unsigned long long ctotal;
            const unsigned long long cincl = fs_block_inclusive_scan(cv, &ctotal);
            if (t < tiles) tile_count[at] = ccarry + cincl - cv;
            ccarry += ctotal;
        }
        if (tile_last) {
            const long long l = t < tiles ? tile_last[at] : -1ll;
            last = max(last, fs_block_max(l, -1ll));
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        group_total[g] = carry;
        if (group_count) group_count[g] = ccarry;
        if (group_last) group_last[g] = last;
    }
}

// (3) In-place inclusive scan of `w` within each tile, from the tile's offset: w becomes C.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_resample_cdf(
    double* __restrict__ w, unsigned long long n, const double* __restrict__ gr, const double* __restrict__ tile_offset,
    unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    double carry = tile_offset[(unsigned long long)g * tiles + tile];
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = (unsigned long long)tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        const unsigned long long i = (unsigned long long)g * n + j;
        const double v = j < n ? w[i] : 0.0;
        double total;
        const double incl = fs_block_inclusive_scan(v, &total);
        if (j < n) w[i] = carry + incl;
        carry += total;
    }
}

// Systematic (scheme 1) and stratified (scheme 2): a_i = search((i + U)/n).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_ancestors_grid(
    const double* __restrict__ c, unsigned long long n, const double* __restrict__ gr,
    const double* __restrict__ group_total, const long long* __restrict__ group_last, unsigned int* __restrict__ anc,
    const unsigned int* __restrict__ iv, unsigned int key0, unsigned int key1, int scheme, unsigned int tiles,
    unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const unsigned int step = iv[FS_IV_RESAMPLE_STEP];
    const double total = group_total[g];
    const long long last = group_last[g];
    const double u_sys = (double)(fs_uniform1(g, step, FS_PURPOSE_RESAMPLING, 0u, key0, key1) - 5.9604645e-08f);
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (j >= n) continue;
        const unsigned long long i = (unsigned long long)g * n + j;
        const double u = scheme == 1
                             ? u_sys
                             : (double)(fs_uniform1(i, step, FS_PURPOSE_RESAMPLING, 0u, key0, key1) - 5.9604645e-08f);
        const double p = ((double)j + u) / (double)n;
        anc[i] = (unsigned int)fs_search(c + (unsigned long long)g * n, n, p * total, last);
    }
}

// Per-tile Σ E_i for the multinomial order statistics: E_i = −ln u(g·n+i, draw), i < count_g
// (count_g = n, or R_g for residual when `counts` is given).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_exp_tile_sums(
    unsigned long long n, const double* __restrict__ gr, const unsigned long long* __restrict__ k_copies,
    const unsigned int* __restrict__ iv, unsigned int key0, unsigned int key1, unsigned int draw,
    double* __restrict__ tile_sum, unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const unsigned long long count = k_copies ? n - min(k_copies[g], n) : n;
    const unsigned int step = iv[FS_IV_RESAMPLE_STEP];
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = (unsigned long long)tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (j < count) s += -log((double)fs_uniform1((unsigned long long)g * n + j, step, FS_PURPOSE_RESAMPLING, draw, key0, key1));
    }
    s = fs_block_sum(s);
    if (threadIdx.x == 0) tile_sum[(unsigned long long)g * tiles + tile] = s;
}

// Multinomial ancestors for slots offset_g + i, i < count_g: U_(i) = S_i / (S_{count−1} + E_extra).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_ancestors_multinomial(
    const double* __restrict__ c, unsigned long long n, const double* __restrict__ gr,
    const double* __restrict__ cdf_total, const long long* __restrict__ cdf_last,
    const unsigned long long* __restrict__ k_copies, const double* __restrict__ e_offset,
    const double* __restrict__ e_total, unsigned int tiles, unsigned int* __restrict__ anc,
    const unsigned int* __restrict__ iv, unsigned int key0, unsigned int key1, unsigned int draw, unsigned int draw_extra,
    unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const unsigned long long offset = k_copies ? min(k_copies[g], n) : 0ull;
    const unsigned long long count = n - offset;
    const unsigned int step = iv[FS_IV_RESAMPLE_STEP];
    const double extra = -log((double)fs_uniform1((unsigned long long)g * n, step, FS_PURPOSE_RESAMPLING, draw_extra, key0, key1));
    const double denom = e_total[g] + extra;
    const double total = cdf_total[g];
    const long long last = cdf_last[g];
    double carry = e_offset[(unsigned long long)g * tiles + tile];
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = (unsigned long long)tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        const double e = j < count ? -log((double)fs_uniform1((unsigned long long)g * n + j, step, FS_PURPOSE_RESAMPLING, draw, key0, key1)) : 0.0;
        double block_total;
        const double s = carry + fs_block_inclusive_scan(e, &block_total);
        carry += block_total;
        if (j < count) {
            const double u = s / denom;
            anc[(unsigned long long)g * n + offset + j] = (unsigned int)fs_search(c + (unsigned long long)g * n, n, u * total, last);
        }
    }
}

// Residual, pass 1: per tile Σ floor(n·w_j) (u64), Σ residuals (f64), last j with a positive residual.
// `w` holds W_j; `wtotal` the group's C_{n−1}.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_residual_counts(
    const double* __restrict__ w, unsigned long long n, const double* __restrict__ gr, const double* __restrict__ wtotal,
    unsigned long long* __restrict__ tile_count, double* __restrict__ tile_sum, long long* __restrict__ tile_last,
    unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const double tot = wtotal[g];
    unsigned long long cnt = 0;
    double s = 0.0;
    long long last = -1;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = (unsigned long long)tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (j >= n) continue;
        const double nw = ((double)n * w[(unsigned long long)g * n + j]) / tot;  // (n·W_j)/C, as src/resample.rs
        const double fl = floor(nw);
        const double res = nw - fl;
        cnt += (unsigned long long)fl;
        s += res;
        if (res > 0.0) last = (long long)j;
    }
    cnt = fs_block_sum(cnt);
    s = fs_block_sum(s);
    last = fs_block_max(last, -1ll);
    if (threadIdx.x == 0) {
        const unsigned long long at = (unsigned long long)g * tiles + tile;
        tile_count[at] = cnt;
        tile_sum[at] = s;
        tile_last[at] = last;
    }
}

// Residual, pass 2: the inclusive prefix P_j of the counts c_j = floor(n·w_j) into `prefix`
// (u64, indexed like the particles), and `w` turned into the inclusive CDF the remaining slots
// are drawn from: the residuals' — or, when every residual is 0 (`res_last` < 0: rounding left
// Σ c_j < n), the weights' own, as src/resample.rs falls back to (w_offset: the scanned W tile sums).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_residual_prefix(
    double* __restrict__ w, unsigned long long n, const double* __restrict__ gr, const double* __restrict__ wtotal,
    const unsigned long long* __restrict__ count_offset, const double* __restrict__ res_offset,
    const double* __restrict__ w_offset, const long long* __restrict__ res_last, unsigned long long* __restrict__ prefix,
    unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const double tot = wtotal[g];
    const bool fallback = res_last[g] < 0;  // uniform in the block
    const unsigned long long at = g * tiles + tile;
    unsigned long long ccarry = count_offset[at];
    double carry = fallback ? w_offset[at] : res_offset[at];
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        const unsigned long long i = g * n + j;
        const double wj = j < n ? w[i] : 0.0;
        const double nw = ((double)n * wj) / tot;  // (n·W_j)/C, as fs_residual_counts
        const double fl = floor(nw);
        const unsigned long long c = (unsigned long long)fl;
        unsigned long long ctotal;
        const unsigned long long cincl = fs_block_inclusive_scan(c, &ctotal);
        const double v = fallback ? wj : nw - fl;
        double vtotal;
        const double vincl = fs_block_inclusive_scan(v, &vtotal);
        if (j < n) {
            prefix[i] = ccarry + cincl;
            w[i] = carry + vincl;
        }
        ccarry += ctotal;
        carry += vtotal;
    }
}

// Residual, pass 3: one thread per slot s < min(K, n) (K = Σ c_j): a_s = the smallest j with
// P_j > s, so the deterministic copies come first in order of j, written in parallel however
// they are spread (one dominant particle fills n slots).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_residual_slots(
    const unsigned long long* __restrict__ prefix, unsigned long long n, const double* __restrict__ gr,
    const unsigned long long* __restrict__ k_copies, unsigned int* __restrict__ anc, unsigned int tiles,
    unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    const unsigned long long copies = min(k_copies[g], n);
    const unsigned long long* p = prefix + g * n;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long s = tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (s >= copies) continue;
        unsigned long long lo = 0, hi = n - 1;  // P_{n−1} = K > s: the search always lands
        while (lo < hi) {
            const unsigned long long mid = lo + (hi - lo) / 2;
            if (p[mid] > s) hi = mid; else lo = mid + 1;
        }
        anc[g * n + s] = (unsigned int)lo;
    }
}

// Residual, pass 4 (one thread per group): a group whose residuals are all 0 draws its remaining
// slots from the weights' CDF (pass 2), so the multinomial pass reads the weights' total and last
// positive index instead of the residuals' (src/resample.rs: a dead particle never gets a slot).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_residual_fallback(
    const double* __restrict__ gr, const double* __restrict__ w_total, const long long* __restrict__ w_last,
    double* __restrict__ res_total, long long* __restrict__ res_last, unsigned long long groups) {
    const unsigned long long g = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= groups || !fs_group_resamples(gr, g) || res_last[g] >= 0) return;
    res_total[g] = w_total[g];
    res_last[g] = w_last[g];
}

// lw doubles as the "chosen" marks of resampled groups (its values are reset anyway): clear them.
// A mark is 64 bits wide, the size of a log-weight, so that a resampled group's marks never
// touch a skipped group's carried log-weights.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_marks_clear(unsigned long long* __restrict__ marks, unsigned long long n,
                                                                      unsigned long long total, const double* __restrict__ gr) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total || !fs_group_resamples(gr, i / n)) return;
    marks[i] = 0ull;
}

extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_marks_set(unsigned long long* __restrict__ marks, const unsigned int* __restrict__ anc,
                                                                    unsigned long long n, unsigned long long total,
                                                                    const double* __restrict__ gr) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const unsigned long long g = i / n;
    if (!fs_group_resamples(gr, g)) return;
    marks[g * n + anc[i]] = 1ull;  // racing writers store the same value
}

// Counts the marks per group into gr[DISTINCT] and leaves the log-weights at 0 (reset, docs/steering.md).
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_marks_count(unsigned long long* __restrict__ marks, unsigned long long n,
                                                                      double* __restrict__ gr, unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    if (!fs_group_resamples(gr, g)) return;
    unsigned long long c = 0;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        const unsigned long long j = tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (j >= n) continue;
        const unsigned long long i = (unsigned long long)g * n + j;
        c += marks[i];
        marks[i] = 0ull;  // == 0.0: the reset log-weight
    }
    c = fs_block_sum(c);
    if (threadIdx.x == 0 && c > 0) atomicAdd(&gr[(unsigned long long)g * FS_GR_SLOTS + FS_GR_DISTINCT], (double)c);
}

// Gather of every per-particle state into the scratch rows `alt` ([rows][stride] floats:
// x_0..x_{D−1}, carried (f64 in two rows), root id) and, for the accumulated log G (f64), into
// `lw`, free until fs_gather_commit resets it; identity ancestors for skipped groups.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_gather(
    const float* __restrict__ x, const double* __restrict__ carried, const double* __restrict__ acc,
    const unsigned int* __restrict__ root, unsigned int* __restrict__ anc, float* __restrict__ alt, double* __restrict__ lw,
    unsigned int dim, unsigned long long n, unsigned long long total, unsigned long long stride, const double* __restrict__ gr) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const unsigned long long g = i / n;
    if (!fs_group_resamples(gr, g)) {
        anc[i] = (unsigned int)(i - g * n);
        return;
    }
    const unsigned long long src = g * n + anc[i];
    for (unsigned int d = 0; d < dim; ++d) alt[d * stride + i] = x[d * stride + src];
    fs_store_f64_rows(alt, dim, stride, i, carried[src]);
    alt[(dim + 2) * stride + i] = __uint_as_float(root[src]);
    lw[i] = acc[src];
}

extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_gather_commit(
    float* __restrict__ x, double* __restrict__ carried, double* __restrict__ acc, unsigned int* __restrict__ root,
    const float* __restrict__ alt, double* __restrict__ lw, unsigned int dim, unsigned long long n, unsigned long long total,
    unsigned long long stride, const double* __restrict__ gr) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total || !fs_group_resamples(gr, i / n)) return;
    for (unsigned int d = 0; d < dim; ++d) x[d * stride + i] = alt[d * stride + i];
    carried[i] = fs_load_f64_rows(alt, dim, stride, i);
    acc[i] = lw[i];
    lw[i] = 0.0;  // the reset log-weight (docs/steering.md)
    root[i] = __float_as_uint(alt[(dim + 2) * stride + i]);
}

// Initial FK state: every 64-bit word of `dst` set to `value` (bit pattern), e.g. carried = r_min.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_fill_u64(unsigned long long* __restrict__ dst, unsigned long long value,
                                                                   unsigned long long count) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) dst[i] = value;
}

// Root ids at the start: the within-group index i mod n.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_root_init(unsigned int* __restrict__ root, unsigned long long n,
                                                                    unsigned long long total) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < total) root[i] = (unsigned int)(i % n);
}
