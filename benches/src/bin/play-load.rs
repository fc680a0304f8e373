//! Play-server capacity and observer start latency, against a running topology.
//!
//! `cargo run --release -p catwar-benches --bin play-load -- capacity DIR PLAYERS
//! SECONDS` connects PLAYERS players (tickets issued with the topology's key), sends
//! inputs at 10 Hz each, and after SECONDS reports the play server's tick lateness p99,
//! missed ticks and its CPU use, so players per core = PLAYERS / cores used.
//! `cargo run --release -p catwar-benches --bin play-load -- observers DIR COUNT` starts
//! COUNT observers through `play-0` and reports their start latency percentiles.
//! `ci/bench-play.sh` runs both with the server and this client on different cores.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use catwar_server::compose::topology::Topology;
use catwar_server::domain::db;
use catwar_server::domain::internal_key::INTERNAL_KEY_META;
use catwar_server::domain::ticket::{self, TICKET_KEY_META};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Inputs per second per player, a typical client send rate.
const INPUT_HZ: u64 = 10;
/// Seconds of load before measuring, so joins and match starts are over.
const WARMUP_S: u64 = 8;
/// Players connecting per ramp step, and the step length: a steady arrival instead of a
/// SYN flood that would overflow the listen backlog.
const RAMP_BATCH: u64 = 250;
const RAMP_STEP_MS: u64 = 50;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["capacity", dir, players, seconds] => capacity(
            Path::new(dir),
            players.parse().unwrap(),
            seconds.parse().unwrap(),
        ),
        ["observers", dir, count] => observers(Path::new(dir), count.parse().unwrap()),
        _ => {
            eprintln!("usage: play-load capacity DIR PLAYERS SECONDS | play-load observers DIR COUNT (see ci/bench-play.sh)");
            std::process::exit(64);
        }
    }
}

fn play_of(dir: &Path) -> (SocketAddr, u32) {
    let play = Topology::read(dir)
        .expect("topology.json")
        .service("play-0")
        .cloned()
        .expect("play-0");
    (play.addr, play.pid)
}

fn meta(dir: &Path, key: &str) -> String {
    db::meta(&db::open(&dir.join(db::DB_FILE)).unwrap(), key)
        .unwrap()
        .expect("the topology has run")
}

fn status(play: SocketAddr) -> serde_json::Value {
    let mut s = TcpStream::connect(play).unwrap();
    s.write_all(b"{\"t\":\"status\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// CPU seconds used so far by a process (all threads).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn capacity(dir: &Path, players: u64, seconds: u64) {
    let (play, pid) = play_of(dir);
    let key = meta(dir, TICKET_KEY_META);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = db::now_ms() as u64;
        let mut tasks = Vec::new();
        for i in 0..players {
            let user = format!("user{}", i + 1);
            let t = ticket::issue(key.as_bytes(), play, base + i / 4, &user, db::now_ms()).unwrap();
            tasks.push(tokio::spawn(player(play, t, seconds + WARMUP_S)));
            if i % RAMP_BATCH == RAMP_BATCH - 1 {
                tokio::time::sleep(Duration::from_millis(RAMP_STEP_MS)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(WARMUP_S)).await;
        let (s0, c0, t0) = (status(play), cpu_s(pid), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (s1, c1, wall) = (status(play), cpu_s(pid), t0.elapsed().as_secs_f64());
        let cores = (c1 - c0) / wall;
        let ticks = s1["ticks"].as_u64().unwrap() - s0["ticks"].as_u64().unwrap();
        let missed = s1["ticks_missed"].as_u64().unwrap() - s0["ticks_missed"].as_u64().unwrap();
        println!(
            "players {} (connected {}), matches {}, play CPU {:.2} cores, players/core {:.0}, ticks {ticks}, missed {missed}, tick lateness p99 {:.2} ms",
            players,
            s1["players"],
            s1["matches"],
            cores,
            players as f64 / cores.max(0.01),
            s1["tick_late_p99_us"].as_f64().unwrap() / 1000.0
        );
        for t in tasks {
            t.abort();
        }
    });
}

async fn player(play: SocketAddr, ticket: String, seconds: u64) {
    let Ok(stream) = tokio::net::TcpStream::connect(play).await else {
        return;
    };
    let (read, mut write) = stream.into_split();
    let join = format!("{}\n", serde_json::json!({"t": "join", "ticket": ticket}));
    if write.write_all(join.as_bytes()).await.is_err() {
        return;
    }
    // States are read and dropped; a client that stops reading would be disconnected.
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(read).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut seq = 0u64;
    let mut every = tokio::time::interval(Duration::from_millis(1000 / INPUT_HZ));
    while Instant::now() < end {
        every.tick().await;
        seq += 1;
        let dx = ((seq % 7) as f64 / 7.0) - 0.5;
        let line = format!(
            "{{\"t\":\"input\",\"seq\":{seq},\"dx\":{dx:.3},\"dy\":0.1,\"fire\":{}}}\n",
            seq % 3 == 0
        );
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn observers(dir: &Path, count: usize) {
    let (play, _) = play_of(dir);
    let key = meta(dir, INTERNAL_KEY_META);
    let ticket_key = meta(dir, TICKET_KEY_META);
    // One player keeps a match open for the observers to follow.
    let match_id = db::now_ms() as u64;
    let t = ticket::issue(ticket_key.as_bytes(), play, match_id, "user1", db::now_ms()).unwrap();
    let mut player = TcpStream::connect(play).unwrap();
    writeln!(player, "{}", serde_json::json!({"t": "join", "ticket": t})).unwrap();
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let mut s = TcpStream::connect(play).unwrap();
        writeln!(
            s,
            "{}",
            serde_json::json!({"t": "observe", "match": match_id, "key": key})
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.contains("\"observer\""), "{line}");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "observer starts {count}: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        times[times.len() - 1]
    );
}
