//! Privilege drop when started as root, checked in /proc/PID/status.
//! Every test here needs root (CI runs as root) and is skipped otherwise.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use nix::unistd::{Group, User};

const T: Duration = Duration::from_secs(10);

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("note: not root, skipping privilege test (CI runs as root)");
            return;
        }
    };
}

/// useradd/userdel take a lock on /etc/passwd; serialise them.
static ACCOUNTS: Mutex<()> = Mutex::new(());
static N: AtomicUsize = AtomicUsize::new(0);

/// A throwaway system user with its own group and one supplementary group,
/// removed on drop. Falls back to `nobody` if useradd is unavailable.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// The supplementary group initgroups must give the process.
    extra_gid: Option<u32>,
    created: bool,
    extra_group: String,
}

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl TestUser {
    fn create() -> TestUser {
        let _g = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let suffix = format!(
            "{}x{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let name = format!("sdu-t{suffix}");
        let extra_group = format!("sdu-g{suffix}");
        let made = run("groupadd", &["--system", &extra_group])
            && run(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--user-group",
                    "-G",
                    &extra_group,
                    &name,
                ],
            );
        if made {
            let u = User::from_name(&name).unwrap().expect("new user exists");
            let g = Group::from_name(&extra_group).unwrap().expect("new group");
            TestUser {
                name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                extra_gid: Some(g.gid.as_raw()),
                created: true,
                extra_group,
            }
        } else {
            let _ = run("groupdel", &[&extra_group]);
            eprintln!("note: useradd failed, testing with `nobody`");
            let u = User::from_name("nobody").unwrap().expect("nobody exists");
            TestUser {
                name: "nobody".into(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                extra_gid: None,
                created: false,
                extra_group,
            }
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.created {
            let _g = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
            run("userdel", &[&self.name]);
            run("groupdel", &[&self.name]);
            run("groupdel", &[&self.extra_group]);
        }
    }
}

/// The numbers after `Key:` in /proc/PID/status (or a task's status).
fn field(status: &str, key: &str) -> Vec<String> {
    status
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .map(|l| {
            l[key.len() + 1..]
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn check_dropped(pid: i32, user: &TestUser) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = user.uid.to_string();
    let gid = user.gid.to_string();
    assert_eq!(
        field(&status, "Uid"),
        vec![uid.clone(); 4],
        "Uid line\n{status}"
    );
    assert_eq!(
        field(&status, "Gid"),
        vec![gid.clone(); 4],
        "Gid line\n{status}"
    );
    let groups = field(&status, "Groups");
    assert!(
        !groups.iter().any(|g| g == "0"),
        "root group kept: {groups:?}"
    );
    if let Some(extra) = user.extra_gid {
        assert!(
            groups.contains(&extra.to_string()),
            "supplementary group {extra} of {} missing (initgroups): {groups:?}",
            user.name
        );
    }
    for cap in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(
            field(&status, cap),
            vec!["0000000000000000".to_string()],
            "{cap}\n{status}"
        );
    }
    assert_eq!(
        field(&status, "NoNewPrivs"),
        vec!["1"],
        "NoNewPrivs\n{status}"
    );
    // No thread may have kept root either.
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let st = fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if st.is_empty() {
            continue;
        }
        assert_eq!(
            field(&st, "Uid"),
            vec![uid.clone(); 4],
            "thread {:?} Uid",
            task.file_name()
        );
    }
}

#[test]
fn drops_to_run_as_user() {
    require_root!();
    let user = TestUser::create();
    let dir = TestDir::new("priv");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out_dir = dir.join("state/sd-updater");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0", "sensor_1"]));
    let mut agent = daemon(&dir, &inv, &notify)
        .env("RUN_AS_USER", &user.name)
        .env(
            "TARGETS_FILE",
            out_dir.join("targets.json").display().to_string(),
        )
        .spawn();
    assert!(
        notify.wait_for("READY=1", T).is_some(),
        "no READY=1 (is the notify socket still reachable after the drop?)\n{}",
        agent.stderr()
    );
    assert!(
        agent.wait_for_file(T),
        "no targets file\n{}",
        agent.stderr()
    );
    check_dropped(agent.pid(), &user);

    let meta = fs::metadata(&out_dir).expect("output dir created");
    assert_eq!(meta.uid(), user.uid, "output dir must be owned by the user");
    let file = fs::metadata(agent.targets_file()).unwrap();
    assert_eq!(file.uid(), user.uid, "targets file written by the user");
    assert_eq!(file.permissions().mode() & 0o777, 0o644);
    assert_eq!(
        fs::read_to_string(agent.targets_file()).unwrap(),
        render_default(&["sensor_0:9100", "sensor_1:9100"])
    );

    // Still fully working as the user: reload, then a clean stop.
    inv.set(Behavior::list(&["sensor_2"]));
    agent.signal(Signal::SIGHUP);
    assert!(notify.wait_for("RELOADING=1", T).is_some());
    assert!(notify.wait_for("READY=1", T).is_some());
    assert_eq!(
        fs::read_to_string(agent.targets_file()).unwrap(),
        render_default(&["sensor_2:9100"]),
        "{}",
        agent.stderr()
    );
    agent.signal(Signal::SIGTERM);
    let st = agent.wait_exit(T);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
    assert!(temp_files(&out_dir, "targets.json").is_empty());
}

/// A supervisor may hand over a non-empty inheritable set (systemd 257 fills
/// it from the bounding set); setresuid() alone would leave it in place.
#[test]
fn inherited_capabilities_are_cleared() {
    require_root!();
    if !run("setpriv", &["--inh-caps=+setuid,+setgid", "true"]) {
        eprintln!("note: setpriv cannot set inheritable capabilities here; skipping");
        return;
    }
    let user = TestUser::create();
    let dir = TestDir::new("priv-inh");
    let inventory = dir.join("inventory.json");
    fs::write(&inventory, r#"["sensor_0"]"#).unwrap();
    let targets = dir.join("out/targets.json");
    let mut child = Command::new("setpriv")
        .args(["--inh-caps=+setuid,+setgid", BIN])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("RUN_AS_USER", &user.name)
        .env("INVENTORY_URL", format!("file://{}", inventory.display()))
        .env("TARGETS_FILE", &targets)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn setpriv");
    let pid = child.id() as i32;
    let written = wait_for(T, || targets.exists());
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(written, "no targets file");
    assert_eq!(
        field(&status, "CapInh"),
        vec!["0000000000000000".to_string()],
        "inheritable capabilities survived the drop\n{status}"
    );
}

#[test]
fn numeric_uid_is_accepted() {
    require_root!();
    let user = TestUser::create();
    let dir = TestDir::new("priv-uid");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let agent = daemon(&dir, &inv, &notify)
        .env("RUN_AS_USER", user.uid.to_string())
        .spawn();
    assert!(agent.wait_for_file(T), "{}", agent.stderr());
    check_dropped(agent.pid(), &user);
}

#[test]
fn run_as_root_is_an_explicit_opt_out_with_warning() {
    require_root!();
    let dir = TestDir::new("priv-root");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let agent = daemon(&dir, &inv, &notify)
        .env("RUN_AS_USER", "root")
        .spawn();
    assert!(agent.wait_for_file(T), "{}", agent.stderr());
    let status = fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert_eq!(field(&status, "Uid"), vec!["0"; 4]);
    assert!(
        agent.stderr().lines().any(|l| l.contains(" - WARN")),
        "RUN_AS_USER=root must log a warning\n{}",
        agent.stderr()
    );
}

#[test]
fn permission_denied_keeps_old_file() {
    require_root!();
    let user = TestUser::create();
    let dir = TestDir::new("priv-denied");
    // An existing root-owned output dir: the agent may not take it over.
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let old = render_default(&["old:9100"]);
    fs::write(out_dir.join("targets.json"), &old).unwrap();
    let before = stamp(&out_dir.join("targets.json"));
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let mut agent = daemon(&dir, &inv, &notify)
        .env("RUN_AS_USER", &user.name)
        .spawn();
    assert!(inv.wait_for_requests(1, T), "{}", agent.stderr());
    assert!(
        agent.wait_for_log(0, T, |l| l.to_lowercase().contains("permission")),
        "permission denied not logged\n{}",
        agent.stderr()
    );
    assert!(agent.is_alive(), "{}", agent.stderr());
    assert_eq!(
        fs::read_to_string(out_dir.join("targets.json")).unwrap(),
        old
    );
    assert_eq!(stamp(&out_dir.join("targets.json")), before);
    assert_eq!(
        fs::metadata(&out_dir).unwrap().uid(),
        0,
        "existing dir taken over"
    );
    assert!(temp_files(&out_dir, "targets.json").is_empty());
}

#[test]
fn default_user_missing_exits_78() {
    require_root!();
    if User::from_name("sd-updater").ok().flatten().is_some() {
        eprintln!("note: user sd-updater exists, nothing to test");
        return;
    }
    let dir = TestDir::new("priv-default");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let out = AgentCmd::new(&dir)
        .inventory(&inv)
        .env_remove("RUN_AS_USER")
        .run(T);
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    assert!(
        out.stderr.contains("RUN_AS_USER") && out.stderr.matches("sd-updater").count() >= 2,
        "{}",
        out.describe()
    );
    assert_eq!(inv.request_count(), 0);
}
