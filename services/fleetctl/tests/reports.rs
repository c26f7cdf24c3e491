//! `fleetctl report` over the standard scenario (40 pumps, 150 days, copied from the
//! shared scenarios), archived through the archiver's own write path into the real
//! PostgreSQL. Every figure the report prints is checked against the same figure
//! computed here, independently, from the scenario file's raw JSON: pump-days, alarm
//! episodes per kind, battery drain, occlusion incidence, first failures by cause and
//! the Kaplan-Meier estimate. Alarm episodes are the scenario's labelled ones (its truth
//! file), so the expected counts do not depend on the detector.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use fleet_core::AlarmEvent;
use fleet_store::archive::{self, Partitions};
use serde_json::{Value, json};
use sqlx::PgPool;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/data");

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_utc()
}

fn scenario_lines() -> Vec<String> {
    let file = std::fs::File::open(format!("{DATA}/standard.readings.jsonl.gz"))
        .expect("the standard scenario is in the repository");
    BufReader::new(flate2::read::MultiGzDecoder::new(file))
        .lines()
        .map(|l| l.expect("readable"))
        .collect()
}

fn truth() -> Value {
    let text = std::fs::read_to_string(format!("{DATA}/standard.truth.json")).expect("truth");
    serde_json::from_str(&text).expect("truth is JSON")
}

/// Each labelled episode as the detector would report it: RAISED at onset, CLEARED at
/// the end of its window (two events, one episode).
fn episodes_as_alarm_events(truth: &Value) -> Vec<AlarmEvent> {
    let episodes = truth["episodes"].as_array().expect("episodes");
    episodes
        .iter()
        .flat_map(|e| {
            let id = format!("{}:{}:{}", e["pump_id"], e["kind"], e["onset"]);
            [(1, "RAISED", &e["onset"]), (2, "CLEARED", &e["window_end"])].map(
                |(revision, state, at)| {
                    serde_json::from_value::<AlarmEvent>(json!({
                        "alarm_id": id,
                        "revision": revision,
                        "pump_id": e["pump_id"],
                        "kind": e["kind"],
                        "priority": "MEDIUM",
                        "state": state,
                        "detected_at": at,
                        "message": "labelled episode",
                    }))
                    .expect("an alarm event")
                },
            )
        })
        .collect()
}

/// Archives the readings and alarm events with the archiver's write path.
async fn archive_scenario(pool: &PgPool, lines: &[String], alarms: &[AlarmEvent]) {
    let readings: Vec<fleet_core::Reading> = lines
        .iter()
        .map(|l| fleet_core::json::parse_reading(l).expect("valid reading"))
        .collect();
    let mut partitions = Partitions::default();
    for batch in readings.chunks(5000) {
        partitions.ensure(pool, batch).await.expect("partitions");
        let mut tx = pool.begin().await.expect("begin");
        archive::insert_readings(&mut tx, batch)
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    let mut tx = pool.begin().await.expect("begin");
    archive::insert_alarms(&mut tx, alarms)
        .await
        .expect("alarms");
    tx.commit().await.expect("commit");
}

async fn database() -> (String, PgPool) {
    fleet_store::testing::fresh_pool("reports").await
}

fn fleetctl(database_url: &str, args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env("FLEET_DATABASE_URL", database_url)
        .current_dir(dir)
        .output()
        .expect("fleetctl runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---- the expected figures, from the raw scenario ----------------------------------

#[derive(Debug, Default)]
struct PumpTrace {
    cohort: (String, String),
    /// (measured_at, battery_pct, eri), in time order.
    readings: Vec<(DateTime<Utc>, f64, bool)>,
    days: BTreeSet<NaiveDate>,
    stalls: Vec<DateTime<Utc>>,
    /// (start, end of the expected recovery).
    mri: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    resets: Vec<DateTime<Utc>>,
}

/// The scenario's readings, each `(pump_id, seq)` once: gateways re-send, and the
/// scenario has re-sent readings in it.
fn unique_readings(lines: &[String]) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .filter(|r| seen.insert((r["pump_id"].to_string(), r["seq"].as_u64())))
        .collect()
}

/// Per pump, what the window [from, to) saw (a few readings of the scenario lie just
/// outside its nominal span); MRIs from any time, as one before the window can still
/// explain a stall in it.
fn traces(
    lines: &[String],
    (from, to): (DateTime<Utc>, DateTime<Utc>),
) -> BTreeMap<String, PumpTrace> {
    let mut pumps: BTreeMap<String, PumpTrace> = BTreeMap::new();
    let inside = |at: DateTime<Utc>| at >= from && at < to;
    for r in unique_readings(lines) {
        let pump = pumps
            .entry(r["pump_id"].as_str().expect("pump_id").to_owned())
            .or_default();
        let at = time(r["measured_at"].as_str().expect("measured_at"));
        if inside(at) {
            pump.cohort = (
                r["model"].as_str().expect("model").to_owned(),
                r["firmware"].as_str().expect("firmware").to_owned(),
            );
            pump.readings.push((
                at,
                r["battery_pct"].as_f64().expect("battery_pct"),
                r["eri"].as_bool().expect("eri"),
            ));
            pump.days.insert(at.date_naive());
        }
        for e in r["events"].as_array().into_iter().flatten() {
            let at = time(e["at"].as_str().expect("event time"));
            match e["type"].as_str() {
                Some("MOTOR_STALL") if inside(at) => pump.stalls.push(at),
                Some("LOW_BATTERY_RESET") if inside(at) => pump.resets.push(at),
                Some("MRI") => {
                    let scan = e["duration_s"].as_i64().expect("duration_s");
                    pump.mri
                        .push((at, at + Duration::seconds(scan) + Duration::hours(24)));
                }
                _ => {}
            }
        }
    }
    for pump in pumps.values_mut() {
        pump.readings.sort_by_key(|r| r.0);
    }
    pumps
}

fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 86_400_000.0
}

/// The pump's first failure, by the report's definitions, worked from its readings.
fn first_failure(
    pump: &PumpTrace,
    occlusion: Option<DateTime<Utc>>,
) -> Option<(DateTime<Utc>, &'static str)> {
    let stall = pump
        .stalls
        .iter()
        .copied()
        .filter(|s| !pump.mri.iter().any(|(start, end)| start <= s && s <= end))
        .min();
    let eri = pump
        .readings
        .iter()
        .find(|r| r.2)
        .and_then(|&(at, pct, _)| {
            let since = pump
                .readings
                .iter()
                .find(|r| r.0 >= at - Duration::days(30))?;
            let span = days(since.0, at);
            let fast = span >= 7.0 && (since.1 - pct) / span * 365.25 >= 40.0;
            let day_end = (at.date_naive() + chrono::Days::new(1))
                .and_hms_opt(0, 0, 0)?
                .and_utc();
            let reset = pump.resets.iter().any(|r| *r < day_end);
            (fast || reset).then_some(at)
        });
    [
        (stall, "motor_stall"),
        (eri, "premature_eri"),
        (occlusion, "occlusion"),
    ]
    .into_iter()
    .filter_map(|(at, cause)| at.map(|t| (t, cause)))
    .min_by_key(|(t, _)| *t)
}

#[derive(Debug, Default, PartialEq)]
struct Expected {
    pumps: usize,
    pump_days: u64,
    alarms: BTreeMap<String, u64>,
    drains: Vec<f64>,
    occlusion_pumps: usize,
    failures: BTreeMap<&'static str, usize>,
    /// (days, failed) per pump.
    follow_up: Vec<(f64, bool)>,
}

fn expected(lines: &[String], truth: &Value) -> BTreeMap<(String, String), Expected> {
    let window = (
        time(truth["start"].as_str().expect("start")),
        time(truth["end"].as_str().expect("end")),
    );
    let pumps = traces(lines, window);
    let mut episodes: HashMap<&str, Vec<(&str, DateTime<Utc>)>> = HashMap::new();
    for e in truth["episodes"].as_array().expect("episodes") {
        episodes
            .entry(e["pump_id"].as_str().expect("pump"))
            .or_default()
            .push((
                e["kind"].as_str().expect("kind"),
                time(e["onset"].as_str().expect("onset")),
            ));
    }
    let mut cohorts: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for (id, pump) in &pumps {
        let c = cohorts.entry(pump.cohort.clone()).or_default();
        c.pumps += 1;
        c.pump_days += pump.days.len() as u64;
        let mine = episodes.get(id.as_str()).cloned().unwrap_or_default();
        for (kind, _) in &mine {
            *c.alarms.entry((*kind).to_owned()).or_default() += 1;
        }
        let (first, last) = (pump.readings[0], pump.readings[pump.readings.len() - 1]);
        let span = days(first.0, last.0);
        if span >= 7.0 {
            c.drains.push((first.1 - last.1) / span * 365.25);
        }
        let occlusion = mine
            .iter()
            .filter(|(k, _)| *k == "OCCLUSION")
            .map(|(_, at)| *at)
            .min();
        c.occlusion_pumps += usize::from(occlusion.is_some());
        match first_failure(pump, occlusion) {
            Some((at, cause)) => {
                *c.failures.entry(cause).or_default() += 1;
                c.follow_up.push((days(first.0, at), true));
            }
            None => c.follow_up.push((span, false)),
        }
    }
    cohorts
}

/// The product-limit estimate at the end of follow-up, worked the plain way.
fn final_survival(follow_up: &[(f64, bool)]) -> f64 {
    let mut times: Vec<f64> = follow_up.iter().filter(|o| o.1).map(|o| o.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    times
        .iter()
        .map(|&t| {
            let at_risk = follow_up.iter().filter(|o| o.0 >= t).count() as f64;
            let failed = follow_up.iter().filter(|o| o.1 && o.0 == t).count() as f64;
            1.0 - failed / at_risk
        })
        .product()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn the_surveillance_report_over_the_standard_scenario_matches_the_scenario_file() {
    let (url, pool) = database().await;
    let lines = scenario_lines();
    let truth = truth();
    archive_scenario(&pool, &lines, &episodes_as_alarm_events(&truth)).await;
    let want = expected(&lines, &truth);
    assert!(
        want.len() >= 4,
        "the standard scenario has several models and firmwares"
    );

    let dir = tempfile::tempdir().expect("dir");
    let (from, to) = (
        truth["start"].as_str().expect("start"),
        truth["end"].as_str().expect("end"),
    );
    // The report over the scenario's span in one format: its standard output.
    let surveillance = |format: &str| {
        let args = [
            "report",
            "surveillance",
            "--from",
            from,
            "--to",
            to,
            "--format",
            format,
        ];
        let out = fleetctl(&url, &args, dir.path());
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let report: Value = serde_json::from_str(&surveillance("json")).expect("JSON report");
    let cohorts = report["cohorts"].as_array().expect("cohorts");
    assert_eq!(cohorts.len(), want.len());
    let mut failures_seen = 0;
    for got in cohorts {
        let key = (
            got["model"].as_str().expect("model").to_owned(),
            got["firmware"].as_str().expect("firmware").to_owned(),
        );
        let want = &want[&key];
        let label = format!("{key:?}");
        assert_eq!(got["pumps"], want.pumps, "{label}: pumps");
        assert_eq!(got["pump_days"], want.pump_days, "{label}: pump-days");
        let alarms: BTreeMap<String, u64> = got["alarms"]
            .as_object()
            .expect("alarms")
            .iter()
            .map(|(k, v)| (k.clone(), v["episodes"].as_u64().expect("episodes")))
            .collect();
        assert_eq!(alarms, want.alarms, "{label}: alarm episodes");
        for (kind, rate) in got["alarms"].as_object().expect("alarms") {
            let expected = want.alarms[kind] as f64 * 1000.0 / want.pump_days as f64;
            let rate = rate["per_1000_pump_days"].as_f64().expect("rate");
            assert!(
                close(rate, expected, 1e-9),
                "{label} {kind}: {rate} against {expected}"
            );
        }
        let drain = got["battery_drain"]["median_pct_per_year"]
            .as_f64()
            .expect("drain");
        assert!(
            close(drain, median(want.drains.clone()), 1e-6),
            "{label}: drain {drain} against {}",
            median(want.drains.clone())
        );
        let occlusion = &got["occlusion"];
        assert_eq!(occlusion["pumps_affected"], want.occlusion_pumps, "{label}");
        let episodes = want.alarms.get("OCCLUSION").copied().unwrap_or(0);
        let per_100_years = episodes as f64 / want.pump_days as f64 * 36_525.0;
        assert!(
            close(
                occlusion["per_100_pump_years"].as_f64().expect("incidence"),
                per_100_years,
                1e-9
            ),
            "{label}"
        );

        let survival = &got["survival"];
        for cause in ["motor_stall", "premature_eri", "occlusion"] {
            let n = want.failures.get(cause).copied().unwrap_or(0);
            assert_eq!(survival["failures"][cause], n, "{label}: {cause}");
            failures_seen += n;
        }
        let steps = survival["steps"].as_array().expect("steps");
        let last = steps
            .last()
            .map_or(1.0, |s| s["survival"].as_f64().expect("S"));
        assert!(
            close(last, final_survival(&want.follow_up), 1e-9),
            "{label}: S = {last} against {}",
            final_survival(&want.follow_up)
        );
        // Failure times agree to the day (the report reads ERI off the day rollup).
        let mut want_times: Vec<f64> = want.follow_up.iter().filter(|o| o.1).map(|o| o.0).collect();
        want_times.sort_by(f64::total_cmp);
        let got_times: Vec<f64> = steps
            .iter()
            .flat_map(|s| {
                let n = s["failures"].as_u64().expect("failures") as usize;
                std::iter::repeat_n(s["days"].as_f64().expect("days"), n)
            })
            .collect();
        assert_eq!(got_times.len(), want_times.len(), "{label}");
        for (g, w) in got_times.iter().zip(&want_times) {
            assert!(
                close(*g, *w, 1.0),
                "{label}: failure at {g} days against {w}"
            );
        }
    }
    // The scenario has failures of every cause; a report that found none is wrong.
    assert!(failures_seen >= 3, "only {failures_seen} failures found");
    let svg = std::fs::read_to_string(dir.path().join("surveillance-survival.svg")).expect("chart");
    assert!(
        svg.contains("Kaplan-Meier") && svg.contains("ITP-40 4.2.1"),
        "chart lacks its title or a cohort"
    );

    // The same figures as Markdown and CSV.
    let md = surveillance("md");
    let itp40 = &want[&("ITP-40".to_owned(), "4.2.1".to_owned())];
    assert!(
        md.contains(&format!(
            "| ITP-40 | 4.2.1 | {} | {} |",
            itp40.pumps, itp40.pump_days
        )),
        "{md}"
    );
    let csv = surveillance("csv");
    assert!(csv.starts_with("model,firmware,metric,kind,days,value,lower,upper\n"));
    assert!(
        csv.contains(&format!("ITP-40,4.2.1,pump_days,,,{},,", itp40.pump_days)),
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn a_pump_timeline_holds_its_readings_events_alarms_pages_and_acknowledgements() {
    let (url, pool) = database().await;
    let lines = scenario_lines();
    let truth = truth();
    let alarms = episodes_as_alarm_events(&truth);
    archive_scenario(&pool, &lines, &alarms).await;
    // An occlusion with the pressure sensor: five days around its onset.
    let pump = "ITP20-100015";
    let occlusion = alarms
        .iter()
        .find(|a| a.pump_id == pump && a.state == fleet_core::AlarmState::Raised)
        .expect("the scenario labels this pump's occlusion");
    let (from, to) = (
        occlusion.detected_at - Duration::days(2),
        occlusion.detected_at + Duration::days(3),
    );
    // One page and its acknowledgement, as the notifier and the API write them.
    sqlx::query(
        "INSERT INTO page (alarm_id, revision, escalation, pump_id, clinic_id, priority, state,
                           event, status, attempts, created_at, delivered_at)
         VALUES ($1, 1, 0, $2, 'clinic-001', 'HIGH', 'RAISED', '\\x00', 'delivered', 1,
                 $3, $3 + interval '2 seconds')",
    )
    .bind(&occlusion.alarm_id)
    .bind(pump)
    .bind(occlusion.detected_at)
    .execute(&pool)
    .await
    .expect("page");
    sqlx::query(
        "INSERT INTO acknowledgement (alarm_id, clinician, note, acknowledged_at)
         VALUES ($1, 'Dr. Test', 'seen', $2 + interval '10 minutes')",
    )
    .bind(&occlusion.alarm_id)
    .bind(occlusion.detected_at)
    .execute(&pool)
    .await
    .expect("acknowledgement");

    // What the timeline must hold, from the scenario file.
    let mut readings = 0;
    let mut hours = BTreeSet::new();
    let mut events = 0;
    for r in unique_readings(&lines) {
        if r["pump_id"] != pump {
            continue;
        }
        let at = time(r["measured_at"].as_str().expect("time"));
        if at >= from && at < to {
            readings += 1;
            hours.insert((at - from).num_hours());
        }
        events += r["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                let at = time(e["at"].as_str().expect("event time"));
                at >= from && at < to
            })
            .count();
    }
    let alarm_events = alarms
        .iter()
        .filter(|a| a.pump_id == pump && a.detected_at >= from && a.detected_at < to)
        .count();

    let dir = tempfile::tempdir().expect("dir");
    let (from_arg, to_arg) = (from.to_rfc3339(), to.to_rfc3339());
    let out = fleetctl(
        &url,
        &["report", "pump", pump, "--from", &from_arg, "--to", &to_arg],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut table = csv::Reader::from_reader(out.stdout.as_slice());
    let rows: Vec<csv::StringRecord> = table.records().map(|r| r.expect("a CSV row")).collect();
    let count = |record: &str| rows.iter().filter(|r| &r[1] == record).count();
    assert_eq!(
        count("reading"),
        hours.len(),
        "one row per hour with readings"
    );
    let summed: i64 = rows
        .iter()
        .filter(|r| &r[1] == "reading")
        .map(|r| r[3].parse::<i64>().expect("readings per bucket"))
        .sum();
    assert_eq!(summed, readings);
    assert_eq!(count("event"), events);
    assert_eq!(count("alarm"), alarm_events);
    assert_eq!(count("page"), 1);
    assert_eq!(count("acknowledgement"), 1);
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| time(&r[0])).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "rows in time order");
    assert!(
        rows.iter().any(|r| &r[1] == "reading" && !r[7].is_empty()),
        "pressure is in the timeline"
    );
    let svg = std::fs::read_to_string(dir.path().join(format!("{pump}.svg"))).expect("chart");
    assert!(svg.contains("OCCLUSION") && svg.contains("catheter pressure (kPa)"));

    // --csv writes the table to a file instead.
    let out = fleetctl(
        &url,
        &[
            "report", "pump", pump, "--from", &from_arg, "--to", &to_arg, "--csv", "t.csv",
            "--svg", "t.svg",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(dir.path().join("t.csv")).expect("csv file");
    assert_eq!(written.lines().count(), rows.len() + 1);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: scripts/test.sh starts it"]
async fn reports_refuse_bad_dates_reversed_windows_and_unknown_pumps() {
    let (url, pool) = database().await;
    let dir = tempfile::tempdir().expect("dir");
    // Runs `report KIND [PUMP] --from FROM --to TO`; expects exit `code` and `reason`
    // on stderr, with nothing on stdout.
    let refused = |kind: &str, from: &str, to: &str, code: i32, reason: &str| {
        let mut args = vec!["report", kind];
        if kind == "pump" {
            args.push(if reason.contains("unknown pump") {
                "ITP40-999999"
            } else {
                "ITP40-100002"
            });
        }
        args.extend(["--from", from, "--to", to]);
        let out = fleetctl(&url, &args, dir.path());
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?} printed a report");
    };
    // A date that does not exist, and text that is no date: usage errors, naming the flag.
    refused(
        "surveillance",
        "2026-02-30",
        "2026-03-01",
        2,
        "--from <FROM>': '2026-02-30' is not a calendar date",
    );
    refused(
        "pump",
        "2026-03-01",
        "soon",
        2,
        "'soon' is not a date or time",
    );
    // A reversed window: refused, nothing written.
    refused(
        "surveillance",
        "2026-03-02",
        "2026-03-01",
        1,
        "--from (2026-03-02T00:00:00+00:00) must be before --to",
    );
    assert!(
        !dir.path().join("surveillance-survival.svg").exists(),
        "nothing written"
    );
    // A pump the fleet never heard of.
    refused(
        "pump",
        "2026-03-01",
        "2026-03-02",
        1,
        "unknown pump 'ITP40-999999'",
    );
    assert!(!dir.path().join("ITP40-999999.svg").exists());

    // A pump the registry lists but nothing archived yet is known: an empty timeline.
    sqlx::raw_sql(
        "INSERT INTO clinic (id, name, webhook, escalation_after_ms) VALUES ('c', 'C', 'http://127.0.0.1:1', 60000);
         INSERT INTO pump (pump_id, gateway_id, clinic_id) VALUES ('ITP40-100002', 'gw', 'c');",
    )
    .execute(&pool)
    .await
    .expect("registry");
    let out = fleetctl(
        &url,
        &[
            "report",
            "pump",
            "ITP40-100002",
            "--from",
            "2026-03-01",
            "--to",
            "2026-03-02",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "header only"
    );
}
