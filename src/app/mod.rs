//! Start-up in the required order (configuration, logging, privilege drop,
//! signals) and the four ways to run.

pub(crate) mod cli;

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use self::cli::{exit, Command};
use crate::config::Config;
use crate::daemon::cycle;
use crate::daemon::state::State;
use crate::daemon::worker::Worker;
use crate::daemon::{self, Daemon};
use crate::model::targets;
use crate::output::publish::{self, Document, OnFailure};
use crate::output::render;
use crate::output::writer::{self, ContentHasher, FileDigest, HashingReader};
use crate::source;
use crate::sys::logging;
use crate::sys::privileges::{self, DropError};
use crate::sys::signals::Signals;

pub fn main() -> i32 {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sd-updater: {e}\n{}", cli::USAGE);
            return exit::USAGE;
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::help());
            return exit::OK;
        }
        Command::Version => {
            println!("{}", cli::version());
            return exit::OK;
        }
        _ => {}
    }

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sd-updater: invalid configuration: {e}");
            return exit::CONFIG;
        }
    };

    if command == Command::CheckConfig {
        return check_config(&config);
    }

    let mode = logging::init(config.log_level);
    // --print writes nothing, so it creates no directory either.
    let out_dir = (command != Command::Print).then(|| writer::parent_dir(&config.targets_file));
    if let Err(code) = drop_privileges(&config, out_dir, mode) {
        return code;
    }

    match command {
        Command::Once => once(&config),
        Command::Print => print(&config),
        _ => daemon(config, mode),
    }
}

fn check_config(config: &Config) -> i32 {
    // As root the user must exist, or the daemon would stop at start-up.
    if nix::unistd::geteuid().is_root() {
        if let Err(e) = privileges::lookup(&config.run_as_user) {
            eprintln!("sd-updater: invalid configuration: {e}");
            return exit::CONFIG;
        }
    }
    let mut out = std::io::stdout().lock();
    for (name, value) in config.effective() {
        let _ = writeln!(out, "{name}={value}");
    }
    exit::OK
}

fn drop_privileges(
    config: &Config,
    out_dir: Option<&Path>,
    mode: logging::Mode,
) -> Result<(), i32> {
    let mut prepare = |uid, gid| match out_dir {
        Some(dir) => writer::create_dirs_for(dir, uid, gid),
        None => Ok(()),
    };
    match privileges::drop_to(&config.run_as_user, &mut prepare) {
        Ok(privileges::Outcome::NotRoot) => Ok(()),
        Ok(privileges::Outcome::StayedRoot) => {
            log::warn!(
                "RUN_AS_USER={} names root: running with full privileges",
                config.run_as_user
            );
            Ok(())
        }
        Ok(privileges::Outcome::Dropped { user, uid, gid }) => {
            log::info!("Dropped privileges to {user} (uid {uid}, gid {gid})");
            Ok(())
        }
        Err(e @ DropError::UnknownUser(_)) => {
            // The same one-line form as every other configuration error.
            eprintln!("sd-updater: invalid configuration: {e}");
            if mode == logging::Mode::Journal {
                log::error!(ERROR = e.to_string().as_str(); "Invalid configuration: {e}");
            }
            Err(exit::CONFIG)
        }
        Err(e @ DropError::Failed(_)) => {
            log::error!(ERROR = e.to_string().as_str(); "{e}");
            Err(exit::FAILURE)
        }
    }
}

fn log_configuration(config: &Config) {
    log::info!(
        INVENTORY_URL = config.inventory_url.to_string().as_str();
        "Starting sd-updater {} (Prometheus service discovery updater)", env!("CARGO_PKG_VERSION")
    );
    log::info!("Configuration:");
    for (name, value) in config.effective() {
        log::info!("  {name}={value}");
    }
}

fn remove_stale_temp_files(config: &Config) {
    let shown = config.targets_file.display().to_string();
    let cannot = |e: &writer::WriteError| {
        log::warn!(
            TARGETS_FILE = shown.as_str();
            "Cannot clean up old temp files next to {shown}: {e}"
        )
    };
    match writer::remove_stale_temp_files(&config.targets_file) {
        Ok(cleanup) => {
            for p in cleanup.removed {
                log::info!("Removed temp file left by an earlier run: {}", p.display());
            }
            for (p, pid) in cleanup.in_use {
                log::debug!(
                    "Leaving temp file {} alone: process {pid} is running and may be writing it",
                    p.display()
                );
            }
            // One failure does not stop the others.
            for e in &cleanup.failed {
                cannot(e);
            }
        }
        Err(e) => cannot(&e),
    }
}

/// Room for labels and layout on top of 4 × MAX_RESPONSE_BYTES in an
/// existing targets file read at start-up.
const EXISTING_FILE_SLACK: u64 = 1 << 20;

/// What the file already holds, so that STATUS= and ADDED/REMOVED make
/// sense from the first cycle, and its content hash, so that an unchanged
/// render is told without reading it again. The file is streamed (only a
/// hash per target is kept), and skipped when it is larger than any this
/// agent writes for MAX_RESPONSE_BYTES.
fn initial_state(config: &Config) -> State {
    let mut state = State::default();
    let path = &config.targets_file;
    let shown = path.display().to_string();
    let Ok(Some(file)) = writer::open_existing_reader(path) else {
        return state;
    };
    let Ok(meta) = file.metadata() else {
        return state;
    };
    let limit = config
        .max_response_bytes
        .saturating_mul(4)
        .saturating_add(EXISTING_FILE_SLACK);
    if meta.len() > limit {
        log::warn!(
            TARGETS_FILE = shown.as_str();
            "Existing {shown} is {} bytes, more than 4 × MAX_RESPONSE_BYTES + 1 MiB ({limit} bytes); \
             it is not read and will be replaced", meta.len()
        );
        return state;
    }
    let mut hasher = ContentHasher::default();
    let mut reader = BufReader::with_capacity(
        64 * 1024,
        HashingReader {
            inner: (&file).take(limit),
            hasher: &mut hasher,
        },
    );
    let parsed = targets::TargetSet::from_reader(&mut reader);
    // The rest of the file, if any, for the hash.
    let drained = std::io::copy(&mut reader, &mut std::io::sink()).is_ok();
    drop(reader);
    if drained {
        state.file = FileDigest::of_read(&file, &hasher);
    }
    match parsed {
        Some(t) => {
            log::info!(
                TARGET_COUNT = t.len(), TARGETS_FILE = shown.as_str();
                "Found {shown} with {} targets", t.len()
            );
            state.targets = Some(t);
            state.changed_at =
                UNIX_EPOCH.checked_add(Duration::from_secs(meta.mtime().max(0).unsigned_abs()));
        }
        None => log::warn!(
            TARGETS_FILE = shown.as_str();
            "Existing {shown} is not a valid file_sd document; it will be replaced"
        ),
    }
    state
}

fn daemon(config: Config, mode: logging::Mode) -> i32 {
    crate::sys::alloc::tune_allocator();
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log::error!("Cannot install signal handlers: {e}");
            return exit::FAILURE;
        }
    };
    log_configuration(&config);
    log::debug!("Logging to {mode:?}");
    remove_stale_temp_files(&config);
    let state = initial_state(&config);
    let worker = match Worker::spawn(
        config.clone(),
        source::source_for(&config.inventory_url, config.max_response_bytes),
    ) {
        Ok(w) => w,
        Err(e) => {
            log::error!("Cannot start the fetch thread: {e}");
            return exit::FAILURE;
        }
    };
    Daemon::new(config, signals, worker, state).run()
}

/// One cycle in the foreground, for --once and --print.
fn one_cycle(config: &Config) -> Option<cycle::Update> {
    // Large buffers are mapped whole, and grow by remapping, not copying.
    crate::sys::alloc::tune_allocator();
    let mut source = source::source_for(&config.inventory_url, config.max_response_bytes);
    let deadline = Instant::now() + daemon::cycle_budget(config);
    match cycle::run(source.as_mut(), config, deadline, &mut |_| {}) {
        Ok(u) => Some(u),
        Err(f) => {
            log::error!(
                ERROR = f.reason.as_str(), ATTEMPT = f.attempts;
                "Failed to fetch inventory: {}", f.reason
            );
            None
        }
    }
}

/// One cycle, published as the daemon publishes it. ADDED and REMOVED
/// count against the file found at start, as in the daemon's first cycle.
fn once(config: &Config) -> i32 {
    log_configuration(config);
    remove_stale_temp_files(config);
    let start = initial_state(config);
    let (mut previous, mut known) = (start.targets, start.file);
    let Some(update) = one_cycle(config) else {
        return exit::FAILURE;
    };
    let source = config.inventory_url.to_string();
    let fetched = update.fetched(&source);
    let groups = config.target_groups(update.targets);
    let groups = groups.as_slice();
    let mut render = |w: &mut dyn Write| render::render_to(w, groups);
    let doc = Document {
        path: &config.targets_file,
        render: &mut render,
        known: &mut known,
    };
    let published = publish::publish_targets(
        doc,
        groups,
        &fetched,
        &mut previous,
        false,
        &|| false,
        &OnFailure::default(),
    );
    match published {
        Ok(_) => exit::OK,
        Err(_) => exit::FAILURE,
    }
}

fn print(config: &Config) -> i32 {
    let Some(update) = one_cycle(config) else {
        return exit::FAILURE;
    };
    let source = config.inventory_url.to_string();
    publish::log_fetched(&update.fetched(&source), log::Level::Info);
    let groups = config.target_groups(update.targets);
    let mut out = std::io::stdout().lock();
    match render::render_to(&mut out, &groups).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error!("Cannot write to stdout: {e}");
            exit::FAILURE
        }
    }
}
