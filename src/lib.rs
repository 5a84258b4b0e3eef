//! sd-updater: keeps a Prometheus file_sd targets file in step with a
//! sensor inventory. The binary is a thin wrapper around [`app::main`];
//! the modules are public so that tests and fuzzers can drive the pure
//! parts (parsing, validation, rendering) directly.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod fetch;
pub mod inventory;
pub mod logging;
pub mod notify;
pub mod privileges;
pub mod retry;
pub mod schedule;
pub mod sensor;
pub mod signals;
pub mod state;
pub mod targets;
pub mod url;
pub mod worker;
pub mod writer;
