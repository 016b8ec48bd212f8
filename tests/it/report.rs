//! `wsbench report` from outside: handwritten CSVs and CSVs `bench` made,
//! the summary table, the two SVG plots, and the errors (issue 8).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);
const HEADER: &str = "idx,start_unix_s,connect_s,send_s,recv_s,total_s,ok,error\n";

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{HEADER}{body}")).unwrap();
    path
}

fn report(args: &[&str]) -> std::process::Output {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    wsbench(&all, Duration::from_secs(30))
}

/// The table rows of summary.md, cells trimmed, header and rule skipped.
fn summary_rows(dir: &Path) -> Vec<Vec<String>> {
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    md.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// A minimal well-formedness check: one `<svg>` root, every element
/// closed in order. Enough to catch a truncated or garbled file without
/// an XML crate.
fn assert_balanced_svg(svg: &str) {
    let body = svg.trim();
    let body = body
        .strip_prefix("<?xml")
        .map_or(body, |rest| &rest[rest.find("?>").unwrap() + 2..])
        .trim();
    assert!(body.starts_with("<svg"), "{}", &body[..body.len().min(80)]);
    assert!(body.ends_with("</svg>"));
    let mut open: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find('<') {
        let end = rest[at..].find('>').expect("every tag closes") + at;
        let tag = &rest[at + 1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop().as_deref(), Some(name.trim()), "close tag order");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap();
            open.push(name.to_string());
        }
        rest = &rest[end + 1..];
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

#[test]
fn handwritten_csvs_make_a_table_row_each_and_two_plots() {
    timed!(LIMIT, {
        let dir = tempdir();
        // Serial: one connect, back to back, 1 s wall; one failure.
        let serial = write(
            &dir,
            "one.csv",
            "0,1000.0,0.01,0.001,0.002,0.25,true,\n\
             1,1000.25,0,0.001,0.002,0.25,true,\n\
             2,1000.5,0,0.001,0.002,0.25,true,\n\
             3,1000.75,0,0.001,0.002,0.25,false,reply: timed out\n",
        );
        // Parallel: overlapping, 2 s wall.
        let parallel = write(
            &dir,
            "two.csv",
            "0,2000.0,0.01,0.001,0.002,1.5,true,\n\
             1,2000.5,0.01,0.001,0.002,1.5,true,\n",
        );
        let out = dir.join("out");
        let run = report(&[
            serial.to_str().unwrap(),
            parallel.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let stdout = text(&run.stdout);
        for file in ["summary.md", "response-time.svg", "process-time.svg"] {
            let path = out.join(file);
            assert!(stdout.contains(path.to_str().unwrap()), "{stdout}");
            assert!(path.exists(), "{file}");
        }

        let rows = summary_rows(&out);
        assert_eq!(rows.len(), 2, "{rows:?}");
        // file | mode | messages | ok | failed | wall | messages/s | p50 ...
        assert_eq!(
            rows[0][..7],
            ["one.csv", "serial", "4", "3", "1", "1.00s", "3.0"]
        );
        assert_eq!(
            rows[1][..7],
            ["two.csv", "parallel", "2", "2", "0", "2.00s", "1.0"]
        );
        // HDR percentiles, as `bench` prints them: exact to 3 digits.
        assert!(
            rows[0][7].starts_with("250."),
            "p50 of total: {:?}",
            rows[0]
        );

        for plot in ["response-time.svg", "process-time.svg"] {
            let svg = std::fs::read_to_string(out.join(plot)).unwrap();
            assert_balanced_svg(&svg);
            assert!(
                svg.contains("one.csv") && svg.contains("two.csv"),
                "{plot}: legend"
            );
        }
        // The CDF is one polyline per file; the process plot one line per message.
        let cdf = std::fs::read_to_string(out.join("response-time.svg")).unwrap();
        assert!(cdf.matches("<polyline").count() >= 2);
        let process = std::fs::read_to_string(out.join("process-time.svg")).unwrap();
        assert!(process.matches("<polyline").count() >= 6);
        // One panel, with its own time axis, per file.
        assert_eq!(
            process.matches("first message started (s)").count(),
            2,
            "one time axis per file"
        );
    });
}

#[test]
fn bench_csvs_of_two_modes_report_their_counts() {
    timed!(LIMIT, {
        let dir = tempdir();
        let mut files = Vec::new();
        for mode in ["serial", "parallel"] {
            let csv = dir.join(format!("{mode}.csv"));
            let run = wsbench(
                &[
                    "bench",
                    "--count",
                    "20",
                    "--size",
                    "1000",
                    "--mode",
                    mode,
                    "--concurrency",
                    "10",
                    "--out",
                    csv.to_str().unwrap(),
                ],
                Duration::from_secs(60),
            );
            assert!(run.status.success(), "{mode}: {}", text(&run.stderr));
            files.push(csv);
        }
        let out = dir.join("report");
        let run = report(&[
            files[0].to_str().unwrap(),
            files[1].to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let rows = summary_rows(&out);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][..5], ["serial.csv", "serial", "20", "20", "0"]);
        assert_eq!(rows[1][0], "parallel.csv");
        assert_eq!(rows[1][2..5], ["20", "20", "0"]);
        for row in &rows {
            assert!(row[6].parse::<f64>().unwrap() > 0.0, "messages/s: {row:?}");
        }
        for plot in ["response-time.svg", "process-time.svg"] {
            let svg = std::fs::read_to_string(out.join(plot)).unwrap();
            assert_balanced_svg(&svg);
            assert!(svg.contains("serial.csv") && svg.contains("parallel.csv"));
        }
    });
}

#[test]
fn the_default_out_is_a_report_directory() {
    timed!(LIMIT, {
        let dir = tempdir();
        write(&dir, "a.csv", "0,1000.0,0.01,0.001,0.002,0.25,true,\n");
        let run = run_bounded(
            std::process::Command::new(BIN)
                .args(["report", "a.csv"])
                .current_dir(&dir),
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert!(dir.join("report/summary.md").exists());
        assert!(text(&run.stdout).contains("report/summary.md"));
    });
}

#[test]
fn a_missing_file_is_one_line_and_exit_1() {
    timed!(LIMIT, {
        let dir = tempdir();
        let missing = dir.join("results.csv");
        let run = report(&[missing.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
        assert_eq!(run.status.code(), Some(1));
        let stderr = text(&run.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.trim() == format!("error: cannot read {}: no such file", missing.display()),
            "{stderr}"
        );
    });
}

#[test]
fn a_bad_row_names_the_file_and_the_row() {
    timed!(LIMIT, {
        let dir = tempdir();
        let good = "0,1000.0,0.01,0.001,0.002,0.25,true,\n";
        let cases = [
            // Header is row 1, so the third message is row 4.
            (
                format!("{good}{good}1,1000.5,0,0.001,0.002,x,true,\n"),
                "row 4: bad total_s \"x\"",
            ),
            (format!("{good}1,1000.5,0\n"), "row 3: 3 fields, expected 8"),
            (
                "1,1000.5,0,0.001,0.002,-1,true,\n".to_string(),
                "row 2: bad total_s \"-1\"",
            ),
            (
                format!("{good}1,1000.5,0,0.001,0.002,0.1,maybe,\n"),
                "row 3: bad ok \"maybe\"",
            ),
        ];
        for (body, expected) in cases {
            let path = write(&dir, "results.csv", &body);
            let run = report(&[path.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
            assert_eq!(run.status.code(), Some(1), "{body}");
            let stderr = text(&run.stderr);
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert_eq!(
                stderr.trim(),
                format!("error: {} {expected}", path.display()),
                "{body}"
            );
        }
        // Not a bench CSV at all: named by its header, not a row.
        let other = dir.join("other.csv");
        std::fs::write(&other, "a,b\n1,2\n").unwrap();
        let run = report(&[other.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(
            text(&run.stderr).trim(),
            format!(
                "error: cannot read {}: no idx column, not a `wsbench bench` CSV",
                other.display()
            )
        );
    });
}

#[test]
fn no_files_is_bad_usage() {
    timed!(LIMIT, {
        let run = report(&[]);
        assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
        let help = report(&["--help"]);
        assert!(text(&help.stdout).contains("--out"));
    });
}

/// `make compare`'s summary.json, as much of it as `report` reads, with a
/// server that was skipped on one workload and timed out on another.
fn comparison_json() -> serde_json::Value {
    let cell = |rate: f64, cpu: f64| {
        serde_json::json!({
            "runs": 3,
            "median": { "messages_per_s": rate, "cpu_ms_per_1k": cpu, "p99_ms": 0.3 },
            "notes": []
        })
    };
    serde_json::json!({
        "machine": { "date": "2026-12-02 04:04 UTC", "cpus": 2, "cpu_model": "Test CPU",
                     "kernel": "6.1", "load_before": 0.5, "load_after": 0.7 },
        "settings": { "rounds": 3 },
        "servers": [["ours", "`wsbench server`"], ["tokio", "compare/tokio"],
                    ["python", "compare/python/server.py"]],
        "table": [
            { "workload": "serial-slow", "title": "serial slow", "cells": {
                "ours": cell(4179.4, 157.54),
                "tokio": cell(3931.0, 178.4),
                "python": { "runs": 1, "median": {},
                            "notes": ["skipped: python3 not found"] } } },
            { "workload": "idle", "title": "idle 10,000 connections (setups/s)", "cells": {
                // A figure that was NaN is written as null; it is not drawn.
                "ours": { "runs": 3, "notes": [], "median":
                          { "messages_per_s": 11706.3, "cpu_ms_per_1k": 278.4, "p99_ms": null } },
                "tokio": { "runs": 3, "median": {}, "notes": ["failed: exit status 1"] },
                "python": { "runs": 3, "median": {}, "notes": ["timeout after 120 s"] } } }
        ],
        "targets": [],
        "runs": []
    })
}

/// The markdown table under `heading` in compare.md, cells trimmed.
fn compare_table(md: &str, heading: &str) -> Vec<Vec<String>> {
    let at = md
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading} in {md}"));
    md[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// #17: the comparison's figure is drawn by the product from summary.json:
/// per workload a bar per server for messages/s and for CPU per 1,000
/// messages, each scaled to the workload's largest, and a server without
/// a figure marked with why.
#[test]
fn a_compare_summary_becomes_compare_svg_and_compare_md() {
    timed!(LIMIT, {
        let dir = tempdir();
        let summary = dir.join("summary.json");
        std::fs::write(&summary, comparison_json().to_string()).unwrap();
        let out = dir.join("out");
        let run = report(&[summary.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let printed = text(&run.stdout);
        assert!(printed.contains("compare.svg") && printed.contains("compare.md"));
        assert!(
            !out.join("summary.md").exists(),
            "no bench CSV, no summary.md"
        );

        let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
        assert!(
            md.contains("2026-12-02 04:04 UTC, 2 CPUs (Test CPU)"),
            "{md}"
        );
        assert_eq!(
            compare_table(&md, "## messages/s"),
            [
                ["serial slow", "4,179/s", "3,931/s", "skipped"],
                [
                    "idle 10,000 connections (setups/s)",
                    "11,706/s",
                    "failed",
                    "timeout"
                ],
            ]
        );
        assert_eq!(
            compare_table(&md, "## server CPU-ms"),
            [
                ["serial slow", "157.5", "178.4", "skipped"],
                [
                    "idle 10,000 connections (setups/s)",
                    "278.4",
                    "failed",
                    "timeout"
                ],
            ]
        );

        let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
        assert_balanced_svg(&svg);
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .map(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim())
            .collect();
        for label in [
            "4,179/s", "3,931/s", "157.5", "178.4", "skipped", "timeout", "failed",
        ] {
            assert!(texts.contains(&label), "no {label} in {texts:?}");
        }
        // Bars: (fill, width) of every 16-pixel-high rectangle, in drawing
        // order: per workload the rates, then the CPU figures.
        let bars: Vec<(String, u32)> = svg
            .split("<rect ")
            .skip(1)
            .filter(|r| r.contains("height=\"16\""))
            .map(|r| {
                let attr = |name: &str| {
                    let at = r.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    r[at..at + r[at..].find('"').unwrap()].to_string()
                };
                (attr("fill"), attr("width").parse().unwrap())
            })
            .collect();
        let (ours, tokio) = ("#1F77B4".to_string(), "#FF7F0E".to_string());
        assert_eq!(
            bars,
            [
                // serial slow: ours is the longest rate, tokio's the most CPU.
                (ours.clone(), 440),
                (tokio.clone(), (3931.0f64 / 4179.4 * 440.0).round() as u32),
                (ours.clone(), (157.54f64 / 178.4 * 440.0).round() as u32),
                (tokio, 440),
                // idle: ours alone.
                (ours.clone(), 440),
                (ours, 440),
            ]
        );
    });
}

#[test]
fn a_summary_that_is_not_a_comparison_is_one_line_and_exit_1() {
    timed!(LIMIT, {
        let dir = tempdir();
        let out = dir.to_str().unwrap();
        let bad = dir.join("summary.json");
        std::fs::write(&bad, "{\"servers\": [[\"ours\"]]").unwrap();
        let run = report(&[bad.to_str().unwrap(), "--out", out]);
        assert_eq!(run.status.code(), Some(1));
        let stderr = text(&run.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!(
                "error: cannot read {}: not a `make compare` summary.json: ",
                bad.display()
            )),
            "{stderr}"
        );
        // Two comparisons would draw over each other's compare.svg.
        let good = dir.join("a.json");
        std::fs::write(&good, comparison_json().to_string()).unwrap();
        let run = report(&[good.to_str().unwrap(), good.to_str().unwrap(), "--out", out]);
        assert_eq!(run.status.code(), Some(1));
        assert!(
            text(&run.stderr).starts_with("error: one comparison summary at a time"),
            "{}",
            text(&run.stderr)
        );
    });
}
