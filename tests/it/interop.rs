//! Real third-party peers against our server: the Python `websocket-client`
//! (the original experiment's client) and asyncio `websockets`, checking
//! every reply against numpy's statistics (#3).

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const LIMIT: Duration = Duration::from_secs(90);

fn python_client(url: &str, lib: &str, extra: &[&str]) {
    let out = run_bounded(
        Command::new(python())
            .arg(peer_script("image_client.py"))
            .args([url, "--lib", lib])
            .args(extra),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{lib} against {url}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("ok "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn websocket_client_gets_numpy_exact_statistics() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        python_client(&server.url("/"), "websocket-client", &[]);
        python_client(&server.url("/image"), "websocket-client", &["--seed", "11"]);
    });
}

#[test]
fn asyncio_websockets_gets_numpy_exact_statistics() {
    timed!(LIMIT, {
        let server = Server::start(&[]);
        python_client(&server.url("/"), "websockets", &[]);
    });
}

#[test]
fn python_clients_get_fast_acknowledgements() {
    timed!(LIMIT, {
        let server = Server::start(&["--response", "fast"]);
        python_client(&server.url("/"), "websockets", &["--fast"]);
        python_client(&server.url("/image"), "websocket-client", &["--fast"]);
    });
}
