//! Disk full and directory trouble.
//!
//! - Disk full: as root, TARGETS_FILE on a tiny tmpfs mounted by the test,
//!   an inventory too large to fit: ENOSPC logged with the path, the old
//!   file byte-identical, no temp file, recovery once the list fits again;
//!   the tmpfs is unmounted afterwards.
//! - The output directory deleted while the agent runs: recreated when the
//!   agent may, otherwise a clear error every cycle; never a crash.
//! - The output directory made read-only (permissions, and a read-only
//!   mount): a clear error, the old file kept, recovery when writable.

mod common;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);
/// Repetitions of each fault within a test.
fn rounds() -> u64 {
    env_u64("SDU_DISK_ROUNDS", 5)
}

fn start(tag: &str, first: &GoodList, env: &[(&str, &str)], file: Option<&Path>) -> Daemon {
    start_in(TestDir::new(tag), first, env, file)
}

fn start_in(dir: TestDir, first: &GoodList, env: &[(&str, &str)], file: Option<&Path>) -> Daemon {
    let f = file.map(|f| f.display().to_string());
    let mut env = env.to_vec();
    if let Some(f) = &f {
        env.push(("TARGETS_FILE", f));
    }
    Daemon::start(dir, first, &env)
}

/// The line of `log` that reports the failed write.
fn write_error(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("Failed to write targets file"))
}

fn nobody_ids() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("user nobody");
    (u.uid.as_raw(), u.gid.as_raw())
}

#[test]
#[ignore = "needs root"]
fn disk_full_keeps_the_old_file_and_recovers() {
    // Mounting a tmpfs needs root.
    require_root();
    let dir = TestDir::new("diskfull");
    let mnt = dir.join("mnt");
    let mount = Tmpfs::mount(&mnt, "size=64k,mode=0755");
    let file = mnt.join("targets.json");
    let small = GoodList::numbered("small", 20);
    let mut r = start_in(dir, &small, &[], Some(&file));
    let big = GoodList::numbered("big", 10_000);
    assert!(big.rendered.len() > 64 * 1024);
    let old = fs::read(&file).unwrap();
    let old_stamp = stamp(&file);

    let n = rounds();
    for round in 0..n {
        let log = r.cycle("too-big", Reply::ok(&big.body));
        let line = write_error(&log)
            .unwrap_or_else(|| panic!("round {round}: no write error logged\n{log}"));
        assert!(
            line.contains("ENOSPC") && line.contains(&*file.to_string_lossy()),
            "round {round}: the error must say ENOSPC and name TARGETS_FILE: {line}"
        );
        assert_eq!(
            fs::read(&file).unwrap(),
            old,
            "round {round}: old file changed"
        );
        assert_eq!(stamp(&file), old_stamp, "round {round}: old file touched");
        let temps = any_temp_files(&mnt);
        assert!(
            temps.is_empty(),
            "round {round}: temp files left: {temps:?}"
        );
    }

    // Other data fills the disk: even a small list fails, then fits again
    // once the space is freed.
    let filler = mnt.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=64"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let changed = GoodList::numbered("other", 20);
    let log = r.cycle("small-on-full-disk", Reply::ok(&changed.body));
    let line = write_error(&log).unwrap_or_else(|| panic!("no write error on a full disk\n{log}"));
    assert!(line.contains("ENOSPC"), "{line}");
    assert_eq!(fs::read(&file).unwrap(), old);
    assert!(
        any_temp_files(&mnt).is_empty(),
        "{:?}",
        any_temp_files(&mnt)
    );
    fs::remove_file(&filler).unwrap();

    // Recovery on the next cycle once the inventory fits.
    let log = r.cycle("fits-again", Reply::ok(&changed.body));
    assert!(
        log.contains("Successfully updated targets file"),
        "no recovery\n{log}"
    );
    assert_eq!(fs::read(&file).unwrap(), *changed.rendered);
    assert!(any_temp_files(&mnt).is_empty());
    report(
        "faults.txt",
        &format!(
            "disk full (tmpfs 64 KiB): {} failed writes (ENOSPC logged, old file byte-identical, \
             no temp file, agent alive), then recovered",
            n + 1
        ),
    );

    r.agent.signal(Signal::SIGTERM);
    assert_eq!(r.agent.wait_exit(T).and_then(|s| s.code()), Some(0));
    drop(mount);
    assert!(
        !Tmpfs::is_mounted(&mnt),
        "the tmpfs is still mounted at {}",
        mnt.display()
    );
}

#[test]
fn deleted_output_directory_is_recreated() {
    let first = GoodList::numbered("a", 50);
    let mut r = start("deldir", &first, &[], None);
    let out = r.out_dir().to_path_buf();
    let n = rounds();
    let mut lists = vec![first];
    for round in 0..n {
        fs::remove_dir_all(&out).unwrap();
        // Alternate an unchanged and a changed list: either way the file
        // must come back.
        let list = if round % 2 == 0 {
            GoodList::numbered("a", 50)
        } else {
            GoodList::numbered(&format!("r{round}"), 30)
        };
        let log = r.cycle("after-rmdir", Reply::ok(&list.body));
        assert_eq!(
            fs::read(&r.file).ok().as_deref(),
            Some(&list.rendered[..]),
            "round {round}: the file was not recreated\n{log}"
        );
        assert_eq!(
            fs::metadata(&out).unwrap().mode() & 0o777,
            0o755,
            "round {round}: recreated directory mode"
        );
        assert!(any_temp_files(&out).is_empty());
        lists.push(list);
    }
    report(
        "faults.txt",
        &format!("output directory deleted: {n} times, recreated every time, agent alive"),
    );
}

#[test]
fn deleted_output_directory_that_cannot_be_recreated_is_an_error_every_cycle() {
    let first = GoodList::numbered("a", 50);
    // The output directory lives in a parent the agent cannot write: as
    // root the agent runs as nobody; otherwise the parent is made 0555.
    let dir = TestDir::new("delro");
    let parent = dir.join("parent");
    fs::create_dir(&parent).unwrap();
    let file = parent.join("out/targets.json");
    let env: &[(&str, &str)] = if is_root() {
        &[("RUN_AS_USER", "nobody")]
    } else {
        &[]
    };
    let mut r = start_in(dir, &first, env, Some(&file));
    let out = parent.join("out");
    fs::remove_dir_all(&out).unwrap();
    if !is_root() {
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let n = rounds();
    let next = GoodList::numbered("b", 40);
    for round in 0..n {
        let log = r.cycle("dir-gone", Reply::ok(&next.body));
        let line = write_error(&log)
            .unwrap_or_else(|| panic!("round {round}: no error for the missing dir\n{log}"));
        assert!(
            line.contains("EACCES") && line.contains(&*out.to_string_lossy()),
            "round {round}: the error must name the directory and why: {line}"
        );
        assert!(!out.exists());
    }
    // Put the directory back (owned by the agent's user): recovery.
    if is_root() {
        fs::create_dir(&out).unwrap();
        let (uid, gid) = nobody_ids();
        chown(&out, Some(uid), Some(gid)).unwrap();
    } else {
        fs::set_permissions(&parent, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = r.cycle("dir-back", Reply::ok(&next.body));
    assert_eq!(
        fs::read(&file).ok().as_deref(),
        Some(&next.rendered[..]),
        "no recovery\n{log}"
    );
    report(
        "faults.txt",
        &format!(
            "output directory deleted, parent not writable: {n} cycles each logged EACCES \
             naming the directory, agent alive, recovered when the directory came back"
        ),
    );
}

#[test]
fn read_only_output_directory_keeps_the_old_file_and_recovers() {
    let first = GoodList::numbered("a", 50);
    let env: &[(&str, &str)] = if is_root() {
        &[("RUN_AS_USER", "nobody")]
    } else {
        &[]
    };
    let mut r = start("rodir", &first, env, None);
    let out = r.out_dir().to_path_buf();
    let old = fs::read(&r.file).unwrap();
    let old_stamp = stamp(&r.file);
    fs::set_permissions(&out, fs::Permissions::from_mode(0o555)).unwrap();
    let n = rounds();
    for round in 0..n {
        let list = GoodList::numbered(&format!("ro{round}"), 60);
        let log = r.cycle("read-only-dir", Reply::ok(&list.body));
        let line = write_error(&log)
            .unwrap_or_else(|| panic!("round {round}: no write error logged\n{log}"));
        assert!(
            line.contains("EACCES") && line.contains(&*out.to_string_lossy()),
            "round {round}: the error must say EACCES and name the path: {line}"
        );
        assert_eq!(fs::read(&r.file).unwrap(), old, "round {round}");
        assert_eq!(stamp(&r.file), old_stamp, "round {round}");
        assert!(any_temp_files(&out).is_empty());
    }
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    let list = GoodList::numbered("writable", 60);
    let log = r.cycle("writable-again", Reply::ok(&list.body));
    assert_eq!(
        fs::read(&r.file).ok().as_deref(),
        Some(&list.rendered[..]),
        "no recovery\n{log}"
    );
    report(
        "faults.txt",
        &format!(
            "output directory chmod 0555: {n} failed writes (EACCES logged, old file \
             byte-identical, agent alive), then recovered"
        ),
    );
}

#[test]
#[ignore = "needs root"]
fn read_only_mount_keeps_the_old_file_and_recovers() {
    // A read-only bind mount needs root.
    require_root();
    let first = GoodList::numbered("a", 50);
    let mut r = start("romount", &first, &[], None);
    let out = r.out_dir().to_path_buf();
    let old = fs::read(&r.file).unwrap();
    let mount = ReadOnlyBind::new(&out);
    let n = rounds();
    for round in 0..n {
        let list = GoodList::numbered(&format!("rm{round}"), 60);
        let log = r.cycle("read-only-mount", Reply::ok(&list.body));
        let line = write_error(&log)
            .unwrap_or_else(|| panic!("round {round}: no write error logged\n{log}"));
        assert!(
            line.contains("EROFS") && line.contains(&*out.to_string_lossy()),
            "round {round}: {line}"
        );
        assert_eq!(fs::read(&r.file).unwrap(), old, "round {round}");
    }
    drop(mount);
    let list = GoodList::numbered("rw", 60);
    let log = r.cycle("writable-again", Reply::ok(&list.body));
    assert_eq!(
        fs::read(&r.file).ok().as_deref(),
        Some(&list.rendered[..]),
        "no recovery\n{log}"
    );
    assert!(any_temp_files(&out).is_empty());
    report(
        "faults.txt",
        &format!(
            "output directory on a read-only mount: {n} failed writes (EROFS logged, old file \
             byte-identical, agent alive), then recovered"
        ),
    );
}

/// `dir` bind-mounted read-only onto itself until dropped.
struct ReadOnlyBind {
    path: std::path::PathBuf,
}

impl ReadOnlyBind {
    fn new(path: &Path) -> ReadOnlyBind {
        let run = |args: &[&str]| {
            let st = Command::new("mount")
                .args(args)
                .arg(path)
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?} failed");
        };
        run(&["--bind"]);
        let st = Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(path)
            .status()
            .unwrap();
        let guard = ReadOnlyBind {
            path: path.to_path_buf(),
        };
        assert!(st.success(), "remount read-only failed");
        guard
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
