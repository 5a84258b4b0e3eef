//! sd-updater: keeps a Prometheus file_sd targets file in step with a
//! sensor inventory. See README.md and sd-updater(8).

mod app;
mod cli;
mod clock;
mod config;
mod cycle;
mod daemon;
mod fetch;
mod inventory;
mod logging;
mod notify;
mod privileges;
mod retry;
mod sensor;
mod signals;
mod state;
mod targets;
mod url;
mod worker;
mod writer;

fn main() {
    std::process::exit(app::main());
}
