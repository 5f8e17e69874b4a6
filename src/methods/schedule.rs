//! Resampling schedules (docs/schedules.md): which grid indices FK steering weighs and resamples at.

use std::fmt;

/// How the user asked for the schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduleSpec {
    pub t_start: f64,
    pub t_end: f64,
    /// `count` points from `t_start` to `t_end` (default 5)...
    pub count: usize,
    /// ...or every `every` grid steps in that range, when given.
    pub every: Option<usize>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self { t_start: 0.6, t_end: 0.95, count: 5, every: None }
    }
}

/// Grid indices in increasing order, the last one always the final time (`steps`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Schedule {
    pub steps: Vec<usize>,
    pub grid: usize,
    /// Points asked for in the range that rounding to the grid merged away (docs/schedules.md);
    /// said when the schedule is printed, so that 1,000 requested points becoming 9 is not silent.
    #[serde(skip)]
    pub merged: usize,
}

impl ScheduleSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.t_start.is_finite() && self.t_end.is_finite()) {
            return Err("--t-start and --t-end must be finite".into());
        }
        if !(0.0 <= self.t_start && self.t_start < self.t_end && self.t_end <= 1.0) {
            return Err(format!(
                "need 0 ≤ --t-start < --t-end ≤ 1, got t_start = {} and t_end = {}; e.g. --t-start 0.6 --t-end 0.95",
                self.t_start, self.t_end
            ));
        }
        if self.count == 0 {
            return Err("--resample-count must be at least 1 (the final time is always added)".into());
        }
        if self.every == Some(0) {
            return Err("--resample-every must be at least 1 grid step".into());
        }
        Ok(())
    }

    /// The grid indices for `steps` grid steps (docs/schedules.md): the index nearest to
    /// `t_start + j·(t_end − t_start)/count` for `j = 0..count−1`, or every `every` steps from
    /// the index nearest `t_start` up to the one nearest `t_end`; indices 0 (nothing to weigh at
    /// the noise) and duplicates are dropped; the final index `steps` is always added.
    pub fn resolve(&self, steps: usize) -> Result<Schedule, String> {
        self.validate()?;
        let nearest = |t: f64| (t * steps as f64).round() as usize;
        let mut v: Vec<usize> = match self.every {
            None => (0..self.count).map(|j| nearest(self.t_start + j as f64 * (self.t_end - self.t_start) / self.count as f64)).collect(),
            Some(k) => (nearest(self.t_start)..=nearest(self.t_end)).step_by(k).collect(),
        };
        v.retain(|&s| s >= 1 && s <= steps);
        let asked = v.len();
        v.sort_unstable();
        v.dedup();
        let merged = asked - v.len();
        if v.last() != Some(&steps) {
            v.push(steps);
        }
        Ok(Schedule { steps: v, grid: steps, merged })
    }
}

impl Schedule {
    /// Only the final time (potentials `is` and `bon`, docs/steering.md).
    pub fn final_only(steps: usize) -> Schedule {
        Schedule { steps: vec![steps], grid: steps, merged: 0 }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.steps.iter().map(|&s| format!("{s} (t = {})", crate::format::number(s as f64 / self.grid as f64))).collect();
        write!(f, "{}", parts.join(", "))?;
        if self.merged > 0 {
            write!(
                f,
                "; {} requested point(s) fell on a grid index already taken and were merged (the grid has {} steps: raise --steps or ask for fewer points)",
                crate::format::count(self.merged as u64),
                self.grid
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_five_points_and_the_end() {
        // t = 0.6, 0.67, 0.74, 0.81, 0.88 on 100 steps, then 1.
        let s = ScheduleSpec::default().resolve(100).unwrap();
        assert_eq!(s.steps, vec![60, 67, 74, 81, 88, 100]);
        // 0.6 + 0.07·j on 10 steps: 0.6, 0.67, 0.74, 0.81, 0.88 → 6, 7, 7, 8, 9 → deduplicated.
        let s = ScheduleSpec::default().resolve(10).unwrap();
        assert_eq!((s.steps.clone(), s.merged), (vec![6, 7, 8, 9, 10], 1));
    }

    #[test]
    fn printed_times_are_short_and_merged_points_are_said() {
        let s = ScheduleSpec { t_start: 0.6, t_end: 0.95, count: 1000, every: None }.resolve(10).unwrap();
        assert_eq!(s.steps, vec![6, 7, 8, 9, 10]);
        let text = s.to_string();
        assert!(text.contains("996 requested point(s)") && text.contains("raise --steps"), "{text}");
        let s = ScheduleSpec { t_start: 0.2, t_end: 0.9, count: 2, every: None }.resolve(3).unwrap();
        assert_eq!(s.to_string(), "1 (t = 0.3333), 2 (t = 0.6667), 3 (t = 1)");
        // A point at the final time itself is not a merge.
        assert_eq!(ScheduleSpec { t_start: 0.5, t_end: 1.0, count: 5, every: Some(25) }.resolve(100).unwrap().merged, 0);
    }

    #[test]
    fn every_k_steps_and_the_final_time_is_not_repeated() {
        let s = ScheduleSpec { t_start: 0.5, t_end: 1.0, count: 5, every: Some(20) }.resolve(100).unwrap();
        assert_eq!(s.steps, vec![50, 70, 90, 100]);
        let s = ScheduleSpec { t_start: 0.0, t_end: 1.0, count: 2, every: None }.resolve(4).unwrap();
        assert_eq!(s.steps, vec![2, 4], "index 0 is dropped");
    }

    #[test]
    fn bad_ranges_are_errors() {
        for (a, b) in [(0.9, 0.6), (0.5, 0.5), (-0.1, 0.5), (0.2, 1.5), (f64::NAN, 0.5)] {
            let e = ScheduleSpec { t_start: a, t_end: b, ..Default::default() }.resolve(100).unwrap_err();
            assert!(e.contains("--t-start") || e.contains("finite"), "{e}");
        }
        assert!(ScheduleSpec { count: 0, ..Default::default() }.resolve(100).is_err());
        assert!(ScheduleSpec { every: Some(0), ..Default::default() }.resolve(100).is_err());
    }
}
