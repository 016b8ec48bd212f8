//! `wsbench pingpong` from outside: both tables on stdout and in the
//! report, times that add up, the server's counters, `--http-mode both`,
//! the Python asyncio peer, and every way a run fails (#7).

use std::net::TcpListener;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);

/// The cells of every table row that follows the header line `header`.
fn table(report: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = report.lines().skip_while(|l| *l != header);
    assert_eq!(
        lines.next(),
        Some(header),
        "no table `{header}` in:\n{report}"
    );
    lines.next(); // the |---| rule
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn seconds(cell: &str) -> f64 {
    cell.trim_end_matches(" s").parse().unwrap()
}

fn iso(cell: &str) -> jiff::Timestamp {
    assert!(
        cell.ends_with('Z') && cell.contains('T'),
        "not ISO-8601 UTC: {cell}"
    );
    jiff::Timestamp::from_str(cell).unwrap()
}

const RUNS: &str = "| Server | Qt pings | Start | End | Duration |";
const VERSUS: &str = "| Qt pings | WS (s) | HTTP (s) | HTTP - WS (s) | HTTP / WS |";

#[test]
fn pingpong_against_a_running_server_reports_both_tables_that_add_up() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let report = tempdir().join("report.md");
        let run = wsbench(
            &[
                "pingpong",
                "100",
                "200",
                "--ws-url",
                &server.url("/"),
                "--report",
                report.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let stdout = text(&run.stdout);
        let file = std::fs::read_to_string(&report).unwrap();
        assert_eq!(
            stdout.trim_end(),
            file.trim_end(),
            "stdout and --report differ"
        );

        let runs = table(&file, RUNS);
        let servers: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r[0].as_str(), r[1].as_str()))
            .collect();
        assert_eq!(
            servers,
            [
                ("WebSocket", "100"),
                ("HTTP keep-alive", "100"),
                ("WebSocket", "200"),
                ("HTTP keep-alive", "200")
            ]
        );
        for row in &runs {
            let (start, end) = (iso(&row[2]), iso(&row[3]));
            let span = end.duration_since(start).as_secs_f64();
            let duration = seconds(&row[4]);
            assert!(
                (span - duration).abs() < 0.005,
                "End - Start = {span} but Duration = {duration}: {row:?}"
            );
        }
        // Runs follow each other: each starts when or after the last ended.
        for pair in runs.windows(2) {
            assert!(iso(&pair[1][2]) >= iso(&pair[0][3]), "{pair:?}");
        }

        let versus = table(&file, VERSUS);
        assert_eq!(versus.len(), 2, "{file}");
        for (row, (ws_run, http_run)) in versus
            .iter()
            .zip([(&runs[0], &runs[1]), (&runs[2], &runs[3])])
        {
            let f = |i: usize| row[i].parse::<f64>().unwrap();
            assert_eq!(row[0], ws_run[1]);
            assert!((f(1) - seconds(&ws_run[4])).abs() < 1e-4, "{row:?}");
            assert!((f(2) - seconds(&http_run[4])).abs() < 1e-4, "{row:?}");
            assert!((f(3) - (f(2) - f(1))).abs() < 2e-4, "HTTP - WS: {row:?}");
            assert!(
                (f(4) - f(2) / f(1)).abs() < 0.01 + 0.01 * f(4),
                "HTTP / WS: {row:?}"
            );
        }
        let rates = table(
            &file,
            "| Server | Qt pings | Requests | Connections | Requests/s | p50 | p99 |",
        );
        assert_eq!(rates.len(), 4);
        assert_eq!(rates[1][2], "101", "GET / and 100 posts");
        assert_eq!(rates[1][3], "1", "keep-alive is one connection");

        // The server saw the traffic: 300 pings, 2 GETs and 300 posts.
        assert_eq!(server.metric("wsbench_messages_received_total"), 300);
        assert_eq!(server.metric("wsbench_messages_sent_total"), 300);
        assert!(server.metric("wsbench_http_requests_total") >= 302);
    });
}

#[test]
fn http_mode_both_runs_each_mode_on_the_embedded_server() {
    timed!(LIMIT, {
        let run = wsbench(
            &["pingpong", "50", "--http-mode", "both"],
            Duration::from_secs(60),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let stdout = text(&run.stdout);
        assert!(stdout.contains("(embedded server)"), "{stdout}");
        let runs = table(&stdout, RUNS);
        let servers: Vec<&str> = runs.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            servers,
            ["WebSocket", "HTTP keep-alive", "HTTP new-connection"]
        );
        let versus = table(
            &stdout,
            "| Qt pings | WS (s) | HTTP keep-alive (s) | HTTP keep-alive - WS (s) | HTTP keep-alive / WS | HTTP new-connection (s) | HTTP new-connection - WS (s) | HTTP new-connection / WS |",
        );
        assert_eq!(versus.len(), 1);
        assert_eq!(versus[0].len(), 8, "{:?}", versus[0]);
        let rates = table(
            &stdout,
            "| Server | Qt pings | Requests | Connections | Requests/s | p50 | p99 |",
        );
        assert_eq!(rates[2][3], "51", "a new connection per request");
    });
}

fn python_peer(extra: &[&str]) -> Server {
    let mut cmd = Command::new(python());
    cmd.arg(peer_script("image_server.py")).args(extra);
    Server::from_command(cmd)
}

#[test]
fn a_reply_other_than_pong_fails_the_run_and_names_it() {
    timed!(LIMIT, {
        let liar = python_peer(&["--pong", "Pang!"]);
        let run = wsbench(
            &["pingpong", "10", "--ws-url", &liar.url("/")],
            Duration::from_secs(30),
        );
        assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
        assert_eq!(
            text(&run.stderr).trim(),
            format!(
                "error: wrong reply from {} to `Ping 0!`: got \"Pang!\", expected \"Pong!\"",
                liar.url("/")
            )
        );
    });
}

#[test]
fn the_python_asyncio_peer_answers_the_websocket_half() {
    timed!(LIMIT, {
        let peer = python_peer(&[]);
        let ours = Server::start(&[]);
        let run = wsbench(
            &[
                "pingpong",
                "50",
                "--ws-url",
                &peer.url("/"),
                "--http-url",
                &format!("http://{}/", ours.addr),
            ],
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        assert_eq!(table(&text(&run.stdout), RUNS).len(), 2);
        // Its HTTP side is only the upgrade: the HTTP half fails clearly.
        let run = wsbench(
            &["pingpong", "5", "--ws-url", &peer.url("/")],
            Duration::from_secs(30),
        );
        assert_eq!(run.status.code(), Some(1));
        let stderr = text(&run.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("to GET /: got HTTP 426")
                && stderr.contains("expected HTTP 200 \"Hello, HTTP!\""),
            "{stderr}"
        );
    });
}

#[test]
fn nothing_listening_or_a_bad_url_exits_1_with_one_line() {
    timed!(LIMIT, {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ws://127.0.0.1:{port}/");
        let run = wsbench(
            &["pingpong", "5", "--ws-url", &url],
            Duration::from_secs(20),
        );
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(
            text(&run.stderr).trim(),
            format!("error: cannot connect to {url}: connection refused")
        );
        let run = wsbench(
            &["pingpong", "5", "--http-url", "ws://x/"],
            Duration::from_secs(20),
        );
        assert_eq!(run.status.code(), Some(1));
        assert_eq!(
            text(&run.stderr).trim(),
            "error: bad url `ws://x/`: the scheme must be http:// or https://"
        );
    });
}

#[test]
fn bad_usage_exits_2() {
    timed!(LIMIT, {
        for args in [
            &["pingpong", "0"][..],
            &["pingpong", "ten"],
            &["pingpong", "--http-mode", "sideways"],
            &["pingpong", "--timeout", "soon"],
        ] {
            let run = wsbench(args, Duration::from_secs(10));
            assert_eq!(
                run.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&run.stderr)
            );
        }
        let help = wsbench(&["pingpong", "--help"], Duration::from_secs(10));
        for flag in [
            "--ws-url",
            "--http-url",
            "--http-mode",
            "--report",
            "new-connection",
        ] {
            assert!(
                text(&help.stdout).contains(flag),
                "pingpong --help lacks {flag}"
            );
        }
    });
}
