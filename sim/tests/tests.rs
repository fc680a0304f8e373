//! Integration tests of the `catwar-sim` binary, one module per area.

mod util;

mod agents;
mod cli;
mod embedded;
mod html;
mod live;
mod services;
