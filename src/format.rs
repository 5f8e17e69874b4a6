//! Numbers for people: counts with thousands separators, reals with a few significant digits,
//! huge or tiny magnitudes in scientific notation (issue 13, item 7: "1e30" was printed with
//! thirty digits and `t = 0.6666666666666666` in full).

/// `17,179,869,184`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A real number for a message: at most 4 decimals without trailing zeros for magnitudes in
/// [1e-3, 1e6) (`0.6667`, `2.5`, `100`), else scientific with 4 significant digits (`1e30`,
/// `1.235e-7`); `inf`, `-inf` and `NaN` as such.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() { "NaN".into() } else if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = x.abs();
    if a == 0.0 || (1e-3..1e6).contains(&a) {
        let rounded = (x * 1e4).round() / 1e4;
        if rounded == 0.0 {
            return "0".into();
        }
        let s = format!("{rounded:.4}");
        return s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    let s = format!("{x:.3e}");
    let (mantissa, exponent) = s.split_once('e').expect("{:e} has an exponent");
    let mantissa = if mantissa.contains('.') { mantissa.trim_end_matches('0').trim_end_matches('.') } else { mantissa };
    format!("{mantissa}e{exponent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(17_179_869_184), "17,179,869,184");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(2.0 / 3.0), "0.6667");
        assert_eq!(number(0.6), "0.6");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(-2.5), "-2.5");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1e30), "1e30");
        assert_eq!(number(1.23456e30), "1.235e30");
        assert_eq!(number(-1.5e-7), "-1.5e-7");
        assert_eq!(number(f64::INFINITY), "inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(123456.7), "123456.7");
    }
}
