//! Kaplan-Meier survival free of failure, with Greenwood variance and log-log
//! confidence intervals (which stay inside [0, 1], unlike the plain Greenwood band).
//!
//! Each pump contributes one observation: the days from when it entered observation
//! to its first failure (an event) or to the end of its observation (censored).

/// One pump's time under observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub days: f64,
    /// True if the pump failed at `days`; false if observation ended without failure.
    pub failed: bool,
}

/// The estimate just after one distinct failure time.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Step {
    pub days: f64,
    /// Pumps still observed (neither failed nor censored) just before `days`.
    pub at_risk: usize,
    pub failures: usize,
    /// Pumps censored since the previous step, up to and including `days`.
    pub censored: usize,
    pub survival: f64,
    pub lower: f64,
    pub upper: f64,
}

/// z for a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// The Kaplan-Meier curve: one step per distinct failure time, in time order. A
/// pump censored at the same time as a failure is counted at risk for it (the usual
/// convention: censoring happens just after). Observations with a negative or
/// non-finite time are ignored.
pub fn kaplan_meier(observations: &[Observation], z: f64) -> Vec<Step> {
    let mut sorted: Vec<Observation> = observations
        .iter()
        .copied()
        .filter(|o| o.days.is_finite() && o.days >= 0.0)
        .collect();
    sorted.sort_by(|a, b| a.days.total_cmp(&b.days));
    let mut at_risk = sorted.len();
    let mut survival = 1.0;
    let mut greenwood = 0.0; // sum of d / (n (n - d))
    let mut censored_since = 0;
    let mut steps = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].days;
        let same: Vec<&Observation> = sorted[i..].iter().take_while(|o| o.days == t).collect();
        let failures = same.iter().filter(|o| o.failed).count();
        let censored = same.len() - failures;
        if failures > 0 {
            let (n, d) = (at_risk as f64, failures as f64);
            survival *= 1.0 - d / n;
            if at_risk > failures {
                greenwood += d / (n * (n - d));
            }
            let (lower, upper) = log_log_interval(survival, greenwood, z);
            steps.push(Step {
                days: t,
                at_risk,
                failures,
                censored: censored_since + censored,
                survival,
                lower,
                upper,
            });
            censored_since = 0;
        } else {
            censored_since += censored;
        }
        at_risk -= same.len();
        i += same.len();
    }
    steps
}

/// The log-log interval: S^exp(±z·σ), σ² = Greenwood sum / (ln S)².
fn log_log_interval(survival: f64, greenwood: f64, z: f64) -> (f64, f64) {
    if survival <= 0.0 {
        return (0.0, 0.0);
    }
    if survival >= 1.0 {
        return (1.0, 1.0);
    }
    let ln = survival.ln();
    let sigma = (greenwood / (ln * ln)).sqrt();
    (
        survival.powf((z * sigma).exp()),
        survival.powf((-z * sigma).exp()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(list: &[(f64, bool)]) -> Vec<Observation> {
        list.iter()
            .map(|&(days, failed)| Observation { days, failed })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-4
    }

    /// Six pumps: failures at 1, 3, 3 and 5 days; censored at 2 and 4. Worked by hand:
    /// S(1) = 5/6; S(3) = 5/6 · (1 - 2/4) = 5/12; S(5) = 0. Greenwood sum at 1 is
    /// 1/(6·5); the log-log interval at 1 is S^exp(±1.96·σ) with σ² = (1/30)/ln(5/6)².
    #[test]
    fn a_small_cohort_matches_the_hand_computed_curve() {
        let steps = kaplan_meier(
            &obs(&[
                (1.0, true),
                (2.0, false),
                (3.0, true),
                (3.0, true),
                (4.0, false),
                (5.0, true),
            ]),
            Z_95,
        );
        let summary: Vec<(f64, usize, usize, usize)> = steps
            .iter()
            .map(|s| (s.days, s.at_risk, s.failures, s.censored))
            .collect();
        assert_eq!(
            summary,
            vec![(1.0, 6, 1, 0), (3.0, 4, 2, 1), (5.0, 1, 1, 1)]
        );
        assert!(close(steps[0].survival, 5.0 / 6.0));
        assert!(close(steps[1].survival, 5.0 / 12.0));
        assert_eq!(steps[2].survival, 0.0);

        let ln = (5.0_f64 / 6.0).ln();
        let sigma = ((1.0 / 30.0) / (ln * ln)).sqrt();
        let lower = (5.0_f64 / 6.0).powf((Z_95 * sigma).exp());
        let upper = (5.0_f64 / 6.0).powf((-Z_95 * sigma).exp());
        assert!(close(steps[0].lower, lower) && close(steps[0].upper, upper));
        assert!(
            close(lower, 0.2732) && close(upper, 0.9747),
            "{lower} {upper}"
        );
        for s in &steps {
            assert!(s.lower <= s.survival && s.survival <= s.upper, "{s:?}");
        }
    }

    #[test]
    fn no_failures_means_no_steps_and_full_survival() {
        let steps = kaplan_meier(&obs(&[(10.0, false), (20.0, false)]), Z_95);
        assert!(steps.is_empty());
    }

    #[test]
    fn censoring_at_a_failure_time_counts_the_censored_pump_at_risk() {
        // Two pumps at day 5, one failed, one censored: both were at risk.
        let steps = kaplan_meier(&obs(&[(5.0, true), (5.0, false), (9.0, true)]), Z_95);
        assert_eq!(steps[0].at_risk, 3);
        assert!(close(steps[0].survival, 2.0 / 3.0));
        assert_eq!(steps[1].at_risk, 1);
        assert_eq!(steps[1].survival, 0.0);
    }

    #[test]
    fn invalid_times_are_ignored() {
        let steps = kaplan_meier(&obs(&[(-1.0, true), (f64::NAN, true), (2.0, true)]), Z_95);
        assert_eq!(steps.len(), 1);
        assert_eq!((steps[0].at_risk, steps[0].survival), (1, 0.0));
    }
}
