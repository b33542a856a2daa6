//! Chorus load and latency bench: R rooms × C clients sending ticks at H Hz
//! through a real server, measuring loss, duplicates, misrouting, one-way
//! latency, CPU and memory.
//!
//! - [`baselines`]: clients and a launcher for the Node.js relays compared against.
//! - [`payload`]: the tick payload header and duplicate window.
//! - [`report`]: the pure accounting and its table / JSON output.
//! - [`procfs`]: CPU and memory from `/proc`.
//! - [`run`]: one run, end to end.
//! - [`transports`]: which transport each client uses.

pub mod baselines;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod run;
pub mod transports;
