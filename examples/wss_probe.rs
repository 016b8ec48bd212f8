//! Measures what TLS costs the server (#15) until `wsbench bench` speaks
//! wss://: text round trips and serial 480 KB images on one connection,
//! ws and wss alternated (A B A B) against two running servers, and the
//! server's RSS per idle connection.
//!
//! `wss_probe rtt WS_ADDR WSS_ADDR` and `wss_probe idle ADDR PID N wss|ws`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

trait Rw: Read + Write {}
impl<T: Read + Write> Rw for T {}
type Ws = WebSocket<Box<dyn Rw>>;

fn connect(addr: &str, tls: bool, path: &str) -> Ws {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream: Box<dyn Rw> = if tls {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(config(), name).unwrap();
        Box::new(rustls::StreamOwned::new(session, tcp))
    } else {
        Box::new(tcp)
    };
    let scheme = if tls { "wss" } else { "ws" };
    let (ws, _) = tungstenite::client(format!("{scheme}://{addr}{path}"), stream).unwrap();
    ws
}

fn config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                    .with_no_client_auth(),
            )
        })
        .clone()
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
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn next_text(ws: &mut Ws) -> String {
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            return t.to_string();
        }
    }
}

/// Round trips per second of `count` messages.
fn run(ws: &mut Ws, message: &Message, count: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..count {
        ws.send(message.clone()).unwrap();
        next_text(ws);
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// User + system CPU time of a process, from /proc (clock ticks of 10 ms).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args[1].as_str() {
        "rtt" => {
            let (ws_addr, wss_addr) = (&args[2], &args[3]);
            // With the servers' pids: their CPU time per round trip.
            let pids = [args.get(4), args.get(5)];
            let mut pair = [connect(ws_addr, false, "/"), connect(wss_addr, true, "/")];
            let image: Vec<u8> = (0..480 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            let cases = [
                ("text", Message::text("ping"), 3000),
                ("image 480 KB", Message::binary(image), 60),
            ];
            for (name, message, count) in cases {
                let mut rates = [Vec::new(), Vec::new()];
                let mut cpu_us = [0.0, 0.0];
                for round in 0..7 {
                    for (i, ws) in pair.iter_mut().enumerate() {
                        let before = pids[i].map(|p| cpu_seconds(p));
                        let rate = run(ws, &message, count);
                        if round > 0 {
                            rates[i].push(rate); // round 0 is warmup
                            if let Some(before) = before {
                                let used = cpu_seconds(pids[i].unwrap()) - before;
                                cpu_us[i] += used * 1e6 / (6 * count) as f64;
                            }
                        }
                    }
                }
                if pids[0].is_some() {
                    println!(
                        "{name}: server CPU per round trip: ws {:.1} µs, wss {:.1} µs",
                        cpu_us[0], cpu_us[1]
                    );
                }
                let (a, b) = (median(rates[0].clone()), median(rates[1].clone()));
                println!(
                    "{name}: ws {a:.0}/s, wss {b:.0}/s, wss/ws {:.3} (median of 6 alternated runs)",
                    b / a
                );
            }
        }
        "idle" => {
            let (addr, pid, n, tls) = (
                &args[2],
                &args[3],
                args[4].parse().unwrap(),
                args[5] == "wss",
            );
            let before = rss_kib(pid);
            let mut held = Vec::new();
            for _ in 0..n {
                let mut ws = connect(addr, tls, "/echo");
                ws.send(Message::text("x")).unwrap();
                next_text(&mut ws);
                held.push(ws);
            }
            std::thread::sleep(Duration::from_secs(2));
            let after = rss_kib(pid);
            println!(
                "{} idle {} connections: server RSS {before} -> {after} KiB, {:.1} KiB each",
                n,
                args[5],
                (after - before) as f64 / n as f64
            );
        }
        "aead" => {
            // The floor: one AES-256-GCM pass (rustls+ring's first TLS 1.3
            // suite) over 480 KB in 16 KiB records, as one side does.
            use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
            let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
            let mut data = vec![1u8; 480 * 1024];
            let mut times = Vec::new();
            for _ in 0..50 {
                let start = Instant::now();
                for chunk in data.chunks_mut(16 * 1024) {
                    let nonce = Nonce::assume_unique_for_key([0; 12]);
                    let tag = key.seal_in_place_separate_tag(nonce, Aad::empty(), chunk);
                    let _ = std::hint::black_box(tag.unwrap());
                }
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
            println!(
                "AES-256-GCM seal of 480 KB: {:.0} µs (median of 50)",
                median(times)
            );
        }
        _ => panic!("usage: wss_probe rtt WS WSS | idle ADDR PID N wss|ws | aead"),
    }
}
