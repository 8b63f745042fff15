//! SVG charts: delivery-latency CDFs per strategy, and the fanout sweep.

use std::path::Path;

use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {reason}")]
pub struct PlotError {
    pub path: String,
    pub reason: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError { path: path.display().to_string(), reason: e.to_string() }
}

const COLOURS: [RGBColor; 7] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x7f, 0x7f, 0x7f),
];

/// At most `n` (x, y) points of the empirical CDF of sorted samples.
pub fn cdf_points(sorted: &[f64], n: usize) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let len = sorted.len();
    let step = (len / n.max(1)).max(1);
    let mut pts: Vec<(f64, f64)> = (0..len).step_by(step).map(|i| (sorted[i], (i + 1) as f64 / len as f64)).collect();
    pts.push((sorted[len - 1], 1.0));
    pts
}

/// One line of a CDF chart.
pub struct CdfSeries {
    pub name: String,
    /// Sorted, in milliseconds.
    pub samples: Vec<f64>,
}

/// One CDF line per series; the x axis stops at the largest P99.9 so the
/// tails of slow strategies stay readable.
pub fn cdf(path: &Path, title: &str, series: &[CdfSeries]) -> Result<(), PlotError> {
    let xmax = series
        .iter()
        .map(|c| &c.samples)
        .filter(|s| !s.is_empty())
        .map(|s| s[((s.len() as f64 * 0.999) as usize).min(s.len() - 1)])
        .fold(1.0, f64::max)
        * 1.05;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..1f64)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("delivery latency per machine (ms)")
        .y_desc("fraction of deliveries")
        .draw()
        .map_err(|e| err(path, e))?;
    for (i, CdfSeries { name, samples }) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = cdf_points(samples, 800).into_iter().filter(|(x, _)| *x <= xmax).collect();
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// One sweep line: a strategy's knob values and what they gave.
pub struct SweepLine {
    pub name: String,
    pub points: Vec<SweepPoint>,
}

/// What one knob value gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    pub value: f64,
    pub completion_p99_ms: f64,
    pub msgs_per_purge_machine: f64,
}

pub fn sweep(path: &Path, title: &str, lines: &[SweepLine]) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| err(path, e))?;
    let panels = root.split_evenly((1, 2));
    let xmax = lines.iter().flat_map(|l| l.points.iter().map(|p| p.value)).fold(1.0, f64::max) + 1.0;
    type Pick = fn(&SweepPoint) -> f64;
    let picks: [(&str, Pick); 2] = [
        ("completion P99 (ms)", |p| p.completion_p99_ms),
        ("messages per purge per machine", |p| p.msgs_per_purge_machine),
    ];
    for (panel, (label, pick)) in panels.iter().zip(picks) {
        let ymax = lines.iter().flat_map(|l| l.points.iter().map(pick)).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| err(path, e))?;
        chart
            .configure_mesh()
            .x_desc("fanout (gossip) / pop_entry (topology)")
            .y_desc(label)
            .draw()
            .map_err(|e| err(path, e))?;
        for (i, l) in lines.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = l.points.iter().map(|p| (p.value, pick(p))).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .map_err(|e| err(path, e))?
                .label(l.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, colour.filled()))).map_err(|e| err(path, e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(path, e))?;
    }
    root.present().map_err(|e| err(path, e))
}
