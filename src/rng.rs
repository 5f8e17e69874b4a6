//! Philox4x32-10 and the counter layout shared by every backend (docs/random.md).
//!
//! One counter-based generator: a draw is a pure function of (seed, counter), so the CPU
//! backend and the CUDA kernels (`kernels/philox.cuh`, the same constants) draw the same
//! numbers for the same particle, step and purpose, in any order and on any thread.
//!
//! # Counter layout (the one place it is written down)
//! ```text
//! key     = [seed & 0xffff_ffff, seed >> 32]
//! counter = [particle & 0xffff_ffff, particle >> 32, step, (purpose << 24) | draw]
//! ```
//! * `particle`: the global particle index (`group * n + i`), or the slot the draw belongs to
//!   (a candidate, a stratum, a group for one-per-group draws); 64 bits, so billions fit.
//! * `step`: the time-grid index the draw belongs to (0 for the initial noise), or a
//!   method-defined index (search cycle, resampling round) where noted at the call site.
//! * `purpose`: [`Purpose`], 8 bits.
//! * `draw`: 24 bits, the block of four outputs within that (particle, step, purpose);
//!   dimension `d` of a normal vector uses draw `d / 4`, lane `d % 4`.
//!
//! Addresses in use (particle, step, purpose, draw):
//! * initial noise: (global index, 0, InitialNoise, d/4); SDE noise: (global index, grid step,
//!   SdeNoise, d/4); renoising: (global index, round, Renoising, d/4).
//! * resampling at grid step k: (g·n + i | g | g·n, k, Resampling, 0..3), lane 0 only; which
//!   scheme uses which is written once in `crate::resample`'s module doc.
//! * zeroth-order candidate i of group g in cycle c: direction from the normals at
//!   (g·n + i, c, SearchPerturbation, 0..⌈D/4⌉), radius from lane 0 of draw ⌈D/4⌉
//!   (`backend::cpu::candidate_around_pivot`).
//!
//! Uniforms are `((word >> 8) + 1) · 2^-24`, exactly representable in f32 and in (0, 1].
//! Normals are Box–Muller on lanes (0, 1) and (2, 3).

/// What a draw is for: the fourth counter word's top byte (docs/random.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Purpose {
    InitialNoise = 0,
    SdeNoise = 1,
    Resampling = 2,
    SearchPerturbation = 3,
    Renoising = 4,
}

const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds (Salmon et al., SC'11), the Random123 reference algorithm.
#[inline(always)]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Uniform in (0, 1] from the top 24 bits of a word: exact in f32, never 0 (safe for `ln`).
#[inline(always)]
pub fn uniform_open0(word: u32) -> f32 {
    ((word >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Box–Muller: two standard normals from two uniforms in (0, 1].
#[inline(always)]
pub fn box_muller(u1: f32, u2: f32) -> (f32, f32) {
    let r = (-2.0 * u1.ln()).sqrt();
    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
    (r * c, r * s)
}

/// The run's generator: a seed, and draws addressed by the counter layout above.
#[derive(Clone, Copy, Debug)]
pub struct Philox {
    key: [u32; 2],
}

impl Philox {
    pub fn new(seed: u64) -> Self {
        Self { key: [seed as u32, (seed >> 32) as u32] }
    }

    /// The raw 128-bit block for a (particle, step, purpose, draw) address.
    #[inline(always)]
    pub fn block(&self, particle: u64, step: u32, purpose: Purpose, draw: u32) -> [u32; 4] {
        debug_assert!(draw < (1 << 24), "draw index {draw} exceeds 24 bits");
        let counter = [particle as u32, (particle >> 32) as u32, step, ((purpose as u32) << 24) | draw];
        philox4x32_10(counter, self.key)
    }

    /// Four uniforms in (0, 1].
    #[inline(always)]
    pub fn uniforms4(&self, particle: u64, step: u32, purpose: Purpose, draw: u32) -> [f32; 4] {
        self.block(particle, step, purpose, draw).map(uniform_open0)
    }

    /// One uniform in (0, 1]: lane 0 of the block.
    #[inline(always)]
    pub fn uniform(&self, particle: u64, step: u32, purpose: Purpose, draw: u32) -> f32 {
        uniform_open0(self.block(particle, step, purpose, draw)[0])
    }

    /// Four standard normals (Box–Muller on lanes (0,1) and (2,3)).
    #[inline(always)]
    pub fn normals4(&self, particle: u64, step: u32, purpose: Purpose, draw: u32) -> [f32; 4] {
        let u = self.uniforms4(particle, step, purpose, draw);
        let (z0, z1) = box_muller(u[0], u[1]);
        let (z2, z3) = box_muller(u[2], u[3]);
        [z0, z1, z2, z3]
    }

    /// A standard normal vector of `out.len()` dimensions for one particle.
    #[inline]
    pub fn normal_vector(&self, particle: u64, step: u32, purpose: Purpose, out: &mut [f32]) {
        for (draw, chunk) in out.chunks_mut(4).enumerate() {
            let z = self.normals4(particle, step, purpose, draw as u32);
            chunk.copy_from_slice(&z[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors published with Random123 (kat_vectors, philox4x32 10 rounds):
    /// counter, key -> output.
    #[test]
    fn philox_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
            (
                [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
                [0xffffffff, 0xffffffff],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (ctr, key, want) in cases {
            assert_eq!(philox4x32_10(ctr, key), want, "counter {ctr:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn uniforms_are_in_open_closed_unit_interval() {
        assert_eq!(uniform_open0(0), 1.0 / 16_777_216.0);
        assert_eq!(uniform_open0(u32::MAX), 1.0);
        let g = Philox::new(7);
        for p in 0..10_000u64 {
            for u in g.uniforms4(p, 3, Purpose::Resampling, 0) {
                assert!(u > 0.0 && u <= 1.0);
            }
        }
    }

    #[test]
    fn purposes_and_steps_give_independent_streams() {
        let g = Philox::new(42);
        let a = g.block(5, 1, Purpose::SdeNoise, 0);
        assert_ne!(a, g.block(5, 1, Purpose::InitialNoise, 0));
        assert_ne!(a, g.block(5, 2, Purpose::SdeNoise, 0));
        assert_ne!(a, g.block(5, 1, Purpose::SdeNoise, 1));
        assert_ne!(a, g.block(5 + (1 << 32), 1, Purpose::SdeNoise, 0));
        assert_ne!(a, Philox::new(43).block(5, 1, Purpose::SdeNoise, 0));
    }

    /// Moments of 400,000 normals: the standard error of the mean is 1/sqrt(n) ≈ 0.0016 and of
    /// the variance sqrt(2/n) ≈ 0.0022; the bounds are five standard errors.
    #[test]
    fn normals_have_unit_moments() {
        let g = Philox::new(1234);
        let (mut s1, mut s2, mut n) = (0f64, 0f64, 0f64);
        for p in 0..100_000u64 {
            for z in g.normals4(p, 0, Purpose::InitialNoise, 0) {
                s1 += z as f64;
                s2 += (z as f64) * (z as f64);
                n += 1.0;
            }
        }
        let mean = s1 / n;
        let var = s2 / n - mean * mean;
        assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "variance {var}");
    }
}
