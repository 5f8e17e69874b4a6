//! The activations in f32 for the CPU hot loop and training: branch-free element-wise maths
//! (a polynomial `exp`/`expm1`, docs/model.md's activations and their derivatives) that the compiler
//! vectorises when applied over a slice ([`activate`], [`activate_grad`]).

use crate::model::Activation;

/// `if a < b { b } else { a }`: the max that keeps a NaN in `a` (maxps operand order).
#[inline(always)]
fn max_keep_nan(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// `if a > b { b } else { a }`, keeping a NaN in `a`.
#[inline(always)]
fn min_keep_nan(a: f32, b: f32) -> f32 {
    if a > b {
        b
    } else {
        a
    }
}

/// `e^x` in f32, Cephes' `expf` scheme: `x = k·ln2 + r`, `|r| ≤ ln2/2`, a degree-6 polynomial
/// for `e^r`, and `2^k` built in the exponent bits. Relative error ≤ 2 ulp on
/// `[−87.3, 88.3]`; the input is clamped to that range (below it the result is ~1e-38 instead
/// of a subnormal or 0, above it ~2.4e38 instead of inf); NaN stays NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let x = min_keep_nan(max_keep_nan(x, -87.3), 88.3);
    let shifted = x.mul_add(LOG2E, ROUND);
    let kf = shifted - ROUND;
    let k = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32; // the same integer, exactly
    let r = kf.mul_add(-LN2_LO, kf.mul_add(-LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5); // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
    let er = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits((k.wrapping_add(127) as u32) << 23);
    er * scale
}

/// `e^x − 1` in f32 without the cancellation of `exp(x) − 1` near 0, at the cost of one
/// polynomial: with `x = k·ln2 + r` as in [`exp_f32`], `e^x − 1 = 2^k·(e^r − 1) + (2^k − 1)`,
/// `e^r − 1` by its Taylor series to `r^7/7!` (`|r| ≤ 0.347`: truncation `< r^8/8! ≈ 6e-9`,
/// under 0.1 ulp of the result, whose size is at least `|r|/2`). For `k = 0` the result is that
/// series itself, accurate near 0; otherwise `|2^k − 1| ≥ 1/2` is exact and dominates, so the
/// final fused multiply-add does not cancel. Relative error ≤ 2 ulp; clamped like `exp_f32`.
#[inline(always)]
pub fn expm1_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = min_keep_nan(max_keep_nan(x, -87.3), 88.3);
    let shifted = x.mul_add(LOG2E, ROUND);
    let kf = shifted - ROUND;
    let k = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let r = kf.mul_add(-LN2_LO, kf.mul_add(-LN2_HI, x));
    let mut q = 1.0f32 / 5040.0;
    q = q.mul_add(r, 1.0 / 720.0);
    q = q.mul_add(r, 1.0 / 120.0);
    q = q.mul_add(r, 1.0 / 24.0);
    q = q.mul_add(r, 1.0 / 6.0);
    q = q.mul_add(r, 0.5);
    let em1_r = (r * r).mul_add(q, r);
    let scale = f32::from_bits((k.wrapping_add(127) as u32) << 23);
    scale.mul_add(em1_r, scale - 1.0)
}

/// `1 / (1 + e^{−x})`.
#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `tanh(u) = 1 − 2/(e^{2u} + 1)`: absolute error ~1e-7 (relative near 0 is worse, which no
/// activation here is sensitive to: the GELU multiplies it by x, tanh is used as is).
#[inline(always)]
fn tanh_f32(u: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * u) + 1.0)
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/pi)
const GELU_A: f32 = 0.044715;

/// The activation of docs/model.md, in the vectorisable forms above (agrees with
/// [`Activation::apply`] to a few ulp; the f64 reference is `model::apply_f64`).
#[inline(always)]
pub fn activation_f32(act: Activation, x: f32) -> f32 {
    match act {
        // max(x, 0) + expm1(min(x, 0)): exactly x for x > 0 (expm1(0) = 0 here) and expm1(x)
        // otherwise, NaN stays NaN. Written without a select because LLVM turns
        // `if x > 0 { x } else { e }` stored in place into a masked store, which is slow on AMD.
        Activation::Elu => max_keep_nan(x, 0.0) + expm1_f32(min_keep_nan(x, 0.0)),
        Activation::Silu => x * sigmoid_f32(x),
        Activation::Gelu => 0.5 * x * (1.0 + tanh_f32(GELU_C * x * GELU_A.mul_add(x * x, 1.0))),
        Activation::Tanh => tanh_f32(x),
        Activation::Relu => max_keep_nan(x, 0.0),
    }
}

/// The activation's derivative at the pre-activation `x`, for training.
#[inline(always)]
pub fn activation_grad_f32(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Elu => {
            let e = exp_f32(x);
            if x > 0.0 {
                1.0
            } else {
                e
            }
        }
        Activation::Silu => {
            let s = sigmoid_f32(x);
            s * (1.0 + x * (1.0 - s))
        }
        Activation::Gelu => {
            let u = GELU_C * x * GELU_A.mul_add(x * x, 1.0);
            let th = tanh_f32(u);
            0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_C * (3.0 * GELU_A).mul_add(x * x, 1.0)
        }
        Activation::Tanh => {
            let th = tanh_f32(x);
            1.0 - th * th
        }
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

/// Runs `$body` with `$a` bound to `$act` as a constant: the `match` sits outside the loop, so
/// each arm's loop is compiled for one activation and vectorises.
macro_rules! for_each_activation {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            Activation::Elu => {
                const $a: Activation = Activation::Elu;
                $body
            }
            Activation::Silu => {
                const $a: Activation = Activation::Silu;
                $body
            }
            Activation::Gelu => {
                const $a: Activation = Activation::Gelu;
                $body
            }
            Activation::Tanh => {
                const $a: Activation = Activation::Tanh;
                $body
            }
            Activation::Relu => {
                const $a: Activation = Activation::Relu;
                $body
            }
        }
    };
}

/// Applies the activation in place.
#[inline(always)]
pub fn activate(act: Activation, s: &mut [f32]) {
    for_each_activation!(act, A => {
        for v in s.iter_mut() {
            *v = activation_f32(A, *v);
        }
    })
}

/// `g[k] *= act'(z[k])` (backpropagation through the activation).
#[inline(always)]
pub fn activate_grad(act: Activation, z: &[f32], g: &mut [f32]) {
    for_each_activation!(act, A => {
        for (gv, &zv) in g.iter_mut().zip(z) {
            *gv *= activation_grad_f32(A, zv);
        }
    })
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::apply_f64;

    /// exp/expm1 against f64 over a dense grid: ≤ 4 ulp relative (the claim in the doc comments
    /// is 2; 4 leaves room for the rounding of the f64 → f32 comparison point).
    #[test]
    fn polynomial_exp_and_expm1_are_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            assert!((got - want).abs() <= 4.0 * f32::EPSILON as f64 * want, "exp({x}) = {got}, want {want}");
            if x < 20.0 {
                let want = (x as f64).exp_m1();
                let got = expm1_f32(x) as f64;
                assert!((got - want).abs() <= 4.0 * f32::EPSILON as f64 * want.abs().max(1e-30), "expm1({x}) = {got}, want {want}");
            }
            x += 0.0137;
        }
        for &x in &[-1e-7f32, 1e-6, -0.49999, 0.5, -0.5, 0.0] {
            let want = (x as f64).exp_m1();
            assert!((expm1_f32(x) as f64 - want).abs() <= 2.0 * f32::EPSILON as f64 * want.abs(), "expm1({x})");
        }
        assert!(exp_f32(f32::NAN).is_nan() && expm1_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(1000.0) > 1e38);
    }

    /// Activations against f64 to 1e-6·(1+|y|) (a few ulp, and the ~1e-7 absolute error of
    /// `1 − 2/(e^{2u}+1)` near 0). Derivatives against central differences of the f64 activation
    /// (step 1e-5: error ~1e-10) to 1e-5·(1+|y'|): the GELU's `0.5·x·(1 − th²)` multiplies
    /// tanh's ~1e-7 absolute error by up to |x|·C·(1 + 3a·x²) ≈ 17 before tanh saturates.
    #[test]
    fn activations_match_f64() {
        for act in Activation::ALL {
            let mut x = -12.0f32;
            while x < 12.0 {
                let want = apply_f64(act, x as f64);
                let got = activation_f32(act, x) as f64;
                assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{act}({x}) = {got}, want {want}");
                if !(matches!(act, Activation::Relu | Activation::Elu) && x.abs() < 1e-3) {
                    let e = 1e-5;
                    let want = (apply_f64(act, x as f64 + e) - apply_f64(act, x as f64 - e)) / (2.0 * e);
                    let got = activation_grad_f32(act, x) as f64;
                    assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{act}'({x}) = {got}, want {want}");
                }
                x += 0.01;
            }
            assert!(activation_f32(act, f32::NAN).is_nan() || act == Activation::Relu, "{act} hides NaN");
        }
    }
}
