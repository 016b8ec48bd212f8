//! What `wsbench report` makes of interval logs (#16): `latency.md`, a
//! table of each log's percentiles and of all logs merged into one
//! distribution, and `latency-by-percentile.svg`, HdrHistogram's classic
//! plot: latency against percentile on a log-scaled axis (90%, 99%,
//! 99.9%, …), so the tail gets as much room as the body.
//!
//! Merging adds the logs' histograms, which is exact: the merged
//! distribution is the one all their values would have made together,
//! within the histograms' 3 significant digits. That is how a run spread
//! over several load machines is read as one.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::Log;
use crate::error::{Error, io_cause};
use crate::report::COLOURS;

/// The quantiles of the table, as (label, quantile).
pub const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("max", 1.0),
];

/// Writes `latency.md`, `latency.json` (the same figures in µs, for
/// scripts) and `latency-by-percentile.svg` into `dir` for `logs` (name,
/// log); returns the paths written.
pub fn write(dir: &Path, logs: &[(String, Log)]) -> Result<Vec<String>, Error> {
    let merged = merge(logs);
    let outputs = [
        ("latency.md", table(logs, &merged)),
        ("latency.json", json(logs, &merged)),
        ("latency-by-percentile.svg", plot(logs, &merged)?),
    ];
    let mut written = Vec::new();
    for (file, contents) in outputs {
        let path = dir.join(file);
        std::fs::write(&path, contents).map_err(|e| Error::Output {
            path: path.display().to_string(),
            cause: io_cause(&e),
        })?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// Every log's values in one histogram.
pub fn merge(logs: &[(String, Log)]) -> Histogram<u64> {
    let mut merged = Histogram::<u64>::new(3).expect("3 significant digits are valid");
    for (_, log) in logs {
        merged
            .add(&log.total)
            .expect("an auto-resizing histogram takes any other");
    }
    merged
}

/// A value in µs for people: `412µs`, `3.21ms`, `1.52s`.
fn us(value: u64) -> String {
    crate::metrics::human(value as f64 / 1e6)
}

fn row(md: &mut String, name: &str, intervals: usize, h: &Histogram<u64>) {
    let _ = write!(
        md,
        "| {} | {} | {} |",
        name.replace('|', "\\|"),
        intervals,
        h.len()
    );
    for (_, q) in QUANTILES {
        let _ = write!(md, " {} |", us(h.value_at_quantile(q)));
    }
    md.push('\n');
}

fn table(logs: &[(String, Log)], merged: &Histogram<u64>) -> String {
    let mut md = String::from("# wsbench latency (HdrHistogram interval logs)\n\n");
    md.push_str("| log | intervals | count |");
    for (label, _) in QUANTILES {
        let _ = write!(md, " {label} |");
    }
    md.push_str("\n|---|--:|--:|");
    md.push_str(&"--:|".repeat(QUANTILES.len()));
    md.push('\n');
    for (name, log) in logs {
        row(&mut md, name, log.intervals.len(), &log.total);
    }
    let intervals = logs.iter().map(|(_, l)| l.intervals.len()).sum();
    row(&mut md, "all logs merged", intervals, merged);
    md.push_str(
        "\nValues are as the logs hold them (microseconds, 3 significant digits). \
         The merged row adds every interval of every log into one histogram: \
         the distribution of all their values together, not an average of \
         percentiles.\n\n![latency by percentile](latency-by-percentile.svg)\n",
    );
    md
}

#[derive(serde::Serialize)]
struct JsonRow<'a> {
    name: &'a str,
    intervals: usize,
    count: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    p9999_us: u64,
    max_us: u64,
}

fn json_row<'a>(name: &'a str, intervals: usize, h: &Histogram<u64>) -> JsonRow<'a> {
    let q = |q: f64| h.value_at_quantile(q);
    JsonRow {
        name,
        intervals,
        count: h.len(),
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        p9999_us: q(0.9999),
        max_us: q(1.0),
    }
}

fn json(logs: &[(String, Log)], merged: &Histogram<u64>) -> String {
    let rows: Vec<JsonRow> = logs
        .iter()
        .map(|(name, log)| json_row(name, log.intervals.len(), &log.total))
        .collect();
    let intervals = logs.iter().map(|(_, l)| l.intervals.len()).sum();
    let value = serde_json::json!({
        "logs": rows,
        "merged": json_row("all logs merged", intervals, merged),
    });
    serde_json::to_string_pretty(&value).expect("plain numbers and strings") + "\n"
}

/// x of a quantile on the plot: 1 / (1 − q) on a log axis, so 90%, 99%,
/// 99.9% are evenly spaced. The last point (q = 1) sits one decade past
/// the highest finite one.
fn x_of(q: f64, top: f64) -> f64 {
    if q >= 1.0 {
        top
    } else {
        (1.0 / (1.0 - q)).min(top)
    }
}

/// Tick labels: 1 → 0%, 10 → 90%, 100 → 99%, 1000 → 99.9%.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let text = format!("{p:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// (x, latency ms) along a histogram's percentiles, densest in the tail.
fn curve(h: &Histogram<u64>, top: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|v| {
            let q = v.quantile_iterated_to();
            (
                x_of(q, top),
                h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
            )
        })
        .collect();
    points.insert(0, (1.0, h.min() as f64 / 1e3));
    points
}

fn plot(logs: &[(String, Log)], merged: &Histogram<u64>) -> Result<String, Error> {
    let fail = |cause: String| Error::Output {
        path: "latency-by-percentile.svg".into(),
        cause: format!("cannot draw: {cause}"),
    };
    let mut series: Vec<(String, &Histogram<u64>)> = logs
        .iter()
        .map(|(name, log)| (format!("{name} ({} values)", log.total.len()), &log.total))
        .collect();
    let merged_name = format!("all logs merged ({} values)", merged.len());
    if logs.len() > 1 {
        series.push((merged_name, merged));
    }
    // The axis ends a decade past the rarest percentile the data can show.
    let most = series
        .iter()
        .map(|(_, h)| h.len())
        .max()
        .unwrap_or(1)
        .max(10);
    let top = 10f64.powf((most as f64).log10().ceil() + 1.0);
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, h)| curve(h, top)).collect();
    let y_max = curves
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let strip = 24 * series.len() as u32 + 16;
        let (plot, legend) = root.split_vertically(640u32.saturating_sub(strip));
        let mut chart = ChartBuilder::on(&plot)
            .caption("Latency by percentile", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((1.0..top).log_scale(), 0.0..y_max)
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale)")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (i, points) in curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let width = if logs.len() > 1 && i == curves.len() - 1 {
                3
            } else {
                2
            };
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(width),
                ))
                .map_err(|e| fail(e.to_string()))?;
        }
        for (i, (name, _)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let y = 8 + 24 * i as i32 + 12;
            legend
                .draw(&PathElement::new(
                    [(96, y), (124, y)],
                    colour.stroke_width(3),
                ))
                .map_err(|e| fail(e.to_string()))?;
            legend
                .draw(&Text::new(
                    name.clone(),
                    (134, y - 8),
                    ("sans-serif", 15).into_font(),
                ))
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_reads_in_nines() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert!((x_of(0.99, 1e6) - 100.0).abs() < 1e-6);
        assert_eq!(x_of(1.0, 1e6), 1e6);
    }
}
