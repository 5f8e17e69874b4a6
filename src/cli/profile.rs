//! `--profile [N]` on `steer` and `bench` (design: bench/PROFILING.md): a run cut to its first N
//! resampling intervals with NVTX ranges and no output files. Parsing only; turning profiling
//! on is `crate::run::profile`.

/// Intervals run by a bare `--profile`.
pub const DEFAULT_INTERVALS: &str = "2";

/// Parses the value of `--profile`.
pub fn parse_intervals(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("--profile takes a number of intervals ≥ 1, got `{s}`; e.g. --profile 2 (or a bare --profile for {DEFAULT_INTERVALS})")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_intervals;

    #[test]
    fn intervals_are_at_least_one() {
        assert_eq!(parse_intervals("3"), Ok(3));
        assert_eq!(parse_intervals(super::DEFAULT_INTERVALS), Ok(2));
        for bad in ["0", "-1", "x", ""] {
            assert!(parse_intervals(bad).unwrap_err().contains("≥ 1"), "{bad}");
        }
    }
}
