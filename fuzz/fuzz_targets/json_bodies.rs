//! Every JSON body the HTTP services accept, chosen by the first byte: profile's login
//! body (`parse_login`), the lobby's internal revoke and invalidate notices (sent with
//! the right internal key through the lobby's real route), and the balancer status a
//! peer's heartbeat reads.
#![no_main]

use std::cell::RefCell;

use catwar_fuzz::{check_framing, Services};
use catwar_server::domain::internal_key::INTERNAL_KEY_HEADER;
use catwar_server::domain::users::{valid_user_id, PASSWORD_BYTES_MAX};
use catwar_server::services::balancer::Status;
use catwar_server::services::profile::parse_login;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SERVICES: RefCell<Services> = RefCell::new(Services::new());
}

fn notice(s: &mut Services, path: &str, body: &[u8]) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: lobby\r\n{INTERNAL_KEY_HEADER}: {}\r\nContent-Length: {}\r\n\r\n",
        s.internal_key,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let out = s.lobby.serve(&request);
    let statuses = check_framing(&out);
    // The key is right, so a notice is applied (204) or its body refused (400).
    assert!(
        statuses == [204] || statuses == [400],
        "{path}: {}",
        String::from_utf8_lossy(&out)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok((id, password)) = parse_login(body) {
                assert!(valid_user_id(&id), "{id:?}");
                assert!(!password.is_empty() && password.len() <= PASSWORD_BYTES_MAX);
            }
        }
        1 => SERVICES.with_borrow_mut(|s| notice(s, "/internal/v1/revoke", body)),
        2 => SERVICES.with_borrow_mut(|s| notice(s, "/internal/v1/users/invalidate", body)),
        _ => {
            let _ = serde_json::from_slice::<Status>(body);
        }
    }
});
