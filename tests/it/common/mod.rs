//! Shared test furniture: a server guard that waits for the `listening on`
//! line (never a sleep), a per-test timeout that names the test and kills
//! its child processes (and no other test's), and small WebSocket client
//! helpers.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const BIN: &str = env!("CARGO_BIN_EXE_wsbench");

/// The children of every running test, by the test that started them.
///
/// All tests run in one process, side by side: a test that overruns kills
/// the children of its own scope (one [`with_timeout`] call), never another
/// test's server. A pid leaves `running` before it is reaped, and every
/// signal is sent under this lock to a pid still in `running`; so no signal
/// can reach a process that reused the pid of one already reaped.
static CHILDREN: Mutex<Children> = Mutex::new(Children {
    running: Vec::new(),
    expired: Vec::new(),
});

struct Children {
    /// `(scope, pid)` of each child started and not yet reaped.
    running: Vec<(u64, u32)>,
    /// Scopes whose test overran: a child they start now is killed at once,
    /// since the test thread goes on running after its test has failed.
    expired: Vec<u64>,
}

impl Children {
    fn holds(&self, pid: u32) -> bool {
        self.running.iter().any(|&(_, p)| p == pid)
    }
}

thread_local! {
    /// The scope of the [`with_timeout`] body this thread runs; 0 (no
    /// scope, never killed by a timeout) elsewhere, for instance for
    /// compare_tokio's build outside `timed!`. Threads a test spawns do not
    /// inherit it: start processes on the test's own thread.
    static SCOPE: Cell<u64> = const { Cell::new(0) };
}

/// Records `pid` under the current thread's scope; false (and not
/// recorded) if that scope has already run out of time.
fn track(pid: u32) -> bool {
    let scope = SCOPE.get();
    let mut children = CHILDREN.lock().unwrap();
    if children.expired.contains(&scope) {
        return false;
    }
    children.running.push((scope, pid));
    true
}

/// Sends `signal` to `pid` if it is still tracked (so not yet reaped), then
/// stops tracking it if `forget`; returns whether it was tracked.
fn signal_tracked(pid: u32, signal: i32, forget: bool) -> bool {
    let mut children = CHILDREN.lock().unwrap();
    if !children.holds(pid) {
        return false;
    }
    // SAFETY: kill(2) takes plain integers; the pid is our unreaped child.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
    if forget {
        children.running.retain(|&(_, p)| p != pid);
    }
    true
}

fn untrack(pid: u32) {
    CHILDREN.lock().unwrap().running.retain(|&(_, p)| p != pid);
}

/// Kills every child `scope` started and keeps it from starting more.
fn expire(scope: u64) {
    let mut children = CHILDREN.lock().unwrap();
    children.expired.push(scope);
    for &(_, pid) in children.running.iter().filter(|&&(s, _)| s == scope) {
        // SAFETY: as in `signal_tracked`; reaping untracks first.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Runs `body` on a thread; fails the test, naming it, if it overruns, and
/// then kills the processes `body` started (and only those: see
/// [`CHILDREN`]).
pub fn with_timeout<F: FnOnce() + Send + 'static>(name: &str, limit: Duration, body: F) {
    static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);
    let scope = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = crossbeam_channel::bounded(1);
    let worker = thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            SCOPE.set(scope);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let _ = tx.send(result);
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => {
            worker.join().unwrap();
        }
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => {
            expire(scope);
            panic!("test `{name}` did not finish within {limit:?}");
        }
    }
}

/// `timed!(limit, { body })`, a test's whole body: runs `body` under
/// [`with_timeout`] with the name libtest gives the test it is written in
/// (`chat_client::joins`), so a timeout message names that test and no
/// hand-written copy of the name can drift from it (#14).
///
/// The name is read off a function declared in place: the type name of
/// `here` is its path, `it::chat_client::joins::here`. Rust prints type
/// names for diagnostics, which is all this is; the test
/// `common::timed_names_the_test_it_is_written_in` fails if a compiler
/// spells them otherwise. Work before `timed!` in the test (compare_tokio
/// builds its server there) is not timed.
///
/// The test shares the machine with the tests beside it; see
/// [`timed_alone!`] for the few that must not.
macro_rules! timed {
    ($limit:expr, $body:block) => {
        $crate::common::timed!(@ $crate::common::Share::Shared, $limit, $body)
    };
    (@ $share:expr, $limit:expr, $body:block) => {{
        fn here() {}
        let name = $crate::common::test_name(::std::any::type_name_of_val(&here));
        $crate::common::run_test(&name, $limit, $share, || $body)
    }};
}
pub(crate) use timed;

/// `timed_alone!(limit, { body })`: [`timed!`] for a test that has the
/// machine to itself (see [`MACHINE`]), once the tests running now end.
/// Waiting for them is not timed.
macro_rules! timed_alone {
    ($limit:expr, $body:block) => {
        $crate::common::timed!(@ $crate::common::Share::Alone, $limit, $body)
    };
}
pub(crate) use timed_alone;

/// All tests run in one process, as many at a time as there are cores (or
/// RUST_TEST_THREADS). Nearly all share the machine: they wait on events
/// and use little of it. A few load it enough to stretch the time bounds of
/// the tests beside them (a server closed "within 3 s", a ping answered in
/// time), or need it quiet for their own: those run alone. Before #14 each
/// test file was a binary of its own, run after the one before, so these
/// never met another file's tests; in one binary they would.
///
/// Alone: compare_tokio's build of its server (a minute of rustc on every
/// core, whenever wsbench changed), the 10,600-input fuzz storm, the
/// 2,000-session churn (which also bounds its own closes at 1 s).
static MACHINE: RwLock<()> = RwLock::new(());

/// How a test holds [`MACHINE`].
#[derive(Clone, Copy)]
pub enum Share {
    Shared,
    Alone,
}

/// Runs `body` under [`with_timeout`], holding [`MACHINE`] as `share` says
/// for the whole of it; the wait for the machine is not timed. What
/// `timed!` and `timed_alone!` expand to.
pub fn run_test<F: FnOnce() + Send + 'static>(name: &str, limit: Duration, share: Share, body: F) {
    // A test that failed while holding the lock poisons it; the lock
    // guards no data, so the next test just takes it.
    let (_shared, _alone);
    match share {
        Share::Shared => _shared = MACHINE.read().unwrap_or_else(PoisonError::into_inner),
        Share::Alone => _alone = MACHINE.write().unwrap_or_else(PoisonError::into_inner),
    }
    with_timeout(name, limit, body);
}

/// Runs `work` (not a test body: no [`timed!`] around it, or it would wait
/// for itself) with the machine to itself; see [`MACHINE`].
pub fn alone<T>(work: impl FnOnce() -> T) -> T {
    let _alone = MACHINE.write().unwrap_or_else(PoisonError::into_inner);
    work()
}

/// The test's name as libtest prints and filters it, from the type name of
/// a function declared in it: `it::chat_client::joins::here` gives
/// `chat_client::joins` (no crate, no `here`).
pub fn test_name(here: &str) -> String {
    let path = here.strip_suffix("::here").unwrap_or(here);
    let path = path.split_once("::").map_or(path, |(_crate, rest)| rest);
    path.to_string()
}

#[test]
fn timed_names_the_test_it_is_written_in() {
    timed!(Duration::from_secs(10), {
        assert_eq!(
            thread::current().name(),
            Some("common::timed_names_the_test_it_is_written_in")
        );
    });
}

#[test]
fn a_timeout_kills_its_own_tests_children_and_no_others() {
    timed!(Duration::from_secs(30), {
        let sleeper = || {
            let mut sleep = Command::new("sleep");
            sleep.arg("60");
            Proc::spawn(sleep)
        };
        // A test running beside the one that overruns, holding a child.
        let (started, neighbour_pid) = crossbeam_channel::bounded(1);
        let (release, released) = crossbeam_channel::bounded::<()>(1);
        let neighbour = thread::spawn(move || {
            with_timeout("neighbour", Duration::from_secs(20), move || {
                let child = sleeper();
                started.send(child.child.id()).unwrap();
                released.recv().unwrap();
                assert!(child.running(), "another test's timeout killed this child");
            })
        });
        let neighbour_pid = neighbour_pid.recv_timeout(WAIT_CHILD).unwrap();
        // The overrunning test: its child dies at the timeout, and one it
        // starts afterwards is refused.
        let (report, reports) = crossbeam_channel::bounded(1);
        let overran = std::panic::catch_unwind(|| {
            with_timeout("overrunning", Duration::from_millis(300), move || {
                let mut child = sleeper();
                let status = child.wait(Duration::from_secs(20));
                let late = std::panic::catch_unwind(sleeper).is_err();
                report.send((status, late)).unwrap();
            })
        });
        assert!(overran.is_err(), "the overrunning test did not fail");
        let (status, late_refused) = reports.recv_timeout(WAIT_CHILD).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
        assert!(
            late_refused,
            "a child started after the timeout was let run"
        );
        assert!(CHILDREN.lock().unwrap().holds(neighbour_pid));
        release.send(()).unwrap();
        neighbour.join().unwrap();
    });
}

#[test]
fn a_test_alone_has_the_machine_to_itself() {
    timed_alone!(Duration::from_secs(30), {
        let next = MACHINE.try_read();
        assert!(
            matches!(next, Err(std::sync::TryLockError::WouldBlock)),
            "another test could start beside this one"
        );
    });
}

#[test]
fn a_test_that_shares_keeps_one_alone_waiting() {
    timed!(Duration::from_secs(30), {
        let alone = MACHINE.try_write();
        assert!(
            matches!(alone, Err(std::sync::TryLockError::WouldBlock)),
            "a test alone could start beside this one"
        );
    });
}

/// How long the scope test waits for a thread of its own to report.
const WAIT_CHILD: Duration = Duration::from_secs(10);

/// Lines a child prints, collected on a thread; tests wait on them.
pub struct Lines {
    rx: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn spawn(reader: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = unbounded();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let all = Arc::clone(&seen);
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Lines { rx, seen }
    }

    /// Waits for a line containing `needle`; returns it.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every line so far, including those already waited past.
    pub fn all(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A process started by a test, killed and reaped on drop.
pub struct Proc {
    pub child: Child,
    reaper: Option<Receiver<ExitStatus>>,
    exited: Option<ExitStatus>,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Proc {
    pub fn spawn(mut command: Command) -> Proc {
        command.stdin(Stdio::null());
        Self::spawn_with_stdin(command)
    }

    /// Like [`Proc::spawn`], with the stdin the command already has
    /// (`Stdio::piped()` and [`Typist`], or a file).
    pub fn spawn_with_stdin(mut command: Command) -> Proc {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        if !track(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("not starting {command:?}: its test ran out of time");
        }
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let stderr = Lines::spawn(child.stderr.take().unwrap());
        Proc {
            child,
            reaper: None,
            exited: None,
            stdout,
            stderr,
        }
    }

    /// Sends `signal`, unless the process has already been reaped.
    pub fn signal(&self, signal: i32) {
        signal_tracked(self.child.id(), signal, false);
    }

    /// Whether the process still runs; unlike `Child::try_wait` it does not
    /// reap an exited one, which stays tracked (see [`CHILDREN`]) until
    /// [`Proc::wait`] or drop.
    pub fn running(&self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        // SAFETY: siginfo_t is plain data, and waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let id = self.child.id() as libc::id_t;
        // SAFETY: waitid writes only the siginfo we pass; WNOWAIT leaves
        // the child unreaped. si_pid stays 0 while the child runs.
        unsafe { libc::waitid(libc::P_PID, id, &mut info, flags) == 0 && info.si_pid() == 0 }
    }

    /// Waits for the process to exit within `limit`: a thread blocks in
    /// waitid and reports, so the wait ends the moment the child does.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.exited {
            return Some(status);
        }
        let pid = self.child.id() as libc::pid_t;
        let rx = self.reaper.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            thread::spawn(move || {
                // Wait for the exit without reaping, untrack, then reap: a
                // pid leaves CHILDREN before it can be reused.
                // SAFETY: siginfo_t is plain data, and waitid fills it in.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                let flags = libc::WEXITED | libc::WNOWAIT;
                // SAFETY: waitid writes only the siginfo we pass.
                if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } != 0 {
                    return;
                }
                untrack(pid as u32);
                let mut status = 0;
                // SAFETY: waitpid writes only the status int we pass.
                if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
                    let _ = tx.send(ExitStatus::from_raw(status));
                }
            });
            rx
        });
        let status = rx.recv_timeout(limit).ok()?;
        self.exited = Some(status);
        Some(status)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Killed only while still tracked, so never after the waitid thread
        // reaped it; then reaped here, or by that thread if there is one.
        if signal_tracked(self.child.id(), libc::SIGKILL, true) && self.reaper.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// Types into a child's stdin from a thread, one line per `type_line`;
/// dropping it closes the pipe (end of input).
pub struct Typist {
    tx: Option<crossbeam_channel::Sender<String>>,
}

impl Typist {
    pub fn new(proc: &mut Proc) -> Typist {
        use std::io::Write;
        let mut stdin = proc
            .child
            .stdin
            .take()
            .expect("spawned with Stdio::piped()");
        let (tx, rx) = unbounded::<String>();
        thread::spawn(move || {
            for line in rx {
                if stdin.write_all(format!("{line}\n").as_bytes()).is_err()
                    || stdin.flush().is_err()
                {
                    break;
                }
            }
        });
        Typist { tx: Some(tx) }
    }

    pub fn type_line(&self, line: &str) {
        let _ = self
            .tx
            .as_ref()
            .expect("open until dropped")
            .send(line.to_string());
    }
}

impl Drop for Typist {
    fn drop(&mut self) {
        self.tx.take();
    }
}

/// `wsbench server --port 0 ARGS`, started and listening.
///
/// Dropping it checks that the server gave back everything the test took
/// (see [`Server::assert_released`]): declare clients after the server, so
/// they are gone first.
pub struct Server {
    pub proc: Proc,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// Threads and descriptors of our server once listening; `None` for
    /// other servers.
    baseline: Option<(usize, usize)>,
    /// Set when it printed `listening on wss://`: `url`, `http_get` and
    /// `metric` then speak TLS (without verifying: see [`tls_client_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Self::start_on(0, args)
    }

    /// `wsbench server --port PORT ARGS` (the server sets SO_REUSEADDR, so
    /// a port it was killed on can be taken again at once).
    pub fn start_on(port: u16, args: &[&str]) -> Server {
        let mut command = Command::new(BIN);
        command
            .args(["server", "--port", &port.to_string()])
            .args(args);
        command.env("RUST_LOG", "info");
        Self::start_command(command)
    }

    /// Our server from a command the caller prepared (limits, environment);
    /// checked on drop like [`Server::start`]'s.
    pub fn start_command(command: Command) -> Server {
        let mut server = Self::from_command(command);
        server.baseline = Some((server.threads(), server.descriptors()));
        server
    }

    /// Any command that prints `listening on ws://HOST:PORT` (or
    /// `wss://`) when ready.
    pub fn from_command(command: Command) -> Server {
        let proc = Proc::spawn(command);
        let line = proc
            .stdout
            .wait_for("listening on ", Duration::from_secs(20))
            .unwrap_or_else(|| {
                panic!(
                    "server did not print its listening line; stderr: {:?}",
                    proc.stderr.all()
                )
            });
        let line = line.trim().strip_prefix("listening on ").unwrap();
        let (tls, addr) = match line.strip_prefix("wss://") {
            Some(addr) => (Some(tls_client_config()), addr),
            None => (None, line.strip_prefix("ws://").unwrap()),
        };
        Server {
            proc,
            addr: addr.to_string(),
            baseline: None,
            tls,
        }
    }

    /// Threads the server process runs now.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.proc.child.id()))
            .map(|tasks| tasks.count())
            .unwrap_or(0)
    }

    /// Descriptors the server process holds now.
    pub fn descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.child.id()))
            .map(|fds| fds.count())
            .unwrap_or(0)
    }

    /// Waits (10 s at most) until the server holds no connection but the
    /// scrape asking, and runs the threads and holds the descriptors it
    /// had when it started; panics with the figures otherwise. A connection
    /// that never gives back its slot, thread or socket is a leak no other
    /// check sees (#12).
    pub fn assert_released(&self) {
        let Some((threads_then, fds_then)) = self.baseline else {
            return;
        };
        poll_until(Duration::from_secs(10), || {
            let current = self.metric("wsbench_connections_current");
            let threads = self.threads();
            // The scrape's own socket may not be closed yet: one more.
            let fds = self.descriptors();
            (current == 1 && threads == threads_then && fds <= fds_then + 1)
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "the server did not give back what the test took: \
                     connections_current {current} (1 is the scrape), threads {threads} \
                     (baseline {threads_then}), descriptors {fds} (baseline {fds_then})"
                    )
                })
        });
    }

    /// Waits (at most `limit`) until `/metrics` shows `name` passing `test`;
    /// returns its value.
    pub fn wait_metric(&self, name: &str, limit: Duration, test: impl Fn(u64) -> bool) -> u64 {
        poll_until(limit, || {
            let value = self.metric(name);
            test(value)
                .then_some(value)
                .ok_or_else(|| format!("{name} is still {value} after {limit:?}"))
        })
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    pub fn http_get(&self, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        match &self.tls {
            Some(config) => https_request(&self.addr, config, &request),
            None => http_request(&self.addr, &request),
        }
    }

    /// One value of `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let body = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics: {body}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// SIGTERM, then the exit status within `limit`.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.proc.signal(libc::SIGTERM);
        self.proc
            .wait(limit)
            .unwrap_or_else(|| panic!("server did not exit within {limit:?} of SIGTERM"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.proc.running() && !thread::panicking() {
            self.assert_released();
        }
    }
}

/// A port that was free a moment ago (bound on port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a raw request and reads until the server closes.
pub fn http_request(addr: &str, request: &str) -> String {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// Sends a raw request over TLS and reads until the server closes.
pub fn https_request(addr: &str, config: &Arc<rustls::ClientConfig>, request: &str) -> String {
    use std::io::Write;
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(Arc::clone(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(session, tcp);
    // A refused connection fails the handshake: an empty answer.
    if tls.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = Vec::new();
    // The server may close without close_notify; what came is the answer.
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// A TLS client that accepts any certificate: the test furniture reads
/// metrics of servers whose certificate it did not make. The tests that
/// are about trust use Python with the CA.
pub fn tls_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A CA and a certificate for `localhost` and `127.0.0.1` it signed, as
/// PEM files in `dir`: (`ca.pem`, `cert.pem`, `key.pem`).
pub fn make_certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    make_certificates_for(dir, &["localhost", "127.0.0.1"], false)
}

/// A test CA and a leaf it signed for `names` (expired a year ago when
/// `expired`), as `ca.pem`, `cert.pem` and `key.pem` in `dir`.
pub fn make_certificates_for(
    dir: &std::path::Path,
    names: &[&str],
    expired: bool,
) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wsbench test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).unwrap();
    if expired {
        leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        leaf_params.not_after = rcgen::date_time_ymd(2025, 1, 1);
    }
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects with a 10 s read timeout. The socket stays inside the
/// WebSocket: taking it out would drop bytes read past the handshake.
pub fn connect(url: &str) -> Ws {
    let (ws, _) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// Sends `message` and returns the next text reply.
pub fn round_trip(ws: &mut Ws, message: Message) -> String {
    ws.send(message).unwrap();
    next_text(ws)
}

pub fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => panic!("expected text, got {} binary bytes", b.len()),
            Message::Close(f) => panic!("expected text, got close {f:?}"),
            _ => {}
        }
    }
}

/// The Python of the project's venv (made by `make test`).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("WSBENCH_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `make test` (it creates the venv with the interop peers)",
        venv.display()
    );
    venv
}

pub fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Runs `wsbench ARGS` to completion within `limit`.
pub fn wsbench(args: &[&str], limit: Duration) -> Output {
    run_bounded(Command::new(BIN).args(args), limit)
}

pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    command.stdin(Stdio::null());
    let mut proc = Proc::spawn(std::mem::replace(command, Command::new("true")));
    let status = proc.wait(limit).unwrap_or_else(|| {
        panic!(
            "command did not finish within {limit:?}; stderr: {:?}",
            proc.stderr.all()
        )
    });
    // The reader threads hit EOF once the process is gone; wait for them.
    let drain = |lines: &Lines| {
        while lines.rx.recv_timeout(Duration::from_secs(2)).is_ok() {}
        lines.all().join("\n")
    };
    Output {
        status,
        stdout: drain(&proc.stdout).into_bytes(),
        stderr: drain(&proc.stderr).into_bytes(),
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory under the system temp dir for one test's files.
pub fn tempdir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("wsbench-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The header of a client frame: first byte, mask bit and the payload
/// length in its 7-, 16- or 64-bit form (RFC 6455 5.2). The mask key, if
/// any, is the caller's to append.
pub fn frame_header(first: u8, masked: bool, len: usize) -> Vec<u8> {
    let mut out = vec![first];
    let m = if masked { 0x80 } else { 0 };
    match len {
        n if n < 126 => out.push(m | n as u8),
        n if n < 65536 => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out
}

/// A raw socket that has completed the handshake on `path`.
pub fn raw_ws(addr: &str, path: &str) -> TcpStream {
    use std::io::Write;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads a condition until it holds or `limit` passes, then panics with
/// its last word. For what another process keeps (a gauge on /metrics,
/// its threads in /proc), where there is no event to wait on; anything
/// that prints a line or sends a message is waited for instead.
pub fn poll_until<T>(limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => panic!("{why}"),
            // A scrape costs the server a connection: a few a second is
            // enough to see a count settle.
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}
