//! What a person reads: `summary.md` (the tables, the targets, the
//! servers, the plots) and `summary.json` (every run), and the
//! `wsbench report` plots of each workload's median runs.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use serde::Serialize;
pub use wsbench::report::compare::{num, rate, thousands};

use crate::run::{RunResult, Status, last_line};
use crate::servers::{ServerKind, reap};
use crate::table::{Cell, Row, TargetResult};
use crate::{BIN, RUN_LIMIT, Settings, pinning};

/// How a figure is written: `rate`, `ms`, `mib`…
pub type Show = fn(f64) -> String;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// /proc/loadavg's 1-minute figure when the run started and ended: the
    /// machine is shared, and a busy one moves every figure.
    pub load_before: f64,
    pub load_after: f64,
}

/// summary.json: every run, the tables' medians and the verdicts; what
/// `wsbench report` draws compare.svg from.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub machine: &'a Machine,
    pub settings: &'a Settings,
    /// (name, how it was run), in the tables' column order.
    pub servers: Vec<(&'static str, String)>,
    pub table: &'a [Row],
    pub targets: &'a [TargetResult],
    pub runs: &'a [RunResult],
    pub wall_minutes: f64,
}

impl Summary<'_> {
    pub fn write(&self, out: &Path) {
        fs::write(
            out.join("summary.json"),
            serde_json::to_string_pretty(self).expect("plain data serialises"),
        )
        .expect("target/compare is writable");
    }
}

pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        date: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        load_before: load_average(),
        load_after: 0.0,
    }
}

/// A workload's id and title, and the servers plotted or why none were.
pub type Plotted = (&'static str, String, Result<Vec<&'static str>, String>);

/// `wsbench report` of each server's median run of one workload. The CSVs
/// are copied to `{server}.csv` first: the report names series by file.
pub fn plot(row: &Row, runs: &[RunResult], out: &Path) -> Result<Vec<&'static str>, String> {
    let dir = out.join("plots").join(row.workload);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut servers = Vec::new();
    for (server, c) in &row.cells {
        let Some(round) = c.median_round else {
            continue;
        };
        let Some(csv) = runs
            .iter()
            .find(|r| r.workload == row.workload && r.server == *server && r.round == round)
            .and_then(|r| r.csv.as_ref())
        else {
            continue;
        };
        let copy = dir.join(format!("{server}.csv"));
        fs::copy(csv, &copy).map_err(|e| format!("cannot copy {}: {e}", csv.display()))?;
        files.push(copy);
        servers.push(*server);
    }
    if files.is_empty() {
        return Err("no run to plot".into());
    }
    // Series in the table's order: ours, tokio, python.
    let order = |s: &str| ["ours", "tokio", "python"].iter().position(|n| *n == s);
    let mut pairs: Vec<_> = servers.into_iter().zip(files).collect();
    pairs.sort_by_key(|(s, _)| order(s));
    report(pairs.iter().map(|(_, f)| f.as_path()), &dir)?;
    Ok(pairs.into_iter().map(|(s, _)| s).collect())
}

/// `compare.svg` and `compare.md`, drawn by `wsbench report` from
/// summary.json (#17): the product draws what it measured, and a
/// summary.json from another machine draws the same way.
pub fn draw_comparison(out: &Path) -> Result<(), String> {
    report([out.join("summary.json").as_path()], out)
}

/// Runs `wsbench report FILES --out DIR`, bounded by `RUN_LIMIT`.
fn report<'a>(files: impl IntoIterator<Item = &'a Path>, dir: &Path) -> Result<(), String> {
    let child = Command::new(BIN)
        .arg("report")
        .args(files)
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {BIN} report: {e}"))?;
    let pid = child.id() as i32;
    let (output, killed) = reap(child, RUN_LIMIT, pid, Child::wait_with_output);
    match output {
        _ if killed => Err("wsbench report did not finish".into()),
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(last_line(&o.stderr)),
        Err(e) => Err(e.to_string()),
    }
}

/// `1.04×`; a third decimal when two would round a ratio to 1.00 that is
/// not 1, so that a NOT met beside it never reads `1.00×`.
pub fn times(r: f64) -> String {
    if format!("{r:.2}") == "1.00" && r != 1.0 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn cell_text(c: &Cell) -> String {
    match (c.get("messages_per_s"), c.get("p99_ms")) {
        (Some(r), Some(p)) => {
            let mut text = format!("{} (p99 {})", rate(r), ms(p));
            if c.runs_measured < c.runs {
                let _ = write!(
                    text,
                    "; {} of {} runs failed",
                    c.runs - c.runs_measured,
                    c.runs
                );
            }
            if c.messages_failed > 0 {
                let _ = write!(
                    text,
                    "; {} of {} messages failed",
                    c.messages_failed, c.messages
                );
            }
            text
        }
        _ if c.notes.iter().all(|n| n.starts_with("skipped")) => "skipped".into(),
        _ if c.notes.iter().any(|n| n.starts_with("timeout")) => "timeout".into(),
        _ => "failed".into(),
    }
}

/// `21.3 KiB`.
pub fn kib(v: f64) -> String {
    format!("{v:.1} KiB")
}

/// `37 MB`-style: `36.6 MiB`, `315 MiB`.
pub fn mib(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1} MiB")
    } else {
        format!("{v:.0} MiB")
    }
}

/// `12.3 ms (client 20.1) · 36.6 MiB`: the server's CPU per 1,000
/// messages, our client's beside it, and the server's peak RSS.
fn cost_text(c: &Cell) -> String {
    match (c.get("cpu_ms_per_1k"), c.get("peak_rss_mib")) {
        (Some(cpu), Some(rss)) => {
            let client = c
                .get("client_cpu_ms_per_1k")
                .map_or(String::new(), |v| format!(" (client {})", num(v)));
            format!("{}{client} · {}", num(cpu), mib(rss))
        }
        _ => cell_text(c),
    }
}

fn figure_text(c: &Cell, figure: &str, show: Show) -> String {
    match c.get(figure) {
        Some(v) => show(v),
        None if c.measured() => "–".into(),
        None => cell_text(c),
    }
}

/// A Markdown table: a header row, then rows of cells.
fn md_table(md: &mut String, header: &[String], rows: &[Vec<String>]) {
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(md, "|{}|", align.join("|"));
    for row in rows {
        let _ = writeln!(md, "| {} |", row.join(" | "));
    }
    md.push('\n');
}

fn ratio_text(ratio: Option<f64>, other: Option<&str>) -> String {
    match (ratio, other) {
        (Some(r), Some(other)) => format!("{} {other}", times(r)),
        _ => "–".into(),
    }
}

/// What the run did, for summary.md's preamble.
fn preamble(
    md: &mut String,
    machine: &Machine,
    kinds: &[ServerKind],
    settings: &Settings,
    wall: Duration,
) {
    let _ = writeln!(
        md,
        "# wsbench against async servers{}\n",
        if settings.quick { " (quick pass)" } else { "" }
    );
    let _ = writeln!(
        md,
        "Measured with `make compare` on {}, {} CPUs ({}), Linux {}; the whole run took \
         {:.1} min; load average {:.1} when it started, {:.1} when it ended.\n",
        machine.date,
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        wall.as_secs_f64() / 60.0,
        machine.load_before,
        machine.load_after,
    );
    let rounds = settings.rounds;
    let _ = writeln!(
        md,
        "Client: ours (`wsbench bench`, {count} images of 800×600 = 480,000 bytes, seed 42, \
         `--verify` on slow replies{shares}; pingpong: {pings} `Ping {{x}}!` round trips on one \
         WebSocket, connect included; idle: `wsbench load` opens {idle} connections to `/` \
         in batches of 500 on 2 workers, holds them {hold:.0} s, then one `ping` → `Pong!` \
         each; chat fan-out: {members} members of one room, a paced sender putting \
         {frate} lines/s through them in turn, each line delivered to the {others} others, \
         latency from each line's intended send time). {rounds} round{s}; in each, every \
         workload runs on each server in turn (ours, tokio, python), each run on a freshly \
         started server. {placement}\n",
        count = settings.count,
        shares = kinds
            .iter()
            .filter(|k| k.serial_share != 1.0)
            .map(|k| format!(
                "; {} gets {} in serial and serial-short runs, as at ~100/s they take \
                 longest",
                k.name,
                (settings.count as f64 * k.serial_share).round()
            ))
            .collect::<String>(),
        pings = settings.pings,
        idle = thousands(settings.idle_connections as f64),
        hold = settings.idle_hold.as_secs_f64(),
        members = settings.fanout_members,
        frate = settings.fanout_rate,
        others = settings.fanout_members - 1,
        s = if rounds == 1 { "" } else { "s" },
        placement = match pinning::placement() {
            (Some(c), Some(s)) => format!(
                "Serial, serial-short, pingpong and fan-out runs put the client on CPU {c} \
                 and the server on CPU {s} (taskset), the same for every server; parallel \
                 and idle runs are not pinned."
            ),
            _ => "No run is pinned to a CPU (taskset or a second CPU is missing).".to_string(),
        },
    );
    let _ = writeln!(
        md,
        "The wss rows (#15) run the same client over TLS, with {} images a run (half the \
         others'; python again half of that in serial and serial-short): every server \
         serves one ECDSA P-256 certificate for 127.0.0.1 made for the run (rcgen), signed by a CA our client \
         trusts with `--ca-file`; ours and tokio (tokio-rustls) use rustls with the ring \
         provider and stateless session tickets, python its `ssl` module (OpenSSL). \
         serial-short opens a connection per image, so after the first its handshakes \
         resume a session; its `full handshakes` row runs our client with `--no-resume`, \
         what every connection would cost without tickets.\n",
        settings.wss_count
    );
}

#[allow(clippy::too_many_arguments)]
pub fn write_summary(
    out: &Path,
    machine: &Machine,
    kinds: &[ServerKind],
    rows: &[Row],
    targets: &[TargetResult],
    runs: &[RunResult],
    plots: &[Plotted],
    comparison_svg: &Result<(), String>,
    settings: &Settings,
    wall: Duration,
) {
    let mut md = String::new();
    preamble(&mut md, machine, kinds, settings, wall);
    let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
    let header = |first: &str, last: &[&str]| -> Vec<String> {
        std::iter::once(first)
            .chain(names.iter().copied())
            .chain(last.iter().copied())
            .map(String::from)
            .collect()
    };

    let _ = writeln!(md, "## Speed\n");
    let _ = writeln!(
        md,
        "Median messages/s over the rounds (median p99 of the time per message); idle: \
         connections set up per second (p99 of the final round trip); fan-out: deliveries \
         per second (p99 of the delivery latency). Last column: ours / the other server \
         with the most messages/s, taken within each round, then the median over rounds, \
         as are all ratios here.\n"
    );
    let speed: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            std::iter::once(row.title.clone())
                .chain(names.iter().map(|n| cell_text(&row.cells[n])))
                .chain([ratio_text(row.ratio, row.best_other)])
                .collect()
        })
        .collect();
    md_table(&mut md, &header("workload", &["ours / best other"]), &speed);

    let _ = writeln!(md, "## What each server spent\n");
    let _ = writeln!(
        md,
        "Server CPU (user + system, each process's CPU clock, Python's pool workers \
         included) in ms per 1,000 messages (idle: per 1,000 connections; fan-out: per 1,000 deliveries), \
         our client's own CPU per 1,000 in brackets, and the server's peak RSS (VmHWM). A \
         run's CPU counts from the listening line until the server is idle after the \
         client, so fast-mode statistics computed after the last reply count. Ratios: ours \
         / the other server with the least CPU per 1,000 messages.\n"
    );
    let cost: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            std::iter::once(row.title.clone())
                .chain(names.iter().map(|n| cost_text(&row.cells[n])))
                .chain([
                    ratio_text(row.cpu_ratio, row.cheapest_other),
                    ratio_text(row.rss_ratio, row.cheapest_other),
                ])
                .collect()
        })
        .collect();
    md_table(
        &mut md,
        &header(
            "workload",
            &["CPU ours / cheapest other", "peak RSS ours / same"],
        ),
        &cost,
    );

    let by_figure = |md: &mut String, row: &Row, lines: &[(&str, &str, Show)]| {
        let table: Vec<Vec<String>> = lines
            .iter()
            .map(|(label, figure, show)| {
                std::iter::once(label.to_string())
                    .chain(
                        names
                            .iter()
                            .map(|n| figure_text(&row.cells[n], figure, *show)),
                    )
                    .collect()
            })
            .collect();
        md_table(md, &header("", &[]), &table);
    };
    let count: Show = |v| thousands(v);
    let per_s: Show = rate;
    let cpu: Show = num;
    if let Some(idle) = rows.iter().find(|r| r.workload == "idle") {
        let _ = writeln!(md, "## Idle connections\n");
        let _ = writeln!(
            md,
            "RSS per connection: the server's highest sampled RSS while every connection was \
             held, less its RSS once listening, over the connections held.{}\n",
            kinds
                .iter()
                .filter(|k| !k.idle_flags.1.is_empty())
                .map(|k| format!(" Here {}.", k.idle_flags.1))
                .collect::<String>()
        );
        by_figure(
            &mut md,
            idle,
            &[
                ("connections held", "held", count),
                ("setup rate", "setup_per_s", per_s),
                ("RSS per connection", "rss_per_conn_kib", kib),
                ("peak RSS", "peak_rss_mib", mib),
                ("peak threads", "peak_threads", count),
                ("server CPU-ms per 1,000 connections", "cpu_ms_per_1k", cpu),
                ("round trip p99", "p99_ms", ms),
            ],
        );
    }
    if let Some(fanout) = rows.iter().find(|r| r.workload == "fanout") {
        let _ = writeln!(md, "## Chat fan-out at a paced rate\n");
        by_figure(
            &mut md,
            fanout,
            &[
                ("deliveries/s asked", "target_deliveries_per_s", per_s),
                ("deliveries/s", "messages_per_s", per_s),
                ("delivery p50", "delivery_p50_ms", ms),
                ("delivery p99", "delivery_p99_ms", ms),
                ("delivery max", "delivery_max_ms", ms),
                ("deliveries lost", "lost", count),
                ("members dropped (1008)", "dropped_members", count),
                ("members missing join lines", "members_missing_joins", count),
                ("server CPU-ms per 1,000 deliveries", "cpu_ms_per_1k", cpu),
                (
                    "client CPU-ms per 1,000 deliveries",
                    "client_cpu_ms_per_1k",
                    cpu,
                ),
                ("peak threads", "peak_threads", count),
            ],
        );
    }

    let tls_rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.cells.values().any(|c| c.get("tls_handshakes").is_some()))
        .collect();
    if !tls_rows.is_empty() {
        let _ = writeln!(md, "## TLS handshakes\n");
        let _ = writeln!(
            md,
            "Our client's handshakes in the median of each cell's runs, and how many of them \
             resumed an earlier session (a TLS 1.3 ticket) instead of a full handshake.\n"
        );
        let table: Vec<Vec<String>> = tls_rows
            .iter()
            .map(|row| {
                std::iter::once(row.title.clone())
                    .chain(names.iter().map(|n| {
                        let c = &row.cells[n];
                        match (c.get("tls_resumed"), c.get("tls_handshakes")) {
                            (Some(resumed), Some(all)) => {
                                format!("{} of {} resumed", thousands(resumed), thousands(all))
                            }
                            _ => figure_text(c, "tls_handshakes", count),
                        }
                    }))
                    .collect()
            })
            .collect();
        md_table(&mut md, &header("workload", &[]), &table);
    }

    let _ = writeln!(md, "## Server cost in detail\n");
    let _ = writeln!(
        md,
        "Medians over the rounds. Context switches are the server's whole life from wait4 \
         (ended threads included), less those of the threads alive at its start.\n"
    );
    let mut detail = Vec::new();
    for row in rows {
        for n in &names {
            let c = &row.cells[n];
            if !c.measured() {
                continue;
            }
            let f = |figure: &str, show: Show| c.get(figure).map_or("–".into(), show);
            detail.push(vec![
                row.title.clone(),
                n.to_string(),
                f("server_user_s", |v| format!("{v:.3}")),
                f("server_sys_s", |v| format!("{v:.3}")),
                f("peak_rss_mib", mib),
                f("peak_threads", count),
                f("voluntary_switches", count),
                f("involuntary_switches", count),
            ]);
        }
    }
    md_table(
        &mut md,
        &[
            "workload",
            "server",
            "user s",
            "system s",
            "peak RSS",
            "peak threads",
            "voluntary switches",
            "involuntary switches",
        ]
        .map(String::from),
        &detail,
    );

    let _ = writeln!(md, "## Targets (#8, #15, #17)\n");
    for t in targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**NOT met**",
            None => "not judged",
        };
        let _ = writeln!(
            md,
            "- {}, {}: {verdict} — {}",
            t.target, t.workload, t.detail
        );
    }

    let _ = writeln!(md, "\n## Servers\n");
    for k in kinds {
        let _ = writeln!(md, "- {}: {}", k.name, k.describe);
    }

    let _ = writeln!(md, "\n## Plots\n");
    match comparison_svg {
        Ok(()) => {
            let _ = writeln!(
                md,
                "- [compare.svg](compare.svg): per workload, a bar per server for messages/s \
                 and for server CPU per 1,000 messages; [compare.md](compare.md), the same \
                 figures as tables (both by `wsbench report summary.json`)."
            );
        }
        Err(why) => {
            let _ = writeln!(md, "- compare.svg: not drawn ({why})");
        }
    }
    for (id, title, result) in plots {
        match result {
            Ok(servers) => {
                let _ = writeln!(
                    md,
                    "- {title} ({}): [response time](plots/{id}/response-time.svg), \
                     [process time](plots/{id}/process-time.svg), [table](plots/{id}/summary.md)",
                    servers.join(", ")
                );
            }
            Err(why) => {
                let _ = writeln!(md, "- {title}: no plots ({why})");
            }
        }
    }
    let _ = writeln!(
        md,
        "- pingpong (ws and wss), idle and fan-out: no CSV (see summary.json for every run)"
    );

    let trouble: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.status != Status::Ok && r.status != Status::Skipped || r.failed > 0)
        .collect();
    let overflowed: Vec<&RunResult> = runs.iter().filter(|r| r.listen_overflows > 0).collect();
    if !trouble.is_empty() || !overflowed.is_empty() {
        let _ = writeln!(md, "\n## Runs that did not go cleanly\n");
        for r in trouble {
            let _ = writeln!(
                md,
                "- {} on {}, round {}: {:?}, {} ok, {} failed: {}",
                r.workload, r.server, r.round, r.status, r.ok, r.failed, r.note
            );
        }
        if !overflowed.is_empty() {
            let _ = writeln!(
                md,
                "- SYNs dropped by a full listen queue during a run (TcpExt ListenOverflows; \
                 the counter is machine-wide, so other programs' queues count too): {}",
                overflowed
                    .iter()
                    .map(|r| format!(
                        "{} on {} round {}: {}",
                        r.workload, r.server, r.round, r.listen_overflows
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }

    fs::write(out.join("summary.md"), &md).expect("target/compare is writable");
    print!("\n{md}");
}
