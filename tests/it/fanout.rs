//! `wsbench fanout` (#16) against our server: deliveries counted per
//! sender, a slow member dropped with 1008 with its losses counted while
//! the others lose nothing, and its interval log read by `report`.

use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);

fn fanout(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["fanout", "--json"];
    all.extend_from_slice(args);
    let run = wsbench(&all, Duration::from_secs(60));
    assert!(
        run.status.success(),
        "{args:?}\nstdout: {}\nstderr: {}",
        text(&run.stdout),
        text(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&run.stdout)))
}

#[test]
fn a_slow_member_is_dropped_with_its_losses_counted_and_the_others_lose_nothing() {
    timed!(LIMIT, {
        // A short queue, so the slow member overflows once its socket is full.
        let server = Server::start(&["--max-queue", "64"]);
        let url = server.url("/chat/slow");
        let s = fanout(&[
            "--url",
            &url,
            "--clients",
            "8",
            "--slow-members",
            "1",
            "--rate",
            "400",
            "--duration",
            "3s",
            "--size",
            "8KiB",
        ]);
        assert_eq!(s["dropped_members"], serde_json::json!([7]), "{s}");
        let lost_at_dropped = s["lost_at_dropped"].as_u64().unwrap();
        assert!(lost_at_dropped > 0, "the dropped member lost nothing? {s}");
        // Every loss is the dropped member's; nothing duplicated or reordered.
        assert_eq!(s["lost"].as_u64().unwrap(), lost_at_dropped, "{s}");
        assert_eq!(s["duplicated"], 0, "{s}");
        assert_eq!(s["out_of_order"], 0, "{s}");
        assert_eq!(s["published"], 1200, "{s}");
        let senders = s["per_sender"].as_array().unwrap();
        assert_eq!(senders.len(), 7, "the slow member only listens: {s}");
        for sender in senders {
            assert_eq!(sender["out_of_order"], 0, "{sender}");
            assert_eq!(sender["duplicated"], 0, "{sender}");
        }
        // The 6 fast members each got every publication of the 6 others.
        let owed_to_fast = 1200 - 1200 / 7;
        let delivered = s["deliveries"].as_u64().unwrap();
        assert_eq!(
            delivered + lost_at_dropped,
            s["expected_deliveries"].as_u64().unwrap(),
            "{s}"
        );
        assert!(delivered >= 6 * owed_to_fast, "{s}");
        server.wait_metric("wsbench_slow_clients_dropped_total", LIMIT, |n| n == 1);
    });
}

#[test]
fn members_spread_over_urls_and_the_log_reads_back_in_report() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        let url = server.url("/chat/spread");
        let dir = tempdir();
        let log = dir.join("fanout.hlog");
        // The same instance twice: members alternate between the URLs
        // and all meet in one room.
        let s = fanout(&[
            "--url",
            &url,
            "--url",
            &url,
            "--clients",
            "6",
            "--rate",
            "300",
            "--duration",
            "1s",
            "--hdr-log",
            log.to_str().unwrap(),
        ]);
        assert_eq!(s["urls"].as_array().unwrap().len(), 2, "{s}");
        assert_eq!(s["published"], 300, "{s}");
        assert_eq!(s["deliveries"], 300 * 5, "{s}");
        assert_eq!(s["lost"], 0, "{s}");
        assert!(s["delivery"]["p50"].as_f64().unwrap() > 0.0, "{s}");
        let out = dir.join("report");
        let run = wsbench(
            &[
                "report",
                log.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("latency.json")).unwrap())
                .unwrap();
        assert_eq!(json["merged"]["count"], 1500, "{json}");
        std::fs::remove_dir_all(dir).unwrap();
    });
}

#[test]
fn fanout_without_a_server_says_so_in_one_line() {
    timed!(LIMIT, {
        let port = free_port();
        let url = format!("ws://127.0.0.1:{port}/chat");
        let run = wsbench(
            &["fanout", "--url", &url, "--clients", "2", "--rate", "10"],
            Duration::from_secs(30),
        );
        assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
        let stderr = text(&run.stderr);
        assert!(
            stderr.contains(&format!(
                "error: cannot connect to {url}: connection refused"
            )),
            "{stderr}"
        );
    });
}
