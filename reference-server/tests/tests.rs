//! Integration tests of the reference server, one module per area.

mod util;

mod accept;
mod bad_auth;
mod bad_http;
mod bad_lines;
mod bad_tls;
mod crash;
mod docker;
mod failover;
mod file_node;
mod fleet;
mod http_limits;
mod login_flood;
mod login_lobby;
mod methods;
mod metrics;
mod play;
mod session_rule;
mod slow_clients;
mod topology;
