//! Start-up in the required order (configuration, logging, privilege drop,
//! signals) and the four ways to run.

pub(crate) mod cli;

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use self::cli::{exit, Command};
use crate::config::{Config, TokenFile};
use crate::daemon::cycle;
use crate::daemon::state::State;
use crate::daemon::worker::Worker;
use crate::daemon::{self, Daemon};
use crate::model::targets;
use crate::output::metrics::{self, Health, Refresh};
use crate::output::publish::{self, Document, OnFailure};
use crate::output::render;
use crate::output::writer::{self, ContentHasher, FileDigest, HashingReader};
use crate::source::credentials::{self, Files, LoadError, SecretFile};
use crate::source::{self, Secrets};
use crate::sys::logging;
use crate::sys::paths::Trust;
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

    let files = match secret_files(&config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sd-updater: invalid configuration: {e}");
            return exit::CONFIG;
        }
    };

    if command == Command::CheckConfig {
        return check_config(&config, &files);
    }

    let mode = logging::init(config.log_level, &config.source_name);
    // Before the privilege drop: a credentials directory, or a file only
    // root may read, is out of reach afterwards.
    let secrets = match load_secrets(&config, files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sd-updater: invalid configuration: {e}");
            if mode == logging::Mode::Journal {
                log::error!(ERROR = e.to_string().as_str(); "Invalid configuration: {e}");
            }
            return exit::CONFIG;
        }
    };
    // --print writes nothing, so it creates no directory either.
    let out_dir = (command != Command::Print).then(|| writer::parent_dir(&config.targets_file));
    let metrics_file = config
        .metrics_file
        .as_deref()
        .filter(|_| command != Command::Print);
    if let Err(code) = drop_privileges(&config, out_dir, metrics_file, mode) {
        return code;
    }

    match command {
        Command::Once => once(&config, &secrets),
        Command::Print => print(&config, &secrets),
        _ => daemon(config, mode, secrets),
    }
}

/// The secret and TLS files the settings name, checked against each other
/// and the URL. An unset INVENTORY_TOKEN_FILE takes the token systemd's
/// `LoadCredential=inventory-token:...` puts in `$CREDENTIALS_DIRECTORY`.
fn secret_files(config: &Config) -> Result<Files, LoadError> {
    let file =
        |var, path: &Option<std::path::PathBuf>| path.as_deref().map(|p| SecretFile::new(var, p));
    let token = match &config.inventory_token_file {
        TokenFile::Path(p) => Some(SecretFile::new("INVENTORY_TOKEN_FILE", p)),
        TokenFile::Off => None,
        TokenFile::Auto => std::env::var_os("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(&d).join(credentials::CREDENTIAL_NAME))
            // Present in any form: a link or a FIFO is then refused.
            .filter(|p| p.symlink_metadata().is_ok())
            .map(|path| SecretFile {
                var: "INVENTORY_TOKEN_FILE",
                path,
                trusted_dir: true,
            }),
    };
    let files = Files {
        token,
        password: file("INVENTORY_PASSWORD_FILE", &config.inventory_password_file),
        ca: file("INVENTORY_CA_FILE", &config.inventory_ca_file),
        client_cert: file("INVENTORY_CLIENT_CERT", &config.inventory_client_cert),
        client_key: file("INVENTORY_CLIENT_KEY", &config.inventory_client_key),
    };
    files.check(&config.inventory_url)?;
    Ok(files)
}

/// Reads the secret files. As root nothing on the way may be a symbolic
/// link or a directory another user (but the service user) could change.
fn load_secrets(config: &Config, files: Files) -> Result<Secrets, LoadError> {
    let trust = match Trust::current() {
        Trust::Strict { .. } => Trust::Strict {
            service_uid: privileges::lookup(&config.run_as_user)
                .map(|u| u.uid.as_raw())
                .unwrap_or(0),
        },
        any => any,
    };
    let loaded = files.load(trust)?;
    let all = [
        &files.token,
        &files.password,
        &files.ca,
        &files.client_cert,
        &files.client_key,
    ];
    for f in all.into_iter().flatten() {
        log::info!("Read {} from {}", f.var, f.path.display());
    }
    let plain = matches!(
        config.inventory_url.location(),
        source::url::Location::Http { https: false, .. }
    );
    if plain && (loaded.token.is_some() || loaded.password.is_some()) {
        log::warn!("INVENTORY_URL is plain http://: the token or password travels unencrypted");
    }
    Ok(Secrets { files, loaded })
}

fn check_config(config: &Config, files: &Files) -> i32 {
    // As root the user must exist, or the daemon would stop at start-up.
    if nix::unistd::geteuid().is_root() {
        if let Err(e) = privileges::lookup(&config.run_as_user) {
            eprintln!("sd-updater: invalid configuration: {e}");
            return exit::CONFIG;
        }
    }
    // The files must be readable as at start-up; only their paths show.
    if let Err(e) = load_secrets(config, files.clone()) {
        eprintln!("sd-updater: invalid configuration: {e}");
        return exit::CONFIG;
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
    metrics_file: Option<&Path>,
    mode: logging::Mode,
) -> Result<(), i32> {
    let mut prepare = |uid, gid| {
        if let Some(dir) = out_dir {
            writer::create_dirs_for(dir, uid, gid).map_err(|e| format!("TARGETS_FILE: {e}"))?;
        }
        // The metrics file never stops the agent: each write tries again.
        if let Some(file) = metrics_file {
            if let Err(e) = writer::create_dirs_for(writer::parent_dir(file), uid, gid) {
                let shown = file.display().to_string();
                log::warn!(
                    METRICS_FILE = shown.as_str();
                    "Cannot prepare the directory of metrics file {shown}: {e}"
                );
            }
        }
        Ok(())
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
        "Starting sd-updater {} (Prometheus service discovery updater) for source {}",
        env!("CARGO_PKG_VERSION"), config.source_name
    );
    log::info!("Configuration:");
    for (name, value) in config.effective() {
        log::info!("  {name}={value}");
    }
}

fn remove_stale_temp_files(config: &Config) {
    remove_stale_temp_files_of(&config.targets_file, false);
    if let Some(m) = &config.metrics_file {
        remove_stale_temp_files_of(m, true);
    }
}

fn remove_stale_temp_files_of(path: &Path, is_metrics: bool) {
    let shown = path.display().to_string();
    let cannot = |e: &writer::WriteError| {
        if is_metrics {
            log::warn!(
                METRICS_FILE = shown.as_str();
                "Cannot clean up old temp files next to {shown}: {e}"
            )
        } else {
            log::warn!(
                TARGETS_FILE = shown.as_str();
                "Cannot clean up old temp files next to {shown}: {e}"
            )
        }
    };
    match writer::remove_stale_temp_files(path) {
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
    // A file this agent wrote is read quickly; anything else from the
    // start again, by the full JSON reader.
    let mut hasher = ContentHasher::default();
    let quick = targets::TargetSet::from_plain_reader(HashingReader {
        inner: (&file).take(limit),
        hasher: &mut hasher,
    });
    let (parsed, drained) = match quick {
        Some(t) => (Some(t), true),
        None => {
            hasher = ContentHasher::default();
            let rewound = std::io::Seek::seek(&mut &file, std::io::SeekFrom::Start(0)).is_ok();
            let mut reader = BufReader::with_capacity(
                64 * 1024,
                HashingReader {
                    inner: (&file).take(limit),
                    hasher: &mut hasher,
                },
            );
            let parsed = targets::TargetSet::from_reader(&mut reader).filter(|_| rewound);
            // The rest of the file, if any, for the hash.
            let drained = rewound && std::io::copy(&mut reader, &mut std::io::sink()).is_ok();
            (parsed, drained)
        }
    };
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

fn daemon(config: Config, mode: logging::Mode, secrets: Secrets) -> i32 {
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
        source::source_with(&config.inventory_url, config.max_response_bytes, secrets),
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
fn one_cycle(config: &Config, secrets: &Secrets) -> Option<cycle::Update> {
    // Large buffers are mapped whole, and grow by remapping, not copying.
    crate::sys::alloc::tune_allocator();
    let mut source = source::source_with(
        &config.inventory_url,
        config.max_response_bytes,
        secrets.clone(),
    );
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
fn once(config: &Config, secrets: &Secrets) -> i32 {
    log_configuration(config);
    remove_stale_temp_files(config);
    let start = Instant::now();
    let initial = initial_state(config);
    let mut health = Health::new(
        initial.targets.as_ref().map(|t| t.len()),
        initial.changed_at,
    );
    let (refresh, code) = once_cycle(
        config,
        secrets,
        (initial.targets, initial.file),
        &mut health,
    );
    health.record(refresh, start.elapsed(), SystemTime::now());
    if let Some(path) = &config.metrics_file {
        metrics::publish(path, &health, &config.source_name);
    }
    code
}

/// The cycle of `--once`: its result for the metrics and the exit code.
/// `found` is what the file held at start: its targets and its digest.
fn once_cycle(
    config: &Config,
    secrets: &Secrets,
    found: (Option<targets::TargetSet>, Option<FileDigest>),
    health: &mut Health,
) -> (Refresh, i32) {
    let (mut previous, mut known) = found;
    let Some(update) = one_cycle(config, secrets) else {
        return (Refresh::Failed, exit::FAILURE);
    };
    let invalid = update.invalid_count;
    let source = config.inventory_url.to_string();
    let fetched = update.fetched(&source);
    let groups = config.target_groups(update.targets);
    let groups = groups.as_slice();
    let mut render = |w: &mut dyn Write| render::render_to(w, groups);
    let doc = Document {
        path: &config.targets_file,
        render: &mut render,
        known: &mut known,
        // The process ends after this write: nothing to keep a digest for.
        keep: false,
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
        Ok(p) => {
            health.targets = Some(p.target_count);
            health.invalid_entries = invalid;
            if p.changed {
                health.last_change = Some(SystemTime::now());
                (Refresh::Changed, exit::OK)
            } else {
                (Refresh::Unchanged, exit::OK)
            }
        }
        Err(_) => (Refresh::Failed, exit::FAILURE),
    }
}

fn print(config: &Config, secrets: &Secrets) -> i32 {
    let Some(update) = one_cycle(config, secrets) else {
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
