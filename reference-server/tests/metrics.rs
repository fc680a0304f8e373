//! Every service's admin listener as a scraper sees it: `topology.json` names it and the
//! settings, `/metrics` carries the series of SPEC §7 with bounded labels in the classic
//! text format (and OpenMetrics on request), and `/healthz` and wrong methods answer
//! like every route.

use std::net::SocketAddr;

use serde_json::json;

use crate::util::{exchange, get, run_to_exit, tls_request, wait_for, Raw, Up};

/// The `/metrics` text of the admin listener at `addr`.
fn scrape(addr: SocketAddr) -> String {
    let raw = get(addr, "/metrics");
    assert_eq!(raw.status, 200);
    let content_type = raw.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    String::from_utf8(raw.body).expect("the exposition is UTF-8")
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

fn assert_has(text: &str, service: &str, series: &[&str]) {
    for s in series {
        assert!(
            value(text, s).is_some(),
            "{service}: {s} missing from\n{text}"
        );
    }
}

fn lobby_me(up: &Up, token: Option<&str>) -> Raw {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET /v1/me HTTP/1.1\r\n{auth}Content-Length: 0\r\n\r\n");
    exchange(up.addr("lobby"), request.as_bytes()).0
}

#[test]
fn every_service_serves_its_metrics_and_topology_json_names_them_and_the_settings() {
    let up = Up::start(&[
        "--file-nodes",
        "1",
        "--play-servers",
        "1",
        "--argon2",
        "fast",
        "--token-idle-s",
        "321",
    ]);
    let data = up.data().to_str().unwrap().to_string();
    let (status, stderr) = run_to_exit(&[
        "users", "seed", "--data", &data, "--count", "1", "--argon2", "fast",
    ]);
    assert!(status.success(), "{stderr}");

    // topology.json: the settings a client depends on, and an admin address per service.
    let text = std::fs::read_to_string(up.data().join("topology.json")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    let settings = &file["settings"];
    assert_eq!(settings["token_idle_s"], 321);
    assert_eq!(settings["argon2"], "fast");
    assert_eq!(settings["file_nodes"], 1);
    assert_eq!(settings["play_servers"], 1);
    assert_eq!(settings["observer_backend"], "process");
    for key in [
        "players_per_match",
        "match_fill_timeout_s",
        "match_ticks",
        "tick_hz",
        "login_workers",
    ] {
        assert!(settings[key].is_u64(), "settings.{key}: {settings}");
    }
    let topology = up.topology();
    for service in &topology.services {
        assert_ne!(service.metrics, service.addr, "{}", service.name);
        assert!(service.metrics.ip().is_loopback(), "{}", service.name);
    }

    // A little traffic: an update check, a path nobody serves, a login, the lobby with
    // and without a token.
    let storage = up.addr("storage");
    assert_eq!(get(storage, "/v1/update?version=0.0.0").status, 200);
    assert_eq!(get(storage, "/no/such/path/7f3a").status, 404);
    let cert = up.data().join("tls").join("cert.pem");
    let body = json!({"id": "user1", "password": "pw-user1"}).to_string();
    let login = tls_request(up.addr("profile"), &cert, "POST", "/v1/login", None, &body);
    assert_eq!(
        login.status,
        200,
        "{}",
        String::from_utf8_lossy(&login.body)
    );
    let token = login.json()["token"].as_str().unwrap().to_string();
    assert_eq!(lobby_me(&up, None).status, 401);
    assert_eq!(lobby_me(&up, Some(&token)).status, 200);

    let metrics = |name: &str| topology.service(name).unwrap().metrics;
    for service in &topology.services {
        let text = scrape(service.metrics);
        assert_has(
            &text,
            &service.name,
            &[
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_max_fds",
            ],
        );
        assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        // Every name is ours or a standard process one.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.starts_with("catwar_") || line.starts_with("process_"),
                "{}: {line}",
                service.name
            );
        }
        if !service.name.starts_with("play-") {
            assert_has(&text, &service.name, &["catwar_http_connections"]);
        }
        let health = get(service.metrics, "/healthz");
        assert_eq!(health.status, 200, "{}", service.name);
    }

    let storage_text = scrape(metrics("storage"));
    assert_has(
        &storage_text,
        "storage",
        &[
            "catwar_http_requests_total{route=\"/v1/update\",status=\"200\"}",
            "catwar_http_requests_total{route=\"unknown\",status=\"404\"}",
            "catwar_http_request_duration_seconds_count{route=\"/v1/update\"}",
            "catwar_http_request_duration_seconds_bucket{route=\"/v1/update\",le=\"+Inf\"}",
        ],
    );
    assert!(
        !storage_text.contains("7f3a"),
        "a raw path became a label:\n{storage_text}"
    );

    let profile = scrape(metrics("profile"));
    assert_has(
        &profile,
        "profile",
        &[
            "catwar_http_requests_total{route=\"/v1/login\",status=\"200\"}",
            "catwar_job_queue_depth{pool=\"login\"}",
            "catwar_job_queue_refused_total{pool=\"login\"}",
            "catwar_job_queue_depth{pool=\"session\"}",
        ],
    );

    let lobby = scrape(metrics("lobby"));
    assert_has(
        &lobby,
        "lobby",
        &[
            "catwar_http_requests_total{route=\"/v1/me\",status=\"401\"}",
            "catwar_http_requests_total{route=\"/v1/me\",status=\"200\"}",
            "catwar_job_queue_depth{pool=\"lobby-db\"}",
        ],
    );
    assert!(
        value(&lobby, "catwar_lobby_sessions").unwrap() >= 1.0,
        "{lobby}"
    );

    // One of the two balancers is active, each knows the epoch and the healthy node.
    let mut active = 0.0;
    for name in ["balancer", "balancer-observer"] {
        let text = wait_for(&format!("{name} to see its file node healthy"), || {
            let text = scrape(metrics(name));
            (value(&text, "catwar_balancer_healthy_file_nodes")? == 1.0).then_some(text)
        });
        assert_has(
            &text,
            name,
            &[
                "catwar_balancer_epoch",
                "catwar_balancer_role{role=\"standby\"}",
            ],
        );
        active += value(&text, "catwar_balancer_role{role=\"active\"}").unwrap();
    }
    assert_eq!(active, 1.0, "exactly one balancer is active");

    let play = wait_for("the play server to have ticked", || {
        let text = scrape(metrics("play-0"));
        (value(&text, "catwar_play_tick_lateness_seconds_count")? > 0.0).then_some(text)
    });
    assert_has(
        &play,
        "play-0",
        &[
            "catwar_play_players",
            "catwar_play_matches{phase=\"running\"}",
            "catwar_play_observers",
            "catwar_play_observers_started_total",
            "catwar_play_ticks_missed_total",
            "catwar_play_connections",
            "catwar_play_lines_received_total",
        ],
    );

    // Routes and methods of the admin listener, as everywhere (SPEC §3).
    let admin = metrics("router");
    let (post, _) = exchange(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(get(admin, "/nothing").status, 404);
    let (open, _) = exchange(
        admin,
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    );
    assert!(
        open.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        open.headers
    );
    assert!(String::from_utf8_lossy(&open.body).ends_with("# EOF\n"));
}
