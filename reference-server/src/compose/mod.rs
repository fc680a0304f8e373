//! Composition: the plan of a topology and its `topology.json`, starting one named
//! service in this process (`serve`), and the supervisor behind `up` and `kill`.
//!
//! Architecture invariant: nothing below `compose` names it; it is the only module that
//! knows every service.

pub mod containers;
pub mod serve;
pub mod supervisor;
pub mod topology;
