//! The command-line form of a reward (docs/rewards.md, docs/writing-a-reward.md), e.g.
//! `gaussian([2,0.5], 0.5) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)` or
//! `-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)`.
//!
//! ```text
//! expr    := compare
//! compare := sum [('<' | '<=' | '>' | '>=' | '==' | '!=') sum]
//! sum     := product (('+' | '-') product)*
//! product := unary (('*' | '/') unary)*
//! unary   := ('-' | '+') unary | power
//! power   := postfix [('^' | '**') unary]
//! postfix := atom ('[' whole number ']')*
//! atom    := number | 'x' | 't' | '(' expr ')' | '[' expr (',' expr)* ']' | name '(' args ')'
//! ```
//! `× ÷ −` are accepted for `* / -`. Names: the functions of [`crate::reward::expr::Func`] and
//! the built-in shapes `point(c [, eps]) | line(axis, c [, eps]) | gaussian(c, σ) |
//! obstacle(c, ρ, Q*, η)`, whose arguments are constants in the order of docs/rewards.md; `eps` (of `point` and
//! `line`) defaults to 1e-3 and is one value for the whole reward; every vector literal has
//! the same length (D).
//!
//! One parser builds one tree ([`Expr`]). A tree that is a weighted sum of shapes (the form of
//! every reward string before expressions existed) becomes those [`Term`]s, which evaluate
//! exactly as they always did; any other tree becomes one [`Term::Expr`], type-checked against
//! D by [`Reward::checks_dim`]. A malformed string is an error that shows the string with a
//! caret under the offending character and says what was expected.
//!
//! Why one file of ~615 lines: the grammar, its parser and the error positions it reports
//! change together, and the tree it builds is read by the CPU compiler and the CUDA generator alike.

use std::fmt;
use std::str::FromStr;

use std::sync::Arc;

use crate::reward::expr::{BinOp, Expr, Func, Node};
use crate::reward::{ExprReward, Reward, Term, DEFAULT_EPS};

/// A reward string that does not parse: what is wrong, and where (a character index).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub struct RewardParseError {
    pub input: String,
    /// Character (not byte) index of the offending character.
    pub at: usize,
    pub message: String,
}

impl fmt::Display for RewardParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "malformed --reward at character {}: {}", self.at + 1, self.message)?;
        writeln!(f, "  {}", self.input)?;
        write!(f, "  {}^", " ".repeat(self.at))?;
        write!(
            f,
            "\n  (an expression over x, x[0], t and numbers with + - * / ^, comparisons, where(c,a,b), abs sqrt exp log min max clamp sin cos tanh norm dot, \
             vectors [a,b], and the shapes point([x,y]), line(axis, c), gaussian([x,y], sigma), obstacle([x,y], rho, q_star, eta); see docs/writing-a-reward.md)"
        )
    }
}

impl FromStr for Reward {
    type Err = RewardParseError;
    fn from_str(s: &str) -> Result<Reward, RewardParseError> {
        Parser { chars: s.chars().collect(), pos: 0, input: s, eps: None, vec_len: None }.reward()
    }
}

/// `s` as one expression, never lowered to built-in terms (for benchmarks and tests that want
/// the expression evaluator on a weighted sum of shapes).
pub fn parse_expression(s: &str) -> Result<Reward, RewardParseError> {
    let mut p = Parser { chars: s.chars().collect(), pos: 0, input: s, eps: None, vec_len: None };
    p.skip_ws();
    let mut tree = p.expr(0)?;
    p.skip_ws();
    if p.peek().is_some() {
        return p.err(p.pos, format!("expected an operator or the end, {}", p.found()));
    }
    let eps = p.eps.map_or(DEFAULT_EPS, |e| e.0);
    set_eps(&mut tree, eps);
    Ok(Reward { terms: vec![(1.0, Term::Expr(Arc::new(ExprReward::new(s.to_string(), tree))))], eps })
}

impl fmt::Display for Term {
    /// The command-line form of the term, e.g. `obstacle([1,0], 0.4, 0.5, 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vec = |c: &[f32]| format!("[{}]", c.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        match self {
            Term::Point { c } => write!(f, "point({})", vec(c)),
            Term::Line { axis, c } => write!(f, "line({axis}, {c})"),
            Term::Gaussian { c, sigma } => write!(f, "gaussian({}, {sigma})", vec(c)),
            Term::Obstacle { c, rho, q_star, eta } => write!(f, "obstacle({}, {rho}, {q_star}, {eta})", vec(c)),
            Term::Expr(e) => f.write_str(&e.source),
            Term::Command(c) => write!(f, "the program `{}`", c.command),
        }
    }
}

impl fmt::Display for Reward {
    /// The parseable form, e.g. `point([2,0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1)`; a non-default
    /// eps is written into the first `point` or `line`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut eps_written = self.eps == DEFAULT_EPS;
        for (k, (w, t)) in self.terms.iter().enumerate() {
            if k > 0 {
                f.write_str(" + ")?;
            }
            if *w != 1.0 {
                write!(f, "{w}*")?;
            }
            let text = t.to_string();
            match t {
                Term::Point { .. } | Term::Line { .. } if !eps_written => {
                    eps_written = true;
                    write!(f, "{}, {})", &text[..text.len() - 1], self.eps)?;
                }
                _ => f.write_str(&text)?,
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    input: &'a str,
    /// The one eps of the reward and where it was first given.
    eps: Option<(f32, usize)>,
    /// The length of the first vector literal and where it started (every one must match).
    vec_len: Option<(usize, usize)>,
}

type Res<T> = Result<T, RewardParseError>;

/// How deep parentheses, calls and vectors may nest (bounds the parser's recursion).
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn err<T>(&self, at: usize, message: impl Into<String>) -> Res<T> {
        Err(RewardParseError { input: self.input.to_string(), at, message: message.into() })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek2(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("found '{c}'"),
            None => "found the end of the string".into(),
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Res<()> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(self.pos, format!("expected {what}, {}", self.found()))
        }
    }

    fn reward(&mut self) -> Res<Reward> {
        self.skip_ws();
        if self.peek().is_none() {
            return self.err(0, "the reward is empty; give an expression, e.g. point([2,0.5]) or -norm(x - [2, 0.5])");
        }
        let mut tree = self.expr(0)?;
        self.skip_ws();
        if self.peek().is_some() {
            return self.err(self.pos, format!("expected an operator (+ - * / ^ < > ...) or the end after a term, {}", self.found()));
        }
        let eps = self.eps.map_or(DEFAULT_EPS, |e| e.0);
        set_eps(&mut tree, eps);
        let mut terms = Vec::new();
        if weighted_sum(&tree, 1.0, &mut terms) {
            return Ok(Reward { terms, eps });
        }
        Ok(Reward { terms: vec![(1.0, Term::Expr(Arc::new(ExprReward::new(self.input.to_string(), tree))))], eps })
    }

    fn node(node: Node, at: usize) -> Expr {
        Expr { node, at }
    }

    fn expr(&mut self, depth: usize) -> Res<Expr> {
        self.skip_ws();
        if depth > MAX_DEPTH {
            return self.err(self.pos, format!("the expression nests deeper than {MAX_DEPTH} levels; simplify it"));
        }
        let left = self.sum(depth)?;
        self.skip_ws();
        let op = match (self.peek(), self.peek2()) {
            (Some('<'), Some('=')) => Some((BinOp::Le, 2)),
            (Some('>'), Some('=')) => Some((BinOp::Ge, 2)),
            (Some('='), Some('=')) => Some((BinOp::Eq, 2)),
            (Some('!'), Some('=')) => Some((BinOp::Ne, 2)),
            (Some('<'), _) => Some((BinOp::Lt, 1)),
            (Some('>'), _) => Some((BinOp::Gt, 1)),
            (Some('≤'), _) => Some((BinOp::Le, 1)),
            (Some('≥'), _) => Some((BinOp::Ge, 1)),
            (Some('='), _) => return self.err(self.pos, "expected '==' to compare (a single '=' is not an operator)"),
            _ => None,
        };
        let Some((op, len)) = op else { return Ok(left) };
        self.pos += len;
        let right = self.sum(depth)?;
        let at = left.at;
        Ok(Self::node(Node::Bin(op, Box::new(left), Box::new(right)), at))
    }

    fn sum(&mut self, depth: usize) -> Res<Expr> {
        let mut left = self.product(depth)?;
        loop {
            self.skip_ws();
            let op = match self.peek() {
                Some('+') => BinOp::Add,
                Some('-' | '−') => BinOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.product(depth)?;
            let at = left.at;
            left = Self::node(Node::Bin(op, Box::new(left), Box::new(right)), at);
        }
    }

    fn product(&mut self, depth: usize) -> Res<Expr> {
        let mut left = self.unary(depth)?;
        loop {
            self.skip_ws();
            let op = match (self.peek(), self.peek2()) {
                (Some('*'), Some('*')) => return Ok(left),
                (Some('*' | '×' | '·'), _) => BinOp::Mul,
                (Some('/' | '÷'), _) => BinOp::Div,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.unary(depth)?;
            let at = left.at;
            left = Self::node(Node::Bin(op, Box::new(left), Box::new(right)), at);
        }
    }

    fn unary(&mut self, depth: usize) -> Res<Expr> {
        self.skip_ws();
        let at = self.pos;
        if depth > MAX_DEPTH {
            return self.err(at, format!("the expression nests deeper than {MAX_DEPTH} levels; simplify it"));
        }
        match self.peek() {
            Some('-' | '−') => {
                self.pos += 1;
                let a = self.unary(depth + 1)?;
                Ok(Self::node(Node::Neg(Box::new(a)), at))
            }
            Some('+') => {
                self.pos += 1;
                self.unary(depth + 1)
            }
            _ => self.power(depth),
        }
    }

    fn power(&mut self, depth: usize) -> Res<Expr> {
        let base = self.postfix(depth)?;
        self.skip_ws();
        let len = match (self.peek(), self.peek2()) {
            (Some('^'), _) => 1,
            (Some('*'), Some('*')) => 2,
            _ => return Ok(base),
        };
        self.pos += len;
        // Right-associative, and binds tighter than a unary minus on its left: -x^2 = -(x^2).
        let exp = self.unary(depth + 1)?;
        let at = base.at;
        Ok(Self::node(Node::Bin(BinOp::Pow, Box::new(base), Box::new(exp)), at))
    }

    fn postfix(&mut self, depth: usize) -> Res<Expr> {
        let mut e = self.atom(depth)?;
        loop {
            self.skip_ws();
            if self.peek() != Some('[') {
                return Ok(e);
            }
            self.pos += 1;
            self.skip_ws();
            let at = self.pos;
            let i = self.number()?;
            if !(i >= 0.0 && i.fract() == 0.0) {
                return self.err(at, format!("an index must be a whole number ≥ 0 (x[0] is the first coordinate), got {i}"));
            }
            self.expect(']', "']' after the index")?;
            e = Self::node(Node::Index(Box::new(e), i as usize), at);
        }
    }

    fn atom(&mut self, depth: usize) -> Res<Expr> {
        self.skip_ws();
        let at = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => Ok(Self::node(Node::Num(self.number()?), at)),
            Some('(') => {
                self.pos += 1;
                let e = self.expr(depth + 1)?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return self.err(self.pos, format!("expected ')' to close the '(' at character {}, {}", at + 1, self.found()));
                }
                self.pos += 1;
                Ok(e)
            }
            Some('[') => {
                self.pos += 1;
                let mut items = vec![self.expr(depth + 1)?];
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => {
                            self.pos += 1;
                            items.push(self.expr(depth + 1)?);
                        }
                        Some(']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return self.err(self.pos, format!("expected ',' or ']' in a vector, {}", self.found())),
                    }
                }
                self.vector_length(items.len(), at)?;
                Ok(Self::node(Node::Vector(items), at))
            }
            Some(c) if c.is_alphabetic() || c == '_' => self.name(depth),
            _ => self.err(at, format!("expected a number, x, t, '(', '[' or a function such as norm(...) or point(...), {}", self.found())),
        }
    }

    /// Every vector literal has the data dimension D, so all have one length.
    fn vector_length(&mut self, len: usize, at: usize) -> Res<()> {
        match self.vec_len {
            Some((d, _)) if d != len => {
                self.err(at, format!("this vector has {len} entries but an earlier one has {d}; every vector needs the data dimension D"))
            }
            _ => {
                self.vec_len.get_or_insert((len, at));
                Ok(())
            }
        }
    }

    fn name(&mut self, depth: usize) -> Res<Expr> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        match name.as_str() {
            "x" => return Ok(Self::node(Node::X, start)),
            "t" => return Ok(Self::node(Node::T, start)),
            _ => {}
        }
        let func = Func::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
        let shape = matches!(name.as_str(), "point" | "line" | "gaussian" | "obstacle");
        if func.is_none() && !shape {
            let hint = if name.is_ascii() { String::new() } else { " (names are plain ASCII letters)".into() };
            return self.err(
                start,
                format!(
                    "unknown name `{name}`{hint}; expected x, t, a function ({}) or a shape (point, line, gaussian, obstacle)",
                    Func::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        self.expect('(', &format!("'(' after `{name}`"))?;
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() != Some(')') {
            loop {
                args.push(self.expr(depth + 1)?);
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => break,
                    _ => return self.err(self.pos, format!("expected ',' or ')' in the arguments of `{name}`, {}", self.found())),
                }
            }
        }
        let close = self.pos;
        self.pos += 1;
        if let Some(f) = func {
            let (lo, hi) = f.arity();
            if args.len() < lo || args.len() > hi {
                let want = if lo == hi { lo.to_string() } else { format!("at least {lo}") };
                let at = args.get(hi).map_or(close, |a| a.at);
                return self.err(at, format!("`{name}` takes {want} argument(s), got {}", args.len()));
            }
            return Ok(Self::node(Node::Call(f, args), start));
        }
        let (term, eps) = self.shape(&name, args, close)?;
        if let Some((e, at)) = eps {
            match self.eps {
                Some((prev, _)) if prev != e => {
                    return self.err(at, format!("eps {e} differs from the eps {prev} given earlier; one eps applies to the whole reward"))
                }
                _ => self.eps = Some((e, at)),
            }
        }
        Ok(Self::node(Node::Shape(term, f32::NAN), start))
    }

    /// A built-in shape from its arguments, which must be constants.
    fn shape(&self, name: &str, args: Vec<Expr>, close: usize) -> Res<(Term, Option<(f32, usize)>)> {
        let arity: (usize, usize) = match name {
            "point" => (1, 2),
            "line" => (2, 3),
            "gaussian" => (2, 2),
            _ => (4, 4),
        };
        if args.len() < arity.0 || args.len() > arity.1 {
            let want = if arity.0 == arity.1 { arity.0.to_string() } else { format!("{} or {}", arity.0, arity.1) };
            let usage = match name {
                "point" => "point([x,y]) or point([x,y], eps)",
                "line" => "line(axis, c) or line(axis, c, eps)",
                "gaussian" => "gaussian([x,y], sigma)",
                _ => "obstacle([x,y], rho, q_star, eta)",
            };
            let at = args.get(arity.1).map_or(close, |a| a.at);
            return self.err(at, format!("`{name}` takes {want} arguments, got {}: {usage}", args.len()));
        }
        let vector = |a: &Expr, what: &str| -> Res<Vec<f32>> {
            match &a.node {
                Node::Vector(items) => items
                    .iter()
                    .map(|it| constant(it).map_or_else(|| self.err(it.at, format!("the {what} of `{name}` must hold plain numbers")), Ok))
                    .collect(),
                _ => self.err(a.at, format!("the {what} of `{name}` must be a vector like [2,0.5]")),
            }
        };
        let scalar = |a: &Expr, what: &str, ok: fn(f32) -> bool, rule: &str| -> Res<f32> {
            match (&a.node, constant(a)) {
                (_, Some(v)) if ok(v) => Ok(v),
                (_, Some(v)) => self.err(a.at, format!("the {what} of `{name}` must be {rule}, got {v}")),
                (Node::Vector(_), None) => self.err(a.at, format!("the {what} of `{name}` must be a number, not a vector")),
                _ => self.err(a.at, format!("the {what} of `{name}` must be a plain number")),
            }
        };
        let eps_arg = |a: Option<&Expr>| -> Res<Option<(f32, usize)>> { a.map(|a| scalar(a, "eps", |v| v > 0.0, "> 0").map(|e| (e, a.at))).transpose() };
        Ok(match name {
            "point" => (Term::Point { c: vector(&args[0], "centre")? }, eps_arg(args.get(1))?),
            "line" => {
                let axis = scalar(&args[0], "axis", |v| v >= 0.0 && v.fract() == 0.0, "a whole number ≥ 0 (0 = vertical line x_0 = c, 1 = horizontal)")?;
                let c = scalar(&args[1], "offset c", |_| true, "a number")?;
                (Term::Line { axis: axis as usize, c }, eps_arg(args.get(2))?)
            }
            "gaussian" => {
                let c = vector(&args[0], "centre")?;
                let sigma = scalar(&args[1], "σ", |v| v > 0.0, "> 0")?;
                (Term::Gaussian { c, sigma }, None)
            }
            _ => {
                let c = vector(&args[0], "centre")?;
                let rho = scalar(&args[1], "radius ρ", |v| v >= 0.0, "≥ 0")?;
                let q_star = scalar(&args[2], "range Q*", |v| v > 0.0, "> 0")?;
                let eta = scalar(&args[3], "strength η", |v| v >= 0.0, "≥ 0")?;
                (Term::Obstacle { c, rho, q_star, eta }, None)
            }
        })
    }

    /// An unsigned decimal number (a sign is a unary operator).
    fn number(&mut self) -> Res<f32> {
        self.skip_ws();
        let start = self.pos;
        let mut end = self.pos;
        let mut seen_digit = false;
        while let Some(&c) = self.chars.get(end) {
            if c.is_ascii_digit() {
                seen_digit = true;
            } else if c == '.' {
            } else if (c == 'e' || c == 'E') && seen_digit {
                if matches!(self.chars.get(end + 1), Some('+' | '-')) {
                    end += 1;
                }
            } else {
                break;
            }
            end += 1;
        }
        let text: String = self.chars[start..end].iter().collect();
        if !seen_digit {
            return self.err(start, format!("expected a number, {}", self.found()));
        }
        match text.parse::<f32>() {
            Ok(v) if v.is_finite() => {
                self.pos = end;
                Ok(v)
            }
            Ok(_) => self.err(start, format!("`{text}` is not a finite number")),
            Err(_) => self.err(start, format!("`{text}` is not a number; write e.g. 0.5 or 1e-3")),
        }
    }
}

/// Gives every shape the reward's one eps.
fn set_eps(e: &mut Expr, eps: f32) {
    match &mut e.node {
        Node::Shape(_, slot) => *slot = eps,
        Node::Index(a, _) | Node::Neg(a) => set_eps(a, eps),
        Node::Bin(_, a, b) => {
            set_eps(a, eps);
            set_eps(b, eps);
        }
        Node::Vector(items) | Node::Call(_, items) => items.iter_mut().for_each(|a| set_eps(a, eps)),
        Node::Num(_) | Node::X | Node::T => {}
    }
}

/// A constant: a number, possibly negated.
fn constant(e: &Expr) -> Option<f32> {
    match &e.node {
        Node::Num(v) => Some(*v),
        Node::Neg(a) => constant(a).map(|v| -v),
        _ => None,
    }
}

/// Flattens `e` into `Σ w·shape` with constant weights (the form of a reward before expressions
/// existed); false when `e` has any other shape. Weights fold exactly as the old parser's
/// (`sign × number`).
fn weighted_sum(e: &Expr, sign: f32, out: &mut Vec<(f32, Term)>) -> bool {
    match &e.node {
        Node::Bin(BinOp::Add, a, b) => weighted_sum(a, sign, out) && weighted_sum(b, sign, out),
        Node::Bin(BinOp::Sub, a, b) => weighted_sum(a, sign, out) && weighted_sum(b, -sign, out),
        Node::Neg(a) if !matches!(a.node, Node::Num(_)) => weighted_sum(a, -sign, out),
        Node::Shape(t, _) => {
            out.push((sign, t.clone()));
            true
        }
        Node::Bin(BinOp::Mul, a, b) => match (constant(a), &a.node, constant(b), &b.node) {
            (Some(w), _, _, Node::Shape(t, _)) | (_, Node::Shape(t, _), Some(w), _) => {
                out.push((sign * w, t.clone()));
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reward {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn fails_at(s: &str, at: usize) -> RewardParseError {
        let e = s.parse::<Reward>().expect_err(s);
        assert_eq!(e.at, at, "{s}: {e}");
        e
    }

    #[test]
    fn parses_the_issue_examples() {
        assert_eq!(parse("point([2,0.5])"), Reward { terms: vec![(1.0, Term::Point { c: vec![2.0, 0.5] })], eps: DEFAULT_EPS });
        let r = parse("gaussian([2,0.5], 0.5) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)");
        assert_eq!(
            r.terms,
            vec![
                (1.0, Term::Gaussian { c: vec![2.0, 0.5], sigma: 0.5 }),
                (0.5, Term::Obstacle { c: vec![1.0, 0.0], rho: 0.4, q_star: 0.5, eta: 1.0 })
            ]
        );
        assert_eq!(parse("line(1, -0.8)").terms, vec![(1.0, Term::Line { axis: 1, c: -0.8 })]);
    }

    #[test]
    fn signs_weights_eps_and_round_trip() {
        let r = parse(" -point([0, 0], 1e-2) - 2*line(0, 1.5) + gaussian([1,1],2)*3 ");
        assert_eq!(r.eps, 1e-2);
        assert_eq!(r.terms.iter().map(|t| t.0).collect::<Vec<_>>(), vec![-1.0, -2.0, 3.0]);
        assert_eq!(parse(&r.to_string()), r);
        assert_eq!(parse("-0.5*obstacle([1,0],0.4,0.5,1)").terms[0].0, -0.5);
    }

    #[test]
    fn errors_point_at_the_offending_character() {
        fails_at("point([2,0.5]", 13);
        fails_at("point([2 0.5])", 9);
        fails_at("pint([2,0.5])", 0);
        fails_at("point([2,0.5]) + ", 17);
        fails_at("point([2,0.5]) obstacle([1,0],1,1,1)", 15);
        fails_at("gaussian([2,0.5], -1)", 18);
        fails_at("gaussian([2,0.5])", 16);
        fails_at("point([2,0.5]) + gaussian([1,2,3], 1)", 26);
        fails_at("line(0.5, 1)", 5);
        fails_at("point(2)", 6);
        fails_at("obstacle([1,0], 0.4, 0.5, 1, 7)", 29);
        fails_at("point([2,abc])", 9);
        fails_at("", 0);
        fails_at("point([1,1], 0.1) + line(0, 1, 0.2)", 31);
        let e = fails_at("2*point([1e40,0])", 9);
        let shown = e.to_string();
        assert!(shown.contains("2*point([1e40,0])\n           ^"), "{shown}");
    }
}
