//! Chorus load and latency bench: R rooms × C clients sending ticks at H Hz,
//! and optionally state updates and commands at a rate per room, through a
//! real server, measuring loss, duplicates, misrouting, one-way and ack
//! latency, CPU and memory; plus a join storm and an idle-connection memory
//! test.
//!
//! - [`baselines`]: clients and a launcher for the Node.js relays compared against.
//! - [`baseline_run`]: one run against a baseline relay, reported like a Chorus run.
//! - [`chorus_process`]: a Chorus server started as its own process for a run.
//! - [`compare`]: one scenario against Chorus and the baselines, side by side.
//! - [`idle`]: the idle-connection memory test (bytes per idle connection).
//! - [`live`]: what a running load run shows (progress) and keeps (series for plots).
//! - [`markdown`]: Markdown reports of the runs.
//! - [`payload`]: the tick payload header and duplicate window.
//! - [`plots`]: SVG plots (latency CDF, ticks received per second).
//! - [`procfs`]: CPU and memory from `/proc`.
//! - [`progress`]: the live progress bar.
//! - [`reliable`]: the state-update and command loads and their receivers.
//! - [`report`]: the pure accounting and its table / JSON output.
//! - [`run`]: one run, end to end.
//! - [`saturation`]: the search for the highest load within a latency and loss bound.
//! - [`scenario`]: the S1..S5 presets and how flags override them.
//! - [`server_target`]: the server the storm and idle tests load, and their shared flags.
//! - [`storm`]: the join storm (connect + join rate and latency).
//! - [`transports`]: which transport each client uses.

pub mod baseline_run;
pub mod baselines;
pub mod chorus_process;
pub mod compare;
pub mod idle;
pub mod live;
pub mod markdown;
pub mod payload;
pub mod plots;
pub mod procfs;
pub mod progress;
pub mod reliable;
pub mod report;
pub mod run;
pub mod saturation;
pub mod scenario;
pub mod server_target;
pub mod storm;
pub mod transports;
