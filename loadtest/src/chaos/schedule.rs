//! What the chaos test kills, and when: a schedule drawn from a seed before anything
//! runs, so that a run can be repeated and its schedule printed.
//!
//! The schedule is made of rounds; each round kills every component once, in an order
//! shuffled afresh, so that however short the run, kills are spread over all of them.

use std::fmt;
use std::time::Duration;

/// A part of the system the chaos test kills with SIGKILL and starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    Gateway,
    Mosquitto,
    Ingest,
    Kafka,
    Detector,
    Notifier,
    Archiver,
    Postgres,
}

impl Component {
    pub const ALL: [Component; 8] = [
        Component::Gateway,
        Component::Mosquitto,
        Component::Ingest,
        Component::Kafka,
        Component::Detector,
        Component::Notifier,
        Component::Archiver,
        Component::Postgres,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Mosquitto => "mosquitto",
            Component::Ingest => "ingest",
            Component::Kafka => "kafka",
            Component::Detector => "detector",
            Component::Notifier => "notifier",
            Component::Archiver => "archiver",
            Component::Postgres => "postgres",
        }
    }

    /// The process the harness started (a name in `demo::services::Processes`), or
    /// `None` for the stack's components, which `deploy/local/stack.sh` starts.
    pub fn process(self) -> Option<&'static str> {
        match self {
            Component::Gateway => Some("fleet-gateway"),
            Component::Ingest => Some("fleet-ingest"),
            Component::Detector => Some("fleet-detector"),
            Component::Notifier => Some("fleet-notifier"),
            Component::Archiver => Some("fleet-archiver"),
            Component::Mosquitto | Component::Kafka | Component::Postgres => None,
        }
    }
}

impl Component {
    /// A Kafka consumer-group member (its partitions move to its restarted self only
    /// once the group has noticed it is gone).
    pub fn group_member(self) -> bool {
        matches!(
            self,
            Component::Detector | Component::Notifier | Component::Archiver
        )
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kill: the component, how long it stays down before it is started again, and
/// how long the system runs undisturbed once it has recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub component: Component,
    pub down: Duration,
    pub pause: Duration,
}

/// SplitMix64: small, fast and plenty for a schedule (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias is negligible for the small n used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `steps` kills drawn from `seed`: rounds of every component in a shuffled order;
/// each stays down 0-2 s (consumer-group members `member_down` more) and the pause
/// after its recovery is `interval` ± 50 %.
pub fn schedule(seed: u64, interval: Duration, member_down: Duration, steps: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(steps);
    let interval_ms = interval.as_millis().max(1) as u64;
    while out.len() < steps {
        let mut round = Component::ALL;
        for i in (1..round.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            round.swap(i, j);
        }
        for component in round {
            let mut down = Duration::from_millis(rng.below(2001));
            if component.group_member() {
                down += member_down;
            }
            let pause = Duration::from_millis(interval_ms / 2 + rng.below(interval_ms + 1));
            out.push(Step {
                component,
                down,
                pause,
            });
        }
    }
    out.truncate(steps);
    out
}

/// The schedule as one line per kill, for the run's log.
pub fn render(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "  {:>3}. kill -9 {:<9} down {:>4} ms, then {:>5} ms undisturbed\n",
                i + 1,
                s.component.name(),
                s.down.as_millis(),
                s.pause.as_millis()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_schedule_is_the_seeds_and_each_round_kills_every_component_once() {
        let a = schedule(7, Duration::from_secs(4), Duration::ZERO, 20);
        assert_eq!(a, schedule(7, Duration::from_secs(4), Duration::ZERO, 20));
        assert_ne!(a, schedule(8, Duration::from_secs(4), Duration::ZERO, 20));
        assert_eq!(a.len(), 20);
        for round in a.chunks(Component::ALL.len()).take(2) {
            let seen: BTreeSet<Component> = round.iter().map(|s| s.component).collect();
            assert_eq!(seen.len(), Component::ALL.len(), "{round:?}");
        }
        for s in &a {
            assert!(s.down <= Duration::from_secs(2));
            assert!(s.pause >= Duration::from_secs(2) && s.pause <= Duration::from_secs(6));
        }
        assert!(render(&a).contains("kill -9"));
        let b = schedule(7, Duration::from_secs(4), Duration::from_secs(11), 20);
        for (a, b) in a.iter().zip(&b) {
            let extra = if a.component.group_member() { 11 } else { 0 };
            assert_eq!(b.down, a.down + Duration::from_secs(extra));
        }
    }
}
