//! SVG charts, drawn with plotters: Kaplan-Meier curves with their confidence bands,
//! and one pump's reservoir, battery and catheter pressure with its events marked.
//! Text is left to the SVG viewer's fonts (plotters' font-less SVG mode), so the
//! charts need no font files on the machine that makes them.

use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::survival::Step;

/// One cohort's curve.
#[derive(Debug, Clone)]
pub struct Curve<'a> {
    pub label: String,
    pub steps: &'a [Step],
    /// Follow-up of the cohort's longest-observed pump: the curve runs to here.
    pub max_days: f64,
}

fn failed(e: impl std::fmt::Debug) -> String {
    format!("drawing the chart: {e:?}")
}

/// Kaplan-Meier step curves, one colour per cohort, each with its 95 % band.
pub fn survival_svg(curves: &[Curve]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let max_days = curves.iter().map(|c| c.max_days).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Survival free of failure (Kaplan-Meier, 95 % CI)",
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_days, 0.0..1.02)
            .map_err(failed)?;
        chart
            .configure_mesh()
            .x_desc("days since the pump's first reading in the window")
            .y_desc("survival free of failure")
            .draw()
            .map_err(failed)?;
        for (i, curve) in curves.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let (line, band) = step_paths(curve);
            chart
                .draw_series(std::iter::once(Polygon::new(band, colour.mix(0.15))))
                .map_err(failed)?;
            chart
                .draw_series(LineSeries::new(line, colour.stroke_width(2)))
                .map_err(failed)?
                .label(curve.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(failed)?;
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

/// The step line and the closed outline of its confidence band.
/// Points of a chart in its own coordinates.
type Polyline = Vec<(f64, f64)>;

/// Which measure of a [`PumpPoint`] a panel plots.
type Measure = fn(&PumpPoint) -> Option<f64>;

fn step_paths(curve: &Curve) -> (Polyline, Polyline) {
    let (mut line, mut upper, mut lower) = (vec![(0.0, 1.0)], vec![(0.0, 1.0)], vec![(0.0, 1.0)]);
    let (mut s, mut hi, mut lo) = (1.0, 1.0, 1.0);
    for step in curve.steps {
        line.extend([(step.days, s), (step.days, step.survival)]);
        upper.extend([(step.days, hi), (step.days, step.upper)]);
        lower.extend([(step.days, lo), (step.days, step.lower)]);
        (s, hi, lo) = (step.survival, step.upper, step.lower);
    }
    let end = curve.max_days.max(line.last().map_or(0.0, |p| p.0));
    line.push((end, s));
    upper.push((end, hi));
    lower.push((end, lo));
    upper.extend(lower.into_iter().rev());
    (line, upper)
}

/// One downsampled point of a pump's telemetry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PumpPoint {
    pub at: DateTime<Utc>,
    pub reservoir_ml: f64,
    pub battery_pct: f64,
    pub catheter_pressure_kpa: Option<f64>,
}

/// Something to mark on the time axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at: DateTime<Utc>,
    /// The event type or the alarm's kind.
    pub label: String,
    pub kind: MarkKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// An event the pump logged: a tick along the panel's foot.
    Event,
    /// An alarm raised: a red line the panel's height, labelled.
    Alarm,
    /// A page to the clinic: a dark tick along the panel's top.
    Page,
}

/// Three panels over the same time axis (reservoir, battery, catheter pressure) with
/// pump events as thin grey lines and alarms as red lines labelled with their kind.
pub fn pump_svg(
    title: &str,
    span: (DateTime<Utc>, DateTime<Utc>),
    points: &[PumpPoint],
    marks: &[Mark],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 860)).into_drawing_area();
        root.fill(&WHITE).map_err(failed)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(failed)?;
        let (key, root) = root.split_vertically(22);
        key.draw_text(
            EVENT_KEY,
            &("sans-serif", 12).into_font().color(&BLACK),
            (70, 4),
        )
        .map_err(failed)?;
        let panels = root.split_evenly((3, 1));
        let series: [(&str, Measure); 3] = [
            ("reservoir (mL)", |p| Some(p.reservoir_ml)),
            ("battery (%)", |p| Some(p.battery_pct)),
            ("catheter pressure (kPa)", |p| p.catheter_pressure_kpa),
        ];
        for (i, (panel, (name, value))) in panels.iter().zip(series.iter()).enumerate() {
            let values: Vec<(DateTime<Utc>, f64)> = points
                .iter()
                .filter_map(|p| value(p).map(|v| (p.at, v)))
                .collect();
            draw_panel(panel, name, span, &values, marks, i == 0)?;
        }
        root.present().map_err(failed)?;
    }
    Ok(svg)
}

const EVENT_KEY: &str = "foot ticks: REFILL green, BOLUS blue, MRI purple, MOTOR_STALL orange, other events grey; red lines: alarms raised; dark top ticks: pages to the clinic";

fn event_colour(event: &str) -> RGBColor {
    match event {
        "REFILL" => RGBColor(0, 140, 60),
        "BOLUS" => RGBColor(30, 110, 220),
        "MRI" => RGBColor(130, 50, 170),
        "MOTOR_STALL" => RGBColor(230, 120, 0),
        _ => RGBColor(140, 140, 140),
    }
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    name: &str,
    span: (DateTime<Utc>, DateTime<Utc>),
    values: &[(DateTime<Utc>, f64)],
    marks: &[Mark],
    label_alarms: bool,
) -> Result<(), String> {
    let top = values.iter().map(|v| v.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(span.0..span.1, 0.0..top)
        .map_err(failed)?;
    chart
        .configure_mesh()
        .y_desc(name)
        .x_label_formatter(&|t| t.format("%Y-%m-%d").to_string())
        .draw()
        .map_err(failed)?;
    for mark in marks.iter().filter(|m| m.at >= span.0 && m.at < span.1) {
        // Alarms run the panel's height; pump events are ticks along its foot and
        // pages along its top, so a pump that logged a thousand stalls still leaves
        // its curve readable.
        let (style, from, to) = match mark.kind {
            MarkKind::Alarm => (RED.stroke_width(2), 0.0, top),
            MarkKind::Event => (event_colour(&mark.label).stroke_width(1), 0.0, top * 0.08),
            MarkKind::Page => (RGBColor(40, 40, 90).stroke_width(2), top * 0.9, top),
        };
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(mark.at, from), (mark.at, to)],
                style,
            )))
            .map_err(failed)?;
        if mark.kind == MarkKind::Alarm && label_alarms {
            chart
                .draw_series(std::iter::once(Text::new(
                    mark.label.clone(),
                    (mark.at, top * 0.85),
                    ("sans-serif", 12).into_font().color(&RED),
                )))
                .map_err(failed)?;
        }
    }
    if values.is_empty() {
        chart
            .draw_series(std::iter::once(Text::new(
                format!("no {name} readings in this window (no sensor on this model?)"),
                (span.0, top / 2.0),
                ("sans-serif", 14).into_font(),
            )))
            .map_err(failed)?;
    } else {
        chart
            .draw_series(LineSeries::new(
                values.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_survival_chart_has_a_curve_and_a_legend_per_cohort() {
        let steps = [Step {
            days: 10.0,
            at_risk: 4,
            failures: 1,
            censored: 0,
            survival: 0.75,
            lower: 0.4,
            upper: 0.9,
        }];
        let svg = survival_svg(&[
            Curve {
                label: "ITP-40 4.2.1".into(),
                steps: &steps,
                max_days: 30.0,
            },
            Curve {
                label: "ITV-20 4.3.0".into(),
                steps: &[],
                max_days: 20.0,
            },
        ])
        .expect("drawn");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("ITP-40 4.2.1") && svg.contains("ITV-20 4.3.0"));
        // Two curves and two bands.
        assert!(svg.matches("<polyline").count() >= 2);
        assert_eq!(svg.matches("<polygon").count(), 2);
    }

    #[test]
    fn the_step_line_drops_at_each_failure_and_the_band_closes() {
        let steps = [Step {
            days: 5.0,
            at_risk: 2,
            failures: 1,
            censored: 0,
            survival: 0.5,
            lower: 0.1,
            upper: 0.9,
        }];
        let curve = Curve {
            label: String::new(),
            steps: &steps,
            max_days: 8.0,
        };
        let (line, band) = step_paths(&curve);
        assert_eq!(line, vec![(0.0, 1.0), (5.0, 1.0), (5.0, 0.5), (8.0, 0.5)]);
        assert_eq!(band.first(), Some(&(0.0, 1.0)));
        assert_eq!(band.last(), Some(&(0.0, 1.0)));
        assert!(band.contains(&(8.0, 0.9)) && band.contains(&(8.0, 0.1)));
    }

    #[test]
    fn a_pump_chart_marks_alarms_and_says_when_a_sensor_is_missing() {
        let at = |h: i64| {
            DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
                .expect("time")
                .to_utc()
                + chrono::Duration::hours(h)
        };
        let points: Vec<PumpPoint> = (0..48)
            .map(|h| PumpPoint {
                at: at(h),
                reservoir_ml: 20.0 - h as f64 * 0.1,
                battery_pct: 50.0,
                catheter_pressure_kpa: None,
            })
            .collect();
        let marks = [
            Mark {
                at: at(10),
                label: "REFILL".into(),
                kind: MarkKind::Event,
            },
            Mark {
                at: at(20),
                label: "LOW_RESERVOIR".into(),
                kind: MarkKind::Alarm,
            },
            Mark {
                at: at(21),
                label: "page".into(),
                kind: MarkKind::Page,
            },
        ];
        let svg = pump_svg("ITV20-1", (at(0), at(48)), &points, &marks).expect("drawn");
        assert!(svg.contains("ITV20-1"));
        assert!(svg.contains("LOW_RESERVOIR"));
        assert!(svg.contains("no catheter pressure (kPa) readings"));
        assert!(svg.contains("reservoir (mL)") && svg.contains("battery (%)"));
    }
}
