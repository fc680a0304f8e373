//! The ceiling under profile's logins/s: THREADS threads doing nothing but argon2id
//! verifications at once, as many as profile has login workers. Measured together, not
//! as THREADS ÷ one verification's time, because parallel hashes contend for memory
//! bandwidth and the shared cores.
//!
//! `argon2_threads PRESET THREADS SECONDS` prints `argon2 PRESET threads T: V
//! verifications/s`; `ci/perf.sh` divides profile's logins/s by it.

use std::str::FromStr;
use std::time::{Duration, Instant};

use catwar_server::config::Argon2Preset;
use catwar_server::domain::users;

/// The password every thread verifies against its own hash of it.
const PASSWORD: &str = "pw-user1";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [preset, threads, seconds] => Argon2Preset::parse(preset)
            .zip(usize::from_str(threads).ok())
            .zip(u64::from_str(seconds).ok()),
        _ => None,
    };
    let Some(((preset, threads), seconds)) = parsed else {
        eprintln!("usage: argon2_threads fast|owasp THREADS SECONDS");
        std::process::exit(64);
    };
    let phc = users::hash_password(&users::hasher(preset), PASSWORD).expect("a hash");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let counts: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = 0u64;
                    while Instant::now() < deadline {
                        assert!(users::verify_password(&phc, PASSWORD));
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a verifier")).collect()
    });
    // Each thread finishes the verification it started before the deadline, so the
    // rate is over the time until the last one finished.
    let rate = counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64();
    println!(
        "argon2 {} threads {threads}: {rate:.1} verifications/s",
        users::preset_name(preset)
    );
}
