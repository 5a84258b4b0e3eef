//! sd-updater: keeps a Prometheus file_sd targets file in step with a
//! sensor inventory. The binary is a thin wrapper around [`app::main`].
//!
//! Layers, lowest first (docs/architecture.md):
//! - `model`: pure data and rules: inventory parsing and validation,
//!   addresses, target groups, file_sd rendering. No I/O, no `Config`.
//! - `sys`: the operating system: signals, sd_notify, logging, privileges,
//!   the allocator, clocks. All code the compiler cannot prove memory-safe lives here.
//! - `source` and `output`: where inventories come from (http, file) and
//!   where results go (the atomic writer); they build on `model` and `sys`.
//! - `config`, `daemon` and `app`: settings, the poll loop and start-up,
//!   which wire the rest together.

pub mod app;
pub(crate) mod config;
pub(crate) mod daemon;
pub mod model;
pub mod output;
pub mod source;
pub mod sys;
