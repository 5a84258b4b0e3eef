//! Peak memory of the daemon's start-up against a large existing targets
//! file: the old file is streamed (a hash per target is kept), and one
//! larger than 4 × MAX_RESPONSE_BYTES + 1 MiB is not read at all. GNU time
//! (`/usr/bin/time -f %M`) wraps the real binary, as in memory.rs.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const MIB: u64 = 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(60);

/// Starts the daemon under GNU time with `existing` already at
/// TARGETS_FILE, waits for its first good cycle, stops it and returns
/// (peak RSS in bytes, log).
fn daemon_peak(tag: &str, existing: impl FnOnce(&std::path::Path)) -> (u64, String) {
    let dir = TestDir::new(tag);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0", "sensor_1"]));
    let target = dir.join("out/targets.json");
    fs::create_dir_all(dir.join("out")).unwrap();
    existing(&target);
    let stderr = dir.join("stderr");
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(dir.join("peak.txt"))
        .arg(BIN)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("INVENTORY_URL", inv.url())
        .env("TARGETS_FILE", &target)
        .env("RUN_AS_USER", "root")
        .env("UPDATE_INTERVAL", "3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("spawn /usr/bin/time");
    let log = || fs::read_to_string(&stderr).unwrap_or_default();
    let group = Pid::from_raw(child.id() as i32);
    let done = wait_for(LIMIT, || {
        log().contains("Successfully updated targets file")
    });
    if !done {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
        panic!("no good cycle\n{}", log());
    }
    // The agent is the one child of GNU time.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let agent: i32 = fs::read_to_string(children)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("the agent under GNU time");
    kill(Pid::from_raw(agent), Signal::SIGTERM).unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > LIMIT {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait();
            panic!("the agent did not stop\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let peak_text = fs::read_to_string(dir.join("peak.txt")).unwrap_or_default();
    let peak_kib: u64 = peak_text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no %M from GNU time: {peak_text:?}"));
    (peak_kib * 1024, log())
}

/// A sparse 400 MB file (more than 4 × 64 MiB + 1 MiB): skipped with a
/// warning, not read. It used to be read whole (a 900 MB one peaked at
/// 925 MB, above the unit's MemoryMax=512M).
#[test]
fn a_huge_existing_file_is_not_read_at_start_up() {
    let (peak, log) = daemon_peak("smem-sparse", |t| {
        fs::File::create(t).unwrap().set_len(400 * MIB).unwrap();
    });
    eprintln!(
        "sparse 400 MB: peak RSS {:.1} MiB",
        peak as f64 / MIB as f64
    );
    assert!(
        log.contains("is 419430400 bytes, more than 4 × MAX_RESPONSE_BYTES + 1 MiB")
            && log.contains("it is not read and will be replaced"),
        "{log}"
    );
    assert!(peak < 24 * MIB, "peak RSS {} MiB\n{log}", peak / MIB);
}

/// A valid 48 MiB file (under the bound) whose bulk is one label value: it
/// is streamed, so start-up memory stays far below its size.
#[test]
fn a_large_existing_file_is_streamed_not_held() {
    let (peak, log) = daemon_peak("smem-big", |t| {
        let mut f = std::io::BufWriter::new(fs::File::create(t).unwrap());
        f.write_all(b"[{\"targets\":[\"old_0:9100\",\"sensor_0:9100\"],\"labels\":{\"x\":\"")
            .unwrap();
        let block = vec![b'a'; MIB as usize];
        for _ in 0..48 {
            f.write_all(&block).unwrap();
        }
        f.write_all(b"\"}}]\n").unwrap();
        f.flush().unwrap();
    });
    eprintln!("valid 48 MiB: peak RSS {:.1} MiB", peak as f64 / MIB as f64);
    assert!(log.contains("with 2 targets"), "{log}");
    assert!(peak < 24 * MIB, "peak RSS {} MiB\n{log}", peak / MIB);
}
