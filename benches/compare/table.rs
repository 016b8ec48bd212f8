//! From runs to the tables: a cell is the medians of one workload on one
//! server over the rounds; a ratio is ours / another server's, taken
//! within each round (the servers of one round share its machine noise)
//! and then the median over rounds. The targets of #8, #15 and #17 are
//! judged on those ratios.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Settings;
use crate::run::{RunResult, Status, Workload};
use crate::servers::ServerKind;
use crate::summary::{Show, kib, mib, ms, rate, times};

/// The figures every cell holds the median of (see `RunResult::figure`).
pub const FIGURES: [&str; 25] = [
    "messages_per_s",
    "p99_ms",
    "wall_s",
    "server_cpu_s",
    "server_user_s",
    "server_sys_s",
    "cpu_ms_per_1k",
    "client_cpu_ms_per_1k",
    "peak_rss_mib",
    "peak_threads",
    "voluntary_switches",
    "involuntary_switches",
    "held",
    "setup_per_s",
    "rss_per_conn_kib",
    "deliveries",
    "lost",
    "dropped_members",
    "members_missing_joins",
    "target_deliveries_per_s",
    "delivery_p50_ms",
    "delivery_p99_ms",
    "delivery_max_ms",
    "tls_handshakes",
    "tls_resumed",
];

/// Medians of one workload on one server, over the runs that measured
/// something (a run with failed messages still did; a timeout did not).
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub runs: usize,
    pub runs_measured: usize,
    pub runs_clean: usize,
    /// Failed messages over the measured runs, and all their messages.
    pub messages_failed: u64,
    pub messages: u64,
    /// Median of each figure over the measured runs that have it.
    pub median: BTreeMap<&'static str, f64>,
    /// The round whose messages/s is the median: its CSV is plotted.
    pub median_round: Option<u32>,
    /// Why runs failed or were skipped, one entry per distinct reason.
    pub notes: Vec<String>,
}

impl Cell {
    pub fn get(&self, figure: &str) -> Option<f64> {
        self.median.get(figure).copied()
    }

    pub fn measured(&self) -> bool {
        self.get("messages_per_s").is_some()
    }
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: &'static str,
    pub title: String,
    pub cells: BTreeMap<&'static str, Cell>,
    /// The other server with the highest median messages/s.
    pub best_other: Option<&'static str>,
    /// Ours / best other in messages/s, per round, median over rounds.
    pub ratio: Option<f64>,
    /// The other server with the least CPU per 1,000 messages, and ours /
    /// it in CPU per 1,000 messages and in peak RSS.
    pub cheapest_other: Option<&'static str>,
    pub cpu_ratio: Option<f64>,
    pub rss_ratio: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub workload: String,
    pub met: Option<bool>,
    pub detail: String,
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn cell(runs: &[&RunResult]) -> Cell {
    let measured: Vec<&RunResult> = runs
        .iter()
        .copied()
        .filter(|r| r.messages_per_s.is_some())
        .collect();
    let mut notes: Vec<String> = Vec::new();
    for r in runs.iter().filter(|r| r.status != Status::Ok) {
        let note = match r.status {
            Status::Timeout => format!("timeout: {}", r.note),
            Status::Skipped => r.note.clone(),
            _ => format!("failed: {}", r.note),
        };
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    let mut by_rate = measured.clone();
    by_rate.sort_by(|a, b| {
        a.messages_per_s
            .unwrap()
            .total_cmp(&b.messages_per_s.unwrap())
    });
    let median = FIGURES
        .iter()
        .filter_map(|&f| {
            Some((
                f,
                median(measured.iter().filter_map(|r| r.figure(f)).collect())?,
            ))
        })
        .collect();
    Cell {
        runs: runs.len(),
        runs_measured: measured.len(),
        runs_clean: runs.iter().filter(|r| r.status == Status::Ok).count(),
        messages_failed: measured.iter().map(|r| r.failed).sum(),
        messages: measured.iter().map(|r| r.ok + r.failed).sum(),
        median,
        median_round: by_rate
            .get(by_rate.len().saturating_sub(1) / 2)
            .map(|r| r.round),
        notes,
    }
}

/// `ours / other` of `figure` in each round where both measured it, median
/// over rounds: the servers of one round share that round's machine noise.
pub fn paired_ratio(runs: &[RunResult], workload: &str, other: &str, figure: &str) -> Option<f64> {
    let of = |server: &str, round: u32| {
        runs.iter()
            .find(|r| r.workload == workload && r.server == server && r.round == round)
            .filter(|r| r.messages_per_s.is_some())
            .and_then(|r| r.figure(figure))
    };
    let ratios = runs
        .iter()
        .filter(|r| r.workload == workload && r.server == "ours")
        .filter_map(|o| {
            let theirs = of(other, o.round)?;
            (theirs > 0.0).then_some(of("ours", o.round)? / theirs)
        })
        .collect();
    median(ratios)
}

/// `a / b` of one server's `figure` on two workloads, in each round where
/// both measured it, median over rounds: what TLS costs ours (#15), with
/// the two runs of a round as close in time as the matrix puts them.
pub fn paired_across(
    runs: &[RunResult],
    server: &str,
    a: &str,
    b: &str,
    figure: &str,
) -> Option<f64> {
    let of = |workload: &str, round: u32| {
        runs.iter()
            .find(|r| r.workload == workload && r.server == server && r.round == round)
            .filter(|r| r.messages_per_s.is_some())
            .and_then(|r| r.figure(figure))
    };
    let ratios = runs
        .iter()
        .filter(|r| r.workload == a && r.server == server)
        .filter_map(|r| {
            let below = of(b, r.round)?;
            (below > 0.0).then_some(of(a, r.round)? / below)
        })
        .collect();
    median(ratios)
}

pub fn table(workloads: &[Workload], kinds: &[ServerKind], runs: &[RunResult]) -> Vec<Row> {
    workloads
        .iter()
        .map(|w| {
            let cells: BTreeMap<&'static str, Cell> = kinds
                .iter()
                .map(|k| {
                    let mine: Vec<&RunResult> = runs
                        .iter()
                        .filter(|r| r.workload == w.id && r.server == k.name)
                        .collect();
                    (k.name, cell(&mine))
                })
                .collect();
            let best = |figure: &str, higher_is_better: bool| {
                cells
                    .iter()
                    .filter(|(name, c)| **name != "ours" && c.measured())
                    .filter_map(|(name, c)| Some((*name, c.get(figure)?)))
                    .max_by(|a, b| {
                        let order = a.1.total_cmp(&b.1);
                        if higher_is_better {
                            order
                        } else {
                            order.reverse()
                        }
                    })
                    .map(|(name, _)| name)
            };
            let best_other = best("messages_per_s", true);
            let cheapest_other = best("cpu_ms_per_1k", false);
            let ratio = best_other.and_then(|o| paired_ratio(runs, w.id, o, "messages_per_s"));
            let cpu_ratio =
                cheapest_other.and_then(|o| paired_ratio(runs, w.id, o, "cpu_ms_per_1k"));
            let rss_ratio =
                cheapest_other.and_then(|o| paired_ratio(runs, w.id, o, "peak_rss_mib"));
            Row {
                workload: w.id,
                title: w.title.clone(),
                cells,
                best_other,
                ratio,
                cheapest_other,
                cpu_ratio,
                rss_ratio,
            }
        })
        .collect()
}

/// Why a target cannot be judged: the first side without a result.
fn missing(row: &Row, other: &str) -> String {
    for side in ["ours", other] {
        let c = &row.cells[side];
        if !c.measured() {
            return match c.notes.first() {
                Some(note) if note.starts_with("skipped") => format!("{side} was skipped"),
                Some(note) => format!("{side} has no result ({note})"),
                None => format!("{side} has no result"),
            };
        }
    }
    String::new()
}

/// The row of a workload; `None` when WSBENCH_COMPARE_ONLY left it out,
/// and then its targets are not listed.
fn row<'a>(rows: &'a [Row], id: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.workload == id)
}

/// One target on one figure: met when the paired ratio ours / `other`
/// is within `limit` (`at_most`: ratio ≤ limit; else ratio ≥ limit).
struct Judge<'a> {
    rows: &'a [Row],
    runs: &'a [RunResult],
    out: Vec<TargetResult>,
}

impl Judge<'_> {
    #[allow(clippy::too_many_arguments)]
    fn ratio(
        &mut self,
        target: &str,
        id: &str,
        other: &'static str,
        figure: &str,
        at_most: bool,
        limit: f64,
        show: Show,
    ) {
        let Some(r) = row(self.rows, id) else {
            return;
        };
        let (ours, theirs) = (r.cells["ours"].get(figure), r.cells[other].get(figure));
        let ratio = paired_ratio(self.runs, id, other, figure);
        let (met, detail) = match (ours, theirs, ratio) {
            (Some(a), Some(b), Some(ratio)) => (
                Some(if at_most {
                    ratio <= limit
                } else {
                    ratio >= limit
                }),
                format!(
                    "ours / {other} {} (ours {}, {other} {})",
                    times(ratio),
                    show(a),
                    show(b)
                ),
            ),
            _ => (None, missing(r, other)),
        };
        self.out.push(TargetResult {
            target: target.to_string(),
            workload: r.title.clone(),
            met,
            detail,
        });
    }

    /// One target on ours alone: the paired ratio of `figure` on workload
    /// `a` over workload `b` is at least `limit`.
    fn across(&mut self, target: &str, a: &str, b: &str, figure: &str, limit: f64, show: Show) {
        let (Some(ra), Some(rb)) = (row(self.rows, a), row(self.rows, b)) else {
            return;
        };
        let (va, vb) = (ra.cells["ours"].get(figure), rb.cells["ours"].get(figure));
        let ratio = paired_across(self.runs, "ours", a, b, figure);
        let (met, detail) = match (va, vb, ratio) {
            (Some(x), Some(y), Some(ratio)) => (
                Some(ratio >= limit),
                format!(
                    "{} / {} on ours {} ({}, {})",
                    ra.title,
                    rb.title,
                    times(ratio),
                    show(x),
                    show(y)
                ),
            ),
            (None, _, _) => (None, missing(ra, "ours")),
            _ => (None, missing(rb, "ours")),
        };
        self.out.push(TargetResult {
            target: target.to_string(),
            workload: format!("{} vs {}", ra.title, rb.title),
            met,
            detail,
        });
    }
}

/// The targets of #8 and #17, each judged on the median of per-round
/// ratios (see `paired_ratio`); the medians of the table are given beside.
pub fn judge(
    rows: &[Row],
    runs: &[RunResult],
    settings: &Settings,
    wall_minutes: f64,
) -> Vec<TargetResult> {
    let mut j = Judge {
        rows,
        runs,
        out: Vec::new(),
    };
    let per_s: Show = rate;
    for id in ["serial-slow", "serial-fast"] {
        j.ratio(
            "#8: ours ≥ tokio on serial image round trips/s",
            id,
            "tokio",
            "messages_per_s",
            false,
            1.0,
            per_s,
        );
    }
    j.ratio(
        "#8: ours ≥ tokio on WebSocket ping-pong",
        "pingpong",
        "tokio",
        "messages_per_s",
        false,
        1.0,
        per_s,
    );
    for id in [
        "serial-slow",
        "serial-fast",
        "serial-short-slow",
        "serial-short-fast",
    ] {
        j.ratio(
            "#8: ours ≥ 10× Python on the serial image workloads",
            id,
            "python",
            "messages_per_s",
            false,
            10.0,
            per_s,
        );
    }
    for id in ["parallel-slow", "parallel-fast"] {
        let target = format!("#8: ours ≤ tokio on parallel {} wall time", settings.count);
        j.ratio(&target, id, "tokio", "wall_s", true, 1.0, |s| {
            format!("{s:.3} s")
        });
        let target = format!("#8: ours ≤ tokio on parallel {} p99", settings.count);
        j.ratio(&target, id, "tokio", "p99_ms", true, 1.0, ms);
    }
    let cpu: Show = |v| format!("{v:.1} CPU-ms/1k");
    for id in ["serial-slow", "serial-fast"] {
        j.ratio(
            "#17: ours ≤ tokio in CPU per 1,000 messages",
            id,
            "tokio",
            "cpu_ms_per_1k",
            true,
            1.0,
            cpu,
        );
    }
    for id in ["parallel-slow", "parallel-fast"] {
        let target = format!(
            "#17: peak RSS on parallel {} ours ≤ 0.5× tokio",
            settings.count
        );
        j.ratio(&target, id, "tokio", "peak_rss_mib", true, 0.5, mib);
    }
    j.ratio(
        "#17: chat fan-out delivery p99 ours ≤ tokio at the same paced rate",
        "fanout",
        "tokio",
        "delivery_p99_ms",
        true,
        1.0,
        ms,
    );
    for (id, what) in [
        ("wss-serial-slow", "wss serial image round trips/s"),
        ("wss-serial-short-slow", "wss serial-short round trips/s"),
    ] {
        j.ratio(
            &format!("#15: ours ≥ tokio-rustls on {what}"),
            id,
            "tokio",
            "messages_per_s",
            false,
            1.0,
            per_s,
        );
    }
    j.across(
        "#15: wss serial-short with resumption ≥ 1.2× without it on ours",
        "wss-serial-short-slow",
        "wss-serial-short-slow-full",
        "messages_per_s",
        1.2,
        per_s,
    );
    j.across(
        "#15: wss text round trips ≥ 0.9× ws text round trips on ours",
        "wss-pingpong",
        "pingpong",
        "messages_per_s",
        0.9,
        per_s,
    );
    let mut out = j.out;

    // Idle: an absolute bound on ours, tokio's figure beside it.
    if let Some(idle) = row(rows, "idle") {
        let per_conn = |s: &str| idle.cells[s].get("rss_per_conn_kib");
        let (met, detail) = match per_conn("ours") {
            Some(ours) => (
                Some(ours <= 25.0),
                format!(
                    "ours {} per connection; tokio {}; python {}",
                    kib(ours),
                    per_conn("tokio").map_or("–".into(), kib),
                    per_conn("python").map_or("–".into(), kib),
                ),
            ),
            None => (None, missing(idle, "tokio")),
        };
        out.push(TargetResult {
            target: "#17: idle connections ours ≤ 25 KiB RSS each".into(),
            workload: idle.title.clone(),
            met,
            detail,
        });
    }
    let limit = if settings.quick { 1.0 } else { 6.0 };
    out.push(TargetResult {
        target: format!(
            "#17: `make compare{}` under {limit:.0} min once built",
            if settings.quick { "-quick" } else { "" }
        ),
        workload: "all".into(),
        met: Some(wall_minutes < limit),
        detail: format!("this run took {wall_minutes:.1} min (the driver's own wall time)"),
    });
    out
}
