//! Final samples that are NaN or infinite (issue 13, item 4): a run whose every final sample is
//! non-finite is an error that names the likely cause and writes nothing; a run with some is
//! a warning that gives the count first. Rewards and weights follow their own NaN rule
//! (docs/steering.md); this is about the samples themselves.

use crate::model::Mlp;
use crate::sampler::{Sampler, SamplerKind};

/// Rows of `positions` (`[·, dim]`) with a NaN or infinite coordinate.
pub fn nonfinite_rows(positions: &[f32], dim: usize) -> usize {
    positions.chunks(dim.max(1)).filter(|r| r.iter().any(|v| !v.is_finite())).count()
}

/// Checks the final samples of a run: Ok(None) when all are finite, Ok(Some(warning)) when some
/// are not, Err when all are not (or there are none that are finite), with the likely cause.
pub fn check_final_samples(positions: &[f32], dim: usize, model: &Mlp, sampler: &Sampler) -> anyhow::Result<Option<String>> {
    let total = positions.len() / dim.max(1);
    let bad = nonfinite_rows(positions, dim);
    if bad == 0 {
        return Ok(None);
    }
    let cause = likely_cause(model, sampler);
    if bad == total {
        anyhow::bail!(
            "every one of the {} final samples is NaN or infinite, so the run has no result and nothing was written. Likely cause: {cause}",
            crate::format::count(total as u64)
        );
    }
    Ok(Some(format!(
        "warning: {} of {} final samples are NaN or infinite (kept in samples.npy as they are; counted as nonfinite_samples in summary.json). Likely cause: {cause}",
        crate::format::count(bad as u64),
        crate::format::count(total as u64)
    )))
}

/// The first of: weights too large to evaluate in f32, an SDE step whose noise or drift is too
/// large for the grid, else a diverging integration in general.
fn likely_cause(model: &Mlp, sampler: &Sampler) -> String {
    let largest = model.layers.iter().flat_map(|l| l.weight.iter().chain(&l.bias)).fold(0f32, |m, &w| m.max(w.abs()));
    if largest > 1e6 {
        return format!(
            "the model's weights reach |w| = {}, so its velocities overflow f32; check the training run that wrote it (docs/model.md)",
            crate::format::number(largest as f64)
        );
    }
    let h = 1.0 / sampler.steps.max(1) as f64;
    // The sde step multiplies x by (1 − h·k/2) each step: |1 − h·k/2| > 1 (h·k > 4) makes it grow
    // geometrically; below that a large k·h still gives steps too coarse to follow the field.
    if sampler.kind == SamplerKind::Sde && sampler.k as f64 * h > 1.0 {
        return format!(
            "the sde sampler with --k {} on {} steps (k·h = {}) takes steps too large to stay stable: lower --k or raise --steps above {} (docs/samplers.md)",
            crate::format::number(sampler.k as f64),
            sampler.steps,
            crate::format::number(sampler.k as f64 * h),
            (sampler.k as f64).ceil() as u64
        );
    }
    "the integration diverged: the model's velocities grow without bound along the path; try more --steps or another --sampler (docs/samplers.md)".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Linear};

    fn model(scale: f32) -> Mlp {
        let mut l0 = Linear::zeros(3, 4);
        l0.weight.iter_mut().for_each(|w| *w = 0.1 * scale);
        let l1 = Linear::zeros(4, 2);
        Mlp { dim: 2, activation: Activation::Elu, layers: vec![l0, l1] }
    }

    #[test]
    fn finite_samples_pass_and_some_nonfinite_warn_with_the_count_first() {
        let s = Sampler::default();
        assert!(check_final_samples(&[0.0, 1.0, 2.0, 3.0], 2, &model(1.0), &s).unwrap().is_none());
        let w = check_final_samples(&[f32::NAN, 1.0, 2.0, 3.0, 4.0, f32::INFINITY], 2, &model(1.0), &s).unwrap().unwrap();
        assert!(w.starts_with("warning: 2 of 3 final samples are NaN or infinite"), "{w}");
    }

    #[test]
    fn all_nonfinite_is_an_error_naming_the_cause() {
        let nan = [f32::NAN; 6];
        let e = check_final_samples(&nan, 2, &model(1e30), &Sampler::default()).unwrap_err().to_string();
        assert!(e.contains("every one of the 3 final samples") && e.contains("|w| = 1e29"), "{e}");
        let sde = Sampler { kind: SamplerKind::Sde, k: 1000.0, ..Sampler::default() };
        let e = check_final_samples(&nan, 2, &model(1.0), &sde).unwrap_err().to_string();
        assert!(e.contains("--k 1000 on 100 steps (k·h = 10)"), "{e}");
        let e = check_final_samples(&nan, 2, &model(1.0), &Sampler::default()).unwrap_err().to_string();
        assert!(e.contains("the integration diverged"), "{e}");
    }
}
