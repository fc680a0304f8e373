//! Composition: the plan of a topology and its `topology.json`, starting one named
//! service in this process (`serve`), the supervisor behind `up` and `kill`, and the
//! files that run the same plan in containers (`containers`) or on Kubernetes
//! (`kubernetes`), and a Prometheus scrape configuration for a topology (`prometheus`).
//!
//! Architecture invariant: nothing below `compose` names it; it is the only module that
//! knows every service.

pub mod containers;
pub mod kubernetes;
pub mod prometheus;
pub mod serve;
pub mod supervisor;
pub mod topology;
