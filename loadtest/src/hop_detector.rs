//! The detection hop: the real `fleet-detector` working off a backlog of readings in a
//! fresh topic, with a consumer group and a database (checkpoints) of its own, timed
//! by its own count of readings applied to the rules. Against the raw Kafka consume
//! ceiling of the same run, it says how much of the detector's cost is the broker's.
//!
//! The readings are a healthy fleet's, except that every tenth pump's last reading is
//! at its low-reservoir threshold: the detector must raise exactly one LOW_RESERVOIR
//! alarm for each of those (checked), so its output path is exercised too and nothing
//! it should have said is lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use fleet_core::Reading;
use fleet_kafka::{FleetProducer, Topics, ensure_topic};

use crate::harness::{self, StackEnv};
use crate::hop::per_second;
use crate::kafka_count::{DEFAULT_PARTITIONS, RecordCount};
use crate::{drain, kafka_load};

const APPLIED: &str = "fleet_detector_readings_total";
const RAISED: &str = "fleet_detector_alarm_events_total{kind=\"LOW_RESERVOIR\",state=\"RAISED\"}";

/// How long one drain may take.
const LIMIT: Duration = Duration::from_secs(600);

/// One pump in this many ends at its low-reservoir threshold.
const LOW_EVERY: usize = 10;

/// The detector's input: `gateways` pumps with about `readings` readings in all.
#[derive(Debug, Clone)]
pub struct Workload {
    pub readings: Vec<Reading>,
    /// LOW_RESERVOIR alarms the detector must raise.
    pub low_reservoir_pumps: usize,
}

impl Workload {
    pub fn new(gateways: usize, readings: usize) -> Workload {
        let gateways = gateways.max(1);
        let mut fleet = harness::healthy_fleet(gateways, readings.div_ceil(gateways));
        let low_reservoir_pumps = end_low(&mut fleet, LOW_EVERY);
        Workload {
            readings: fleet,
            low_reservoir_pumps,
        }
    }
}

/// Puts the last reading of every `every`th pump (by id, from the first) at its
/// threshold, so the detector raises LOW_RESERVOIR for each of those pumps exactly
/// once; returns how many pumps that is. `fleet-loadtest --faults low-reservoir=F`
/// injects its fault this way too.
pub fn end_low(readings: &mut [Reading], every: usize) -> usize {
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in readings.iter().enumerate() {
        last.insert(&r.pump_id, i);
    }
    let chosen: Vec<usize> = last.into_values().step_by(every.max(1)).collect();
    for &i in &chosen {
        readings[i].reservoir_ml = readings[i].low_reservoir_threshold_ml;
    }
    chosen.len()
}

/// What the detector did with the backlog, and how fast a bare consumer reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorDrain {
    pub readings: usize,
    pub readings_per_s: f64,
    pub low_reservoir_alarms: usize,
    /// The raw consume ceiling: a bare consumer reading the same records.
    pub consume_ceiling_per_s: f64,
}

/// Puts the workload in a fresh readings topic, times a bare consumer through it (the
/// ceiling), then the detector. The ceiling goes first because the local broker reads
/// freshly written records fastest (the same topic read minutes later went several
/// times slower for both), so the order cannot flatter the detector. Fails unless the
/// detector applied every reading and raised every expected alarm. Its log goes to
/// `dir`.
pub async fn measure(
    env: &StackEnv,
    run: &str,
    workload: &Workload,
    dir: &Path,
) -> anyhow::Result<DetectorDrain> {
    let suffix = format!("{run}-detector");
    let topics = Topics::with_suffix(&suffix);
    for topic in [&topics.readings, &topics.alarms, &topics.dead_letter] {
        ensure_topic(&env.kafka_brokers, topic, DEFAULT_PARTITIONS).await?;
    }
    let count = workload.readings.len();
    kafka_load::readings(
        &FleetProducer::new(&env.kafka_brokers, topics.clone())?,
        &workload.readings,
    )
    .await?;
    let consume_ceiling_per_s =
        consume_ceiling(&env.kafka_brokers, &topics.readings, count).await?;
    let (took, raised) = run_detector(env, &suffix, workload, dir).await?;
    anyhow::ensure!(
        raised == workload.low_reservoir_pumps,
        "the detector raised {raised} LOW_RESERVOIR alarms, {} expected (log in {})",
        workload.low_reservoir_pumps,
        dir.display()
    );
    Ok(DetectorDrain {
        readings: count,
        readings_per_s: per_second(count, took),
        low_reservoir_alarms: raised,
        consume_ceiling_per_s,
    })
}

/// The detector on the topics of `suffix`, with a group and a database of its own,
/// until it has applied every reading: how long that took, and the LOW_RESERVOIR
/// alarms it raised.
async fn run_detector(
    env: &StackEnv,
    suffix: &str,
    workload: &Workload,
    dir: &Path,
) -> anyhow::Result<(Duration, usize)> {
    let database_url =
        fleet_store::testing::fresh_database(&env.database_url, "loadtest_detector").await?;
    let group = format!("{suffix}-detector");
    // A short session would make the group rebalance while the broker is busy.
    let args = [
        "--topic-suffix",
        suffix,
        "--group",
        &group,
        "--session-timeout",
        "15s",
    ];
    let (mut detector, port) =
        drain::start(env, "fleet-detector", &database_url, &args, dir).await?;
    let count = workload.readings.len() as f64;
    let took = drain::time_to_count(port, APPLIED, count, LIMIT).await;
    // An alarm is counted as its reading is applied; a moment's grace all the same.
    let expected = workload.low_reservoir_pumps as f64;
    let _ = drain::time_to_count(port, RAISED, expected, Duration::from_secs(5)).await;
    let raised = harness::metric(port, RAISED).await.unwrap_or_default() as usize;
    let _ = detector.terminate(Duration::from_secs(10));
    let took = took.with_context(|| format!("fleet-detector (log in {})", dir.display()))?;
    Ok((took, raised))
}

/// A bare consumer reading the `count` records of `topic`, timed as the detector is:
/// records/s.
async fn consume_ceiling(brokers: &str, topic: &str, count: usize) -> anyhow::Result<f64> {
    let records = RecordCount::start(brokers, topic).await?;
    let took = drain::time_until(count as f64, LIMIT, || async { records.get() as f64 })
        .await
        .context("raw kafka consume")?;
    Ok(per_second(count, took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tenth_pump_ends_at_its_threshold_and_only_its_last_reading_changes() {
        let workload = Workload::new(25, 250);
        assert!(
            workload.readings.len() >= 250,
            "{}",
            workload.readings.len()
        );
        assert_eq!(workload.low_reservoir_pumps, 3);
        let at_threshold: Vec<&Reading> = workload
            .readings
            .iter()
            .filter(|r| r.reservoir_ml <= r.low_reservoir_threshold_ml)
            .collect();
        assert_eq!(at_threshold.len(), 3);
        for low in at_threshold {
            let later = workload
                .readings
                .iter()
                .filter(|r| r.pump_id == low.pump_id && r.seq > low.seq)
                .count();
            assert_eq!(later, 0, "{} has readings after its low one", low.pump_id);
        }
    }
}
