//! Chorus load and latency bench: R rooms × C clients sending ticks at H Hz,
//! and optionally state updates and commands at a rate per room, through a
//! real server, measuring loss, duplicates, misrouting, one-way and ack
//! latency, CPU and memory.
//!
//! - [`baselines`]: clients and a launcher for the Node.js relays compared against.
//! - [`baseline_run`]: one run against a baseline relay, reported like a Chorus run.
//! - [`compare`]: one scenario against Chorus and the baselines, side by side.
//! - [`payload`]: the tick payload header and duplicate window.
//! - [`reliable`]: the state-update and command loads and their receivers.
//! - [`report`]: the pure accounting and its table / JSON output.
//! - [`procfs`]: CPU and memory from `/proc`.
//! - [`run`]: one run, end to end.
//! - [`saturation`]: the search for the highest load within a latency and loss bound.
//! - [`scenario`]: the S1..S5 presets and how flags override them.
//! - [`transports`]: which transport each client uses.

pub mod baseline_run;
pub mod baselines;
pub mod compare;
pub mod payload;
pub mod procfs;
pub mod reliable;
pub mod report;
pub mod run;
pub mod saturation;
pub mod scenario;
pub mod transports;
