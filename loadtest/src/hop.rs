//! One hop of the pipeline next to its ceiling: our figure, the raw figure the same
//! machine reached in the same run for the same kind of work, and their ratio. Every
//! hop is reported in this one shape (the JSON's `hops` array and the plot), so hops
//! measured by different means read alike.

/// A hop's throughput and its ceiling's, in the same unit per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// "ours / ceiling", e.g. "detector from Kafka / Kafka consume".
    pub name: &'static str,
    /// What is counted, e.g. "readings" or "pages".
    pub unit: &'static str,
    pub rate: f64,
    pub ceiling: f64,
}

impl Hop {
    pub fn new(name: &'static str, unit: &'static str, rate: f64, ceiling: f64) -> Hop {
        Hop {
            name,
            unit,
            rate,
            ceiling,
        }
    }

    /// Our figure as a fraction of the ceiling (0 when the ceiling was not measured).
    pub fn ratio(&self) -> f64 {
        if self.ceiling > 0.0 {
            self.rate / self.ceiling
        } else {
            0.0
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "hop": self.name,
            "unit": self.unit,
            "rate_per_s": self.rate.round(),
            "ceiling_per_s": self.ceiling.round(),
            "ratio": (self.ratio() * 100.0).round() / 100.0,
        })
    }
}

/// `count` items over `took`, per second (a floor of a millisecond on `took` keeps a
/// run shorter than the clock's resolution finite).
pub fn per_second(count: usize, took: std::time::Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(0.001)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_reports_its_ratio_rounded_and_survives_a_missing_ceiling() {
        let hop = Hop::new("a / b", "rows", 1234.4, 2000.0);
        assert_eq!(
            hop.json(),
            serde_json::json!({"hop": "a / b", "unit": "rows", "rate_per_s": 1234.0,
                               "ceiling_per_s": 2000.0, "ratio": 0.62})
        );
        assert_eq!(Hop::new("a / b", "rows", 5.0, 0.0).ratio(), 0.0);
    }
}
