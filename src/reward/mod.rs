//! Rewards `r : R^D → R` (docs/rewards.md, docs/rewards.md): built-in terms, their weighted sums, and
//! general expressions over `x` and `t` ([`expr`]); a reward computed by the user's own program
//! is [`command`].
//!
//! [`Reward::eval`] is the CPU definition; the CUDA backend generates device code from the same
//! terms (`backend::cuda::reward_codegen`). Parsing the command-line form lives in
//! `reward_parse.rs`: a string that is a weighted sum of built-in shapes becomes those terms
//! (bitwise the values it always had); anything else becomes one [`Term::Expr`].

pub mod command;
pub mod expr;

use std::sync::{Arc, Mutex};

use expr::{CheckError, Expr, Program};

/// Where intermediate rewards are evaluated (docs/rewards.md); the final reward is always on the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RewardOn {
    /// The predicted data `x̂1 = x + (1−t)·v`.
    #[default]
    #[value(name = "x1hat")]
    #[serde(rename = "x1hat")]
    X1Hat,
    /// The noisy state `x_t` itself.
    Xt,
}

/// One built-in reward term (docs/rewards.md).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Term {
    /// `1 / (|x − c|² + eps)`
    Point { c: Vec<f32> },
    /// `1 / (|x_axis − c| + eps)`
    Line { axis: usize, c: f32 },
    /// `−|x − c|² / (2σ²)`
    Gaussian { c: Vec<f32>, sigma: f32 },
    /// `d = max(|x − c| − ρ, 1e-6)`; `−½·η·(1/d − 1/Q*)²` if `d ≤ Q*`, else 0.
    Obstacle { c: Vec<f32>, rho: f32, q_star: f32, eta: f32 },
    /// A general expression (docs/writing-a-reward.md).
    #[serde(rename = "expression")]
    Expr(#[serde(serialize_with = "serialize_expr")] Arc<ExprReward>),
    /// The user's own program (`--reward-cmd`), evaluated on the host in batches.
    #[serde(rename = "command")]
    Command(#[serde(serialize_with = "serialize_command")] Arc<command::RewardCommand>),
}

fn serialize_command<S: serde::Serializer>(c: &Arc<command::RewardCommand>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(c.as_ref(), s)
}

fn serialize_expr<S: serde::Serializer>(e: &Arc<ExprReward>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(e.as_ref(), s)
}

/// A parsed reward expression with its source text and its compiled program (per D).
pub struct ExprReward {
    pub source: String,
    pub tree: Expr,
    compiled: Mutex<Option<(usize, Arc<Program>)>>,
}

impl ExprReward {
    pub fn new(source: String, tree: Expr) -> Self {
        Self { source, tree, compiled: Mutex::new(None) }
    }

    /// The program for data dimension `dim` (type-checked and compiled once per dimension).
    pub fn program(&self, dim: usize) -> Result<Arc<Program>, CheckError> {
        let mut slot = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, p)) = slot.as_ref() {
            if *d == dim {
                return Ok(p.clone());
            }
        }
        let p = Arc::new(self.tree.compile(dim)?);
        *slot = Some((dim, p.clone()));
        Ok(p)
    }

    /// A type error shown like a parse error: the expression with a caret under the character.
    pub fn located(&self, (at, message): CheckError) -> String {
        let at = at.min(self.source.chars().count());
        format!("{message}\n  {}\n  {}^", self.source, " ".repeat(at))
    }
}

impl PartialEq for ExprReward {
    fn eq(&self, other: &Self) -> bool {
        self.tree == other.tree
    }
}

impl std::fmt::Debug for ExprReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl serde::Serialize for ExprReward {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ExprReward", 1)?;
        st.serialize_field("source", &self.source)?;
        st.end()
    }
}

/// A weighted sum of terms.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Reward {
    pub terms: Vec<(f32, Term)>,
    /// The `eps` of `point` and `line` (default 1e-3).
    pub eps: f32,
}

/// The distance floor of `obstacle` (docs/rewards.md).
pub const OBSTACLE_MIN_DISTANCE: f32 = 1e-6;
/// The default `eps` of `point` and `line`.
pub const DEFAULT_EPS: f32 = 1e-3;

impl Term {
    /// The term at `x` as a final sample (t = 1), in f32 (every backend's arithmetic).
    #[inline]
    pub fn eval(&self, x: &[f32], eps: f32) -> f32 {
        self.eval_at(x, eps, 1.0)
    }

    /// The term at `x` at time `t` (only expressions read `t`).
    #[inline]
    pub fn eval_at(&self, x: &[f32], eps: f32, t: f32) -> f32 {
        match self {
            Term::Expr(e) => match e.program(x.len()) {
                Ok(p) => p.eval(x, t),
                // Unchecked against this D (checks_dim refuses it before any run): no value.
                Err(_) => f32::NAN,
            },
            // One point at a time (plots, sweeps); a failed program has no value here, and the
            // run's batched evaluation ([`Reward::eval_soa`]) reports why.
            Term::Command(c) => c.eval(x, x.len(), t).map_or(f32::NAN, |v| v[0]),
            Term::Point { c } => 1.0 / (sq_dist(x, c) + eps),
            Term::Line { axis, c } => 1.0 / ((x[*axis] - c).abs() + eps),
            Term::Gaussian { c, sigma } => -sq_dist(x, c) / (2.0 * sigma * sigma),
            Term::Obstacle { c, rho, q_star, eta } => {
                let d = (sq_dist(x, c).sqrt() - rho).max(OBSTACLE_MIN_DISTANCE);
                if d <= *q_star {
                    let g = 1.0 / d - 1.0 / q_star;
                    -0.5 * eta * g * g
                } else {
                    0.0
                }
            }
        }
    }

    /// The point the term pulls towards or pushes away from, for summaries and plots.
    pub fn centre(&self) -> Option<&[f32]> {
        match self {
            Term::Point { c } | Term::Gaussian { c, .. } | Term::Obstacle { c, .. } => Some(c),
            Term::Line { .. } | Term::Expr(_) | Term::Command(_) => None,
        }
    }

    /// The name of the term's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Term::Point { .. } => "point",
            Term::Line { .. } => "line",
            Term::Gaussian { .. } => "gaussian",
            Term::Obstacle { .. } => "obstacle",
            Term::Expr(_) => "expression",
            Term::Command(_) => "command",
        }
    }
}

impl Reward {
    /// `Σ w_i · term_i(x)`.
    #[inline]
    pub fn eval(&self, x: &[f32]) -> f32 {
        self.eval_at(x, 1.0)
    }

    /// The reward at `x` at time `t` (the final sample is at t = 1). An expression alone (the
    /// parser's form) is its value, not `0 + 1·value`, as the generated device code.
    #[inline]
    pub fn eval_at(&self, x: &[f32], t: f32) -> f32 {
        if let Some(e) = self.expression() {
            return match e.program(x.len()) {
                Ok(p) => p.eval(x, t),
                Err(_) => f32::NAN,
            };
        }
        self.terms.iter().map(|(w, term)| w * term.eval_at(x, self.eps, t)).sum()
    }

    /// The expression when the reward is one expression of weight 1 (what the parser builds).
    pub fn expression(&self) -> Option<&Arc<ExprReward>> {
        match self.terms.as_slice() {
            [(w, Term::Expr(e))] if *w == 1.0 => Some(e),
            _ => None,
        }
    }

    /// The reward program when the reward is `--reward-cmd`.
    pub fn command(&self) -> Option<&Arc<command::RewardCommand>> {
        match self.terms.as_slice() {
            [(_, Term::Command(c))] => Some(c),
            _ => None,
        }
    }

    /// The rewards of `rows` (`[B, dim]`) at time `t` from the reward program, weight applied:
    /// one batch, the same on every backend. Fails when the reward is not a program or the
    /// program fails (the run must end).
    pub fn eval_rows_by_command(&self, rows: &[f32], dim: usize, t: f32) -> anyhow::Result<Vec<f32>> {
        let Some(c) = self.command() else { anyhow::bail!("the reward {self} is not a --reward-cmd program") };
        let mut r = c.eval(rows, dim, t)?;
        let w = self.terms[0].0;
        if w != 1.0 {
            r.iter_mut().for_each(|v| *v *= w);
        }
        Ok(r)
    }

    /// A reward computed by the program `command` (`--reward-cmd`).
    pub fn from_command(command: command::RewardCommand) -> Self {
        Reward { terms: vec![(1.0, Term::Command(Arc::new(command)))], eps: DEFAULT_EPS }
    }

    /// Rewards of `out.len()` points stored coordinate-major (`x[d·stride + i]`, D = `dim`) at
    /// time `t`, in parallel. Each value is bitwise [`Reward::eval_at`] of the point. Fails only
    /// for a reward program that fails (the run must end).
    pub fn eval_soa(&self, x: &[f32], dim: usize, stride: usize, t: f32, out: &mut [f32]) -> anyhow::Result<()> {
        use rayon::prelude::*;
        const CHUNK: usize = 1024;
        if self.command().is_some() {
            // One batch for the whole population: the program sees [B, D] rows.
            let rows = crate::backend::soa_to_rows(x, dim, stride, out.len());
            out.copy_from_slice(&self.eval_rows_by_command(&rows, dim, t)?);
            return Ok(());
        }
        if let Some(e) = self.expression() {
            match e.program(dim) {
                Ok(p) => out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
                    let start = c * CHUNK;
                    // The program reads x[d·stride + start + i]: shift the base by `start`.
                    p.eval_soa(&x[start..], stride, t, o)
                }),
                Err(_) => out.fill(f32::NAN),
            }
            return Ok(());
        }
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
            let mut row = vec![0f32; dim];
            for (k, v) in o.iter_mut().enumerate() {
                let i = c * CHUNK + k;
                for (d, r) in row.iter_mut().enumerate() {
                    *r = x[d * stride + i];
                }
                *v = self.eval_at(&row, t);
            }
        });
        Ok(())
    }

    /// The dimension every vector argument has, if any term fixes it.
    pub fn checks_dim(&self, dim: usize) -> Result<(), String> {
        for (_, t) in &self.terms {
            if let Term::Expr(e) = t {
                e.program(dim).map_err(|err| e.located(err))?;
            }
            if let Some(c) = t.centre() {
                if c.len() != dim {
                    return Err(format!("reward term {t} has a {}-vector but the model's data dimension is D = {dim}; give {dim} entries", c.len()));
                }
            }
            if let Term::Line { axis, .. } = t {
                if *axis >= dim {
                    return Err(format!("line axis {axis} does not exist for D = {dim}; use 0..{}", dim - 1));
                }
            }
        }
        Ok(())
    }

    /// The attracting target (the first point or gaussian centre), for "fraction within r".
    /// In an expression: the first point or gaussian added with a positive constant weight.
    pub fn target(&self) -> Option<&[f32]> {
        self.terms.iter().find_map(|(w, t)| match t {
            Term::Point { c } | Term::Gaussian { c, .. } if *w > 0.0 => Some(c.as_slice()),
            Term::Expr(e) if *w > 0.0 => expr_target(&e.tree, 1.0),
            _ => None,
        })
    }
}

/// The first `point`/`gaussian` found in the sum at the top of `e` whose weight is a positive
/// constant (`a + 2*point(c) - b`), as the weighted sums' target.
fn expr_target(e: &Expr, sign: f32) -> Option<&[f32]> {
    use expr::{BinOp, Node};
    match &e.node {
        Node::Shape(Term::Point { c } | Term::Gaussian { c, .. }, _) if sign > 0.0 => Some(c.as_slice()),
        Node::Bin(BinOp::Add, a, b) => expr_target(a, sign).or_else(|| expr_target(b, sign)),
        Node::Bin(BinOp::Sub, a, b) => expr_target(a, sign).or_else(|| expr_target(b, -sign)),
        Node::Neg(a) => expr_target(a, -sign),
        Node::Bin(BinOp::Mul, a, b) => match (&a.node, &b.node) {
            (Node::Num(w), _) => expr_target(b, sign * w),
            (_, Node::Num(w)) => expr_target(a, sign * w),
            _ => None,
        },
        _ => None,
    }
}

#[inline(always)]
fn sq_dist(x: &[f32], c: &[f32]) -> f32 {
    x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_their_formulas() {
        let eps = DEFAULT_EPS;
        let x = [1.0f32, 2.0];
        assert!((Term::Point { c: vec![1.0, 0.0] }.eval(&x, eps) - 1.0 / 4.001).abs() < 1e-7);
        assert!((Term::Line { axis: 1, c: 1.5 }.eval(&x, eps) - 1.0 / 0.501).abs() < 1e-6);
        assert_eq!(Term::Gaussian { c: vec![1.0, 0.0], sigma: 0.5 }.eval(&x, eps), -8.0);
        // |x − c| = 2, ρ = 1.5 -> d = 0.5 ≤ Q* = 1: −½·2·(2 − 1)² = −1.
        let ob = Term::Obstacle { c: vec![1.0, 0.0], rho: 1.5, q_star: 1.0, eta: 2.0 };
        assert!((ob.eval(&x, eps) + 1.0).abs() < 1e-6);
        let far = Term::Obstacle { c: vec![1.0, 0.0], rho: 0.5, q_star: 1.0, eta: 2.0 };
        assert_eq!(far.eval(&x, eps), 0.0);
    }
}

#[cfg(test)]
mod expr_tests;
