//! Costs on the login path: one argon2id verification per preset (what bounds logins/s
//! per worker), token creation, and ticket issue/verify.
//!
//! `cargo bench --bench login`; `ci/bench-login-lobby.sh` reads the argon2 figures to
//! compute the expected login capacity (workers / verification time).

use criterion::{criterion_group, criterion_main, Criterion};

use catwar_server::config::Argon2Preset;
use catwar_server::domain::{ticket, token, users};

fn password(c: &mut Criterion) {
    let mut group = c.benchmark_group("argon2_verify");
    // A few samples are plenty: one OWASP verification takes tens of milliseconds.
    group.sample_size(10);
    for (name, preset) in [("owasp", Argon2Preset::Owasp), ("fast", Argon2Preset::Fast)] {
        let phc = users::hash_password(&users::hasher(preset), "pw-user1").unwrap();
        group.bench_function(name, |b| {
            b.iter(|| assert!(users::verify_password(&phc, "pw-user1")))
        });
    }
    group.finish();
}

fn tokens(c: &mut Criterion) {
    c.bench_function("token_new", |b| {
        b.iter(|| token::new_token("user1", b"server-salt").unwrap())
    });
    let play = "127.0.0.1:7400".parse().unwrap();
    let t = ticket::issue(b"key", play, 7, "user1", 0).unwrap();
    c.bench_function("ticket_verify", |b| {
        b.iter(|| ticket::verify(b"key", play, &t, 0).unwrap())
    });
}

criterion_group!(benches, password, tokens);
criterion_main!(benches);
