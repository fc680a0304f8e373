//! The Docker backend with real containers of the project's image (`catwar-server:local`,
//! built by `ci/build-image.sh`, never pulled): an observer container started by
//! testcontainers relays every tick of an in-process play server, and a container killed
//! mid-match is noticed while the play server keeps running and the router starts a
//! replacement.
//!
//! Without a Docker engine these tests skip with a loud message; under `CI=true` a
//! missing engine or image fails them instead.

use std::net::SocketAddr;
use std::sync::Arc;

use catwar_server::services::observer::docker::{DockerSpawner, IMAGE};
use catwar_server::services::observer::Spawner;
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::play::{Arena, Line, TICKS};
use crate::util::exchange;

/// True when Docker tests can run here; otherwise says why, loudly, and fails under CI.
fn docker_ready() -> bool {
    let engine = std::process::Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    let image = engine
        && std::process::Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
    if image {
        return true;
    }
    let why = if engine {
        format!("image {IMAGE} is missing: run `bash ci/build-image.sh`")
    } else {
        "no Docker engine".into()
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("Docker tests cannot run under CI=true: {why}");
    }
    eprintln!("\n!!! SKIPPING Docker test: {why} !!!\n");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts an observer container of `match_id` through testcontainers, listening on a
/// loopback port through host networking.
async fn observer_container(
    arena: &Arena,
    match_id: u64,
) -> (ContainerAsync<GenericImage>, SocketAddr) {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let data = arena.dir.path().display().to_string();
    let (name, tag) = IMAGE.split_once(':').unwrap();
    let container = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_stdout("listening"))
        .with_cmd([
            "observer",
            "--play",
            &arena.play_addr.to_string(),
            "--match",
            &match_id.to_string(),
            "--data",
            &data,
            "--listen",
            &listen.to_string(),
        ])
        .with_network("host")
        .with_mount(Mount::bind_mount(data.clone(), data))
        .start()
        .await
        .expect("observer container starts");
    (container, listen)
}

fn watch(observer: SocketAddr, match_id: u64, token: &str) -> Line {
    let mut watcher = Line::connect(observer);
    watcher.send(serde_json::json!({"t": "watch", "match": match_id, "token": token}));
    watcher
}

/// Plays `player` until `end`; returns the end line.
fn play_to_end(player: &mut Line) -> serde_json::Value {
    let mut seq = 0;
    loop {
        seq += 1;
        player.send(
            serde_json::json!({"t": "input", "seq": seq, "dx": 0.3, "dy": 0.0, "fire": true}),
        );
        let msg = player.recv().expect("the player stays connected");
        if msg["t"] == "end" {
            return msg;
        }
    }
}

/// The tests are synchronous like the servers they drive; testcontainers' async runner
/// gets a runtime of its own for the container calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_observer_container_relays_every_tick_in_order() {
    if !docker_ready() {
        return;
    }
    let rt = runtime();
    let arena = Arena::start();
    let token = arena.token("user1");
    let (mut player, _) = Line::join(arena.play_addr, &arena.ticket("user1", 51));
    let (container, observer) = rt.block_on(observer_container(&arena, 51));
    let mut watcher = watch(observer, 51, &token);
    let end = play_to_end(&mut player);
    let mut ticks = Vec::new();
    let watched_end = loop {
        let msg = watcher.recv().expect("the stream ends with end");
        match msg["t"].as_str().unwrap() {
            "state" => ticks.push(msg["tick"].as_u64().unwrap()),
            "end" => break msg,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(watched_end, end);
    assert_eq!(
        ticks,
        (ticks[0]..=TICKS).collect::<Vec<_>>(),
        "every tick from the first, in order"
    );
    rt.block_on(container.rm()).unwrap();
}

#[test]
fn a_killed_observer_container_is_noticed_and_replaced() {
    if !docker_ready() {
        return;
    }
    let rt = runtime();
    let arena = Arena::start_with(|dir, session| {
        Arc::new(DockerSpawner::new(dir.into(), session, None).expect("Docker spawner"))
            as Arc<dyn Spawner>
    });
    let token = arena.token("user2");
    let (mut player, _) = Line::join(arena.play_addr, &arena.ticket("user2", 61));
    let (container, observer) = rt.block_on(observer_container(&arena, 61));
    let mut watcher = watch(observer, 61, &token);
    player.send(serde_json::json!({"t": "input", "seq": 1, "dx": 0.0, "dy": 0.0, "fire": false}));
    assert_eq!(watcher.recv().unwrap()["t"], "state");
    // A real, abrupt death: SIGKILL, no grace.
    rt.block_on(container.stop_with_timeout(Some(0))).unwrap();
    let saw_end = std::iter::from_fn(|| watcher.recv()).any(|msg| msg["t"] == "end");
    assert!(
        !saw_end,
        "the watcher's stream broke before the match ended"
    );
    // The play server keeps running, and the router starts a replacement observer,
    // this time through the play server's own Docker spawner.
    assert_eq!(player.recv().unwrap()["t"], "state");
    let request =
        format!("GET /v1/observer?match=61 HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    let (raw, _) = exchange(arena.router.addr(), request.as_bytes());
    assert_eq!(raw.status, 200, "{:?}", String::from_utf8_lossy(&raw.body));
    let replacement: SocketAddr = raw.json()["observer"].as_str().unwrap().parse().unwrap();
    let mut second = watch(replacement, 61, &token);
    let end = play_to_end(&mut player);
    let watched_end = std::iter::from_fn(|| second.recv()).find(|m| m["t"] == "end");
    assert_eq!(watched_end, Some(end));
    rt.block_on(container.rm()).unwrap();
    // Stopping the play server removes its containers.
    drop(arena);
}
