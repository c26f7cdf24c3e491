//! The benchmark's picture: each hop's figure as a fraction of its raw ceiling, one
//! bar per hop from the top in the order given, labelled with both figures, and a
//! line where a hop would equal its ceiling; and the alarm-latency histogram, one bar
//! per bucket with its count, the percentiles in the caption.

use plotters::prelude::*;

use crate::hop::Hop;
use crate::latency::Latency;

/// The alarm-latency histogram of `latency` (SVG).
pub fn latency_histogram(latency: &Latency) -> Result<String, String> {
    let failed = |e: &dyn std::fmt::Debug| format!("drawing the latency plot: {e:?}");
    let buckets = latency.histogram();
    let pct = |q: f64| crate::latency::percentile(&latency.samples_ms, q).unwrap_or(0.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let most = buckets.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64;
        let columns = buckets.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Alarm latency, gateway to receiver ({} probes): p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                    latency.samples_ms.len(),
                    pct(0.5),
                    pct(0.9),
                    pct(0.99),
                    pct(1.0)
                ),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..columns, 0.0..most * 1.15)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .y_desc("probes")
            .x_desc("latency bucket (ms)")
            .disable_x_mesh()
            .x_labels(0)
            .draw()
            .map_err(|e| failed(&e))?;
        for (i, (above, up_to, count)) in buckets.iter().enumerate() {
            let x = i as f64;
            let label = match up_to {
                Some(up_to) => format!("≤{up_to:.0}"),
                None => format!(">{above:.0}"),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.1, 0.0), (x + 0.9, *count as f64)],
                    BLUE.mix(0.6).filled(),
                )))
                .map_err(|e| failed(&e))?;
            chart
                .draw_series([
                    Text::new(
                        count.to_string(),
                        (x + 0.35, *count as f64 + most * 0.1),
                        ("sans-serif", 13).into_font(),
                    ),
                    Text::new(
                        label,
                        (x + 0.15, *count as f64 + most * 0.03),
                        ("sans-serif", 12).into_font(),
                    ),
                ])
                .map_err(|e| failed(&e))?;
        }
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}

pub fn ratios(hops: &[Hop]) -> Result<String, String> {
    let failed = |e: &dyn std::fmt::Debug| format!("drawing the plot: {e:?}");
    let mut svg = String::new();
    {
        let height = 120 + 70 * u32::try_from(hops.len()).unwrap_or(10);
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        // The longest bar takes 70 % of the width: its label fits beside it.
        let top = hops.iter().map(Hop::ratio).fold(1.0, f64::max) / 0.7;
        let rows = hops.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Each hop against its raw ceiling (same run, same machine)",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(20)
            .build_cartesian_2d(0.0..top, 0.0..rows)
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_desc("ours / ceiling")
            .disable_y_mesh()
            .y_labels(0)
            .draw()
            .map_err(|e| failed(&e))?;
        chart
            .draw_series(LineSeries::new([(1.0, 0.0), (1.0, rows)], BLACK.mix(0.5)))
            .map_err(|e| failed(&e))?;
        for (i, hop) in hops.iter().enumerate() {
            let (ratio, y) = (hop.ratio(), rows - 1.0 - i as f64);
            let (ours, ceiling) = (hop.rate, hop.ceiling);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + 0.2), (ratio, y + 0.8)],
                    BLUE.mix(0.6).filled(),
                )))
                .map_err(|e| failed(&e))?;
            chart
                .draw_series([
                    Text::new(
                        format!("{ratio:.2} ({ours:.0} of {ceiling:.0} {} per s)", hop.unit),
                        (ratio + top * 0.01, y + 0.55),
                        ("sans-serif", 13).into_font(),
                    ),
                    Text::new(
                        hop.name.to_owned(),
                        (top * 0.01, y + 0.95),
                        ("sans-serif", 13).into_font(),
                    ),
                ])
                .map_err(|e| failed(&e))?;
        }
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_gets_a_bar_and_its_figures() {
        let svg = ratios(&[
            Hop::new("a / b", "rows", 50.0, 100.0),
            Hop::new("c / d", "pages", 30.0, 10.0),
        ])
        .expect("drawn");
        assert!(svg.contains("a / b") && svg.contains("c / d"));
        assert!(svg.contains("0.50 (50 of 100 rows per s)"));
        assert!(svg.contains("3.00 (30 of 10 pages per s)"));
    }
}
