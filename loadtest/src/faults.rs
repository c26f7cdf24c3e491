//! The fault mix of a load test (`fleet-loadtest --faults`): which fraction of the
//! fleet's pumps carry which fault. Every fault is one the simulator already produces
//! (`occlusion`, `missed-refill`, ... : its [`FaultKind`] names, with `-` or `_`),
//! drawn per pump with that probability, plus `low-reservoir`: the pump's last reading
//! at its low-reservoir threshold, as the detector hop injects it
//! ([`hop_detector::end_low`]), on one pump in `round(1 / fraction)`.

use std::collections::BTreeMap;
use std::str::FromStr;

use fleet_core::Reading;
use fleet_simulator::{FaultKind, FaultMix, FaultShare};

use crate::{harness, hop_detector};

/// A parsed `--faults`: `KIND=FRACTION,...`; empty (or `none`) for a healthy fleet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// The simulator's faults with their fractions.
    simulated: Vec<(FaultKind, f64)>,
    /// The fraction of pumps whose last reading is at the low-reservoir threshold.
    low_reservoir: f64,
}

/// The name `--faults` takes for the end-at-threshold fault.
pub const LOW_RESERVOIR: &str = "low-reservoir";

impl FromStr for Faults {
    type Err = String;

    fn from_str(text: &str) -> Result<Faults, String> {
        let mut faults = Faults::default();
        let text = text.trim();
        if text.is_empty() || text == "none" {
            return Ok(faults);
        }
        for part in text.split(',') {
            let (name, fraction) = part.split_once('=').ok_or_else(|| {
                format!("`{part}` is not KIND=FRACTION (e.g. low-reservoir=0.05,occlusion=0.02)")
            })?;
            let name = name.trim().replace('_', "-");
            let fraction: f64 = fraction
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the fraction is not a number"))?;
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(format!(
                    "`{part}`: the fraction must be above 0 and at most 1"
                ));
            }
            if name == LOW_RESERVOIR {
                faults.low_reservoir = fraction;
                continue;
            }
            let kind = FaultKind::ALL
                .into_iter()
                .filter(|k| *k != FaultKind::None)
                .find(|k| k.name().replace('_', "-") == name)
                .ok_or_else(|| {
                    let known: Vec<String> = std::iter::once(LOW_RESERVOIR.to_owned())
                        .chain(
                            FaultKind::ALL[1..]
                                .iter()
                                .map(|k| k.name().replace('_', "-")),
                        )
                        .collect();
                    format!("unknown fault `{name}` (known: {})", known.join(", "))
                })?;
            if faults.simulated.iter().any(|(k, _)| *k == kind) {
                return Err(format!("`{name}` is given twice"));
            }
            faults.simulated.push((kind, fraction));
        }
        let total: f64 = faults.simulated.iter().map(|(_, f)| f).sum();
        if total > 1.0 + 1e-9 {
            return Err(format!(
                "the simulator's faults add up to {total}, more than the whole fleet"
            ));
        }
        Ok(faults)
    }
}

impl Faults {
    /// The simulated fleet with these faults: its readings and, per fault (named as
    /// `--faults` names it), how many pumps carry it (`none` for the healthy ones; a
    /// pump whose last reading was put at its threshold counts under `low-reservoir`
    /// too).
    pub fn fleet(
        &self,
        gateways: usize,
        per_gateway: usize,
    ) -> (Vec<Reading>, BTreeMap<String, usize>) {
        let mix = self
            .simulated
            .iter()
            .fold(FaultMix::none(), |mix, &(kind, fraction)| {
                mix.with(kind, FaultShare::Probability(fraction))
            });
        let (mut readings, pumps) = harness::simulated_fleet(gateways, per_gateway, mix);
        // Named as `--faults` names them.
        let mut pumps: BTreeMap<String, usize> = pumps
            .into_iter()
            .map(|(kind, n)| (kind.replace('_', "-"), n))
            .collect();
        if self.low_reservoir > 0.0 {
            let every = (1.0 / self.low_reservoir).round().max(1.0) as usize;
            let low = hop_detector::end_low(&mut readings, every);
            pumps.insert(LOW_RESERVOIR.to_owned(), low);
        }
        (readings, pumps)
    }

    /// The mix as given, for the JSON: fraction per fault name.
    pub fn json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        if self.low_reservoir > 0.0 {
            out.insert(LOW_RESERVOIR.into(), self.low_reservoir.into());
        }
        for (kind, fraction) in &self.simulated {
            out.insert(kind.name().replace('_', "-"), (*fraction).into());
        }
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_is_parsed_and_bad_ones_are_refused_by_name() {
        let faults: Faults = "low-reservoir=0.1, occlusion=0.02,missed_refill=0.03"
            .parse()
            .expect("valid");
        assert_eq!(faults.low_reservoir, 0.1);
        assert_eq!(
            faults.simulated,
            vec![
                (FaultKind::Occlusion, 0.02),
                (FaultKind::MissedRefill, 0.03)
            ]
        );
        assert_eq!("".parse::<Faults>(), Ok(Faults::default()));
        for (bad, says) in [
            ("occlusion", "KIND=FRACTION"),
            ("occlusion=x", "not a number"),
            ("occlusion=1.5", "at most 1"),
            ("occlusion=0", "above 0"),
            ("leaky=0.1", "unknown fault `leaky`"),
            ("occlusion=0.6,motor-stall=0.6", "more than the whole fleet"),
            ("occlusion=0.1,occlusion=0.2", "twice"),
        ] {
            let error = bad.parse::<Faults>().expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn the_fleet_carries_the_faults_and_counts_them() {
        let faults: Faults = "low-reservoir=0.1".parse().expect("valid");
        let (readings, pumps) = faults.fleet(40, 10);
        assert_eq!(pumps[LOW_RESERVOIR], 4);
        let low = readings
            .iter()
            .filter(|r| r.reservoir_ml <= r.low_reservoir_threshold_ml)
            .count();
        assert_eq!(low, 4);
        let (_, pumps) = Faults::default().fleet(10, 5);
        assert_eq!(pumps.get("none"), Some(&10));
        let (_, pumps) = "missed-refill=1"
            .parse::<Faults>()
            .expect("valid")
            .fleet(5, 24 * 60);
        assert_eq!(pumps.get("missed-refill"), Some(&5), "{pumps:?}");
    }
}
