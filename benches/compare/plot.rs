//! `compare.svg` (#17): the comparison at a glance. One line per workload,
//! two panels side by side: messages/s (longer is better) and server CPU
//! per 1,000 messages (shorter is better), a bar per server with its
//! figure written at its end. Each panel has its own scale: the workloads'
//! figures differ by orders of magnitude, and on a shared axis the small
//! ones would vanish.
//!
//! Drawn with plotters' SVG backend, in the colours and fonts of
//! `wsbench report`'s plots; text stays `<text>` elements, so no font file
//! is read.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::summary::{Show, num, rate};
use crate::table::Row;

/// `wsbench report`'s first colours (Tableau 10), one per server.
const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

const WIDTH: u32 = 1200;
const TOP: i32 = 70;
const BAR: i32 = 16;
const GAP: i32 = 3;
/// Title line plus one bar per server plus spacing.
fn row_height(servers: usize) -> i32 {
    22 + servers as i32 * (BAR + GAP) + 14
}

/// Panels: (left edge, width) of the bars' room; the title sits above.
const LABEL: i32 = 70;
const PANELS: [(i32, i32); 2] = [(20 + LABEL, 440), (620 + LABEL, 440)];

fn text_style(size: u32, anchor: HPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(anchor, VPos::Center))
}

pub fn draw(rows: &[Row], servers: &[&str], path: &Path) -> Result<(), String> {
    let height = TOP as u32 + rows.len() as u32 * row_height(servers.len()) as u32 + 20;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let heading = ("sans-serif", 17).into_font().into_text_style(&root);
        root.draw(&Text::new(
            "messages/s (longer is better)",
            (PANELS[0].0 - LABEL, 14),
            heading.clone(),
        ))
        .map_err(e)?;
        root.draw(&Text::new(
            "server CPU-ms per 1,000 messages (shorter is better)",
            (PANELS[1].0 - LABEL, 14),
            heading,
        ))
        .map_err(e)?;
        // Legend: a swatch and a name per server.
        for (i, name) in servers.iter().enumerate() {
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

        for (r, row) in rows.iter().enumerate() {
            let y0 = TOP + r as i32 * row_height(servers.len());
            root.draw(&Text::new(
                row.title.clone(),
                (PANELS[0].0 - LABEL, y0 + 8),
                text_style(15, HPos::Left),
            ))
            .map_err(e)?;
            let figures: [(&str, Show); 2] = [("messages_per_s", rate), ("cpu_ms_per_1k", num)];
            for (panel, (figure, show)) in figures.iter().enumerate() {
                let (x0, width) = PANELS[panel];
                let values: Vec<Option<f64>> = servers
                    .iter()
                    .map(|s| row.cells.get(s).and_then(|c| c.get(figure)))
                    .collect();
                let top = values.iter().flatten().copied().fold(0.0, f64::max);
                for (i, (name, value)) in servers.iter().zip(&values).enumerate() {
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
                        // Marked, not left out: a server that could not
                        // run the workload says so where its bar would be.
                        None => (0, not_measured(row, name)),
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
    std::fs::write(path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn not_measured(row: &Row, server: &str) -> String {
    match row.cells.get(server) {
        Some(c) if c.notes.iter().all(|n| n.starts_with("skipped")) => "skipped".into(),
        Some(c) if c.notes.iter().any(|n| n.starts_with("timeout")) => "timeout".into(),
        Some(c) if c.measured() => "–".into(),
        _ => "failed".into(),
    }
}
