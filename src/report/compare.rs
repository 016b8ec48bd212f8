//! `wsbench report target/compare/summary.json` (#17): `make compare`'s
//! results at a glance. `compare.svg` has one line per workload and two
//! panels side by side, messages/s (longer is better) and server CPU per
//! 1,000 messages (shorter is better), a bar per server with its figure at
//! its end; `compare.md` has the same figures as two tables.
//!
//! It reads only what the comparison's `summary.json` says of each
//! workload's medians (`table[].cells[server].median`), so a summary from
//! another machine, or an older run, draws the same way. Each panel has its
//! own scale per workload: the workloads' figures differ by orders of
//! magnitude, and on a shared axis the small ones would vanish. A server
//! without a figure is marked where its bar would be (skipped, timeout,
//! failed), never left out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use super::COLOURS;
use crate::error::{Error, io_cause};

/// The part of `make compare`'s summary.json drawn here.
#[derive(Debug, Deserialize)]
pub struct Comparison {
    /// (name, how it was run), in the table's column order.
    pub servers: Vec<(String, String)>,
    pub table: Vec<Workload>,
    #[serde(default)]
    pub machine: Option<Machine>,
}

#[derive(Debug, Deserialize)]
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
}

#[derive(Debug, Deserialize)]
pub struct Workload {
    pub title: String,
    pub cells: BTreeMap<String, Cell>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Cell {
    /// JSON has no NaN: serde_json writes one as `null`.
    #[serde(default)]
    pub median: BTreeMap<String, Option<f64>>,
    /// Why runs failed or were skipped.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A figure's key in `median`, its heading, and how it is written.
type Figure = (&'static str, &'static str, fn(f64) -> String);

/// The two figures drawn.
const FIGURES: [Figure; 2] = [
    ("messages_per_s", "messages/s (longer is better)", rate),
    (
        "cpu_ms_per_1k",
        "server CPU-ms per 1,000 messages (shorter is better)",
        num,
    ),
];

/// Whether `head` (a file's first bytes) is a comparison summary rather
/// than a CSV or an interval log: JSON, which neither of them is.
pub fn looks_like_comparison(head: &[u8]) -> bool {
    head.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

pub fn read(path: &Path) -> Result<Comparison, Error> {
    let input = |cause: String| Error::Input {
        path: path.display().to_string(),
        cause,
    };
    let text = std::fs::read_to_string(path).map_err(|e| input(io_cause(&e)))?;
    let comparison: Comparison = serde_json::from_str(&text)
        .map_err(|e| input(format!("not a `make compare` summary.json: {e}")))?;
    if comparison.servers.is_empty() || comparison.table.is_empty() {
        return Err(input(
            "the comparison has no servers or no workloads".into(),
        ));
    }
    Ok(comparison)
}

/// Writes `compare.svg` and `compare.md` into `out`; returns their paths.
pub fn write(out: &Path, comparison: &Comparison) -> Result<Vec<String>, Error> {
    let mut written = Vec::new();
    for (file, contents) in [
        ("compare.svg", svg(comparison)?),
        ("compare.md", markdown(comparison)),
    ] {
        let path = out.join(file);
        std::fs::write(&path, contents).map_err(|e| Error::Output {
            path: path.display().to_string(),
            cause: io_cause(&e),
        })?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

impl Comparison {
    fn names(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|(name, _)| name.as_str())
    }
}

impl Workload {
    fn figure(&self, server: &str, figure: &str) -> Option<f64> {
        let value = (*self.cells.get(server)?.median.get(figure)?)?;
        value.is_finite().then_some(value)
    }

    /// What stands where a server's figure would: why it has none.
    fn missing(&self, server: &str) -> &'static str {
        match self.cells.get(server) {
            None => "not run",
            Some(c) if !c.notes.is_empty() && c.notes.iter().all(|n| n.starts_with("skipped")) => {
                "skipped"
            }
            Some(c) if c.notes.iter().any(|n| n.starts_with("timeout")) => "timeout",
            Some(c) if !c.median.is_empty() => "–",
            Some(_) => "failed",
        }
    }
}

fn markdown(c: &Comparison) -> String {
    let names: Vec<&str> = c.names().collect();
    let mut md = String::from("# wsbench against other servers\n\n");
    if let Some(m) = &c.machine {
        let _ = writeln!(
            md,
            "From `make compare` on {}, {} CPUs ({}): medians over the rounds.\n",
            m.date, m.cpus, m.cpu_model
        );
    }
    md.push_str("![comparison](compare.svg)\n");
    for (figure, heading, show) in FIGURES {
        let _ = writeln!(md, "\n## {heading}\n");
        let _ = writeln!(md, "| workload | {} |", names.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(names.len()));
        for w in &c.table {
            let cells: Vec<String> = names
                .iter()
                .map(|s| {
                    w.figure(s, figure)
                        .map_or_else(|| w.missing(s).into(), show)
                })
                .collect();
            let _ = writeln!(md, "| {} | {} |", w.title, cells.join(" | "));
        }
    }
    md
}

const WIDTH: u32 = 1200;
const TOP: i32 = 70;
const BAR: i32 = 16;
const GAP: i32 = 3;
/// Room for the server names left of the bars.
const LABEL: i32 = 70;
/// (left edge, width) of each panel's bars.
const PANELS: [(i32, i32); 2] = [(20 + LABEL, 440), (620 + LABEL, 440)];

/// A workload's title line, a bar per server, and space below.
fn row_height(servers: usize) -> i32 {
    22 + servers as i32 * (BAR + GAP) + 14
}

fn text_style(size: u32, anchor: HPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(anchor, VPos::Center))
}

fn svg(c: &Comparison) -> Result<String, Error> {
    let names: Vec<&str> = c.names().collect();
    let height = TOP as u32 + c.table.len() as u32 * row_height(names.len()) as u32 + 20;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| Error::Output {
            path: "compare.svg".into(),
            cause: format!("cannot draw: {e}"),
        };
        root.fill(&WHITE).map_err(e)?;
        let heading = ("sans-serif", 17).into_font().into_text_style(&root);
        for (panel, (_, title, _)) in FIGURES.iter().enumerate() {
            root.draw(&Text::new(
                *title,
                (PANELS[panel].0 - LABEL, 14),
                heading.clone(),
            ))
            .map_err(e)?;
        }
        // Legend: a swatch and a name per server.
        for (i, name) in names.iter().enumerate() {
            let x = PANELS[0].0 - LABEL + 120 * i as i32;
            let colour = COLOURS[i % COLOURS.len()];
            root.draw(&Rectangle::new([(x, 40), (x + 14, 54)], colour.filled()))
                .map_err(e)?;
            root.draw(&Text::new(
                name.to_string(),
                (x + 20, 47),
                text_style(14, HPos::Left),
            ))
            .map_err(e)?;
        }

        for (r, workload) in c.table.iter().enumerate() {
            let y0 = TOP + r as i32 * row_height(names.len());
            root.draw(&Text::new(
                workload.title.clone(),
                (PANELS[0].0 - LABEL, y0 + 8),
                text_style(15, HPos::Left),
            ))
            .map_err(e)?;
            for (panel, (figure, _, show)) in FIGURES.iter().enumerate() {
                let (x0, width) = PANELS[panel];
                let values: Vec<Option<f64>> =
                    names.iter().map(|s| workload.figure(s, figure)).collect();
                let top = values.iter().flatten().copied().fold(0.0, f64::max);
                for (i, (name, value)) in names.iter().zip(&values).enumerate() {
                    let y = y0 + 22 + i as i32 * (BAR + GAP);
                    root.draw(&Text::new(
                        name.to_string(),
                        (x0 - 8, y + BAR / 2),
                        text_style(13, HPos::Right),
                    ))
                    .map_err(e)?;
                    let (length, label) = match value {
                        Some(v) if top > 0.0 => {
                            ((v / top * width as f64).round().max(1.0) as i32, show(*v))
                        }
                        Some(v) => (1, show(*v)),
                        None => (0, workload.missing(name).to_string()),
                    };
                    if length > 0 {
                        let colour = COLOURS[i % COLOURS.len()];
                        root.draw(&Rectangle::new(
                            [(x0, y), (x0 + length, y + BAR)],
                            colour.filled(),
                        ))
                        .map_err(e)?;
                    }
                    root.draw(&Text::new(
                        label,
                        (x0 + length + 6, y + BAR / 2),
                        text_style(13, HPos::Left),
                    ))
                    .map_err(e)?;
                }
            }
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// `4,179/s`, `12.5/s`.
pub fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{}/s", thousands(v))
    } else {
        format!("{v:.1}/s")
    }
}

/// `12.3`, `0.41`, `1,234`: CPU-ms and the like.
pub fn num(v: f64) -> String {
    if v >= 1000.0 {
        thousands(v)
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Rounded to a whole number, digits grouped by three: `10,000`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{v:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_as_the_tables_write_them() {
        assert_eq!(rate(4179.4), "4,179/s");
        assert_eq!(rate(1_234_567.0), "1,234,567/s");
        assert_eq!(rate(12.46), "12.5/s");
        assert_eq!(num(157.54), "157.5");
        assert_eq!(num(0.414), "0.41");
        assert_eq!(num(7226.0), "7,226");
    }

    #[test]
    fn json_is_told_apart_from_csv_and_interval_logs() {
        assert!(looks_like_comparison(b"\n {\n  \"machine\": {}"));
        assert!(!looks_like_comparison(b"idx,ok,start_unix_s\n"));
        assert!(!looks_like_comparison(b"#[StartTime]: 1.0\n"));
        assert!(!looks_like_comparison(b""));
    }
}
