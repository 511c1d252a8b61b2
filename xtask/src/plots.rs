//! SVG plots of a bench report, drawn with plotters: latency percentile curves per
//! scenario (at the fixed rate) and peak throughput before and after each ablation.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

const PERCENTILES: [(&str, f64); 4] = [
    ("p50_ms", 50.0),
    ("p90_ms", 90.0),
    ("p99_ms", 99.0),
    ("p999_ms", 99.9),
];

/// Latency (ms, log scale) against percentile, one line per scenario.
pub(crate) fn latency_curves(report: &Value, file: &Path) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = report["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let points: Vec<(f64, f64)> = PERCENTILES
                .iter()
                .filter_map(|(k, p)| Some((*p, s["at_rate"][*k].as_f64()?.max(0.001))))
                .collect();
            (points.len() == PERCENTILES.len())
                .then(|| (s["name"].as_str().unwrap_or("?").to_owned(), points))
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(1.0_f64, f64::max);
    let root = SVGBackend::new(file, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency at half the peak rate", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(45.0..100.0_f64, (0.01..max * 1.5).log_scale())
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Peak RPS before (grey) and after (blue) each ablation.
pub(crate) fn ablations(report: &Value, file: &Path) -> Result<()> {
    let rows: Vec<(String, f64, f64)> = report["ablations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a["name"].as_str()?.to_owned(),
                a["before_rps"].as_f64()?,
                a["after_rps"].as_f64()?,
            ))
        })
        .collect();
    let max = rows.iter().map(|r| r.1.max(r.2)).fold(1.0_f64, f64::max);
    let root =
        SVGBackend::new(file, (900, 100 + 60 * rows.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "peak requests/s: before (grey) and after (blue)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(120)
        .build_cartesian_2d(0.0..max * 1.1, 0.0..rows.len().max(1) as f64)
        .map_err(|e| anyhow!("{e}"))?;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len().max(1))
        .y_label_formatter(&|y| names.get(y.floor() as usize).cloned().unwrap_or_default())
        .x_desc("requests per second")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (i, (_, before, after)) in rows.iter().enumerate() {
        let y = i as f64;
        chart
            .draw_series([
                Rectangle::new(
                    [(0.0, y + 0.15), (*before, y + 0.45)],
                    RGBColor(160, 160, 160).filled(),
                ),
                Rectangle::new(
                    [(0.0, y + 0.55), (*after, y + 0.85)],
                    RGBColor(40, 100, 200).filled(),
                ),
            ])
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
