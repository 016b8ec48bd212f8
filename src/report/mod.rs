//! `wsbench report`: turns `bench` CSV files into `DIR/summary.md` (one row
//! per file) and two plots, `response-time.svg` (an empirical CDF of each
//! message's total time on a log axis) and `process-time.svg` (each message
//! as a line from its start to its end, one panel per file, as in the
//! original experiment's figures). See issue 8.
//!
//! It owns reading the rows back (a `Deserialize` twin of `bench::Record`,
//! so the writer stays untouched) and checking them; the percentiles come
//! from `metrics::Latency`, the same recorder `bench` summarises with, so
//! both print the same figures for the same run. Drawing is `plotters`'
//! SVG backend: text stays `<text>` elements, so no font is read here.
//!
//! HdrHistogram interval logs (`--hdr-log`, #16) given beside the CSVs are
//! told apart by their content and handed to `hdrlog::report`, which
//! merges them and draws latency by percentile; `make compare`'s
//! summary.json goes to [`compare`] (#17).

pub mod compare;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use plotters::prelude::*;

use crate::cli::ReportArgs;
use crate::error::{Error, io_cause};
use crate::export::{Record, read_csv};
use crate::metrics::{Latency, LatencySummary, human};

/// One file's rows and the name it goes by in the table and legends.
#[derive(Debug)]
pub struct Run {
    pub name: String,
    pub rows: Vec<Record>,
}

/// One row of `summary.md`.
#[derive(Debug)]
pub struct RunSummary {
    pub name: String,
    pub mode: &'static str,
    pub count: usize,
    pub ok: usize,
    pub failed: usize,
    /// Last end − first start; `None` without rows.
    pub wall_s: Option<f64>,
    pub messages_per_s: Option<f64>,
    /// Of the successful messages' total times.
    pub total: Option<LatencySummary>,
}

/// One colour per file (or per server); Tableau 10, readable on white and
/// apart from each other. Every plot of `wsbench report` uses them.
pub(crate) const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Beyond this many points a CDF is sampled: the eye sees no difference and
/// the SVG stays small for a million-message run.
const MAX_CDF_POINTS: usize = 2000;

const PLOT_SIZE: (u32, u32) = (960, 640);

pub fn run(args: ReportArgs) -> Result<(), Error> {
    let names = display_names(&args.files);
    // HdrHistogram interval logs (`--hdr-log`, #16) sit beside CSVs on the
    // command line and are told apart by their content.
    let mut logs = Vec::new();
    let mut runs = Vec::new();
    let mut comparisons = Vec::new();
    for (path, name) in args.files.iter().zip(names) {
        let head = head(path)?;
        if compare::looks_like_comparison(&head) {
            comparisons.push(compare::read(path)?);
        } else if crate::hdrlog::looks_like_log(&head) {
            logs.push((name, crate::hdrlog::read(path)?));
        } else {
            runs.push(Run {
                name,
                rows: read_csv(path)?,
            });
        }
    }
    if comparisons.len() > 1 {
        return Err(Error::Other(format!(
            "one comparison summary at a time: {} were given, and each would \
             overwrite the other's compare.svg",
            comparisons.len()
        )));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| Error::Output {
        path: args.out.display().to_string(),
        cause: io_cause(&e),
    })?;
    if !logs.is_empty() {
        for path in crate::hdrlog::report::write(&args.out, &logs)? {
            println!("{path}");
        }
    }
    for comparison in &comparisons {
        for path in compare::write(&args.out, comparison)? {
            println!("{path}");
        }
    }
    if runs.is_empty() {
        return Ok(());
    }

    let summaries: Vec<RunSummary> = runs.iter().map(summarise).collect();
    let outputs = [
        ("summary.md", summary_markdown(&summaries)),
        ("response-time.svg", response_time_svg(&runs)?),
        ("process-time.svg", process_time_svg(&runs)?),
    ];
    for (file, contents) in outputs {
        let path = args.out.join(file);
        std::fs::write(&path, contents).map_err(|e| Error::Output {
            path: path.display().to_string(),
            cause: io_cause(&e),
        })?;
        println!("{}", path.display());
    }
    Ok(())
}

/// A file's first kilobyte in whole lines, to tell its kind by.
fn head(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use std::io::Read as _;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1024).read_to_end(&mut head))
        .map_err(|e| Error::Input {
            path: path.display().to_string(),
            cause: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".into()
            } else {
                io_cause(&e)
            },
        })?;
    // A line cut at the kilobyte would not parse as a log's.
    if head.len() == 1024
        && let Some(end) = head.iter().rposition(|&b| b == b'\n')
    {
        head.truncate(end + 1);
    }
    Ok(head)
}

/// File names as legends show them: the bare name, unless two files share
/// it, then the paths as given.
fn display_names(files: &[PathBuf]) -> Vec<String> {
    let bare: Vec<String> = files
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let unique = bare
        .iter()
        .enumerate()
        .all(|(i, name)| !bare[..i].contains(name));
    if unique {
        bare
    } else {
        files.iter().map(|p| p.display().to_string()).collect()
    }
}

pub fn summarise(run: &Run) -> RunSummary {
    let rows = &run.rows;
    let ok = rows.iter().filter(|r| r.ok).count();
    let mut total = Latency::default();
    for r in rows.iter().filter(|r| r.ok) {
        total.record(Duration::from_secs_f64(r.total_s));
    }
    let wall_s = span(rows).map(|(first, last)| last - first);
    RunSummary {
        name: run.name.clone(),
        mode: infer_mode(rows),
        count: rows.len(),
        ok,
        failed: rows.len() - ok,
        wall_s,
        messages_per_s: wall_s.filter(|w| *w > 0.0).map(|w| ok as f64 / w),
        total: (ok > 0).then(|| total.summary()),
    }
}

/// First start and last end, in unix seconds.
fn span(rows: &[Record]) -> Option<(f64, f64)> {
    let first = rows.iter().map(|r| r.start_unix_s).reduce(f64::min)?;
    let last = rows
        .iter()
        .map(|r| r.start_unix_s + r.total_s)
        .reduce(f64::max)?;
    Some((first, last))
}

/// The CSV has no mode column, but each mode leaves its mark: parallel
/// messages overlap in time; serial-short connects for every message;
/// serial connects once (and again only after a failure). "-" when the
/// rows do not tell.
fn infer_mode(rows: &[Record]) -> &'static str {
    if rows.len() < 2 {
        return "-";
    }
    let mut by_start: Vec<&Record> = rows.iter().collect();
    by_start.sort_by(|a, b| a.start_unix_s.total_cmp(&b.start_unix_s));
    // 10 µs of slack: start and total come from two clocks read a moment apart.
    let overlaps = by_start
        .windows(2)
        .any(|w| w[1].start_unix_s + 1e-5 < w[0].start_unix_s + w[0].total_s);
    let connected = rows.iter().filter(|r| r.connect_s > 0.0).count();
    if overlaps {
        "parallel"
    } else if connected == rows.len() {
        "serial-short"
    } else if by_start[0].connect_s > 0.0 && connected <= 1 + rows.iter().filter(|r| !r.ok).count()
    {
        "serial"
    } else {
        "-"
    }
}

pub fn summary_markdown(summaries: &[RunSummary]) -> String {
    let dash = || "-".to_string();
    let mut md = String::from("# wsbench report\n\n");
    md.push_str("| file | mode | messages | ok | failed | wall time | messages/s | p50 | p90 | p99 | max |\n");
    md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for s in summaries {
        let pct =
            |f: fn(&LatencySummary) -> f64| s.total.as_ref().map_or_else(dash, |t| human(f(t)));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name.replace('|', "\\|"),
            s.mode,
            s.count,
            s.ok,
            s.failed,
            s.wall_s.map_or_else(dash, human),
            s.messages_per_s.map_or_else(dash, |r| format!("{r:.1}")),
            pct(|t| t.p50),
            pct(|t| t.p90),
            pct(|t| t.p99),
            pct(|t| t.max),
        );
    }
    md.push_str(
        "\nWall time runs from the first message's start to the last one's end; \
         messages/s counts the ok ones over it. Percentiles are of the ok messages' \
         total time. The CSV holds no message size, so there is no MB/s here \
         (`wsbench bench` prints it). Mode is read from the timings: overlapping \
         messages are parallel, a connect per message is serial-short, one connect \
         is serial.\n\n![response time](response-time.svg)\n\n![process time](process-time.svg)\n",
    );
    md
}

fn draw_error(file: &str) -> impl Fn(String) -> Error + '_ {
    move |cause| Error::Output {
        path: file.to_string(),
        cause: format!("cannot draw: {cause}"),
    }
}

/// Tick labels of the log time axis, in ms: `0.1`, `1`, `20`, `500`.
fn ms_label(ms: f64) -> String {
    let text = format!("{ms:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Each file's ok total times as an empirical CDF: x = total time (ms), y =
/// share of ok messages done by then (%), on a log x axis whose decades
/// cover every file (serial and parallel runs differ by orders of magnitude).
pub fn response_time_svg(runs: &[Run]) -> Result<String, Error> {
    let fail = draw_error("response-time.svg");
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|run| {
            let mut ms: Vec<f64> = run
                .rows
                .iter()
                .filter(|r| r.ok)
                .map(|r| (r.total_s * 1e3).max(1e-3))
                .collect();
            ms.sort_by(f64::total_cmp);
            cdf_points(&ms)
        })
        .collect();
    let all = series.iter().flatten().map(|p| p.0);
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let (lo, hi) = if lo.is_finite() {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf((hi.log10() + 1e-9).ceil()),
        )
    } else {
        (0.1, 10.0)
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let (plot, legend) = split_for_legend(&root, runs);
        let mut chart = ChartBuilder::on(&plot)
            .caption("Response time: total per message", ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("total time per message (ms, log scale)")
            .y_desc("messages done (% of ok)")
            .x_label_formatter(&|x| ms_label(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .axis_desc_style(("sans-serif", 16))
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(242, 242, 242))
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (i, points) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| fail(e.to_string()))?;
        }
        draw_legend(&legend, runs).map_err(&fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(svg)
}

/// A step CDF through sorted values, sampled to at most `MAX_CDF_POINTS`.
fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(MAX_CDF_POINTS).max(1);
    let mut points = vec![(sorted[0], 0.0)];
    let mut i = 0;
    while i < n {
        let share = |k: usize| 100.0 * k as f64 / n as f64;
        // A vertical step at each value: up from the share before it.
        points.push((sorted[i], share(i)));
        points.push((sorted[i], share(i + 1)));
        if i == n - 1 {
            break;
        }
        i = (i + step).min(n - 1);
    }
    points
}

fn legend_text(run: &Run) -> String {
    let ok = run.rows.iter().filter(|r| r.ok).count();
    let mode = match infer_mode(&run.rows) {
        "-" => String::new(),
        mode => format!("{mode}, "),
    };
    format!("{} ({mode}{ok} ok of {})", run.name, run.rows.len())
}

/// Height of one legend line below a plot.
const LEGEND_LINE: u32 = 24;

/// Splits a plot's canvas into the chart and a strip below it for the
/// legend: a legend inside the chart always covers some file's curve.
fn split_for_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
) -> (
    DrawingArea<DB, plotters::coord::Shift>,
    DrawingArea<DB, plotters::coord::Shift>,
) {
    let strip = LEGEND_LINE * runs.len() as u32 + 16;
    root.split_vertically(PLOT_SIZE.1.saturating_sub(strip))
}

/// One line per file under the x axis: its colour, its name, its counts.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
) -> Result<(), String> {
    let x = 96;
    for (i, run) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let y = 8 + LEGEND_LINE as i32 * i as i32 + LEGEND_LINE as i32 / 2;
        area.draw(&PathElement::new(
            [(x, y), (x + 28, y)],
            colour.stroke_width(3),
        ))
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(
            legend_text(run),
            (x + 38, y),
            ("sans-serif", 15).into_font().into_text_style(area).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Left,
                    plotters::style::text_anchor::VPos::Center,
                ),
            ),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Height of one file's panel in `process-time.svg`.
const PANEL_HEIGHT: u32 = 300;

/// Each message as a horizontal line from its start to its end: x = seconds
/// since the run's first start, y = message index. Serial runs draw a
/// staircase, parallel ones a stack of overlapping bars. One panel per
/// file, each on its own time axis: on a shared one, a 7 s Python run
/// squashed a 0.5 s run of ours into a sliver under its bars.
pub fn process_time_svg(runs: &[Run]) -> Result<String, Error> {
    let fail = draw_error("process-time.svg");
    let title = 40;
    let size = (
        PLOT_SIZE.0,
        (title + PANEL_HEIGHT * runs.len() as u32).max(PLOT_SIZE.1 / 2),
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let root = root
            .titled(
                "Process time: each message from start to end",
                ("sans-serif", 24),
            )
            .map_err(|e| fail(e.to_string()))?;
        let panels = root.split_evenly((runs.len().max(1), 1));
        for (i, (run, panel)) in runs.iter().zip(&panels).enumerate() {
            draw_process_panel(panel, run, COLOURS[i % COLOURS.len()]).map_err(&fail)?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    Ok(svg)
}

fn draw_process_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    run: &Run,
    colour: RGBColor,
) -> Result<(), String> {
    let t0 = span(&run.rows).map_or(0.0, |s| s.0);
    let x_max = run
        .rows
        .iter()
        .map(|r| r.start_unix_s + r.total_s - t0)
        .fold(0.0f64, f64::max);
    let x_max = if x_max > 0.0 { x_max * 1.02 } else { 1.0 };
    let y_max = run
        .rows
        .iter()
        .map(|r| r.idx)
        .max()
        .map_or(1.0, |m| (m + 1) as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(
            legend_text(run),
            ("sans-serif", 16).into_font().color(&colour),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("time since the run's first message started (s)")
        .y_desc("message index")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .axis_desc_style(("sans-serif", 14))
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(242, 242, 242))
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(run.rows.iter().map(|r| {
            let y = r.idx as f64 + 0.5;
            let start = r.start_unix_s - t0;
            PathElement::new(
                [(start, y), (start + r.total_s, y)],
                colour.mix(0.75).stroke_width(2),
            )
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(idx: u64, start: f64, connect: f64, total: f64) -> Record {
        Record {
            idx,
            start_unix_s: start,
            connect_s: connect,
            send_s: 0.0,
            recv_s: 0.0,
            total_s: total,
            ok: true,
            error: String::new(),
            connect_failure: None,
        }
    }

    #[test]
    fn the_mode_is_read_from_the_timings() {
        let serial = [
            row(0, 0.0, 0.1, 1.0),
            row(1, 1.0, 0.0, 1.0),
            row(2, 2.0, 0.0, 1.0),
        ];
        assert_eq!(infer_mode(&serial), "serial");
        let short = [row(0, 0.0, 0.1, 1.0), row(1, 1.0, 0.1, 1.0)];
        assert_eq!(infer_mode(&short), "serial-short");
        let parallel = [row(0, 0.0, 0.1, 1.0), row(1, 0.5, 0.1, 1.0)];
        assert_eq!(infer_mode(&parallel), "parallel");
        assert_eq!(infer_mode(&serial[..1]), "-");
        let no_connects = [row(0, 0.0, 0.0, 1.0), row(1, 1.0, 0.0, 1.0)];
        assert_eq!(infer_mode(&no_connects), "-");
    }

    #[test]
    fn wall_time_runs_from_first_start_to_last_end() {
        let run = Run {
            name: "x.csv".into(),
            rows: vec![row(0, 100.0, 0.1, 0.5), row(1, 100.2, 0.1, 2.0)],
        };
        let s = summarise(&run);
        assert!((s.wall_s.unwrap() - 2.2).abs() < 1e-9);
        assert!((s.messages_per_s.unwrap() - 2.0 / 2.2).abs() < 1e-9);
    }

    #[test]
    fn the_cdf_climbs_to_100_in_steps() {
        let points = cdf_points(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(points.first(), Some(&(1.0, 0.0)));
        assert_eq!(points.last(), Some(&(4.0, 100.0)));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        let many: Vec<f64> = (0..100_000).map(f64::from).collect();
        assert!(cdf_points(&many).len() <= 2 * MAX_CDF_POINTS + 3);
        assert_eq!(cdf_points(&many).last(), Some(&(99_999.0, 100.0)));
    }

    #[test]
    fn tick_labels_drop_trailing_zeros() {
        assert_eq!(ms_label(0.1), "0.1");
        assert_eq!(ms_label(10.0), "10");
        assert_eq!(ms_label(2.5), "2.5");
    }
}
