//! Integration tests: one test binary (so shared helpers compile once), one module per
//! area, one harness (`common`). Every test that needs a simulator starts its own on
//! 127.0.0.1 port 0 over real TLS, so they run in parallel; they wait on events with a
//! generous timeout and never sleep to synchronise. (`readme` only reads files.)

mod acks;
mod architecture;
mod bench;
mod binary;
mod certs_export;
mod cli;
mod common;
mod completions;
mod config;
mod control;
mod control_devices;
mod control_events;
mod control_faults;
mod dashboard;
mod devices;
mod docs;
mod durable;
mod feedback;
mod garbage;
mod hardening;
mod http2;
mod kinds;
mod limits;
mod logline;
mod metrics;
mod output;
mod process;
mod readme;
mod run;
mod scenarios;
mod store;
mod test_runner;
mod token_auth;
mod tour;
#[path = "virtual.rs"]
mod virtual_fleet;
mod webhook;
