//! Failed connections counted by reason: the fixed categories of the
//! summary (refused, timeout, 503, …) and the labelled counts of the
//! one-line error a failed run ends with.

use super::*;

/// Why a connection could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Refused,
    Timeout,
    /// The server answered the upgrade with HTTP 503 (over its limit).
    Http503,
    /// Any other refused or broken handshake (another status, bad reply).
    Handshake,
    /// The connection was reset or closed during setup.
    Reset,
    /// Anything else: no free port, no descriptor, interrupted.
    Other,
}

/// Failed connections by reason.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Failures {
    pub refused: u64,
    pub timeout: u64,
    #[serde(rename = "503")]
    pub http_503: u64,
    pub handshake: u64,
    pub reset: u64,
    pub other: u64,
}

impl Failures {
    pub(super) fn count(&mut self, reason: Reason) {
        *match reason {
            Reason::Refused => &mut self.refused,
            Reason::Timeout => &mut self.timeout,
            Reason::Http503 => &mut self.http_503,
            Reason::Handshake => &mut self.handshake,
            Reason::Reset => &mut self.reset,
            Reason::Other => &mut self.other,
        } += 1;
    }

    pub(super) fn add(&mut self, other: &Failures) {
        self.refused += other.refused;
        self.timeout += other.timeout;
        self.http_503 += other.http_503;
        self.handshake += other.handshake;
        self.reset += other.reset;
        self.other += other.other;
    }

    pub fn total(&self) -> u64 {
        self.refused + self.timeout + self.http_503 + self.handshake + self.reset + self.other
    }
}

/// Failed connections by the short reason the error line gives, in the
/// order first seen. Each connection fails at most once: in setup, while
/// held, in its round trip, or in its close.
#[derive(Debug, Default, Clone)]
pub struct Reasons(Vec<(String, u64)>);

impl Reasons {
    pub(super) fn add(&mut self, label: String, n: u64) {
        match self.0.iter_mut().find(|(l, _)| *l == label) {
            Some((_, count)) => *count += n,
            None => self.0.push((label, n)),
        }
    }

    pub(super) fn merge(&mut self, other: Reasons) {
        for (label, n) in other.0 {
            self.add(label, n);
        }
    }

    /// Failures that fail the run: a connection cut short by Ctrl-C was
    /// asked to stop, it did not fail.
    pub(super) fn failed(&self) -> u64 {
        self.0
            .iter()
            .filter(|(l, _)| l != INTERRUPTED)
            .map(|(_, n)| n)
            .sum()
    }

    /// `10 connection refused, 2 handshake timed out`: most frequent first.
    pub(super) fn describe(&self) -> String {
        let mut counted: Vec<&(String, u64)> =
            self.0.iter().filter(|(l, _)| l != INTERRUPTED).collect();
        counted.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        counted
            .iter()
            .map(|(label, n)| format!("{n} {label}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) const INTERRUPTED: &str = "interrupted";
