//! Something other than a regular file at TARGETS_FILE (a FIFO, a symbolic
//! link to a device, a directory): the agent must neither block nor read
//! without end, must reach READY and obey SIGTERM, and must report the path
//! on every write attempt without replacing what is there.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn make_fifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// Lines of `log` that report a failed write naming `path`.
fn write_errors(log: &str, path: &Path) -> usize {
    let shown = path.display().to_string();
    log.lines()
        .filter(|l| {
            l.contains(" - ERROR - Failed to write targets file")
                && l.matches(shown.as_str()).count() >= 2
                && l.contains("not a regular file")
        })
        .count()
}

/// Starts the daemon with `setup` having put something at TARGETS_FILE;
/// checks READY, an error per cycle, the thing left alone, and SIGTERM.
fn daemon_copes(tag: &str, setup: impl Fn(&Path), still_there: impl Fn(&Path) -> bool) {
    let dir = TestDir::new(tag);
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("targets.json");
    setup(&target);
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let mut agent = daemon(&dir, &inv, &notify).spawn();
    assert!(
        notify.wait_for("READY=1", T).is_some(),
        "{tag}: no READY=1\n{}",
        agent.stderr()
    );
    for cycle in 1..=3 {
        assert!(
            agent.wait_for_log(0, T, |l| write_errors(l, &target) >= cycle),
            "{tag}: cycle {cycle} logged no error naming {}\n{}",
            target.display(),
            agent.stderr()
        );
        assert!(still_there(&target), "{tag}: replaced\n{}", agent.stderr());
        if cycle < 3 {
            agent.signal(Signal::SIGHUP);
        }
    }
    assert!(temp_files(&out, "targets.json").is_empty());
    let t0 = Instant::now();
    agent.signal(Signal::SIGTERM);
    let st = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "{tag}: SIGTERM\n{}",
        agent.stderr()
    );
    assert!(t0.elapsed() < SEC, "{tag}: SIGTERM took {:?}", t0.elapsed());
}

fn is_fifo(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_symlink())
}

#[test]
fn fifo_at_targets_file_does_not_block_the_daemon() {
    daemon_copes("sp-fifo", make_fifo, is_fifo);
}

#[test]
fn symlink_to_dev_zero_is_not_read() {
    daemon_copes(
        "sp-zero",
        |t| std::os::unix::fs::symlink("/dev/zero", t).unwrap(),
        is_symlink,
    );
}

#[test]
fn directory_at_targets_file_is_left_alone() {
    daemon_copes(
        "sp-dir",
        |t| {
            fs::create_dir(t).unwrap();
            fs::write(t.join("keep"), "x").unwrap();
        },
        |t| fs::read(t.join("keep")).is_ok_and(|c| c == b"x"),
    );
}

#[test]
fn once_with_a_fifo_fails_at_once_naming_the_path() {
    let dir = TestDir::new("sp-once");
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    let target = out.join("targets.json");
    make_fifo(&target);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let t0 = Instant::now();
    let run = AgentCmd::new(&dir).inventory(&inv).arg("--once").run(T);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(write_errors(&run.stderr, &target), 1, "{}", run.describe());
    assert!(is_fifo(&target));
}
