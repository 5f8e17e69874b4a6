// potential.cu — rewards, the Feynman–Kac potential update and log-weights at a resampling
// step, with the per-group reductions the host reports and the resampler needs (docs/rewards.md, docs/steering.md).
//
// The reward is generated from the run's reward terms (src/backend/cuda/reward_codegen.rs) and
// pasted above this file as `fs_reward(const float x[FS_D], float t)` (t: the time of the
// resampling step, iv[FS_IV_REWARD_T] as f32 bits); FS_POTENTIAL selects the potential
// (0 max, 1 add, 2 diff, 3 rt, 4 is, 5 bon) with λ and r_min as kernel arguments.
//
// fs_weigh (a block per tile of a group, fs_block_index, FS_RBLOCK threads, FS_ITEMS per thread):
//   r = reward(rin)                       rin = x̂1, x_t or the final sample (propagate.cu `emit`)
//   (log G, state') = update(state, r)    as Potential::update in src/potential.rs, in f64
//   lw' = lw + log G; NaN or +inf → −inf, counted (docs/steering.md); lw, carried and acc are f64
//   (rewards of −5·10^11 cancel in the terminal correction, docs/steering.md)
//   per tile, in f64: (max, Σ e^{lw'−max}, Σ e^{2(lw'−max)}) of the new and (max, Σ) of the old
//   log-weights, the count of non-finite results, Σ r over finite rewards and their count.
// fs_weigh_finalize (one block per group): combines the tiles into the group's results
//   log Ẑ increment = logsumexp(lw') − logsumexp(lw), ESS = (Σw)²/Σw², max lw', mean reward,
//   and decides ON THE DEVICE whether the group resamples (adaptive: ESS < τ·n; τ < 0: always),
//   so that a captured graph needs nothing from the host between weighing and resampling.
// fs_score: the reward of every particle's reward input, for the search methods.
//
// Variants: v1 (this): online (max, sum) pairs combined in f64 — one pass over the particles.
// Not yet measured on a GPU.
#include "block.cuh"

#ifndef FS_D
#error "FS_D must be defined"
#endif
#ifndef FS_POTENTIAL
#error "FS_POTENTIAL must be defined (0 max, 1 add, 2 diff, 3 rt, 4 is, 5 bon)"
#endif
#ifndef FS_ITEMS
#define FS_ITEMS 4
#endif
static_assert(FS_POTENTIAL >= 0 && FS_POTENTIAL <= 5, "FS_POTENTIAL must be 0..5");
#define FS_TILE (FS_RBLOCK * FS_ITEMS)

// Slots of the per-tile partials and of the per-group results (mirrors src/backend/cuda/mod.rs).
#define FS_TP_M_NEW 0
#define FS_TP_S1 1
#define FS_TP_S2 2
#define FS_TP_M_OLD 3
#define FS_TP_S_OLD 4
#define FS_TP_NONFINITE 5
#define FS_TP_RSUM 6
#define FS_TP_RCOUNT 7
#define FS_TP_SLOTS 8

#define FS_GR_LOG_Z 0
#define FS_GR_ESS 1
#define FS_GR_MAX_LW 2
#define FS_GR_NONFINITE 3
#define FS_GR_ALL_NEG_INF 4
#define FS_GR_MEAN_REWARD 5
#define FS_GR_RESAMPLE 6
#define FS_GR_DISTINCT 7
#define FS_GR_SLOTS 8

#define FS_IV_IS_FINAL 3
#define FS_IV_REWARD_T 5

// One potential update (src/potential.rs, Potential::update). Returns log G; updates the state.
__device__ __forceinline__ double fs_potential_update(double lambda, double* carried, double* acc, double r, int is_final) {
    double log_g;
#if FS_POTENTIAL == 0 || FS_POTENTIAL == 1 || FS_POTENTIAL == 3
    if (is_final) return lambda * r - *acc;  // terminal correction; the state is not updated
#endif
#if FS_POTENTIAL == 0
    *carried = fmax(*carried, r);
    log_g = lambda * *carried;
#elif FS_POTENTIAL == 1
    *carried = *carried + r;
    log_g = lambda * *carried;
#elif FS_POTENTIAL == 3
    log_g = lambda * r;
#elif FS_POTENTIAL == 2
    log_g = lambda * (r - *carried);
    *carried = r;
#elif FS_POTENTIAL == 4
    log_g = is_final ? lambda * r : 0.0;
#else
    log_g = 0.0;
#endif
    if (!is_final) *acc = *acc + log_g;
    return log_g;
}

extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_weigh(
    const float* __restrict__ rin, unsigned long long stride, double* __restrict__ carried, double* __restrict__ acc,
    double* __restrict__ lw, unsigned long long n, const unsigned int* __restrict__ iv, float lambda,
    double* __restrict__ tile_part, unsigned int tiles, unsigned long long groups) {
    const unsigned long long b = fs_block_index();
    if (b >= (unsigned long long)tiles * groups) return;
    const unsigned long long tile = b % tiles, g = b / tiles;
    const int is_final = (int)iv[FS_IV_IS_FINAL];
    const float t = __int_as_float((int)iv[FS_IV_REWARD_T]);
    double m_new = FS_NEG_INF_D, m_old = FS_NEG_INF_D;
    double lw_new[FS_ITEMS], lw_old[FS_ITEMS];
    double rsum = 0.0;
    unsigned long long nonfinite = 0, rcount = 0;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        lw_new[k] = FS_NEG_INF_D;
        lw_old[k] = FS_NEG_INF_D;
        const unsigned long long j = (unsigned long long)tile * FS_TILE + k * FS_RBLOCK + threadIdx.x;
        if (j >= n) continue;
        const unsigned long long i = (unsigned long long)g * n + j;
        float xr[FS_D];
#pragma unroll
        for (int d = 0; d < FS_D; ++d) xr[d] = rin[d * stride + i];
        const float r = fs_reward(xr, t);
        double c = carried[i], a = acc[i];
        const double log_g = fs_potential_update((double)lambda, &c, &a, (double)r, is_final);
        carried[i] = c;
        acc[i] = a;
        const double old = lw[i];
        double w = old + log_g;
        if (isnan(w) || w == FS_POS_INF_D) {
            w = FS_NEG_INF_D;
            nonfinite += 1;
        }
        lw[i] = w;
        lw_new[k] = w;
        lw_old[k] = old;
        m_new = fmax(m_new, w);
        m_old = fmax(m_old, old);
        if (isfinite(r)) {
            rsum += (double)r;
            rcount += 1;
        }
    }
    const double bm_new = fs_block_max(m_new, FS_NEG_INF_D);
    const double bm_old = fs_block_max(m_old, FS_NEG_INF_D);
    double s1 = 0.0, s2 = 0.0, s0 = 0.0;
#pragma unroll
    for (int k = 0; k < FS_ITEMS; ++k) {
        if (bm_new != FS_NEG_INF_D && lw_new[k] != FS_NEG_INF_D) {
            const double e = exp(lw_new[k] - bm_new);
            s1 += e;
            s2 += e * e;
        }
        if (bm_old != FS_NEG_INF_D && lw_old[k] != FS_NEG_INF_D) s0 += exp(lw_old[k] - bm_old);
    }
    s1 = fs_block_sum(s1);
    s2 = fs_block_sum(s2);
    s0 = fs_block_sum(s0);
    rsum = fs_block_sum(rsum);
    nonfinite = fs_block_sum(nonfinite);
    rcount = fs_block_sum(rcount);
    if (threadIdx.x == 0) {
        double* p = tile_part + ((unsigned long long)g * tiles + tile) * FS_TP_SLOTS;
        p[FS_TP_M_NEW] = bm_new;
        p[FS_TP_S1] = s1;
        p[FS_TP_S2] = s2;
        p[FS_TP_M_OLD] = bm_old;
        p[FS_TP_S_OLD] = s0;
        p[FS_TP_NONFINITE] = (double)nonfinite;
        p[FS_TP_RSUM] = rsum;
        p[FS_TP_RCOUNT] = (double)rcount;
    }
}

// One block per group. tau < 0: always resample; else resample when ESS < tau·n.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_weigh_finalize(
    const double* __restrict__ tile_part, unsigned int tiles, unsigned long long n, float tau,
    double* __restrict__ group_out, unsigned long long groups) {
    const unsigned long long g = fs_block_index();
    if (g >= groups) return;
    const double* base = tile_part + (unsigned long long)g * tiles * FS_TP_SLOTS;
    double m_new = FS_NEG_INF_D, m_old = FS_NEG_INF_D;
    for (unsigned int t = threadIdx.x; t < tiles; t += FS_RBLOCK) {
        m_new = fmax(m_new, base[t * FS_TP_SLOTS + FS_TP_M_NEW]);
        m_old = fmax(m_old, base[t * FS_TP_SLOTS + FS_TP_M_OLD]);
    }
    m_new = fs_block_max(m_new, FS_NEG_INF_D);
    m_old = fs_block_max(m_old, FS_NEG_INF_D);
    double s1 = 0.0, s2 = 0.0, s0 = 0.0, nonfinite = 0.0, rsum = 0.0, rcount = 0.0;
    for (unsigned int t = threadIdx.x; t < tiles; t += FS_RBLOCK) {
        const double* p = base + t * FS_TP_SLOTS;
        if (p[FS_TP_M_NEW] != FS_NEG_INF_D) {
            const double f = exp(p[FS_TP_M_NEW] - m_new);
            s1 += p[FS_TP_S1] * f;
            s2 += p[FS_TP_S2] * f * f;
        }
        if (p[FS_TP_M_OLD] != FS_NEG_INF_D) s0 += p[FS_TP_S_OLD] * exp(p[FS_TP_M_OLD] - m_old);
        nonfinite += p[FS_TP_NONFINITE];
        rsum += p[FS_TP_RSUM];
        rcount += p[FS_TP_RCOUNT];
    }
    s1 = fs_block_sum(s1);
    s2 = fs_block_sum(s2);
    s0 = fs_block_sum(s0);
    nonfinite = fs_block_sum(nonfinite);
    rsum = fs_block_sum(rsum);
    rcount = fs_block_sum(rcount);
    if (threadIdx.x == 0) {
        double* out = group_out + (unsigned long long)g * FS_GR_SLOTS;
        const int all_neg_inf = m_new == FS_NEG_INF_D;
        // As the CPU backend: an all −inf group reports ESS 0 (and resamples uniformly); a group
        // whose carried weights were all −inf has a −inf log Ẑ increment.
        const double ess = all_neg_inf ? 0.0 : s1 * s1 / s2;
        const double lse_new = all_neg_inf ? FS_NEG_INF_D : m_new + log(s1);
        out[FS_GR_LOG_Z] = m_old == FS_NEG_INF_D ? FS_NEG_INF_D : lse_new - (m_old + log(s0));
        out[FS_GR_ESS] = ess;
        out[FS_GR_MAX_LW] = m_new;
        out[FS_GR_NONFINITE] = nonfinite;
        out[FS_GR_ALL_NEG_INF] = all_neg_inf ? 1.0 : 0.0;
        out[FS_GR_MEAN_REWARD] = rcount > 0.0 ? rsum / rcount : __longlong_as_double(0x7ff8000000000000ull);
        out[FS_GR_RESAMPLE] = (tau < 0.0f || ess < (double)tau * (double)n) ? 1.0 : 0.0;
        out[FS_GR_DISTINCT] = 0.0;
    }
}

// The reward of every particle's reward input (score for the search methods); NaN stays NaN.
extern "C" __global__ void __launch_bounds__(FS_RBLOCK) fs_score(const float* __restrict__ rin, unsigned long long stride,
                                                                 unsigned long long total, float* __restrict__ out,
                                                                 const unsigned int* __restrict__ iv) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float xr[FS_D];
#pragma unroll
    for (int d = 0; d < FS_D; ++d) xr[d] = rin[d * stride + i];
    out[i] = fs_reward(xr, __int_as_float((int)iv[FS_IV_REWARD_T]));
}
