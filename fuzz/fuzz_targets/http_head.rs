//! The HTTP services' request path: one connection's bytes (any number of pipelined
//! requests) through the event loop's head parser, limits and body framing into one
//! service's routing, chosen by the first byte. The answers must be well-framed HTTP.
#![no_main]

use std::cell::RefCell;

use catwar_fuzz::{check_framing, Services};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SERVICES: RefCell<Services> = RefCell::new(Services::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    SERVICES.with_borrow_mut(|s| {
        let out = match which % 6 {
            0 => s.storage.serve(bytes),
            1 => s.file_node.serve(bytes),
            2 => s.balancer.serve(bytes),
            3 => s.profile.serve(bytes),
            4 => s.lobby.serve(bytes),
            _ => s.router.serve(bytes),
        };
        let statuses = check_framing(&out);
        assert!(
            !statuses.contains(&500),
            "a 500: {}",
            String::from_utf8_lossy(&out)
        );
    });
});
