//! Hostile credentials (SPEC §3, §5): SQL metacharacters in ids and passwords, login
//! bodies that are not JSON or have the wrong types, deeply nested or absurd JSON, and
//! empty, huge, non-ASCII, forged and replayed tokens at every door a token is shown to
//! (lobby, router, profile's refresh and logout), and forged internal keys. Every one is
//! a 400, 401 or 403 with the documented code, never a 500; the user table is intact
//! after all of it, and well-behaved clients are served at once.

use std::io::Write;
use std::net::IpAddr;

use catwar_server::domain::internal_key::{INTERNAL_KEY_HEADER, INTERNAL_KEY_META};
use catwar_server::domain::{db, users};
use catwar_server::runtime::event_loop::{Limits, BODY_BYTES_MAX};
use catwar_server::services::profile::LOGIN_FAILURES_PER_ID_MAX;

use crate::fleet::{tls_exchange, Fleet, Port, USERS};
use crate::util::{connect_from, exchange, read_response, Raw};

/// A loopback address of its own for the `n`th login, so the per-IP failure limit
/// never answers for the rule under test.
fn source(n: usize) -> IpAddr {
    format!("127.0.{}.{}", 1 + n / 200, 1 + n % 200)
        .parse()
        .unwrap()
}

fn login(fleet: &Fleet, n: usize, body: &[u8]) -> Raw {
    tls_exchange(fleet, source(n), "POST", "/v1/login", "", body)
}

fn error(raw: &Raw) -> String {
    raw.json()["error"].as_str().unwrap_or_default().to_string()
}

fn user_count(fleet: &Fleet) -> i64 {
    fleet
        .db()
        .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn sql_metacharacters_in_ids_and_passwords_are_400_or_401_and_the_users_survive() {
    let fleet = Fleet::start(Limits::default());
    let ids = [
        "' OR 1=1 --",
        "' OR '1'='1",
        "admin'--",
        "user1' --",
        "user1'; DROP TABLE users; --",
        "\"; DELETE FROM sessions; --",
        "user1\" OR \"\"=\"",
        "user1 OR 1=1",
        "user1;",
        "user1%",
        "*",
        "user1\u{0}",
        "user1\\",
        "ユーザー1",
        "user1\u{202e}",
        "",
    ];
    let mut n = 0;
    for id in ids {
        let body = serde_json::json!({"id": id, "password": "pw-user1"}).to_string();
        let raw = login(&fleet, n, body.as_bytes());
        n += 1;
        assert_eq!(raw.status, 400, "id {id:?}");
        assert!(
            raw.json()["detail"]
                .as_str()
                .unwrap()
                .starts_with("body.id"),
            "id {id:?}"
        );
    }
    // Ids made of allowed characters that are SQL wildcards name nobody: 401.
    for id in ["_", "user_", "%", "user1%"]
        .into_iter()
        .filter(|id| users::valid_user_id(id))
    {
        let body = serde_json::json!({"id": id, "password": "pw-user1"}).to_string();
        let raw = login(&fleet, n, body.as_bytes());
        n += 1;
        assert_eq!(
            (raw.status, error(&raw).as_str()),
            (401, "login_failed"),
            "id {id:?}"
        );
    }
    let passwords = [
        "' OR 1=1 --",
        "' OR '1'='1",
        "pw-user1' --",
        "pw-user1'; DROP TABLE users; --",
        "\") OR 1=1 --",
        "%",
        "\u{0}",
        "パスワード",
    ];
    // Spread over users so the per-id limit is never reached.
    let per_user = LOGIN_FAILURES_PER_ID_MAX as usize - 1;
    for (i, password) in passwords.iter().enumerate() {
        let id = format!("user{}", 1 + i / per_user);
        let body = serde_json::json!({"id": id, "password": password}).to_string();
        let raw = login(&fleet, n, body.as_bytes());
        n += 1;
        assert_eq!(
            (raw.status, error(&raw).as_str()),
            (401, "login_failed"),
            "password {password:?}"
        );
    }
    assert_eq!(user_count(&fleet), USERS as i64, "the users table survived");
    let sessions: i64 = fleet
        .db()
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 0, "no injection opened a session");
    let raw = login(&fleet, n, br#"{"id":"user9","password":"pw-user9"}"#);
    assert_eq!(raw.status, 200, "a well-behaved login still works");
    fleet.all_served();
}

#[test]
fn login_bodies_of_the_wrong_shape_are_400_and_name_the_problem() {
    let fleet = Fleet::start(Limits::default());
    let nested_arrays = "[".repeat(60_000);
    let nested_objects = "{\"a\":".repeat(10_000);
    let long_password = "p".repeat(users::PASSWORD_BYTES_MAX + 1);
    let long_password = format!(r#"{{"id":"user1","password":"{long_password}"}}"#);
    let long_id = format!(r#"{{"id":"{}","password":"x"}}"#, "u".repeat(5_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"".to_vec()),
        ("not JSON", b"id=user1&password=pw-user1".to_vec()),
        ("truncated", br#"{"id":"user1","password":"pw-"#.to_vec()),
        (
            "trailing garbage",
            br#"{"id":"user1","password":"pw-user1"}x"#.to_vec(),
        ),
        ("null", b"null".to_vec()),
        ("an array", br#"["user1","pw-user1"]"#.to_vec()),
        ("a string", br#""user1""#.to_vec()),
        ("a number id", br#"{"id":1,"password":"x"}"#.to_vec()),
        ("a null id", br#"{"id":null,"password":"x"}"#.to_vec()),
        (
            "an array id",
            br#"{"id":["user1"],"password":"x"}"#.to_vec(),
        ),
        (
            "operator objects",
            br#"{"id":{"$ne":null},"password":{"$ne":null}}"#.to_vec(),
        ),
        (
            "a boolean password",
            br#"{"id":"user1","password":true}"#.to_vec(),
        ),
        ("an id of 1e400", br#"{"id":1e400,"password":"x"}"#.to_vec()),
        ("an id of -0", br#"{"id":-0,"password":"x"}"#.to_vec()),
        (
            "a password beyond 64 bits",
            br#"{"id":"user1","password":184467440737095516160000}"#.to_vec(),
        ),
        (
            "a lone surrogate",
            br#"{"id":"user1","password":"\ud800"}"#.to_vec(),
        ),
        (
            "bytes that are not UTF-8",
            b"{\"id\":\"user1\",\"password\":\"\xff\xfe\"}".to_vec(),
        ),
        (
            "a duplicate id",
            br#"{"id":"user1","id":"' OR 1=1 --","password":"pw-user1"}"#.to_vec(),
        ),
        (
            "an empty password",
            br#"{"id":"user1","password":""}"#.to_vec(),
        ),
        ("a password over the limit", long_password.into_bytes()),
        ("an id over the limit", long_id.into_bytes()),
        ("60,000 nested arrays", nested_arrays.into_bytes()),
        ("10,000 nested objects", nested_objects.into_bytes()),
    ];
    for (n, (what, body)) in bodies.iter().enumerate() {
        assert!(body.len() <= BODY_BYTES_MAX, "{what} fits in a body");
        let raw = login(&fleet, n, body);
        assert_eq!(raw.status, 400, "{what}");
        assert_eq!(error(&raw), "bad_request", "{what}");
        assert!(
            raw.json()["detail"].as_str().unwrap().starts_with("body"),
            "{what}"
        );
    }
    // Nesting beyond the body limit is refused before it is read: the client sends a
    // part of it and reads the answer.
    let mut stream = crate::fleet::tls_from(&fleet, source(0));
    let head = "POST /v1/login HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all("[".repeat(16 * 1024).as_bytes()).unwrap();
    let raw = read_response(&mut stream, &mut Vec::new()).expect("a 413");
    assert_eq!((raw.status, error(&raw).as_str()), (413, "body_too_large"));
    assert_eq!(user_count(&fleet), USERS as i64);
    assert_eq!(
        login(&fleet, 1, br#"{"id":"user2","password":"pw-user2"}"#).status,
        200
    );
    fleet.all_served();
}

/// The doors a token is shown to, and what each answers a token the rule lets through.
#[derive(Debug, Clone, Copy)]
enum Door {
    Lobby,
    Router,
    Refresh,
    Logout,
}

const DOORS: [Door; 4] = [Door::Lobby, Door::Router, Door::Refresh, Door::Logout];

/// Presents the raw `Authorization` header value `auth` (no header when `None`) at a door.
fn present(fleet: &Fleet, door: Door, auth: Option<&[u8]>) -> Raw {
    let mut head = match door {
        Door::Lobby => b"GET /v1/me HTTP/1.1\r\n".to_vec(),
        Door::Router => b"GET /v1/observer?match=1 HTTP/1.1\r\n".to_vec(),
        Door::Refresh => b"POST /v1/refresh HTTP/1.1\r\nContent-Length: 0\r\n".to_vec(),
        Door::Logout => b"POST /v1/logout HTTP/1.1\r\nContent-Length: 0\r\n".to_vec(),
    };
    if let Some(auth) = auth {
        head.extend_from_slice(b"Authorization: ");
        head.extend_from_slice(auth);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let home: IpAddr = "127.0.0.1".parse().unwrap();
    match door {
        Door::Lobby | Door::Router => {
            let port = if matches!(door, Door::Lobby) {
                Port::Lobby
            } else {
                Port::Router
            };
            let mut stream = connect_from(home, fleet.addr(port));
            stream.write_all(&head).unwrap();
            read_response(&mut stream, &mut Vec::new()).expect("an answer")
        }
        Door::Refresh | Door::Logout => {
            let mut stream = crate::fleet::tls_from(fleet, home);
            stream.write_all(&head).unwrap();
            read_response(&mut stream, &mut Vec::new()).expect("an answer")
        }
    }
}

#[test]
fn empty_huge_non_ascii_and_forged_tokens_are_refused_at_every_door() {
    let fleet = Fleet::start(Limits::default());
    let huge = format!("Bearer {}", "a".repeat(15_000));
    let upper = format!("Bearer {}", "A".repeat(64));
    let long_hex = format!("Bearer {}", "0".repeat(65));
    let forged = format!("Bearer {}", "0123456789abcdef".repeat(4));
    let denied: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("no header", None),
        ("an empty header", Some(b"".to_vec())),
        ("an empty bearer", Some(b"Bearer".to_vec())),
        ("a bearer of spaces", Some(b"Bearer     ".to_vec())),
        (
            "another scheme",
            Some(b"Basic dXNlcjE6cHctdXNlcjE=".to_vec()),
        ),
        ("a huge token", Some(huge.into_bytes())),
        ("upper-case hex", Some(upper.into_bytes())),
        ("65 hex digits", Some(long_hex.into_bytes())),
        ("a forged token", Some(forged.into_bytes())),
        ("SQL", Some(b"Bearer ' OR 1=1 --".to_vec())),
        ("several words", Some(b"Bearer a b c".to_vec())),
        ("non-ASCII", Some("Bearer ✓✓✓✓".as_bytes().to_vec())),
    ];
    for door in DOORS {
        for (what, auth) in &denied {
            let raw = present(&fleet, door, auth.as_deref());
            assert_eq!(
                (raw.status, error(&raw).as_str()),
                (401, "access_denied"),
                "{door:?}: {what}"
            );
        }
        // Bytes no header may hold are malformed requests, not tokens.
        for auth in [&b"Bearer \xff\xfe"[..], b"Bearer abc\x00def"] {
            let raw = present(&fleet, door, Some(auth));
            assert_eq!(raw.status, 400, "{door:?}: {auth:?}");
        }
    }
    fleet.all_served();
}

#[test]
fn replayed_tokens_are_refused_once_refreshed_or_logged_out_at_every_door() {
    let fleet = Fleet::start(Limits::default());
    let home: IpAddr = "127.0.0.1".parse().unwrap();
    let token_of = |raw: Raw| raw.json()["token"].as_str().unwrap().to_string();
    let first = token_of(tls_exchange(
        &fleet,
        home,
        "POST",
        "/v1/login",
        "",
        br#"{"id":"user4","password":"pw-user4"}"#,
    ));
    let bearer = |t: &str| format!("Bearer {t}").into_bytes();
    assert_eq!(
        present(&fleet, Door::Lobby, Some(&bearer(&first))).status,
        200
    );
    let refreshed = present(&fleet, Door::Refresh, Some(&bearer(&first)));
    assert_eq!(refreshed.status, 200);
    let second = token_of(refreshed);
    for door in DOORS {
        let raw = present(&fleet, door, Some(&bearer(&first)));
        assert_eq!(
            (raw.status, error(&raw).as_str()),
            (401, "access_denied"),
            "{door:?}: the token before the refresh"
        );
    }
    // The router lets the live token through to the match lookup: no such match.
    assert_eq!(
        present(&fleet, Door::Router, Some(&bearer(&second))).status,
        404
    );
    assert_eq!(
        present(&fleet, Door::Logout, Some(&bearer(&second))).status,
        204
    );
    for door in DOORS {
        let raw = present(&fleet, door, Some(&bearer(&second)));
        assert_eq!(
            (raw.status, error(&raw).as_str()),
            (401, "access_denied"),
            "{door:?}: the token after logout"
        );
    }
    fleet.all_served();
}

#[test]
fn internal_routes_refuse_forged_keys_and_bad_notices() {
    let fleet = Fleet::start(Limits::default());
    let lobby = fleet.addr(Port::Lobby);
    let key = db::meta(&fleet.db(), INTERNAL_KEY_META).unwrap().unwrap();
    let post = |path: &str, key: Option<&str>, body: &[u8]| -> Raw {
        let header = key
            .map(|k| format!("{INTERNAL_KEY_HEADER}: {k}\r\n"))
            .unwrap_or_default();
        let mut bytes = format!(
            "POST {path} HTTP/1.1\r\n{header}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        exchange(lobby, &bytes).0
    };
    let notice = br#"{"token_hash":"00"}"#;
    let forged_keys = [
        None,
        Some(""),
        Some("0"),
        Some(&key[..key.len() - 1]),
        Some("' OR 1=1 --"),
    ];
    let huge = "k".repeat(15_000);
    for path in ["/internal/v1/revoke", "/internal/v1/users/invalidate"] {
        for forged in forged_keys.iter().copied().chain([Some(huge.as_str())]) {
            let raw = post(path, forged, notice);
            assert_eq!(
                (raw.status, error(&raw).as_str()),
                (403, "forbidden"),
                "{path}"
            );
        }
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"token_hash":1}"#,
            br#"{"ids":"user1"}"#,
            br#"{"ids":[1e400]}"#,
        ] {
            let raw = post(path, Some(&key), body);
            assert_eq!(raw.status, 400, "{path} {body:?}");
        }
        let nested = "[".repeat(60_000);
        assert_eq!(
            post(path, Some(&key), nested.as_bytes()).status,
            400,
            "{path}"
        );
    }
    // Well-formed notices naming nothing, or SQL, change nothing and are fine.
    assert_eq!(
        post(
            "/internal/v1/revoke",
            Some(&key),
            br#"{"token_hash":"' OR 1=1 --"}"#
        )
        .status,
        204
    );
    let raw = post(
        "/internal/v1/users/invalidate",
        Some(&key),
        br#"{"ids":["' OR 1=1 --","nobody"]}"#,
    );
    assert_eq!(raw.status, 204);
    assert_eq!(user_count(&fleet), USERS as i64);
    fleet.served(Port::Lobby);
}
