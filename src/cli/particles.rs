//! Particle-count lists for `--particles` (`bench`, `sweep`): a comma list, a doubling range, or both.
//!
//! ```text
//! LIST  := ITEM ("," ITEM)*
//! ITEM  := COUNT | COUNT ".." COUNT      a range: every power of two from the first to the last
//! COUNT := DIGITS | "2^" DIGITS          underscores allowed in DIGITS (1_048_576)
//! ```
//! `2^10..2^14` is 1024, 2048, 4096, 8192, 16384; `1000,2^20` is two counts. The result is sorted
//! and free of duplicates. `bench/peers/particles.py` is the same grammar for the Python peer.

use std::fmt;
use std::str::FromStr;

/// The largest count accepted, 2^40 (far past what fits in any device's memory; a typo guard).
pub const MAX_PARTICLES: u64 = 1 << 40;

/// A parsed, sorted, duplicate-free list of particle counts, each ≥ 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticleList(pub Vec<u64>);

impl ParticleList {
    pub fn counts(&self) -> &[u64] {
        &self.0
    }
}

impl fmt::Display for ParticleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|n| n.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for ParticleList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse(s).map(ParticleList)
    }
}

/// Parses a particle list (grammar in the module comment); errors say what to write instead.
pub fn parse(text: &str) -> Result<Vec<u64>, String> {
    if text.trim().is_empty() {
        return Err("empty particle list: give counts such as 1024,4096 or a range 2^10..2^14".into());
    }
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty item in particle list `{text}`: remove the extra comma"));
        }
        match item.split_once("..") {
            Some((lo_s, hi_s)) => {
                let (lo, hi) = (count(lo_s, text)?, count(hi_s, text)?);
                for (v, s) in [(lo, lo_s), (hi, hi_s)] {
                    if !v.is_power_of_two() {
                        return Err(format!(
                            "range `{item}`: {} is not a power of two; ranges double, so write both ends as powers \
                             of two (2^10..2^14) or give a comma list",
                            s.trim()
                        ));
                    }
                }
                if lo > hi {
                    return Err(format!("range `{item}` runs backwards: put the smaller count first"));
                }
                let mut v = lo;
                while v <= hi {
                    out.push(v);
                    v *= 2;
                }
            }
            None => out.push(count(item, text)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn count(raw: &str, whole: &str) -> Result<u64, String> {
    let s: String = raw.trim().chars().filter(|&c| c != '_').collect();
    let shown = raw.trim();
    let value = if let Some(e) = s.strip_prefix("2^") {
        let e: u32 = e
            .parse()
            .ok()
            .filter(|_| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("bad particle count `{shown}` in `{whole}`: after `2^` give an exponent, e.g. 2^14"))?;
        if e > 40 {
            return Err(format!("particle count {shown} is above the limit 2^40"));
        }
        1u64 << e
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad particle count `{shown}` in `{whole}`: expected a number such as 16384 or 2^14"));
        }
        s.parse::<u64>().map_err(|_| format!("particle count {shown} is above the limit 2^40"))?
    };
    if value == 0 {
        return Err(format!("particle count 0 in `{whole}`: every count must be at least 1"));
    }
    if value > MAX_PARTICLES {
        return Err(format!("particle count {shown} is above the limit 2^40"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn ranges_double_from_end_to_end() {
        assert_eq!(parse("2^10..2^14").unwrap(), vec![1024, 2048, 4096, 8192, 16384]);
        assert_eq!(parse("1..8").unwrap(), vec![1, 2, 4, 8]);
        assert_eq!(parse("2^20..2^20").unwrap(), vec![1 << 20]);
        assert_eq!(parse("2^10..2^30").unwrap().len(), 21);
    }

    #[test]
    fn lists_mix_forms_and_come_back_sorted_and_unique() {
        assert_eq!(parse("16384").unwrap(), vec![16384]);
        assert_eq!(parse(" 4096, 1000 ,2^10, 1_024 ").unwrap(), vec![1000, 1024, 4096]);
        assert_eq!(parse("2^2..2^4,3,8").unwrap(), vec![3, 4, 8, 16]);
        assert_eq!(parse("2^40").unwrap(), vec![1 << 40]);
    }

    #[test]
    fn bad_lists_are_errors_that_say_what_to_write() {
        let cases = [
            ("", "empty particle list"),
            ("   ", "empty particle list"),
            ("1024,,2048", "extra comma"),
            ("1024,", "extra comma"),
            ("0", "at least 1"),
            ("2^10..3000", "not a power of two"),
            ("2^14..2^10", "backwards"),
            ("abc", "expected a number"),
            ("-5", "expected a number"),
            ("1e6", "expected a number"),
            ("2^", "exponent"),
            ("2^x", "exponent"),
            ("2^41", "limit 2^40"),
            ("99999999999999999999999", "limit 2^40"),
            ("2000000000000", "limit 2^40"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "`{text}`: error `{err}` should mention `{want}`");
        }
    }
}
