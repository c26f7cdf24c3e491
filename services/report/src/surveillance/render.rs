//! The surveillance report as Markdown (for people), CSV (one figure per row, for
//! spreadsheets and statistics packages) or JSON (everything, for programs).

use std::fmt::Write as _;

use super::{
    MIN_SPAN_DAYS, MRI_RECOVERY_HOURS, PREMATURE_DRAIN_PCT_PER_YEAR, SurveillanceReport,
    TRAILING_DAYS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Md,
    Csv,
    Json,
}

/// Renders the report; `svg` names the survival chart written next to it, if any.
pub fn render(report: &SurveillanceReport, format: Format, svg: Option<&str>) -> String {
    match format {
        Format::Md => markdown(report, svg),
        Format::Csv => csv(report),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(report)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            text.push('\n');
            text
        }
    }
}

fn definitions() -> String {
    format!(
        "Pump-days: days with at least one archived reading, in the cohort of that day's model \
         and firmware. Alarm rates: episodes raised in the window per 1,000 pump-days. Battery \
         drain: fuel gauge lost per year between a pump's first and last reading in the window \
         (pumps followed at least {MIN_SPAN_DAYS} days), median of the cohort. Survival free of \
         failure (Kaplan-Meier, log-log 95 % interval), from a pump's first reading in the window \
         to the first of: a motor stall not during or within {MRI_RECOVERY_HOURS} h after an MRI; \
         a premature ERI (drain over the {TRAILING_DAYS} days before at or above \
         {PREMATURE_DRAIN_PCT_PER_YEAR} %/year, or a low-battery reset before it); an OCCLUSION \
         episode. Per-pump figures count in the cohort the pump entered the window in."
    )
}

fn markdown(report: &SurveillanceReport, svg: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Post-market surveillance report\n");
    let _ = writeln!(
        out,
        "Window: {} to {} (UTC, end excluded).\n",
        report.from.to_rfc3339(),
        report.to.to_rfc3339()
    );
    let _ = writeln!(out, "{}\n", definitions());
    if report.cohorts.is_empty() {
        let _ = writeln!(out, "No pump-days in this window: nothing archived.\n");
    }
    let kinds: std::collections::BTreeSet<&str> = report
        .cohorts
        .iter()
        .flat_map(|c| c.alarms.keys().map(String::as_str))
        .collect();

    let _ = writeln!(out, "## Exposure, battery and occlusion\n");
    let _ = writeln!(
        out,
        "| model | firmware | pumps | pump-days | median battery drain (%/year, pumps) | occlusion episodes per 100 pump-years | pumps with an occlusion |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for c in &report.cohorts {
        let drain = c.battery_drain.map_or("n/a".to_owned(), |d| {
            format!("{:.1} ({})", d.median_pct_per_year, d.pumps)
        });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {} of {} |",
            c.model,
            c.firmware,
            c.pumps,
            c.pump_days,
            drain,
            c.occlusion.per_100_pump_years,
            c.occlusion.pumps_affected,
            c.occlusion.pumps_entered
        );
    }

    let _ = writeln!(out, "\n## Alarms per 1,000 pump-days (episodes)\n");
    let _ = write!(out, "| model | firmware |");
    for kind in &kinds {
        let _ = write!(out, " {kind} |");
    }
    let _ = writeln!(out, "\n|---|---|{}", "---:|".repeat(kinds.len()));
    for c in &report.cohorts {
        let _ = write!(out, "| {} | {} |", c.model, c.firmware);
        for kind in &kinds {
            let cell = c.alarms.get(*kind).map_or("0.0 (0)".to_owned(), |r| {
                format!("{:.1} ({})", r.per_1000_pump_days, r.episodes)
            });
            let _ = write!(out, " {cell} |");
        }
        let _ = writeln!(out);
    }
    if !report.unattributed_alarms.is_empty() {
        let list: Vec<String> = report
            .unattributed_alarms
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "\nEpisodes of pumps with no reading in the window (no cohort): {}.",
            list.join(", ")
        );
    }

    let _ = writeln!(out, "\n## Survival free of failure (Kaplan-Meier)\n");
    if let Some(svg) = svg {
        let _ = writeln!(out, "![Kaplan-Meier curves]({svg})\n");
    }
    let _ = writeln!(
        out,
        "| model | firmware | pumps | motor stalls | premature ERI | occlusions | longest follow-up (days) | survival (95 % CI) at |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
    for c in &report.cohorts {
        let s = &c.survival;
        let at: Vec<String> =
            s.at.iter()
                .map(|a| {
                    format!(
                        "{:.0} d: {:.3} ({:.3}-{:.3}), {} at risk",
                        a.days, a.survival, a.lower, a.upper, a.at_risk
                    )
                })
                .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            c.model,
            c.firmware,
            s.pumps,
            s.failures.motor_stall,
            s.failures.premature_eri,
            s.failures.occlusion,
            s.max_follow_up_days,
            if at.is_empty() {
                "followed under 30 days".to_owned()
            } else {
                at.join("; ")
            }
        );
    }
    for c in report
        .cohorts
        .iter()
        .filter(|c| !c.survival.steps.is_empty())
    {
        let _ = writeln!(out, "\n### {} firmware {}\n", c.model, c.firmware);
        let _ = writeln!(
            out,
            "| day | at risk | failures | censored since | survival | 95 % CI |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|");
        for step in &c.survival.steps {
            let _ = writeln!(
                out,
                "| {:.2} | {} | {} | {} | {:.3} | {:.3}-{:.3} |",
                step.days,
                step.at_risk,
                step.failures,
                step.censored,
                step.survival,
                step.lower,
                step.upper
            );
        }
    }
    out
}

/// One figure per row: `model,firmware,metric,kind,days,value,lower,upper`.
fn csv(report: &SurveillanceReport) -> String {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record([
        "model", "firmware", "metric", "kind", "days", "value", "lower", "upper",
    ]);
    let mut row = |model: &str,
                   firmware: &str,
                   metric: &str,
                   kind: &str,
                   days: Option<f64>,
                   value: f64,
                   interval: Option<(f64, f64)>| {
        let number = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x}"));
        let _ = writer.write_record([
            model,
            firmware,
            metric,
            kind,
            &number(days),
            &format!("{value}"),
            &number(interval.map(|i| i.0)),
            &number(interval.map(|i| i.1)),
        ]);
    };
    for c in &report.cohorts {
        let (m, f) = (c.model.as_str(), c.firmware.as_str());
        row(m, f, "pumps", "", None, c.pumps as f64, None);
        row(m, f, "pump_days", "", None, c.pump_days as f64, None);
        for (kind, rate) in &c.alarms {
            row(
                m,
                f,
                "alarm_episodes",
                kind,
                None,
                rate.episodes as f64,
                None,
            );
            row(
                m,
                f,
                "alarms_per_1000_pump_days",
                kind,
                None,
                rate.per_1000_pump_days,
                None,
            );
        }
        if let Some(d) = c.battery_drain {
            row(
                m,
                f,
                "median_battery_drain_pct_per_year",
                "",
                None,
                d.median_pct_per_year,
                None,
            );
            row(m, f, "battery_drain_pumps", "", None, d.pumps as f64, None);
        }
        let o = c.occlusion;
        row(
            m,
            f,
            "occlusion_per_100_pump_years",
            "",
            None,
            o.per_100_pump_years,
            None,
        );
        row(
            m,
            f,
            "occlusion_pumps_affected",
            "",
            None,
            o.pumps_affected as f64,
            None,
        );
        row(
            m,
            f,
            "pumps_entered",
            "",
            None,
            o.pumps_entered as f64,
            None,
        );
        let s = &c.survival;
        row(
            m,
            f,
            "first_failures",
            "motor_stall",
            None,
            s.failures.motor_stall as f64,
            None,
        );
        row(
            m,
            f,
            "first_failures",
            "premature_eri",
            None,
            s.failures.premature_eri as f64,
            None,
        );
        row(
            m,
            f,
            "first_failures",
            "occlusion",
            None,
            s.failures.occlusion as f64,
            None,
        );
        for step in &s.steps {
            row(
                m,
                f,
                "km_survival",
                "",
                Some(step.days),
                step.survival,
                Some((step.lower, step.upper)),
            );
        }
    }
    let bytes = writer.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
