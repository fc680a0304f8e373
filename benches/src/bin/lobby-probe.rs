//! A constant-rate probe of the lobby, free of coordinated omission: requests are due
//! at fixed times, and each latency counts from when the request was due, not from when
//! a busy connection got round to sending it.
//!
//! `cargo run --release -p catwar-benches --bin lobby-probe -- ADDR TOKEN RATE SECONDS`
//! sends `GET /v1/me` at RATE requests/s over keep-alive connections for SECONDS and
//! prints p50/p99/max.
//! `ci/bench-login-lobby.sh` uses it to compare the lobby's p99 idle and during a storm.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connections the probe spreads its schedule over, one thread each; a thread sleeps
/// with the OS timer (microseconds), not an async runtime's millisecond wheel, so the
/// probe's own lateness stays out of the figures.
const CONNECTIONS: u64 = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, rate, seconds] = args.as_slice() else {
        eprintln!("usage: lobby-probe ADDR TOKEN RATE SECONDS");
        std::process::exit(64);
    };
    let (addr, rate, seconds): (SocketAddr, u64, u64) = (
        addr.parse().unwrap(),
        rate.parse().unwrap(),
        seconds.parse().unwrap(),
    );
    let start = Instant::now() + Duration::from_millis(100);
    let per_conn = rate * seconds / CONNECTIONS;
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / rate as f64);
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let token = token.clone();
            let first = start + interval.mul_f64(c as f64 / CONNECTIONS as f64);
            std::thread::spawn(move || connection(addr, &token, first, interval, per_conn))
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    println!(
        "probe {} requests at {rate}/s: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        all.len(),
        pct(0.5),
        pct(0.99),
        all[all.len() - 1]
    );
}

fn connection(
    addr: SocketAddr,
    token: &str,
    first: Instant,
    interval: Duration,
    count: u64,
) -> Vec<f64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let request =
        format!("GET /v1/me HTTP/1.1\r\nHost: lobby\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut buf = vec![0u8; 4096];
    let mut latencies = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = first + interval.mul_f64(i as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream.write_all(request.as_bytes()).unwrap();
        // One small answer per request: read until its body has arrived.
        let mut got = Vec::new();
        loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the lobby closed the connection");
            got.extend_from_slice(&buf[..n]);
            if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= head_end + 4 + length {
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    break;
                }
            }
        }
        latencies.push(due.elapsed().as_secs_f64() * 1000.0);
    }
    latencies
}
