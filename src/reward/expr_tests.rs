//! Reward expressions: values, the built-in shapes inside them, type errors and a fuzzed parser.

use super::*;
use crate::reward_parse::RewardParseError;
use rand::{Rng, SeedableRng};

fn parse(s: &str) -> Reward {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn at(s: &str, x: &[f32], t: f32) -> f32 {
    let r = parse(s);
    r.checks_dim(x.len()).unwrap_or_else(|e| panic!("{s}: {e}"));
    r.eval_at(x, t)
}

/// Every operator and function against the f32 formula it stands for.
#[test]
fn every_operator_has_its_value() {
    let x = [0.5f32, -2.0];
    let t = 0.25f32;
    let cases: Vec<(&str, f32)> = vec![
        ("x[0] + x[1]", 0.5 + -2.0),
        ("x[0] - x[1]", 0.5 - -2.0),
        ("x[0] * x[1]", 0.5 * -2.0),
        ("x[0] / x[1]", 0.5 / -2.0),
        ("x[0] × x[1] ÷ 4 − 1", 0.5 * -2.0 / 4.0 - 1.0),
        ("x[1] ^ 3", (-2.0f32).powf(3.0)),
        ("x[0] ** 0.5", 0.5f32.powf(0.5)),
        ("-x[1]^2", -((-2.0f32).powf(2.0))),
        ("2^3^2", 2f32.powf(9.0)),
        ("t", t),
        ("x[0] < x[1]", 0.0),
        ("x[0] <= 0.5", 1.0),
        ("x[0] > x[1]", 1.0),
        ("x[1] >= -1", 0.0),
        ("x[0] == 0.5", 1.0),
        ("x[0] != 0.5", 0.0),
        ("where(x[0] > 0, 3, 4)", 3.0),
        ("where(x[1] > 0, 3, 4)", 4.0),
        ("abs(x[1])", 2.0),
        ("sqrt(x[0])", 0.5f32.sqrt()),
        ("exp(x[1])", (-2.0f32).exp()),
        ("log(x[0])", 0.5f32.ln()),
        ("min(x[0], x[1], 7)", -2.0),
        ("max(x[0], x[1])", 0.5),
        ("min(x)", -2.0),
        ("max(x)", 0.5),
        ("clamp(x[1], -1, 1)", -1.0),
        ("sin(x[1])", (-2.0f32).sin()),
        ("cos(x[1])", (-2.0f32).cos()),
        ("tanh(x[0])", 0.5f32.tanh()),
        ("norm(x - [2, 0.5])", ((0.5f32 - 2.0) * (0.5 - 2.0) + (-2.0f32 - 0.5) * (-2.0 - 0.5)).sqrt()),
        ("dot(x, [3, 1])", 0.5 * 3.0 + -2.0 * 1.0),
        ("dot(2 * x, x) / 2", (1.0 * 0.5 + -4.0 * -2.0) / 2.0),
        ("norm(abs(x))", (0.25f32 + 4.0).sqrt()),
        ("(x[0] + 1) * t", 1.5 * t),
    ];
    for (s, want) in cases {
        let got = at(s, &x, t);
        assert_eq!(got.to_bits(), want.to_bits(), "{s}: {got} vs {want}");
    }
}

/// The built-in shapes inside an expression are bitwise the hand-written terms.
#[test]
fn shapes_inside_expressions_are_the_built_in_terms() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let shapes = ["point([2, 0.5])", "line(1, -0.8)", "gaussian([2,0.5], 0.5)", "obstacle([1,0], 0.4, 0.5, 1.0)", "point([1,1], 0.01)"];
    for s in shapes {
        let builtin = parse(s);
        assert!(builtin.expression().is_none(), "{s} must stay a built-in term");
        let inside = parse(&format!("({s}) * 1 + 0 * t"));
        assert!(inside.expression().is_some());
        inside.checks_dim(2).unwrap();
        for _ in 0..2000 {
            let x = [rng.random_range(-3.0f32..3.0), rng.random_range(-3.0f32..3.0)];
            assert_eq!(builtin.eval(&x).to_bits(), inside.eval(&x).to_bits(), "{s} at {x:?}");
        }
    }
    // The example: -norm(x − c) + ½·obstacle, against its formula.
    let r = parse("-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)");
    let ob = Term::Obstacle { c: vec![1.0, 0.0], rho: 0.4, q_star: 0.5, eta: 1.0 };
    for _ in 0..1000 {
        let x = [rng.random_range(-3.0f32..3.0), rng.random_range(-3.0f32..3.0)];
        let n = ((x[0] - 2.0) * (x[0] - 2.0) + (x[1] - 0.5) * (x[1] - 0.5)).sqrt();
        assert_eq!(r.eval(&x).to_bits(), (-n + 0.5 * ob.eval(&x, DEFAULT_EPS)).to_bits());
    }
    assert_eq!(r.target(), None, "a negative norm has no point or gaussian target");
    assert_eq!(parse("0.5*obstacle([1,0], 0.4, 0.5, 1.0) + 2*t*0 + 3*gaussian([2, 0.5], 1)").target(), Some(&[2.0f32, 0.5][..]));
    assert_eq!(parse("-(point([1,1]) * 2) + norm(x)").target(), None);
}

/// Division by zero and the log or square root of a negative number are NaN, which the NaN rule
/// turns into a −inf log-weight (counted); a branch not taken does not poison `where`.
#[test]
fn domain_errors_are_nan_and_where_guards_them() {
    assert!(at("1 / x[0]", &[0.0, 1.0], 1.0).is_nan());
    assert!(at("-1 / (x[0] - x[0])", &[3.0, 1.0], 1.0).is_nan());
    assert!(at("log(x[1])", &[0.0, -1.0], 1.0).is_nan());
    assert!(at("sqrt(x[1])", &[0.0, -1.0], 1.0).is_nan());
    assert_eq!(at("where(x[0] != 0, 1 / x[0], -5)", &[0.0, 1.0], 1.0), -5.0);
}

#[test]
fn expressions_round_trip_and_serialise() {
    let s = "-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0) * where(t > 0.5, 1, 2)";
    let r = parse(s);
    assert_eq!(r.to_string(), s);
    assert_eq!(parse(&r.to_string()), r);
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"type\":\"expression\"") && json.contains("norm(x"), "{json}");
}

fn error(s: &str) -> RewardParseError {
    s.parse::<Reward>().expect_err(s)
}

fn type_error(s: &str, dim: usize) -> String {
    parse(s).checks_dim(dim).expect_err(s)
}

#[test]
fn errors_are_located_and_say_what_was_expected() {
    let e = error("pöint([1, 2])");
    assert_eq!(e.at, 0);
    assert!(e.message.contains("`pöint`") && !e.message.contains("`p`"), "{e}");
    let e = error("norm(x - [2, 0.5]");
    assert_eq!(e.at, 17);
    assert!(e.message.contains("expected ',' or ')'"), "{e}");
    assert_eq!(error("x[0] + * 2").at, 7);
    assert_eq!(error("x[0.5]").at, 2);
    assert_eq!(error("x[0] = 1").at, 5);
    assert_eq!(error("where(x[0], 1)").at, 13);
    assert_eq!(error("(x[0] + 1").at, 9);
    assert_eq!(error("gaussian(x, 1)").at, 9);
    assert_eq!(error("[1, 2] + [1, 2, 3]").at, 9);
    let shown = type_error("norm(x - [1, 2, 3])", 3 - 1);
    assert!(shown.contains("D = 2") && shown.contains("\n           ^"), "{shown}");
    let shown = type_error("x - [1, 2]", 2);
    assert!(shown.contains("must be a number"), "{shown}");
    assert!(type_error("x[2]", 2).contains("out of range"));
    assert!(type_error("norm(x[0])", 2).contains("must be a vector"));
    assert!(type_error("point([1,2,3])", 2).contains("D = 2"));
}

/// Random strings over the grammar's characters: the parser never panics, every error points
/// inside the string (or just past its end), and whatever parses also type-checks or fails with
/// a message (never a panic) and evaluates without panicking.
#[test]
fn fuzzed_strings_never_panic_and_every_error_is_located() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let pieces = [
        "x", "t", "[", "]", "(", ")", ",", "+", "-", "*", "/", "^", "**", "<", "<=", "==", "!=", ">", " ", "0", "1", "2.5", "1e3", ".", "e",
        "norm(", "dot(", "where(", "min(", "clamp(", "log(", "point(", "gaussian(", "obstacle(", "line(", "x[0]", "x[1]", "[1,2]", "ö", "×",
        "−", "abc", "1e99",
    ];
    let (mut ok, mut errors) = (0, 0);
    for _ in 0..20_000 {
        let len = rng.random_range(0..12);
        let s: String = (0..len).map(|_| pieces[rng.random_range(0..pieces.len())]).collect();
        match s.parse::<Reward>() {
            Ok(r) => {
                ok += 1;
                if r.checks_dim(2).is_ok() {
                    let _ = r.eval_at(&[0.3, -0.7], 0.5);
                }
            }
            Err(e) => {
                errors += 1;
                assert!(e.at <= s.chars().count(), "{s:?}: error at {} past the end", e.at);
                assert!(!e.message.is_empty());
                let shown = e.to_string();
                assert!(shown.contains(&format!("\n  {}^", " ".repeat(e.at))), "{shown}");
            }
        }
    }
    assert!(ok > 100 && errors > 100, "the fuzzer should hit both outcomes: {ok} parsed, {errors} refused");
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{}x[0]{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(deep.parse::<Reward>().is_err());
    let deep = format!("{}1", "-".repeat(10_000));
    assert!(deep.parse::<Reward>().is_err());
}
