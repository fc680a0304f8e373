//! `catwar-server up` as users run it: one process per service, kill and restart,
//! bad input on every port, a shutdown that leaves no process behind, one `up` per data
//! folder, ports that cannot be had failing `up` before it says it is up, and a
//! Kubernetes plan readied by `kubernetes prepare` and served at `serve --listen`.

use std::io::{BufRead, Write};
use std::process::Command;

use catwar_server::compose::kubernetes;
use catwar_server::compose::serve::Readiness;
use catwar_server::compose::topology::Topology;
use catwar_server::domain::resources::DEFAULT_PREVIOUS_VERSION;

use crate::util::{
    exchange, get, process_alive, processes_mentioning, run_to_exit, server_bin, tls_request,
    wait_for, Up,
};

#[test]
fn up_kill_restart_and_shutdown_leave_no_process() {
    // The restart delay is far above the 300 ms heartbeat deadline, so the observer has
    // taken over by the time the balancer comes back.
    let mut up = Up::start(&["--restart-delay-ms", "2000", "--file-nodes", "2"]);
    let topology = up.topology();
    let names: Vec<&str> = topology.services.iter().map(|s| s.name.as_str()).collect();
    for name in [
        "storage",
        "balancer",
        "balancer-observer",
        "file-node-0",
        "file-node-1",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let mut pids: Vec<u32> = topology.services.iter().map(|s| s.pid).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        topology.services.len(),
        "one process per service"
    );

    let old = topology.service("balancer").unwrap().pid;
    let out = Command::new(server_bin())
        .args(["kill", "balancer", "--data"])
        .arg(up.data())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The observer takes over, and the supervisor brings the balancer back as standby.
    wait_for("the observer to take over", || {
        (get(up.addr("balancer-observer"), "/v1/status").json()["role"] == "active").then_some(())
    });
    let new = wait_for("the balancer to be restarted", || {
        let pid = up.topology().service("balancer").ok()?.pid;
        (pid != old).then_some(pid)
    });
    assert!(!process_alive(old));
    assert!(process_alive(new));
    let status = wait_for("the restarted balancer to answer", || {
        let (raw, _) = std::panic::catch_unwind(|| {
            exchange(up.addr("balancer"), b"GET /v1/status HTTP/1.1\r\n\r\n")
        })
        .ok()?;
        Some(raw.json())
    });
    assert_eq!(status["role"], "standby");
    let update = get(
        up.addr("storage"),
        &format!("/v1/update?version={DEFAULT_PREVIOUS_VERSION}"),
    );
    assert_eq!(update.status, 200);
    assert!(update.json()["epoch"].as_u64().unwrap() >= 2);

    // `active-balancer` is whichever balancer is active: now the observer.
    let observer = up.topology().service("balancer-observer").unwrap().pid;
    let out = Command::new(server_bin())
        .args(["kill", "active-balancer", "--data"])
        .arg(up.data())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("killed balancer-observer (pid {observer})")),
        "{said}"
    );
    wait_for("the killed observer to be gone", || {
        (!process_alive(observer)).then_some(())
    });

    let all: Vec<u32> = up.topology().services.iter().map(|s| s.pid).collect();
    up.stop();
    assert!(up.child.try_wait().unwrap().unwrap().success());
    for pid in all {
        assert!(!process_alive(pid), "pid {pid} outlived `up`");
    }
    assert!(!up.data().join("topology.json").exists());
}

#[test]
fn every_http_port_answers_bad_input_with_a_clean_4xx_and_keeps_serving() {
    let up = Up::start(&["--file-nodes", "1"]);
    for service in up.topology().services {
        if service.name.starts_with("play-") {
            // Play servers speak lines of JSON: a bad line gets an error line.
            let mut stream = crate::util::connect(service.addr);
            stream.write_all(b"NOT JSON\n{\"t\":\"status\"}\n").unwrap();
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            assert!(line.contains("\"error\":\"bad_json\""), "{line}");
            line.clear();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            assert!(line.contains("\"t\":\"status\""), "{line}");
            continue;
        }
        if service.name == "profile" {
            // Plaintext on the TLS port fails the handshake and closes; TLS clients get
            // the same HTTP rules as everyone else.
            let mut stream = crate::util::connect(service.addr);
            stream.write_all(b"NOT TLS\r\n\r\n").unwrap();
            assert!(crate::util::closed_by_server(&mut stream));
            let cert = catwar_server::domain::tls::cert_path(up.data());
            let raw = tls_request(service.addr, &cert, "POST", "/v1/login", None, "{not json");
            assert_eq!(raw.status, 400);
            assert_eq!(
                tls_request(service.addr, &cert, "GET", "/nope", None, "").status,
                404
            );
            assert_eq!(
                tls_request(service.addr, &cert, "GET", "/healthz", None, "").status,
                200
            );
            let raw = tls_request(service.addr, &cert, "DELETE", "/healthz", None, "");
            assert_eq!((raw.status, raw.header("allow")), (405, Some("GET")));
            continue;
        }
        let (raw, _) = exchange(service.addr, b"NOT HTTP AT ALL\x00\x01\r\n\r\n");
        assert_eq!(raw.status, 400, "{}", service.name);
        assert_eq!(raw.json()["error"], "bad_request", "{}", service.name);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(17 * 1024));
        assert_eq!(
            exchange(service.addr, big.as_bytes()).0.status,
            431,
            "{}",
            service.name
        );
        let (raw, _) = exchange(
            service.addr,
            b"POST /v1/update HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
        );
        assert_eq!(raw.status, 413, "{}", service.name);
        assert_eq!(
            get(service.addr, "/no/such/route").status,
            404,
            "{}",
            service.name
        );
        assert_eq!(
            get(service.addr, "/healthz").status,
            200,
            "{}",
            service.name
        );
        let (raw, _) = exchange(service.addr, b"DELETE /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(
            (raw.status, raw.header("allow")),
            (405, Some("GET")),
            "{}",
            service.name
        );
    }
    let storage = up.addr("storage");
    for bad in [
        "/v1/update",
        "/v1/update?version=",
        "/v1/update?version=../x",
        "/v1/update?version=%ZZ",
    ] {
        let raw = get(storage, bad);
        assert_eq!(raw.status, 400, "{bad}");
        assert!(
            raw.json()["detail"].as_str().unwrap().contains("version"),
            "{bad}"
        );
    }
    assert_eq!(
        get(storage, "/v1/update?version=1.1.0").json()["update"],
        false
    );
}

#[test]
fn kill_names_the_known_services_when_given_an_unknown_one() {
    let up = Up::start(&["--file-nodes", "1"]);
    let out = Command::new(server_bin())
        .args(["kill", "lobbyy", "--data"])
        .arg(up.data())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lobbyy") && err.contains("balancer-observer"),
        "{err}"
    );
}

#[test]
fn bad_flags_exit_64_and_name_the_flag() {
    let out = Command::new(server_bin())
        .args(["up", "--data", "/nonexistent/x", "--file-nodes", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--file-nodes"));
    let out = Command::new(server_bin())
        .args(["up", "--data", "/tmp/x", "--argon2", "slow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--argon2"));
}

#[test]
fn a_second_up_on_a_folder_in_use_names_the_first_and_changes_nothing() {
    let up = Up::start(&["--file-nodes", "1"]);
    let topology_path = up.data().join("topology.json");
    let before = std::fs::read(&topology_path).unwrap();
    let data = up.data().to_str().unwrap();
    let (status, stderr) = run_to_exit(&[
        "up",
        "--data",
        data,
        "--base-port",
        "0",
        "--file-nodes",
        "1",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", up.child.id())),
        "the first `up` is pid {}: {stderr}",
        up.child.id()
    );
    assert!(!stderr.contains("topology up"), "{stderr}");
    assert_eq!(std::fs::read(&topology_path).unwrap(), before);
    let topology = up.topology();
    for service in &topology.services {
        assert!(process_alive(service.pid), "{} died", service.name);
    }
    // The first topology is still the one `kill` acts on.
    let storage = topology.service("storage").unwrap().pid;
    let out = Command::new(server_bin())
        .args(["kill", "storage", "--data", data])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the killed storage to be gone", || {
        (!process_alive(storage)).then_some(())
    });
}

#[test]
fn a_killed_up_leaves_a_lock_file_that_does_not_block_the_next() {
    let mut first = Up::start(&["--file-nodes", "1"]);
    let lock = first
        .data()
        .join(catwar_server::compose::supervisor::LOCK_FILE);
    unsafe { libc::kill(first.child.id() as libc::pid_t, libc::SIGKILL) };
    first.child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        first.child.id().to_string()
    );
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
    let second = Up::start_in(dir, &["--file-nodes", "1"]);
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        second.child.id().to_string()
    );
}

#[test]
fn a_base_port_beyond_the_port_range_exits_64_naming_the_flag_before_touching_the_folder() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let (status, stderr) = run_to_exit(&[
        "up",
        "--data",
        data.to_str().unwrap(),
        "--base-port",
        "65530",
    ]);
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--base-port"), "{stderr}");
    assert!(!data.exists());
}

#[test]
fn a_port_in_use_fails_up_naming_the_service_and_address_and_leaves_nothing_running() {
    // Storage listens on the base port itself and starts after the file node and the two
    // balancers (base + 20, + 10, + 11, and their admin listeners 1000 above), so those
    // start first and must be stopped again. The taken port is one whose partners are
    // free, so the failure is storage's.
    let (taken, port) = loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let partners_free = port <= u16::MAX - 1400
            && [10, 11, 20, 1000, 1010, 1011, 1020]
                .iter()
                .all(|offset| std::net::TcpListener::bind(("127.0.0.1", port + offset)).is_ok());
        if partners_free {
            break (listener, port);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (status, stderr) = run_to_exit(&[
        "up",
        "--data",
        data,
        "--base-port",
        &port.to_string(),
        "--file-nodes",
        "1",
    ]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "service storage could not listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("service listening service=file-node-0"),
        "{stderr}"
    );
    assert!(!stderr.contains("topology up"), "{stderr}");
    assert!(!dir.path().join("topology.json").exists());
    assert_eq!(processes_mentioning(dir.path()), Vec::<u32>::new());
    drop(taken);
}

#[test]
fn a_kubernetes_plan_is_prepared_and_served_at_the_listen_address_not_the_service_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut plan = kubernetes::plan(
        catwar_server::config::Settings::default(),
        7100,
        kubernetes::SERVICE_IP_FIRST_DEFAULT,
    )
    .unwrap();
    plan.data_dir = dir.path().to_path_buf();
    let plan_path = dir.path().join("plan.json");
    plan.write(&plan_path).unwrap();
    let plan_arg = plan_path.to_str().unwrap();
    let (status, stderr) = run_to_exit(&["kubernetes", "prepare", "--plan", plan_arg]);
    assert!(status.success(), "{stderr}");
    let topology = Topology::read(dir.path()).unwrap();
    let node = plan.addr_of("file-node-0").unwrap();
    assert_eq!(topology.service("file-node-0").unwrap().addr, node);

    // The plan's address is a Service's, not this host's: the pod listens elsewhere.
    let mut child = Command::new(server_bin())
        .args([
            "serve",
            "file-node-0",
            "--plan",
            plan_arg,
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready = Readiness::parse(&line);
    let _ = child.kill();
    let _ = child.wait();
    let Some(Readiness::Ready { addr, metrics }) = ready else {
        panic!("serve said {line:?}");
    };
    assert_ne!(addr, node);
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    // Without --metrics-listen, the admin listener is on --listen's host too.
    assert_ne!(metrics, plan.metrics_of("file-node-0").unwrap());
    assert_eq!(metrics.ip(), std::net::Ipv4Addr::LOCALHOST);
}

#[test]
fn an_observer_address_in_the_environment_that_does_not_parse_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(server_bin())
        .args([
            "observer",
            "--play",
            "127.0.0.1:1",
            "--match",
            "1",
            "--data",
        ])
        .arg(dir.path())
        .env("CATWAR_OBSERVER_LISTEN", "pod-ip:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CATWAR_OBSERVER_LISTEN=\"pod-ip:0\""), "{err}");
}
