// philox.cuh — Philox4x32-10 and the counter layout shared with src/rng.rs (docs/random.md).
//
// The same constants, the same counter words and the same uniform/normal transforms as the Rust
// side, so that a (seed, particle, step, purpose, draw) address gives the same 128 bits on both
// backends. Layout (written down once, in src/rng.rs):
//   key     = [seed lo, seed hi]
//   counter = [particle lo, particle hi, step, (purpose << 24) | draw]
// Uniforms are ((w >> 8) + 1) * 2^-24 in (0, 1]; normals are Box–Muller on lanes (0,1), (2,3).
// Only the transcendental functions differ (CUDA logf/sincosf/sqrtf vs Rust's libm, ≤ 2 ulp),
// so CPU and GPU normals agree to a few ulp, not bitwise.
#pragma once

#define FS_PURPOSE_INITIAL_NOISE 0u
#define FS_PURPOSE_SDE_NOISE 1u
#define FS_PURPOSE_RESAMPLING 2u
#define FS_PURPOSE_SEARCH_PERTURBATION 3u
#define FS_PURPOSE_RENOISING 4u

struct fs_u4 { unsigned int x, y, z, w; };

__device__ __forceinline__ fs_u4 fs_philox(unsigned long long particle, unsigned int step, unsigned int purpose,
                                           unsigned int draw, unsigned int key0, unsigned int key1) {
    unsigned int c0 = (unsigned int)particle, c1 = (unsigned int)(particle >> 32), c2 = step,
                 c3 = (purpose << 24) | draw;
    unsigned int k0 = key0, k1 = key1;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        unsigned int n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }
    fs_u4 r = {c0, c1, c2, c3};
    return r;
}

// Uniform in (0, 1] from the top 24 bits: exact in f32, never 0.
__device__ __forceinline__ float fs_uniform(unsigned int w) {
    return (float)((w >> 8) + 1u) * (1.0f / 16777216.0f);
}

// Box–Muller, as src/rng.rs: r = sqrt(-2 ln u1), angle = 2π·u2.
__device__ __forceinline__ void fs_box_muller(float u1, float u2, float* z0, float* z1) {
    float r = sqrtf(-2.0f * logf(u1));
    float s, c;
    sincosf(6.28318548f * u2, &s, &c);
    *z0 = r * c;
    *z1 = r * s;
}

// One standard-normal coordinate d of a particle's vector: draw d/4, lane d%4 (docs/random.md).
// Computes the whole block; callers that need several coordinates use fs_normals4.
__device__ __forceinline__ void fs_normals4(unsigned long long particle, unsigned int step, unsigned int purpose,
                                            unsigned int draw, unsigned int key0, unsigned int key1, float z[4]) {
    fs_u4 b = fs_philox(particle, step, purpose, draw, key0, key1);
    fs_box_muller(fs_uniform(b.x), fs_uniform(b.y), &z[0], &z[1]);
    fs_box_muller(fs_uniform(b.z), fs_uniform(b.w), &z[2], &z[3]);
}

// A normal vector of FS_D coordinates for one particle.
template <int DIM>
__device__ __forceinline__ void fs_normal_vector(unsigned long long particle, unsigned int step, unsigned int purpose,
                                                 unsigned int key0, unsigned int key1, float* out) {
#pragma unroll
    for (int draw = 0; draw < (DIM + 3) / 4; ++draw) {
        float z[4];
        fs_normals4(particle, step, purpose, (unsigned int)draw, key0, key1, z);
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            if (draw * 4 + l < DIM) out[draw * 4 + l] = z[l];
        }
    }
}

// Lane 0 uniform of a block.
__device__ __forceinline__ float fs_uniform1(unsigned long long particle, unsigned int step, unsigned int purpose,
                                             unsigned int draw, unsigned int key0, unsigned int key1) {
    return fs_uniform(fs_philox(particle, step, purpose, draw, key0, key1).x);
}
