//! A search run (docs/search.md): [`SearchConfig`] → prepared run → best-of-N, zeroth-order
//! search or search over paths → [`Outcome`], each reporting its NFE so that methods compare
//! with FK steering at equal compute.

use anyhow::bail;

use super::config::{SearchConfig, SearchMethod};
use super::method::{self, search_potential, Method};
use super::outcome::Outcome;
use super::prepare::{check_layout, Prepared};
use crate::backend::{Backend, Init};
use crate::methods::{BonConfig, PathsConfig, ZerothConfig};
use crate::resample::ResampleScheme;
use crate::memory;
use crate::summary::Outputs;

/// `search paths`'s beam and candidates, its rows from `--init`, and its `config.run` (one
/// process and the MPI ranks report the same), with the grid checked (docs/search.md).
pub fn paths_plan(prep: &Prepared, method: &SearchMethod, groups: usize) -> anyhow::Result<(PathsConfig, Option<Vec<f32>>, serde_json::Value)> {
    let SearchMethod::Paths { particles, candidates, t_start, delta_f, delta_b, renoise, top_k, init } = method else {
        bail!("not a search over paths")
    };
    let (layout, rows) = prep.layout_and_init(*particles, 256, groups, init.as_deref())?;
    let paths = PathsConfig { layout, candidates: *candidates, t_start: *t_start, delta_f: *delta_f, delta_b: *delta_b, renoise: *renoise, top_k: *top_k };
    let grid = paths.grid(prep.spec.sampler.steps).map_err(anyhow::Error::msg)?;
    let config = serde_json::json!({ "command": "search paths", "particles": layout.n, "groups": groups,
        "candidates": candidates, "t_start": t_start, "delta_f": delta_f, "delta_b": delta_b,
        "grid_steps": { "start": grid.start, "back": grid.back, "forward": grid.forward },
        "renoise": renoise, "top_k": top_k, "init": init.as_ref().map(|p| p.display().to_string()) });
    Ok((paths, rows, config))
}

/// Runs the search `cfg` asks for. Unless `cfg.common.quiet`, prints the run's heading on stdout
/// when it ends. Call [`Outcome::report`] to print the summary and write the files.
pub fn search(cfg: &SearchConfig) -> anyhow::Result<Outcome> {
    let common = &cfg.common;
    let groups = cfg.groups;
    let (prep, method, rows, config) = match &cfg.method {
        SearchMethod::Bon { particles, top_k, init } => {
            let prep = Prepared::new(common, search_potential(), ResampleScheme::default(), None)?;
            let (layout, rows) = prep.layout_and_init(*particles, 4096, groups, init.as_deref())?;
            let needs = memory::search_select(prep.memory_side(), prep.spec.model.dim, false, "--particles", groups);
            memory::check(&needs, layout.total() as u64)?;
            let config = serde_json::json!({ "command": "search bon", "particles": layout.n, "groups": groups, "top_k": top_k,
                "init": init.as_ref().map(|p| p.display().to_string()) });
            (prep, Method::BestOfN(BonConfig { layout, top_k: *top_k }), rows, config)
        }
        SearchMethod::Zeroth { candidates, cycles, radius, pivot } => {
            let layout = check_layout(*candidates, groups, "--candidates")?;
            let prep = Prepared::new(common, search_potential(), ResampleScheme::default(), None)?;
            let dim = prep.spec.model.dim;
            let pivot_rows = pivot.as_deref().map(|s| parse_pivot(s, dim, groups)).transpose()?;
            memory::check(&memory::search_select(prep.memory_side(), dim, false, "--candidates", groups), layout.total() as u64)?;
            let config = serde_json::json!({ "command": "search zeroth", "candidates": candidates, "cycles": cycles,
                "radius": radius, "pivot": pivot, "groups": groups });
            (prep, Method::Zeroth(ZerothConfig { layout, cycles: *cycles, radius: *radius, pivot: pivot_rows }), None, config)
        }
        SearchMethod::Paths { candidates, .. } => {
            let prep = Prepared::new(common, search_potential(), ResampleScheme::default(), None)?;
            let (paths, rows, config) = paths_plan(&prep, &cfg.method, groups)?;
            memory::check(&memory::search_paths(prep.memory_side(), prep.spec.model.dim, *candidates, false, groups), paths.layout.total() as u64)?;
            (prep, Method::Paths(paths), rows, config)
        }
    };
    let mut backend = prep.engine()?;
    let init = rows.as_deref().map_or(Init::Noise, Init::Given);
    let r = method::execute(&mut backend, &prep.spec, &method, init)?;
    // All final samples non-finite: an error naming the cause, nothing written (issue 13, item 4).
    if let Some(warning) = crate::finite::check_final_samples(&r.positions, r.dim, &prep.spec.model, &prep.spec.sampler)? {
        eprintln!("{warning}");
    }
    let info = backend.info();
    if !common.quiet {
        println!("flowsteer search {}: towards {} (larger is better); {} backend on {}", r.method, prep.spec.reward, info.backend, info.device);
        if !r.schedule.is_empty() && r.method == "paths" {
            println!("  rounds end at grid steps {:?}", r.schedule);
        }
    }
    Ok(Outcome {
        prepared: prep,
        info,
        result: r,
        baseline: None,
        config,
        files: Outputs { ancestry: false, plot: common.plot },
        out: common.out.clone(),
        force: common.force,
        quiet: common.quiet,
        profiled: false,
    })
}

/// `--pivot`: D comma-separated numbers (the same pivot for every group), or a .npy file of
/// shape [D] or [G, D].
pub fn parse_pivot(s: &str, dim: usize, groups: usize) -> anyhow::Result<Vec<f32>> {
    let one: Vec<f32> = if s.ends_with(".npy") {
        let a = crate::npy::read_f32(std::path::Path::new(s))?;
        if a.shape == [groups, dim] {
            check_finite(&a.data)?;
            return Ok(a.data);
        }
        if a.shape != [dim] {
            bail!("--pivot {s} holds an array of shape {:?}; expected [D] = [{dim}] or [G, D] = [{groups}, {dim}]", a.shape);
        }
        a.data
    } else {
        let v: Result<Vec<f32>, _> = s.split(',').map(|p| p.trim().parse::<f32>()).collect();
        let v = v.map_err(|_| anyhow::anyhow!("--pivot {s:?} is neither a .npy file nor comma-separated numbers like 0.1,-0.3"))?;
        if v.len() != dim {
            bail!("--pivot has {} numbers but the model's data dimension is D = {dim}; give {dim}", v.len());
        }
        v
    };
    check_finite(&one)?;
    Ok(one.iter().copied().cycle().take(dim * groups).collect())
}

fn check_finite(v: &[f32]) -> anyhow::Result<()> {
    if v.iter().any(|x| !x.is_finite()) {
        bail!("--pivot holds a non-finite value; give finite numbers");
    }
    Ok(())
}
