//! Privilege drop when started as root, checked in /proc/PID/status.
//! Every test here needs root (CI runs as root) and is ignored otherwise.

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
#[ignore = "needs root"]
fn drops_to_run_as_user() {
    require_root();
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
#[ignore = "needs root"]
fn inherited_capabilities_are_cleared() {
    require_root();
    require_tool("setpriv", "util-linux");
    assert!(
        run("setpriv", &["--inh-caps=+setuid,+setgid", "true"]),
        "setpriv cannot set inheritable capabilities here"
    );
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
#[ignore = "needs root"]
fn numeric_uid_is_accepted() {
    require_root();
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
#[ignore = "needs root"]
fn run_as_root_is_an_explicit_opt_out_with_warning() {
    require_root();
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
#[ignore = "needs root"]
fn permission_denied_keeps_old_file() {
    require_root();
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
#[ignore = "needs root"]
fn default_user_missing_exits_78() {
    require_root();
    assert!(
        User::from_name("sd-updater").ok().flatten().is_none(),
        "user sd-updater exists on this host, so its absence cannot be tested here \
         (CI runs on a host without it)"
    );
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

/// `--once` with a one-sensor file:// inventory kept in `dir`.
fn once(dir: &TestDir, run_as: &str, targets: &std::path::Path) -> RunOutput {
    let inventory = dir.join("inventory.json");
    if !inventory.exists() {
        fs::write(&inventory, r#"["sensor_0"]"#).unwrap();
    }
    AgentCmd::new(dir)
        .env("INVENTORY_URL", format!("file://{}", inventory.display()))
        .env("RUN_AS_USER", run_as)
        .env("TARGETS_FILE", targets.display().to_string())
        .arg("--once")
        .run(T)
}

fn mode_of(p: &std::path::Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Names in `dir`, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The service user owns a directory on the path and swaps its child for
/// symbolic links (to a root-only directory, to a root-owned 0600 file) as
/// fast as it can while the agent, started as root, creates and hands over
/// the output directory again and again. Root must never create anything
/// behind a link, nor chown or chmod anything it did not create.
#[test]
#[ignore = "needs root"]
fn racing_symlink_swaps_never_hand_over_a_root_file() {
    require_root();
    use std::os::unix::fs::{chown, symlink};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Instant;

    let user = TestUser::create();
    let dir = TestDir::new("priv-race");
    let base = dir.join("base");
    fs::create_dir(&base).unwrap();
    chown(&base, Some(user.uid), Some(user.gid)).unwrap();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    let vault = dir.join("vault");
    fs::create_dir(&vault).unwrap();
    fs::set_permissions(&vault, fs::Permissions::from_mode(0o700)).unwrap();
    let canary = vault.join("canary");
    fs::write(&canary, "secret").unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o600)).unwrap();
    let sub = base.join("sub");
    let targets = sub.join("deeper/targets.json");

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, swaps, sub) = (stop.clone(), swaps.clone(), sub.clone());
        let links = [vault.clone(), canary.clone()];
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(8);
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                i = i.wrapping_add(1);
                let link = &links[i % 2];
                match fs::symlink_metadata(&sub) {
                    // The agent just made it: swap in a link at once.
                    Ok(m) if m.is_dir() => {
                        let _ = fs::remove_dir_all(&sub);
                        if symlink(link, &sub).is_ok() {
                            swaps.fetch_add(1, Ordering::SeqCst);
                        }
                        for _ in 0..(i % 512) {
                            std::hint::spin_loop();
                        }
                        let _ = fs::remove_file(&sub);
                    }
                    Ok(_) => {
                        let _ = fs::remove_file(&sub);
                    }
                    // Now and then a link already waits for the agent;
                    // otherwise the name stays free for it to create.
                    Err(_) if i % 1024 == 0 => {
                        if symlink(link, &sub).is_ok() {
                            swaps.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_micros(50));
                        let _ = fs::remove_file(&sub);
                    }
                    Err(_) => std::hint::spin_loop(),
                }
            }
        })
    };

    let started = Instant::now();
    let (mut runs, mut ok, mut refused) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(5) && runs < 400 {
        let out = once(&dir, &user.name, &targets);
        runs += 1;
        match out.code() {
            Some(0) => ok += 1,
            Some(1) => {
                refused += 1;
                if std::env::var_os("SDU_SHOW_REFUSALS").is_some() {
                    eprintln!("{}", out.stderr.lines().last().unwrap_or(""));
                }
            }
            other => panic!("run {runs}: exit {other:?}\n{}", out.describe()),
        }
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    println!(
        "{runs} runs ({ok} wrote, {refused} refused), {} swaps",
        swaps.load(Ordering::SeqCst)
    );

    let m = fs::symlink_metadata(&canary).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "canary handed over");
    assert_eq!(mode_of(&canary), 0o600, "canary chmodded");
    assert_eq!(fs::read_to_string(&canary).unwrap(), "secret");
    let v = fs::symlink_metadata(&vault).unwrap();
    assert_eq!((v.uid(), mode_of(&vault)), (0, 0o700), "vault changed");
    assert_eq!(
        listing(&vault),
        vec!["canary".to_string()],
        "root created something behind a symbolic link"
    );
    assert!(runs >= 20, "only {runs} runs");
    assert!(
        swaps.load(Ordering::SeqCst) >= 100,
        "the swapper barely ran"
    );
}

#[test]
#[ignore = "needs root"]
fn symlinked_parent_is_refused_with_the_real_path() {
    require_root();
    let user = TestUser::create();
    let dir = TestDir::new("priv-link");
    let real = dir.join("real");
    fs::create_dir(&real).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let targets = link.join("out/targets.json");
    // At the drop (as the user), and at the write (staying root).
    for run_as in [user.name.as_str(), "root"] {
        let out = once(&dir, run_as, &targets);
        assert_eq!(out.code(), Some(1), "{run_as}: {}", out.describe());
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(" - ERROR - "))
            .unwrap_or_else(|| panic!("{run_as}: no error logged\n{}", out.describe()));
        assert!(
            line.contains(&format!("{}:", link.display()))
                && line.contains("symbolic link")
                && (line.contains("TARGETS_FILE") || line.contains("targets file"))
                && line.contains(&real.join("out").display().to_string()),
            "{run_as}: the error must name the link and the real path: {line}"
        );
        assert!(
            listing(&real).is_empty(),
            "{run_as}: created behind the link"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn parent_owned_by_another_user_is_refused() {
    require_root();
    use std::os::unix::fs::chown;
    let user = TestUser::create();
    let dir = TestDir::new("priv-owner");
    // Any other non-root owner; it needs no account.
    let other = (61_000..65_000)
        .find(|&u| {
            u != user.uid
                && nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                    .ok()
                    .flatten()
                    .is_none()
        })
        .unwrap();
    let theirs = dir.join("theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, Some(other), Some(other)).unwrap();
    let out = once(&dir, &user.name, &theirs.join("out/targets.json"));
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot drop privileges")
            && out.stderr.contains(&format!("{}:", theirs.display()))
            && out.stderr.contains(&format!("owned by uid {other}")),
        "{}",
        out.describe()
    );
    assert!(
        listing(&theirs).is_empty(),
        "created in a foreign directory"
    );

    // The service user's own directory is fine: the drop goes on and only
    // what was created is handed over.
    let mine = dir.join("mine");
    fs::create_dir(&mine).unwrap();
    chown(&mine, Some(user.uid), Some(user.gid)).unwrap();
    let out = once(&dir, &user.name, &mine.join("out/targets.json"));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let made = fs::metadata(mine.join("out")).unwrap();
    assert_eq!((made.uid(), made.gid()), (user.uid, user.gid));
    assert_eq!(mode_of(&mine.join("out")), 0o755);
    assert_eq!(fs::metadata(dir.path()).unwrap().uid(), 0);
}

#[test]
#[ignore = "needs root"]
fn writable_parent_needs_the_sticky_bit() {
    require_root();
    let user = TestUser::create();
    let dir = TestDir::new("priv-sticky");
    for (mode, accepted) in [(0o777, false), (0o775, false), (0o1777, true)] {
        let shared = dir.join(format!("shared{mode:o}"));
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
        let out = once(&dir, &user.name, &shared.join("out/targets.json"));
        if accepted {
            assert_eq!(out.code(), Some(0), "{mode:o}: {}", out.describe());
            assert_eq!(fs::metadata(shared.join("out")).unwrap().uid(), user.uid);
        } else {
            assert_eq!(out.code(), Some(1), "{mode:o}: {}", out.describe());
            assert!(
                out.stderr.contains(&format!("{}:", shared.display()))
                    && out.stderr.contains(&format!("mode {mode:04o}"))
                    && out.stderr.contains("sticky"),
                "{mode:o}: {}",
                out.describe()
            );
            assert!(listing(&shared).is_empty(), "{mode:o}: created anyway");
        }
    }
}

/// Under the shipped unit root holds only CAP_SETUID and CAP_SETGID, so a
/// directory on the way that is the service user's and only searchable
/// (0711) must still do, as it does for a path lookup.
#[test]
#[ignore = "needs root"]
fn search_permission_is_enough_with_the_units_capabilities() {
    require_root();
    require_tool("setpriv", "util-linux");
    use std::os::unix::fs::chown;
    let user = TestUser::create();
    let dir = TestDir::new("priv-caps");
    let home = dir.join("home");
    let out = home.join("out");
    fs::create_dir_all(&out).unwrap();
    for d in [&home, &out] {
        chown(d, Some(user.uid), Some(user.gid)).unwrap();
    }
    fs::set_permissions(&home, fs::Permissions::from_mode(0o711)).unwrap();
    let inventory = dir.join("inventory.json");
    fs::write(&inventory, r#"["sensor_0"]"#).unwrap();
    let targets = out.join("targets.json");
    let output = Command::new("setpriv")
        .args(["--bounding-set=-all,+setuid,+setgid", BIN, "--once"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("RUN_AS_USER", &user.name)
        .env("INVENTORY_URL", format!("file://{}", inventory.display()))
        .env("TARGETS_FILE", &targets)
        .output()
        .expect("run setpriv");
    assert!(
        output.status.success(),
        "{:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        fs::read_to_string(&targets).unwrap(),
        render_default(&["sensor_0:9100"])
    );
}

/// A walk to TARGETS_FILE that is refused part-way, as root, leaves
/// nothing behind: what it created is removed again (innermost first), and
/// `..` is refused before anything is made (the configuration refuses it
/// too, which is why the exit code is not checked).
#[test]
#[ignore = "needs root"]
fn a_refused_walk_creates_nothing() {
    use std::os::unix::fs::chown;
    require_root();
    let user = TestUser::create();
    let dir = TestDir::new("priv-undo");
    // Created, then a name too long for mkdir.
    let long = "a".repeat(300);
    let targets = dir.join("new").join(&long).join("t.json");
    for run_as in [user.name.as_str(), "root"] {
        let out = once(&dir, run_as, &targets);
        assert_eq!(out.code(), Some(1), "{run_as}: {}", out.describe());
        assert!(
            out.stderr.contains("ENAMETOOLONG"),
            "{run_as}: {}",
            out.describe()
        );
        assert!(
            !dir.join("new").exists(),
            "{run_as}: a created directory was left\n{}",
            out.describe()
        );
    }
    // `..` after a new directory: into one owned by another user, and back
    // out of the walk altogether.
    let shared = dir.join("shared");
    fs::create_dir(&shared).unwrap();
    chown(&shared, Some(user.uid.saturating_add(1)), None).unwrap();
    for targets in [
        dir.join("new2/../shared/t.json"),
        dir.join("new3/a/../../t.json"),
    ] {
        let out = once(&dir, &user.name, &targets);
        assert_ne!(out.code(), Some(0), "{}", out.describe());
        let left: Vec<String> = listing(dir.path())
            .into_iter()
            .filter(|n| n.starts_with("new") || n == "t.json")
            .collect();
        assert!(left.is_empty(), "{left:?} left\n{}", out.describe());
        assert!(listing(&shared).is_empty());
    }
}
