//! The floor under the play server's tick: a minimal mio program that writes one `state`
//! line to each of PLAYERS sockets at 20 Hz and nothing else — no inputs, no game, no
//! encoding — and reports the CPU it used per player-tick. `ci/perf.sh` divides it by the
//! play server's CPU per player-tick at the same number of players.
//!
//! `state_writer serve PLAYERS SECONDS` listens on a loopback port (printed as `listening
//! ADDR`), waits for PLAYERS connections, ticks for a warm-up and then SECONDS measured,
//! and prints its figure. `state_writer read ADDR PLAYERS` opens the PLAYERS connections
//! and reads them until the writer closes them; run it on another core.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use catwar_server::services::play::game::Game;
use catwar_server::services::play::wire;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The play server's tick rate (`--tick-hz` default), ticks per second.
const TICK_HZ: u32 = 20;
/// Players per match in `ci/bench-play.sh`, which sets the size of each state line.
const MATCH_PLAYERS: usize = 4;
/// Seconds of ticks before the measured ones, as `play-load` warms up before measuring.
const WARMUP_S: u64 = 2;
/// Bytes a reader takes from a socket per call: many ticks' lines at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How long a reader waits for bytes before it calls the writer gone.
const READ_IDLE_S: u64 = 10;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", players, seconds] => players
            .parse()
            .ok()
            .zip(seconds.parse().ok())
            .map(|(p, s)| serve(p, s)),
        ["read", addr, players] => addr
            .parse()
            .ok()
            .zip(players.parse().ok())
            .map(|(a, p)| read(a, p)),
        _ => None,
    };
    match parsed {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            eprintln!("state_writer: {e}");
            std::process::exit(1);
        }
        None => {
            eprintln!("usage: state_writer serve PLAYERS SECONDS | state_writer read ADDR PLAYERS");
            std::process::exit(64);
        }
    }
}

/// The line the play server sends each player of a match of [`MATCH_PLAYERS`] once the
/// cats have moved: the same bytes, written here every tick without encoding them again.
fn state_line() -> String {
    let mut game = Game::default();
    for p in 1..=MATCH_PLAYERS {
        game.add(&format!("user{p}"));
    }
    game.step();
    format!("{}\n", wire::state_line(game.tick(), 1, &game.view()))
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`.
fn cpu_s() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let (user, system) = ticks(11).zip(ticks(12)).ok_or(ErrorKind::InvalidData)?;
    // The kernel counts in USER_HZ, 100 on every Linux this runs on.
    Ok((user + system) / 100.0)
}

fn serve(players: usize, seconds: u64) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    io::stdout().flush()?;
    let mut streams = Vec::with_capacity(players);
    for _ in 0..players {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        streams.push(TcpStream::from_std(stream));
    }
    let line = state_line();
    // The poll's timeout is the clock, as in the play server's loop; no socket is
    // registered, since the writer only writes.
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1);
    let period = Duration::from_secs(1) / TICK_HZ;
    let ticks_warm = WARMUP_S * u64::from(TICK_HZ);
    let ticks_total = ticks_warm + seconds * u64::from(TICK_HZ);
    let mut next = Instant::now();
    let (mut cpu_start, mut wall_start) = (0.0, next);
    let mut short_writes = 0u64;
    for tick in 0..ticks_total {
        if tick == ticks_warm {
            (cpu_start, wall_start) = (cpu_s()?, Instant::now());
        }
        next += period;
        while let Some(wait) = next.checked_duration_since(Instant::now()) {
            poll.poll(&mut events, Some(wait))?;
        }
        for stream in &mut streams {
            // A reader that keeps up always has room for one line; a short write is
            // counted rather than queued, so the floor stays one write per player.
            match stream.write(line.as_bytes()) {
                Ok(n) if n == line.len() => {}
                Ok(_) => short_writes += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => short_writes += 1,
                Err(e) => return Err(e),
            }
        }
    }
    let cores = (cpu_s()? - cpu_start) / wall_start.elapsed().as_secs_f64();
    let player_ticks = (players as u64 * seconds * u64::from(TICK_HZ)) as f64;
    let per_player_tick_us = cores * seconds as f64 * 1e6 / player_ticks;
    println!(
        "state_writer players {players}, line {} bytes, CPU {cores:.3} cores, per player-tick {per_player_tick_us:.3} us, short writes {short_writes}",
        line.len()
    );
    Ok(())
}

fn read(addr: SocketAddr, players: usize) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut streams = Vec::with_capacity(players);
    for i in 0..players {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        streams.push(Some(stream));
    }
    let mut events = Events::with_capacity(players);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut open = players;
    while open > 0 {
        poll.poll(&mut events, Some(Duration::from_secs(READ_IDLE_S)))?;
        if events.is_empty() {
            return Err(io::Error::new(ErrorKind::TimedOut, "the writer stalled"));
        }
        for event in events.iter() {
            let slot = &mut streams[event.token().0];
            while let Some(stream) = slot {
                match stream.read(&mut chunk) {
                    Ok(0) => {
                        *slot = None;
                        open -= 1;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
