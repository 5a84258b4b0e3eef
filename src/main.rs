//! sd-updater: see README.md and sd-updater(8).

fn main() {
    std::process::exit(sd_updater::app::main());
}
