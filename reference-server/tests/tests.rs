//! Integration tests of the reference server, one module per area.

mod util;

mod accept;
mod docker;
mod failover;
mod file_node;
mod http_limits;
mod login_lobby;
mod methods;
mod play;
mod session_rule;
mod topology;
