//! The command-line form of a reward (SPEC §4), e.g.
//! `gaussian([2,0.5], 0.5) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)`.
//!
//! ```text
//! reward := ['+'|'-'] term (('+'|'-') term)*
//! term   := number '*' call | call ['*' number]
//! call   := point(c [, eps]) | line(axis, c [, eps]) | gaussian(c, σ) | obstacle(c, ρ, Q*, η)
//! c      := '[' number (',' number)* ']'
//! ```
//! Arguments are in SPEC order; `eps` (of `point` and `line`) defaults to 1e-3 and is one value
//! for the whole reward. A malformed string is an error that shows the string with a caret
//! under the offending character.

use std::fmt;
use std::str::FromStr;

use crate::reward::{Reward, Term, DEFAULT_EPS};

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
        write!(f, "\n  (terms: point([x,y]), line(axis, c), gaussian([x,y], sigma), obstacle([x,y], rho, q_star, eta); weights as 0.5*term; join with + or -)")
    }
}

impl FromStr for Reward {
    type Err = RewardParseError;
    fn from_str(s: &str) -> Result<Reward, RewardParseError> {
        Parser { chars: s.chars().collect(), pos: 0, input: s }.reward()
    }
}

impl fmt::Display for Reward {
    /// The parseable form, e.g. `1*point([2,0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vec = |c: &[f32]| format!("[{}]", c.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        for (k, (w, t)) in self.terms.iter().enumerate() {
            if k > 0 {
                f.write_str(" + ")?;
            }
            if *w != 1.0 {
                write!(f, "{w}*")?;
            }
            let eps = if self.eps != DEFAULT_EPS { format!(", {}", self.eps) } else { String::new() };
            match t {
                Term::Point { c } => write!(f, "point({}{eps})", vec(c))?,
                Term::Line { axis, c } => write!(f, "line({axis}, {c}{eps})")?,
                Term::Gaussian { c, sigma } => write!(f, "gaussian({}, {sigma})", vec(c))?,
                Term::Obstacle { c, rho, q_star, eta } => write!(f, "obstacle({}, {rho}, {q_star}, {eta})", vec(c))?,
            }
        }
        Ok(())
    }
}

/// One parsed argument and where it started.
enum Arg {
    Num(f32, usize),
    Vec(Vec<f32>, usize),
}

impl Arg {
    fn at(&self) -> usize {
        match self {
            Arg::Num(_, p) | Arg::Vec(_, p) => *p,
        }
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn err<T>(&self, at: usize, message: impl Into<String>) -> Result<T, RewardParseError> {
        Err(RewardParseError { input: self.input.to_string(), at, message: message.into() })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
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

    fn expect(&mut self, c: char, what: &str) -> Result<(), RewardParseError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(self.pos, format!("expected {what}, {}", self.found()))
        }
    }

    fn reward(&mut self) -> Result<Reward, RewardParseError> {
        let mut terms = Vec::new();
        let mut eps: Option<(f32, usize)> = None;
        let mut dim: Option<(usize, usize)> = None;
        self.skip_ws();
        if self.peek().is_none() {
            return self.err(0, "the reward is empty; give at least one term, e.g. point([2,0.5])");
        }
        let mut sign = 1.0f32;
        if let Some(c @ ('+' | '-')) = self.peek() {
            // A leading sign belongs to the term unless it starts a number ("-0.5*obstacle").
            if !self.chars.get(self.pos + 1).is_some_and(|d| d.is_ascii_digit() || *d == '.') {
                sign = if c == '-' { -1.0 } else { 1.0 };
                self.pos += 1;
            }
        }
        loop {
            let (weight, term, term_eps) = self.term()?;
            if let Some((e, at)) = term_eps {
                match eps {
                    Some((prev, _)) if prev != e => {
                        return self.err(at, format!("eps {e} differs from the eps {prev} given earlier; one eps applies to the whole reward"))
                    }
                    _ => eps = Some((e, at)),
                }
            }
            if let Some((c, at)) = term.1 {
                match dim {
                    Some((d, _)) if d != c => {
                        return self.err(at, format!("this vector has {c} entries but an earlier one has {d}; every vector needs the data dimension D"))
                    }
                    _ => dim = Some((c, at)),
                }
            }
            terms.push((sign * weight, term.0));
            self.skip_ws();
            match self.peek() {
                None => break,
                Some('+') => sign = 1.0,
                Some('-') => sign = -1.0,
                Some(_) => return self.err(self.pos, format!("expected '+', '-' or the end after a term, {}", self.found())),
            }
            self.pos += 1;
        }
        Ok(Reward { terms, eps: eps.map_or(DEFAULT_EPS, |e| e.0) })
    }

    /// A weighted term: the weight, the term with its vector length (and where), its eps.
    #[allow(clippy::type_complexity)]
    fn term(&mut self) -> Result<(f32, (Term, Option<(usize, usize)>), Option<(f32, usize)>), RewardParseError> {
        self.skip_ws();
        let mut weight = 1.0f32;
        let starts_number = self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+');
        if starts_number {
            let at = self.pos;
            weight = self.number()?;
            self.expect('*', "'*' between a weight and its term")?;
            self.finite(weight, at, "weight")?;
        }
        let (term, eps) = self.call()?;
        self.skip_ws();
        if self.peek() == Some('*') {
            if starts_number {
                return self.err(self.pos, "a term takes one weight; remove the second '*'");
            }
            self.pos += 1;
            self.skip_ws();
            let at = self.pos;
            weight = self.number()?;
            self.finite(weight, at, "weight")?;
        }
        Ok((weight, term, eps))
    }

    fn finite(&self, v: f32, at: usize, what: &str) -> Result<(), RewardParseError> {
        if v.is_finite() {
            Ok(())
        } else {
            self.err(at, format!("the {what} must be a finite number"))
        }
    }

    fn number(&mut self) -> Result<f32, RewardParseError> {
        self.skip_ws();
        let start = self.pos;
        let mut end = self.pos;
        if matches!(self.chars.get(end), Some('+' | '-')) {
            end += 1;
        }
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
            _ => self.err(start, format!("`{text}` is not a finite number")),
        }
    }

    fn arg(&mut self) -> Result<Arg, RewardParseError> {
        self.skip_ws();
        let at = self.pos;
        if self.peek() == Some('[') {
            self.pos += 1;
            let mut v = vec![self.number()?];
            loop {
                self.skip_ws();
                match self.peek() {
                    Some(',') => {
                        self.pos += 1;
                        v.push(self.number()?);
                    }
                    Some(']') => {
                        self.pos += 1;
                        return Ok(Arg::Vec(v, at));
                    }
                    _ => return self.err(self.pos, format!("expected ',' or ']' in a vector, {}", self.found())),
                }
            }
        }
        Ok(Arg::Num(self.number()?, at))
    }

    #[allow(clippy::type_complexity)]
    fn call(&mut self) -> Result<((Term, Option<(usize, usize)>), Option<(f32, usize)>), RewardParseError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let arity: (usize, usize) = match name.as_str() {
            "point" => (1, 2),
            "line" => (2, 3),
            "gaussian" => (2, 2),
            "obstacle" => (4, 4),
            "" => return self.err(start, format!("expected a reward term (point, line, gaussian, obstacle), {}", self.found())),
            _ => return self.err(start, format!("unknown reward term `{name}`; expected point, line, gaussian or obstacle")),
        };
        self.expect('(', &format!("'(' after `{name}`"))?;
        let mut args = Vec::new();
        self.skip_ws();
        if self.peek() != Some(')') {
            loop {
                args.push(self.arg()?);
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
        if args.len() < arity.0 || args.len() > arity.1 {
            let want = if arity.0 == arity.1 { arity.0.to_string() } else { format!("{} or {}", arity.0, arity.1) };
            let usage = match name.as_str() {
                "point" => "point([x,y]) or point([x,y], eps)",
                "line" => "line(axis, c) or line(axis, c, eps)",
                "gaussian" => "gaussian([x,y], sigma)",
                _ => "obstacle([x,y], rho, q_star, eta)",
            };
            let at = args.get(arity.1).map_or(close, Arg::at);
            return self.err(at, format!("`{name}` takes {want} arguments, got {}: {usage}", args.len()));
        }
        let vector = |p: &Self, a: &Arg, what: &str| -> Result<(Vec<f32>, usize), RewardParseError> {
            match a {
                Arg::Vec(v, at) => Ok((v.clone(), *at)),
                Arg::Num(_, at) => p.err(*at, format!("the {what} of `{name}` must be a vector like [2,0.5]")),
            }
        };
        let scalar = |p: &Self, a: &Arg, what: &str, ok: fn(f32) -> bool, rule: &str| -> Result<f32, RewardParseError> {
            match a {
                Arg::Num(v, _) if ok(*v) => Ok(*v),
                Arg::Num(v, at) => p.err(*at, format!("the {what} of `{name}` must be {rule}, got {v}")),
                Arg::Vec(_, at) => p.err(*at, format!("the {what} of `{name}` must be a number, not a vector")),
            }
        };
        let eps_arg = |p: &Self, a: Option<&Arg>| -> Result<Option<(f32, usize)>, RewardParseError> {
            a.map(|a| scalar(p, a, "eps", |v| v > 0.0, "> 0").map(|e| (e, a.at()))).transpose()
        };
        Ok(match name.as_str() {
            "point" => {
                let (c, at) = vector(self, &args[0], "centre")?;
                let dim = Some((c.len(), at));
                ((Term::Point { c }, dim), eps_arg(self, args.get(1))?)
            }
            "line" => {
                let axis = scalar(self, &args[0], "axis", |v| v >= 0.0 && v.fract() == 0.0, "a whole number ≥ 0 (0 = vertical line x_0 = c, 1 = horizontal)")?;
                let c = scalar(self, &args[1], "offset c", |_| true, "a number")?;
                ((Term::Line { axis: axis as usize, c }, None), eps_arg(self, args.get(2))?)
            }
            "gaussian" => {
                let (c, at) = vector(self, &args[0], "centre")?;
                let sigma = scalar(self, &args[1], "σ", |v| v > 0.0, "> 0")?;
                ((Term::Gaussian { c: c.clone(), sigma }, Some((c.len(), at))), None)
            }
            _ => {
                let (c, at) = vector(self, &args[0], "centre")?;
                let rho = scalar(self, &args[1], "radius ρ", |v| v >= 0.0, "≥ 0")?;
                let q_star = scalar(self, &args[2], "range Q*", |v| v > 0.0, "> 0")?;
                let eta = scalar(self, &args[3], "strength η", |v| v >= 0.0, "≥ 0")?;
                ((Term::Obstacle { c: c.clone(), rho, q_star, eta }, Some((c.len(), at))), None)
            }
        })
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
