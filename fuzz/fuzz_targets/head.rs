//! Request heads as the server sees them: parse, decide the upgrade,
//! route, and answer as plain HTTP. Nothing may panic, and the parsed
//! length may never exceed the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsbench::metrics::ServerCounters;
use wsbench::server::handshake::{Decision, check_head, decide_upgrade, parse_head, route};
use wsbench::server::http::respond;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((head, len))) = parse_head(data) else {
        return;
    };
    assert!(len <= data.len());
    let _ = route(&head.target);
    let _ = check_head(&head);
    if head.wants_upgrade() {
        if let Decision::Accept { response, .. } = decide_upgrade(&head) {
            assert!(response.starts_with("HTTP/1.1 101 "));
        }
    } else {
        let (status, _, _) = respond(&ServerCounters::default(), &head, &data[len..]);
        assert!((200..600).contains(&status));
    }
});
