//! Integration tests of the reference server, one module per area.

mod util;

mod docker;
mod failover;
mod file_node;
mod http_limits;
mod login_lobby;
mod play;
mod topology;
