//! Journal mode: with stderr connected to "the journal" (JOURNAL_STREAM
//! matching stderr), the agent speaks the native journal protocol with
//! structured fields. A private mount namespace puts a socket of ours at
//! /run/systemd/journal/socket, so this needs root and unshare(1).

mod common;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require_root, require_tool, TestDir, BIN};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

type Entry = HashMap<String, String>;

/// Parses one native-protocol datagram: `KEY=value\n`, or for values that
/// may hold newlines `KEY\n<le64 length><bytes>\n`.
fn parse_entry(mut data: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            e.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[(nl + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            e.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    e
}

struct Journal {
    socket: UnixDatagram,
    entries: Vec<Entry>,
}

impl Journal {
    fn wait(&mut self, timeout: Duration, pred: impl Fn(&Entry) -> bool) -> Option<Entry> {
        if let Some(e) = self.entries.iter().find(|e| pred(e)) {
            return Some(e.clone());
        }
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 256 * 1024];
        while Instant::now() < deadline {
            self.socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            // Empty datagrams carry nothing; journald ignores them too.
            if let Ok(n @ 1..) = self.socket.recv(&mut buf) {
                let e = parse_entry(&buf[..n]);
                self.entries.push(e.clone());
                if pred(&e) {
                    return Some(e);
                }
            }
        }
        None
    }

    fn dump(&self) -> String {
        self.entries
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

struct Running {
    child: Child,
    journal: Journal,
    stderr_path: std::path::PathBuf,
    _dir: TestDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the agent in a mount namespace whose /run/systemd/journal is ours.
fn start(dir: TestDir, env: &[(&str, String)]) -> Running {
    start_with(dir, env, "")
}

/// As `start`, with `args` (plain words) on the agent's command line.
fn start_with(dir: TestDir, env: &[(&str, String)], args: &str) -> Running {
    require_root();
    require_tool("unshare", "util-linux");
    let jdir = dir.join("journal");
    fs::create_dir(&jdir).unwrap();
    let socket = UnixDatagram::bind(jdir.join("socket")).unwrap();
    // The agent drops to nobody and must still reach the socket, as with journald's.
    fs::set_permissions(jdir.join("socket"), fs::Permissions::from_mode(0o666)).unwrap();
    let stderr_path = dir.join("stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd 2>/dev/null || {{ mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd; }} \
         && mkdir /run/systemd/journal && mount --bind {} /run/systemd/journal && exec {BIN} {args}",
        jdir.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUN_AS_USER", "nobody")
        .env("TARGETS_FILE", dir.join("out/targets.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn unshare");
    Running {
        child,
        journal: Journal {
            socket,
            entries: Vec::new(),
        },
        stderr_path,
        _dir: dir,
    }
}

const T: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs root"]
fn journal_entries_carry_the_documented_fields() {
    require_root();
    let dir = TestDir::new("journal");
    let inventory = dir.join("inventory.json");
    fs::write(
        &inventory,
        r#"["sensor_1", "sensor_2", "sensor_2", "evil\nFAKE_FIELD=1\u001b[31m"]"#,
    )
    .unwrap();
    let url = format!("file://{}", inventory.display());
    let env = [
        ("INVENTORY_URL", url.clone()),
        ("UPDATE_INTERVAL", "1".to_string()),
    ];
    let mut run = start(dir, &env);
    let j = &mut run.journal;
    let ours = |e: &Entry| e.get("SYSLOG_IDENTIFIER").map(String::as_str) == Some("sd-updater");

    let fetched = j
        .wait(T, |e| e.contains_key("SENSOR_COUNT"))
        .unwrap_or_else(|| panic!("no entry with SENSOR_COUNT\n{}", j.dump()));
    assert!(ours(&fetched), "{fetched:?}");
    assert_eq!(fetched["SENSOR_COUNT"], "4");
    assert_eq!(fetched["ATTEMPT"], "1");
    assert_eq!(fetched["INVENTORY_URL"], url);
    assert!(fetched["DURATION_MS"].parse::<u64>().is_ok(), "{fetched:?}");
    assert_eq!(fetched["PRIORITY"], "5");

    let dropped = j
        .wait(T, |e| {
            e.get("MESSAGE")
                .is_some_and(|m| m.contains("invalid sensor entry"))
        })
        .unwrap_or_else(|| panic!("invalid entry not logged\n{}", j.dump()));
    let msg = &dropped["MESSAGE"];
    assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg:?}");
    assert!(msg.contains(r"evil\nFAKE_FIELD=1\u{1b}[31m"), "{msg:?}");
    assert!(
        j.entries.iter().all(|e| !e.contains_key("FAKE_FIELD")),
        "a sensor name injected a journal field"
    );

    let written = j
        .wait(T, |e| e.get("CHANGED").map(String::as_str) == Some("true"))
        .unwrap_or_else(|| panic!("no CHANGED=true entry\n{}", j.dump()));
    assert_eq!(written["TARGET_COUNT"], "2");
    assert_eq!(written["SENSOR_COUNT"], "4");
    assert_eq!(written["INVALID_COUNT"], "1");
    assert_eq!(written["ADDED"], "2");
    assert_eq!(written["REMOVED"], "0");
    assert!(written["TARGETS_FILE"].ends_with("out/targets.json"));

    let unchanged = j
        .wait(T, |e| e.get("CHANGED").map(String::as_str) == Some("false"))
        .unwrap_or_else(|| panic!("no CHANGED=false entry\n{}", j.dump()));
    assert_eq!(unchanged["TARGET_COUNT"], "2");

    // One sensor goes, another comes.
    fs::write(&inventory, r#"["sensor_2", "sensor_3"]"#).unwrap();
    let changed = j
        .wait(T, |e| {
            e.get("CHANGED").map(String::as_str) == Some("true")
                && e.get("ADDED").map(String::as_str) == Some("1")
        })
        .unwrap_or_else(|| panic!("no entry for the change\n{}", j.dump()));
    assert_eq!(changed["REMOVED"], "1");

    // A failure names its reason in ERROR.
    fs::write(&inventory, r#"{"not": "a list"}"#).unwrap();
    let failed = j
        .wait(T, |e| {
            e.get("PRIORITY").map(String::as_str) == Some("3") && e.contains_key("ERROR")
        })
        .unwrap_or_else(|| panic!("no error entry\n{}", j.dump()));
    assert!(failed["ERROR"].contains("object"), "{failed:?}");

    kill(Pid::from_raw(run.child.id() as i32), Signal::SIGHUP).unwrap();
    let hup = j
        .wait(T, |e| e.get("SIGNAL").map(String::as_str) == Some("SIGHUP"))
        .unwrap_or_else(|| panic!("SIGHUP not logged with SIGNAL=\n{}", j.dump()));
    assert!(ours(&hup));

    kill(Pid::from_raw(run.child.id() as i32), Signal::SIGTERM).unwrap();
    j.wait(T, |e| {
        e.get("SIGNAL").map(String::as_str) == Some("SIGTERM")
    })
    .unwrap_or_else(|| panic!("SIGTERM not logged\n{}", j.dump()));
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let strays: Vec<_> = j.entries.iter().filter(|e| !ours(e)).collect();
    assert!(
        strays.is_empty(),
        "entries without SYSLOG_IDENTIFIER: {strays:?}"
    );
    // Everything went to the journal, nothing to plain stderr.
    let stderr = fs::read_to_string(&run.stderr_path).unwrap();
    assert!(stderr.is_empty(), "stderr in journal mode: {stderr}");
}

/// A credential in every form it could leak in: as written, decoded, as
/// base64, and any 6-character piece of the base64.
fn credential_forms(written: &str, decoded: &str, user_pass: &str) -> Vec<String> {
    let b64 = common::base64(user_pass.as_bytes());
    let mut v = vec![written.to_string(), decoded.to_string(), b64.clone()];
    let chars: Vec<char> = b64.trim_end_matches('=').chars().collect();
    v.extend(chars.windows(6).map(|w| w.iter().collect::<String>()));
    v
}

/// At LOG_LEVEL=trace, library messages included, no journal field holds
/// the inventory's or the proxy's password in any form, and INVENTORY_URL
/// is the redacted URL.
#[test]
#[ignore = "needs root"]
fn trace_entries_never_carry_credentials() {
    require_root();
    let inv = common::FakeInventory::start(common::Behavior::list(&["sensor_1"]));
    // A same-origin redirect, so that the credential is sent twice.
    inv.push_once(common::Behavior::redirect("/inventory/"));
    let url = format!("http://alice:s3cr%40t@127.0.0.1:{}/inventory", inv.port());
    let shown = format!("http://alice:***@127.0.0.1:{}/inventory", inv.port());
    let mut entries = Vec::new();

    let env = [
        ("INVENTORY_URL", url.clone()),
        ("LOG_LEVEL", "trace".to_string()),
        ("UPDATE_INTERVAL", "1h".to_string()),
    ];
    let mut run = start(TestDir::new("journal-trace"), &env);
    let written = run
        .journal
        .wait(T, |e| e.get("CHANGED").map(String::as_str) == Some("true"))
        .unwrap_or_else(|| panic!("nothing written\n{}", run.journal.dump()));
    assert!(written.contains_key("TARGET_COUNT"));
    let fetched = run
        .journal
        .wait(T, |e| e.contains_key("SENSOR_COUNT"))
        .unwrap();
    assert_eq!(fetched["INVENTORY_URL"], shown);
    assert_eq!(inv.request_count(), 2, "{}", run.journal.dump());
    assert!(inv.requests().iter().all(|r| r.header("Authorization")
        == Some(&format!("Basic {}", common::base64(b"alice:s3cr@t")))));
    entries.append(&mut run.journal.entries);
    drop(run);

    // A proxy with credentials that refuses the connection: failures at trace.
    let env = [
        ("INVENTORY_URL", url),
        ("LOG_LEVEL", "trace".to_string()),
        ("RETRY_ATTEMPTS", "1".to_string()),
        ("RETRY_BACKOFF", "0.1".to_string()),
        ("HTTP_PROXY", "http://pu:Pr0xy%2FPW@127.0.0.1:1".to_string()),
    ];
    let mut run = start(TestDir::new("journal-trace-p"), &env);
    let failed = run
        .journal
        .wait(T, |e| {
            e.get("MESSAGE")
                .is_some_and(|m| m.starts_with("Failed to fetch inventory:"))
        })
        .unwrap_or_else(|| panic!("no failure\n{}", run.journal.dump()));
    assert!(failed.contains_key("ERROR"));
    entries.append(&mut run.journal.entries);
    drop(run);

    let mut needles = credential_forms("s3cr%40t", "s3cr@t", "alice:s3cr@t");
    needles.extend(credential_forms("Pr0xy%2FPW", "Pr0xy/PW", "pu:Pr0xy/PW"));
    for e in &entries {
        for (k, v) in e {
            for n in &needles {
                assert!(!v.contains(n.as_str()), "{n:?} in {k}={v:?}");
            }
        }
    }
    assert!(
        entries
            .iter()
            .any(|e| e.get("TARGET").is_some_and(|t| t.starts_with("ureq"))),
        "no library trace entries: the test would prove nothing"
    );
    assert!(
        entries.iter().any(|e| e.get("MESSAGE").map(String::as_str)
            == Some("Using proxy HTTP_PROXY=http://pu:***@127.0.0.1:1")),
        "the proxy was not used: the test would prove nothing"
    );
}

/// `--once` logs its result with the daemon's fields: ADDED and REMOVED
/// against the file found at start, and the fetch details; an unchanged
/// run puts them all in its one line.
#[test]
#[ignore = "needs root"]
fn once_entries_carry_the_daemon_fields() {
    require_root();
    let dir = TestDir::new("journal-once");
    let inventory = dir.join("inventory.json");
    fs::write(&inventory, r#"["b", "c", "d", "bad name"]"#).unwrap();
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    fs::write(
        out.join("targets.json"),
        common::render(&["a:9100", "b:9100", "c:9100"], "/metrics", &[]),
    )
    .unwrap();
    let url = format!("file://{}", inventory.display());
    let env = [("INVENTORY_URL", url), ("RUN_AS_USER", "root".to_string())];
    let mut run = start_with(dir, &env, "--once");
    let written = run
        .journal
        .wait(T, |e| e.get("CHANGED").map(String::as_str) == Some("true"))
        .unwrap_or_else(|| panic!("no CHANGED=true entry\n{}", run.journal.dump()));
    assert_eq!(run.child.wait().unwrap().code(), Some(0));
    for (k, v) in [
        ("TARGET_COUNT", "3"),
        ("SENSOR_COUNT", "4"),
        ("INVALID_COUNT", "1"),
        ("ADDED", "1"),
        ("REMOVED", "1"),
        ("ATTEMPT", "1"),
    ] {
        assert_eq!(
            written.get(k).map(String::as_str),
            Some(v),
            "{k}: {written:?}"
        );
    }
    assert!(written["DURATION_MS"].parse::<u64>().is_ok(), "{written:?}");
    assert!(written["TARGETS_FILE"].ends_with("out/targets.json"));

    // Again: unchanged, one entry with everything in it.
    let dir = TestDir::new("journal-once-2");
    let inventory2 = dir.join("inventory.json");
    fs::write(&inventory2, r#"["b", "c", "d", "bad name"]"#).unwrap();
    let out2 = dir.join("out");
    fs::create_dir(&out2).unwrap();
    fs::copy(out.join("targets.json"), out2.join("targets.json")).unwrap();
    let env = [
        ("INVENTORY_URL", format!("file://{}", inventory2.display())),
        ("RUN_AS_USER", "root".to_string()),
    ];
    let mut run = start_with(dir, &env, "--once");
    let unchanged = run
        .journal
        .wait(T, |e| e.get("CHANGED").map(String::as_str) == Some("false"))
        .unwrap_or_else(|| panic!("no CHANGED=false entry\n{}", run.journal.dump()));
    assert_eq!(run.child.wait().unwrap().code(), Some(0));
    for (k, v) in [
        ("TARGET_COUNT", "3"),
        ("SENSOR_COUNT", "4"),
        ("INVALID_COUNT", "1"),
        ("ADDED", "0"),
        ("REMOVED", "0"),
        ("ATTEMPT", "1"),
    ] {
        assert_eq!(
            unchanged.get(k).map(String::as_str),
            Some(v),
            "{k}: {unchanged:?}"
        );
    }
    assert!(
        unchanged["DURATION_MS"].parse::<u64>().is_ok(),
        "{unchanged:?}"
    );
    // Drain what is left: no separate fetch entry at info.
    run.journal.wait(Duration::from_millis(300), |_| false);
    let fetched: Vec<_> = run
        .journal
        .entries
        .iter()
        .filter(|e| {
            e.get("MESSAGE")
                .is_some_and(|m| m.starts_with("Successfully fetched"))
        })
        .collect();
    assert!(fetched.is_empty(), "{fetched:?}");
}
