//! The play path: one tick of a match (every cat moved, shots resolved, and the `state`
//! line encoded for each player), a client's input line parsed, and a match observer
//! relaying the state stream to 1, 100 and 1,000 watchers.

use std::hint::black_box;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use catwar_benches::fixtures::{Data, TOKEN_IDLE_S};
use catwar_server::services::observer::{self, ObserverArgs, SessionArgs};
use catwar_server::services::play::game::Game;
use catwar_server::services::play::wire;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use mio::{Events, Interest, Poll, Token};

/// Players per match: a small match, a large one, and one far beyond any scenario, where
/// the quadratic target search shows.
const MATCH_PLAYERS: [usize; 3] = [4, 64, 1024];
/// Ticks played before the measured one, so cats have left their spawn points.
const WARM_TICKS: u64 = 20;
/// Watchers of one observer: one, a popular match, and about the observer's cap.
const WATCHERS: [usize; 3] = [1, 100, 1000];
/// State lines the play server sends per measured round: one second of a match at
/// 20 Hz.
const LINES_PER_ROUND: u64 = 20;
/// Players in the observed match, which sets the size of each state line.
const OBSERVED_PLAYERS: usize = 4;
/// How long a watcher may wait for a line before the benchmark calls the relay stuck.
const RELAY_WAIT_S: u64 = 30;
/// Samples per fan-out benchmark: criterion's least.
const FANOUT_SAMPLES: usize = 10;
/// Measurement per fan-out benchmark, seconds: ten rounds to 1,000 watchers take 2.4 s
/// on two cores shared with the watchers' reader.
const FANOUT_MEASUREMENT_S: u64 = 3;
/// Bytes read from a watcher's socket per call: a round's lines in one read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The input a client sends on `tick`: players send at 10 Hz against the 20 Hz tick, so
/// half of them have a new input each tick, and a third of those fire.
fn inputs(game: &mut Game, tick: u64) {
    for p in (tick as usize % 2..game.players()).step_by(2) {
        let dx = (p % 7) as f64 / 3.0 - 1.0;
        let dy = (p % 5) as f64 / 2.0 - 1.0;
        let fire = (p as u64 + tick) % 3 == 0;
        game.input(p, tick + 1, dx, dy, fire)
            .expect("a fresh input");
    }
}

/// A match of `players` cats after [`WARM_TICKS`] ticks.
fn warm_game(players: usize) -> Game {
    let mut game = Game::default();
    for p in 1..=players {
        game.add(&format!("user{p}"));
    }
    for tick in 0..WARM_TICKS {
        inputs(&mut game, tick);
        game.step();
    }
    game
}

/// One tick as the play server runs it: the step, the view encoded once, and each
/// player's `state` line written into an output buffer; returns the bytes it would write.
fn tick(game: &mut Game) -> usize {
    game.step();
    let state = wire::StateLine::new(game.tick(), &game.view());
    let mut out = Vec::new();
    for p in 0..game.players() {
        state.write_to(game.ack(p), &mut out);
    }
    black_box(out).len()
}

fn play_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("play_tick");
    for players in MATCH_PLAYERS {
        let game = warm_game(players);
        group.throughput(Throughput::Elements(players as u64));
        group.bench_function(format!("players/{players}"), |b| {
            b.iter_batched(
                || {
                    let mut next = game.clone();
                    inputs(&mut next, WARM_TICKS);
                    next
                },
                |mut next| tick(&mut next),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn input_parse(c: &mut Criterion) {
    let line = br#"{"t":"input","seq":1234,"dx":0.707,"dy":-0.707,"fire":true}"#;
    let mut group = c.benchmark_group("play_input");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| wire::parse(black_box(line)).expect("an input line"))
    });
    group.finish();
}

/// The watchers of one observer, read from one thread with mio, as a load generator
/// reads them: each counts the lines it has received.
struct Watchers {
    poll: Poll,
    events: Events,
    streams: Vec<mio::net::TcpStream>,
    lines: Vec<u64>,
    chunk: Vec<u8>,
}

impl Watchers {
    /// Connects `count` watchers to the observer at `addr` with a valid `watch` line.
    fn connect(addr: SocketAddr, count: usize, watch: &str) -> io::Result<Watchers> {
        let poll = Poll::new()?;
        let mut streams = Vec::with_capacity(count);
        for i in 0..count {
            let mut stream = TcpStream::connect(addr)?;
            writeln!(stream, "{watch}")?;
            stream.set_nonblocking(true)?;
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(i), Interest::READABLE)?;
            streams.push(stream);
        }
        Ok(Watchers {
            poll,
            events: Events::with_capacity(count),
            streams,
            lines: vec![0; count],
            chunk: vec![0; READ_CHUNK_BYTES],
        })
    }

    /// Reads until every watcher has received `total` lines since it connected.
    fn wait_for(&mut self, total: u64) -> io::Result<()> {
        let mut behind = self.lines.iter().filter(|&&n| n < total).count();
        while behind > 0 {
            self.poll
                .poll(&mut self.events, Some(Duration::from_secs(RELAY_WAIT_S)))?;
            if self.events.is_empty() {
                return Err(io::Error::new(ErrorKind::TimedOut, "the relay stalled"));
            }
            for event in self.events.iter() {
                let i = event.token().0;
                let was_behind = self.lines[i] < total;
                loop {
                    match self.streams[i].read(&mut self.chunk) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                ErrorKind::UnexpectedEof,
                                "the observer closed a watcher",
                            ))
                        }
                        Ok(n) => {
                            let newlines = self.chunk[..n].iter().filter(|&&b| b == b'\n');
                            self.lines[i] += newlines.count() as u64;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                if was_behind && self.lines[i] >= total {
                    behind -= 1;
                }
            }
        }
        Ok(())
    }
}

/// A free loopback port for an observer to listen on: bound, read and released. Another
/// process could take it in between; on a benchmark's loopback nobody does.
fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The real observer (`observer::run`, in a thread) subscribed to a stand-in play
/// server, which writes a second of state lines per round; a round ends when every
/// watcher has read them all.
fn observer_fanout(c: &mut Criterion) {
    let data = Data::new(1);
    let token = data.session("user1");
    let mut game = warm_game(OBSERVED_PLAYERS);
    // One line every watcher must get proves they were all admitted.
    let first = format!("{}\n", wire::state_line(game.tick(), 0, &game.view()));
    let mut round = Vec::new();
    for _ in 0..LINES_PER_ROUND {
        game.step();
        let line = wire::state_line(game.tick(), 0, &game.view());
        round.extend_from_slice(line.as_bytes());
        round.push(b'\n');
    }
    let mut group = c.benchmark_group("observer_fanout");
    // A round to 1,000 watchers takes a quarter of a second: one round per sample, and
    // criterion's fewest samples, keep it within the measurement time.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(FANOUT_SAMPLES);
    group.measurement_time(Duration::from_secs(FANOUT_MEASUREMENT_S));
    for (match_id, count) in (1u64..).zip(WATCHERS) {
        let play = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let args = ObserverArgs {
            play: play.local_addr().expect("an address"),
            match_id,
            data_dir: data.path().into(),
            listen: free_port().expect("a loopback port"),
            session: SessionArgs {
                token_idle_s: TOKEN_IDLE_S,
                lobby: None,
            },
        };
        let observer = std::thread::spawn({
            let args = args.clone();
            move || observer::run(&args)
        });
        let (mut feed, _) = play.accept().expect("the observer's subscription");
        let mut subscribe = String::new();
        BufReader::new(&feed)
            .read_line(&mut subscribe)
            .expect("a subscribe line");
        assert!(subscribe.contains("\"subscribe\""), "{subscribe}");
        feed.write_all(b"{\"t\":\"subscribed\"}\n")
            .expect("the answer");
        let watch = serde_json::json!({"t": "watch", "match": match_id, "token": token});
        let mut watchers =
            Watchers::connect(args.listen, count, &watch.to_string()).expect("watchers");
        feed.write_all(first.as_bytes()).expect("a line");
        let mut sent = 1;
        watchers.wait_for(sent).expect("every watcher admitted");
        group.throughput(Throughput::Elements(LINES_PER_ROUND * count as u64));
        group.bench_function(format!("watchers/{count}"), |b| {
            b.iter_custom(|rounds| {
                let started = Instant::now();
                for _ in 0..rounds {
                    feed.write_all(&round).expect("a round of lines");
                    sent += LINES_PER_ROUND;
                    watchers.wait_for(sent).expect("every line relayed");
                }
                started.elapsed()
            })
        });
        feed.write_all(b"{\"t\":\"end\"}\n").expect("the end line");
        drop(watchers);
        observer
            .join()
            .expect("the observer thread")
            .expect("the observer ends with its match");
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = catwar_benches::criterion();
    targets = play_tick, input_parse, observer_fanout
}
criterion_main!(benches);
