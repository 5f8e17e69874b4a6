//! Reward expressions (docs/rewards.md, docs/writing-a-reward.md): the checked tree and its
//! compilation to a straight-line scalar [`Program`].
//!
//! `reward_parse.rs` builds the untyped tree [`Expr`] (every node knows the character it starts
//! at). [`Expr::compile`] checks it against the model's dimension D (scalar vs vector of length
//! D) and expands every vector operation into scalar operations, so that one [`Program`] is a
//! list of f32 operations on registers. The CPU runs it vectorised over particles
//! ([`Program::eval_soa`]); the CUDA backend prints the same list as C
//! (`backend::cuda::reward_codegen`), operation for operation, so both backends compute the same
//! bits where they share the maths library (the host emulator does).
//!
//! The built-in shapes expand into exactly the operations of [`super::Term::eval`], in the same
//! order, so `point(...)` inside an expression is bitwise the hand-written term.
//! Division by zero gives NaN (any numerator) and `log`/`sqrt` of a negative number NaN: the
//! NaN rule of docs/steering.md turns such a reward into a −inf log-weight and counts it.

use super::{Term, OBSTACLE_MIN_DISTANCE};

/// A binary operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A function of the grammar (not a built-in shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Where,
    Abs,
    Sqrt,
    Exp,
    Log,
    Min,
    Max,
    Clamp,
    Sin,
    Cos,
    Tanh,
    Norm,
    Dot,
}

impl Func {
    pub const ALL: [(&'static str, Func); 13] = [
        ("where", Func::Where),
        ("abs", Func::Abs),
        ("sqrt", Func::Sqrt),
        ("exp", Func::Exp),
        ("log", Func::Log),
        ("min", Func::Min),
        ("max", Func::Max),
        ("clamp", Func::Clamp),
        ("sin", Func::Sin),
        ("cos", Func::Cos),
        ("tanh", Func::Tanh),
        ("norm", Func::Norm),
        ("dot", Func::Dot),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// (fewest, most) arguments.
    pub fn arity(self) -> (usize, usize) {
        match self {
            Func::Where | Func::Clamp => (3, 3),
            Func::Dot => (2, 2),
            Func::Min | Func::Max => (1, usize::MAX),
            _ => (1, 1),
        }
    }
}

/// One node of the untyped tree, with the character index it starts at.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub node: Node,
    pub at: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Num(f32),
    /// The sample (or x̂1), a vector of length D.
    X,
    /// The time of the resampling point (1 for the final sample).
    T,
    /// `v[i]`; `i` is a whole number checked against the vector's length.
    Index(Box<Expr>, usize),
    Vector(Vec<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// A built-in shape with its (constant, validated) arguments and the reward's eps.
    Shape(Term, f32),
}

/// A register of a [`Program`].
pub type Reg = u32;

/// One scalar operation; its result is the register with its own index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Const(f32),
    /// Coordinate d of the input point.
    X(u32),
    T,
    Add(Reg, Reg),
    Sub(Reg, Reg),
    Mul(Reg, Reg),
    /// IEEE division (inside the built-in shapes, as [`Term::eval`]).
    Div(Reg, Reg),
    /// The grammar's `/`: NaN when the divisor is 0.
    SafeDiv(Reg, Reg),
    Neg(Reg),
    Pow(Reg, Reg),
    Lt(Reg, Reg),
    Le(Reg, Reg),
    Gt(Reg, Reg),
    Ge(Reg, Reg),
    Eq(Reg, Reg),
    Ne(Reg, Reg),
    /// `c != 0 ? a : b`
    Select(Reg, Reg, Reg),
    Abs(Reg),
    Sqrt(Reg),
    Exp(Reg),
    Log(Reg),
    /// `fminf`/`fmaxf` semantics (a NaN operand loses), as Rust's `f32::min`/`max`.
    Min(Reg, Reg),
    Max(Reg, Reg),
    Sin(Reg),
    Cos(Reg),
    Tanh(Reg),
}

/// A compiled reward: operations in order, the result in `out`.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub ops: Vec<Op>,
    pub out: Reg,
    pub dim: usize,
}

/// A checked value: one register or D registers.
#[derive(Clone, Debug)]
enum Val {
    S(Reg),
    V(Vec<Reg>),
}

/// A type error: where and what.
pub type CheckError = (usize, String);

struct Builder {
    ops: Vec<Op>,
    x: Vec<Option<Reg>>,
    t: Option<Reg>,
}

impl Builder {
    fn push(&mut self, op: Op) -> Reg {
        self.ops.push(op);
        (self.ops.len() - 1) as Reg
    }
    fn c(&mut self, v: f32) -> Reg {
        self.push(Op::Const(v))
    }
    fn x(&mut self, d: usize) -> Reg {
        if let Some(r) = self.x[d] {
            return r;
        }
        let r = self.push(Op::X(d as u32));
        self.x[d] = Some(r);
        r
    }
    /// `Σ_d (x_d − c_d)²`, from the first coordinate (as `reward::sq_dist`).
    fn sq_dist(&mut self, c: &[f32]) -> Reg {
        let mut s = None;
        for (d, &cd) in c.iter().enumerate() {
            let (xd, k) = (self.x(d), self.c(cd));
            let e = self.push(Op::Sub(xd, k));
            let e2 = self.push(Op::Mul(e, e));
            s = Some(match s {
                None => e2,
                Some(acc) => self.push(Op::Add(acc, e2)),
            });
        }
        s.unwrap_or_else(|| self.c(0.0))
    }

    /// The operations of [`Term::eval`], in its order.
    fn shape(&mut self, term: &Term, eps: f32) -> Reg {
        match term {
            Term::Point { c } => {
                let s = self.sq_dist(c);
                let (one, e) = (self.c(1.0), self.c(eps));
                let den = self.push(Op::Add(s, e));
                self.push(Op::Div(one, den))
            }
            Term::Line { axis, c } => {
                let (xa, k) = (self.x(*axis), self.c(*c));
                let diff = self.push(Op::Sub(xa, k));
                let a = self.push(Op::Abs(diff));
                let e = self.c(eps);
                let den = self.push(Op::Add(a, e));
                let one = self.c(1.0);
                self.push(Op::Div(one, den))
            }
            Term::Gaussian { c, sigma } => {
                let s = self.sq_dist(c);
                let ns = self.push(Op::Neg(s));
                let (two, sg) = (self.c(2.0), self.c(*sigma));
                let a = self.push(Op::Mul(two, sg));
                let den = self.push(Op::Mul(a, sg));
                self.push(Op::Div(ns, den))
            }
            Term::Obstacle { c, rho, q_star, eta } => {
                let s = self.sq_dist(c);
                let r = self.push(Op::Sqrt(s));
                let k = self.c(*rho);
                let dr = self.push(Op::Sub(r, k));
                let floor = self.c(OBSTACLE_MIN_DISTANCE);
                let d = self.push(Op::Max(dr, floor));
                let q = self.c(*q_star);
                let near = self.push(Op::Le(d, q));
                let one = self.c(1.0);
                let id = self.push(Op::Div(one, d));
                let iq = self.push(Op::Div(one, q));
                let g = self.push(Op::Sub(id, iq));
                let (h, e) = (self.c(-0.5), self.c(*eta));
                let he = self.push(Op::Mul(h, e));
                let heg = self.push(Op::Mul(he, g));
                let v = self.push(Op::Mul(heg, g));
                let zero = self.c(0.0);
                self.push(Op::Select(near, v, zero))
            }
            Term::Expr(_) | Term::Command(_) => unreachable!("a shape node holds only a built-in term"),
        }
    }
}

/// Elementwise application of `f` with scalar broadcasting; vectors must have equal lengths.
fn zip(b: &mut Builder, vals: &[(Val, usize)], f: &mut dyn FnMut(&mut Builder, &[Reg]) -> Reg) -> Result<Val, CheckError> {
    let len = vals.iter().find_map(|(v, at)| match v {
        Val::V(r) => Some((r.len(), *at)),
        Val::S(_) => None,
    });
    for (v, at) in vals {
        if let (Val::V(r), Some((n, first))) = (v, len) {
            if r.len() != n {
                return Err((*at, format!("this vector has {} entries but the one at character {} has {n}", r.len(), first + 1)));
            }
        }
    }
    let pick = |v: &Val, i: usize| match v {
        Val::S(r) => *r,
        Val::V(r) => r[i],
    };
    Ok(match len {
        None => {
            let regs: Vec<Reg> = vals.iter().map(|(v, _)| pick(v, 0)).collect();
            Val::S(f(b, &regs))
        }
        Some((n, _)) => Val::V(
            (0..n)
                .map(|i| {
                    let regs: Vec<Reg> = vals.iter().map(|(v, _)| pick(v, i)).collect();
                    f(b, &regs)
                })
                .collect(),
        ),
    })
}

impl Expr {
    /// Type-checks the tree against data dimension `dim` and compiles it. The result must be a
    /// number (a scalar).
    pub fn compile(&self, dim: usize) -> Result<Program, CheckError> {
        let mut b = Builder { ops: Vec::new(), x: vec![None; dim], t: None };
        match self.lower(&mut b, dim)? {
            Val::S(out) => Ok(Program { ops: b.ops, out, dim }),
            Val::V(v) => Err((
                self.at,
                format!(
                    "the reward must be a number, but this is a vector of {} entries; reduce it, e.g. with norm(...), dot(...) or x[0]",
                    v.len()
                ),
            )),
        }
    }

    fn lower(&self, b: &mut Builder, dim: usize) -> Result<Val, CheckError> {
        Ok(match &self.node {
            Node::Num(v) => Val::S(b.c(*v)),
            Node::X => Val::V((0..dim).map(|d| b.x(d)).collect()),
            Node::T => Val::S(match b.t {
                Some(r) => r,
                None => {
                    let r = b.push(Op::T);
                    b.t = Some(r);
                    r
                }
            }),
            Node::Index(v, i) => match v.lower(b, dim)? {
                Val::V(r) if *i < r.len() => Val::S(r[*i]),
                Val::V(r) => return Err((self.at, format!("index {i} is out of range for a vector of {} entries; use 0..{}", r.len(), r.len() - 1))),
                Val::S(_) => return Err((v.at, "only a vector can be indexed, and this is a number".into())),
            },
            Node::Vector(items) => {
                if items.len() != dim {
                    return Err((self.at, format!("this vector has {} entries but the model's data dimension is D = {dim}; give {dim} entries", items.len())));
                }
                let mut regs = Vec::new();
                for it in items {
                    match it.lower(b, dim)? {
                        Val::S(r) => regs.push(r),
                        Val::V(_) => return Err((it.at, "a vector's entries must be numbers, not vectors".into())),
                    }
                }
                Val::V(regs)
            }
            Node::Neg(a) => {
                let v = a.lower(b, dim)?;
                zip(b, &[(v, a.at)], &mut |b, r| b.push(Op::Neg(r[0])))?
            }
            Node::Bin(op, l, r) => {
                let (lv, rv) = (l.lower(b, dim)?, r.lower(b, dim)?);
                let op = *op;
                zip(b, &[(lv, l.at), (rv, r.at)], &mut |b, x| {
                    let (p, q) = (x[0], x[1]);
                    b.push(match op {
                        BinOp::Add => Op::Add(p, q),
                        BinOp::Sub => Op::Sub(p, q),
                        BinOp::Mul => Op::Mul(p, q),
                        BinOp::Div => Op::SafeDiv(p, q),
                        BinOp::Pow => Op::Pow(p, q),
                        BinOp::Lt => Op::Lt(p, q),
                        BinOp::Le => Op::Le(p, q),
                        BinOp::Gt => Op::Gt(p, q),
                        BinOp::Ge => Op::Ge(p, q),
                        BinOp::Eq => Op::Eq(p, q),
                        BinOp::Ne => Op::Ne(p, q),
                    })
                })?
            }
            Node::Call(f, args) => {
                let mut vals = Vec::new();
                for a in args {
                    vals.push((a.lower(b, dim)?, a.at));
                }
                self.call(b, *f, vals)?
            }
            Node::Shape(term, eps) => {
                if let Some(c) = term.centre() {
                    if c.len() != dim {
                        return Err((self.at, format!("this {} has a {}-vector but the model's data dimension is D = {dim}; give {dim} entries", term.kind(), c.len())));
                    }
                }
                if let Term::Line { axis, .. } = term {
                    if *axis >= dim {
                        return Err((self.at, format!("line axis {axis} does not exist for D = {dim}; use 0..{}", dim - 1)));
                    }
                }
                Val::S(b.shape(term, *eps))
            }
        })
    }

    fn call(&self, b: &mut Builder, f: Func, vals: Vec<(Val, usize)>) -> Result<Val, CheckError> {
        let vector = |v: &(Val, usize), what: &str| -> Result<Vec<Reg>, CheckError> {
            match &v.0 {
                Val::V(r) => Ok(r.clone()),
                Val::S(_) => Err((v.1, format!("{what} of `{}` must be a vector, e.g. x - [2, 0.5]", f.name()))),
            }
        };
        let unary = |b: &mut Builder, op: fn(Reg) -> Op, vals: &[(Val, usize)]| zip(b, vals, &mut |b, r| b.push(op(r[0])));
        Ok(match f {
            Func::Abs => unary(b, Op::Abs, &vals)?,
            Func::Sqrt => unary(b, Op::Sqrt, &vals)?,
            Func::Exp => unary(b, Op::Exp, &vals)?,
            Func::Log => unary(b, Op::Log, &vals)?,
            Func::Sin => unary(b, Op::Sin, &vals)?,
            Func::Cos => unary(b, Op::Cos, &vals)?,
            Func::Tanh => unary(b, Op::Tanh, &vals)?,
            Func::Where => zip(b, &vals, &mut |b, r| b.push(Op::Select(r[0], r[1], r[2])))?,
            Func::Clamp => zip(b, &vals, &mut |b, r| {
                let lo = b.push(Op::Max(r[0], r[1]));
                b.push(Op::Min(lo, r[2]))
            })?,
            Func::Min | Func::Max => {
                let op = if f == Func::Min { Op::Min } else { Op::Max };
                if vals.len() == 1 {
                    // min(v) / max(v): over the entries of one vector.
                    let r = vector(&vals[0], "a single argument")?;
                    let mut acc = r[0];
                    for &q in &r[1..] {
                        acc = b.push(op(acc, q));
                    }
                    Val::S(acc)
                } else {
                    zip(b, &vals, &mut |b, r| {
                        let mut acc = r[0];
                        for &q in &r[1..] {
                            acc = b.push(op(acc, q));
                        }
                        acc
                    })?
                }
            }
            Func::Norm => {
                let r = vector(&vals[0], "the argument")?;
                let s = dot(b, &r, &r);
                Val::S(b.push(Op::Sqrt(s)))
            }
            Func::Dot => {
                let (u, v) = (vector(&vals[0], "the first argument")?, vector(&vals[1], "the second argument")?);
                Val::S(dot(b, &u, &v))
            }
        })
    }
}

/// `Σ_i u_i·v_i` from the first entry.
fn dot(b: &mut Builder, u: &[Reg], v: &[Reg]) -> Reg {
    let mut acc = None;
    for (&p, &q) in u.iter().zip(v) {
        let m = b.push(Op::Mul(p, q));
        acc = Some(match acc {
            None => m,
            Some(a) => b.push(Op::Add(a, m)),
        });
    }
    acc.unwrap_or_else(|| b.c(0.0))
}

/// Particles evaluated together by [`Program::eval_soa`]: every operation runs over a lane
/// block, which the compiler vectorises.
pub const LANES: usize = 64;

#[inline(always)]
fn b2f(c: bool) -> f32 {
    if c {
        1.0
    } else {
        0.0
    }
}

impl Program {
    /// The reward of one point `x` (D entries) at time `t`.
    pub fn eval(&self, x: &[f32], t: f32) -> f32 {
        let mut out = [0f32];
        self.eval_soa(x, 1, t, &mut out);
        out[0]
    }

    /// Rewards of `out.len()` points stored coordinate-major (`x[d·stride + i]`), at time `t`.
    pub fn eval_soa(&self, x: &[f32], stride: usize, t: f32, out: &mut [f32]) {
        let mut regs = vec![[0f32; LANES]; self.ops.len()];
        for start in (0..out.len()).step_by(LANES) {
            let lanes = LANES.min(out.len() - start);
            self.eval_block(x, stride, start, lanes, t, &mut regs);
            out[start..start + lanes].copy_from_slice(&regs[self.out as usize][..lanes]);
        }
    }

    fn eval_block(&self, x: &[f32], stride: usize, start: usize, lanes: usize, t: f32, regs: &mut [[f32; LANES]]) {
        macro_rules! un {
            ($k:expr, $a:expr, $f:expr) => {{
                let a = regs[$a as usize];
                let dst = &mut regs[$k];
                for l in 0..LANES {
                    dst[l] = $f(a[l]);
                }
            }};
        }
        macro_rules! bin {
            ($k:expr, $a:expr, $b:expr, $f:expr) => {{
                let (a, b) = (regs[$a as usize], regs[$b as usize]);
                let dst = &mut regs[$k];
                for l in 0..LANES {
                    dst[l] = $f(a[l], b[l]);
                }
            }};
        }
        for (k, op) in self.ops.iter().enumerate() {
            match *op {
                Op::Const(v) => regs[k] = [v; LANES],
                Op::T => regs[k] = [t; LANES],
                Op::X(d) => {
                    let row = &x[d as usize * stride + start..d as usize * stride + start + lanes];
                    regs[k][..lanes].copy_from_slice(row);
                }
                Op::Add(a, b) => bin!(k, a, b, |p: f32, q: f32| p + q),
                Op::Sub(a, b) => bin!(k, a, b, |p: f32, q: f32| p - q),
                Op::Mul(a, b) => bin!(k, a, b, |p: f32, q: f32| p * q),
                Op::Div(a, b) => bin!(k, a, b, |p: f32, q: f32| p / q),
                Op::SafeDiv(a, b) => bin!(k, a, b, |p: f32, q: f32| if q == 0.0 { f32::NAN } else { p / q }),
                Op::Pow(a, b) => bin!(k, a, b, f32::powf),
                Op::Lt(a, b) => bin!(k, a, b, |p: f32, q: f32| b2f(p < q)),
                Op::Le(a, b) => bin!(k, a, b, |p: f32, q: f32| b2f(p <= q)),
                Op::Gt(a, b) => bin!(k, a, b, |p: f32, q: f32| b2f(p > q)),
                Op::Ge(a, b) => bin!(k, a, b, |p: f32, q: f32| b2f(p >= q)),
                Op::Eq(a, b) => bin!(k, a, b, |p: f32, q: f32| b2f(p == q)),
                Op::Ne(a, b) => bin!(k, a, b, |p: f32, q: f32| b2f(p != q)),
                Op::Min(a, b) => bin!(k, a, b, f32::min),
                Op::Max(a, b) => bin!(k, a, b, f32::max),
                Op::Select(c, a, b) => {
                    let (c, a, b) = (regs[c as usize], regs[a as usize], regs[b as usize]);
                    for l in 0..LANES {
                        regs[k][l] = if c[l] != 0.0 { a[l] } else { b[l] };
                    }
                }
                Op::Neg(a) => un!(k, a, |p: f32| -p),
                Op::Abs(a) => un!(k, a, f32::abs),
                Op::Sqrt(a) => un!(k, a, f32::sqrt),
                Op::Exp(a) => un!(k, a, f32::exp),
                Op::Log(a) => un!(k, a, f32::ln),
                Op::Sin(a) => un!(k, a, f32::sin),
                Op::Cos(a) => un!(k, a, f32::cos),
                Op::Tanh(a) => un!(k, a, f32::tanh),
            }
        }
    }
}
