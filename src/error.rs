//! The errors a run ends with, and how they reach the user: one lower-case
//! line naming what failed and on what, then the cause; exit status 1.
//! Usage errors (exit 2) are clap's.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: String },
    #[error("bad url `{url}`: {why}")]
    Url { url: String, why: String },
    #[error("cannot write {path}: {cause}")]
    Output { path: String, cause: String },
    #[error("cannot read {path}: {cause}")]
    Input { path: String, cause: String },
    #[error("{path} row {row}: {why}")]
    BadRow { path: String, row: u64, why: String },
    #[error("{failed} of {total} messages failed; first: {first}")]
    MessagesFailed {
        failed: u64,
        total: u64,
        first: String,
    },
    #[error(
        "stopped after {max} failed messages in a row (--max-failures {max}): {failed} of {sent} sent failed, {unsent} not sent; first: {first}"
    )]
    StoppedAfterFailures {
        max: u64,
        failed: u64,
        sent: u64,
        unsent: u64,
        first: String,
    },
    #[error("wrong reply from {url} to {request}: got {got}, expected {expected}")]
    WrongReply {
        url: String,
        request: String,
        got: String,
        expected: String,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// A client's WebSocket error as a short lower-case cause, as `io_cause`.
pub fn ws_cause(err: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match err {
        E::Io(e) => io_cause(e),
        E::ConnectionClosed | E::AlreadyClosed => "connection closed".into(),
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            "connection reset by server".into()
        }
        other => other.to_string(),
    }
}

/// An io error as a short lower-case cause, without Rust's `(os error N)`:
/// `connection refused`, `address in use`, `timed out`.
pub fn io_cause(err: &io::Error) -> String {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | AddrInUse | AddrNotAvailable
        | NotFound | PermissionDenied | BrokenPipe | UnexpectedEof => err.kind().to_string(),
        TimedOut | WouldBlock => "timed out".to_string(),
        _ => {
            let text = err.to_string();
            let text = match text.find(" (os error") {
                Some(at) => &text[..at],
                None => &text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => String::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_causes_are_short_and_lower_case() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_cause(&refused), "connection refused");
        let os = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(io_cause(&os), "too many open files");
    }
}
