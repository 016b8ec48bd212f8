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
