//! Command line: usage errors, --help, --version, --check-config, --print,
//! --once, file:// inventories and password redaction in every mode.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

const ALL_VARS: &[(&str, &str)] = &[
    ("INVENTORY_URL", "http://inventory_server:1337/inventory"),
    ("UPDATE_INTERVAL", "30"),
    ("TARGETS_FILE", "/var/lib/sd-updater/targets.json"),
    ("METRICS_PORT", "9100"),
    ("METRICS_PATH", "/metrics"),
    ("TARGET_LABELS", "job=sensors,environment=production"),
    ("HTTP_TIMEOUT", "10"),
    ("RETRY_ATTEMPTS", "3"),
    ("RETRY_BACKOFF", "1"),
    ("MAX_RESPONSE_BYTES", "67108864"),
    ("ALLOW_EMPTY", "false"),
    ("RUN_AS_USER", "sd-updater"),
    ("LOG_LEVEL", "info"),
    ("MAX_INVALID_PERCENT", "50"),
    ("INVENTORY_TOKEN_FILE", "auto"),
    ("INVENTORY_PASSWORD_FILE", "none"),
    ("INVENTORY_CA_FILE", "none"),
    ("INVENTORY_CLIENT_CERT", "none"),
    ("INVENTORY_CLIENT_KEY", "none"),
    ("METRICS_FILE", ""),
    ("SOURCE_NAME", ""),
];

#[test]
fn unknown_arguments_exit_64_with_usage() {
    let dir = TestDir::new("cli-usage");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let cases: &[&[&str]] = &[
        &["--bogus"],
        &["-x"],
        &["run"],
        &["--once=1"],
        &["--once", "--print"],
        &["--help", "--version"],
        &["--once", "extra"],
        &[""],
    ];
    let mut failures = Vec::new();
    for args in cases {
        let mut cmd = AgentCmd::new(&dir).inventory(&inv);
        for a in *args {
            cmd = cmd.arg(a);
        }
        let out = cmd.run(Duration::from_secs(5));
        if out.code() != Some(64) || !out.stderr.to_lowercase().contains("usage") {
            failures.push(format!("{args:?}: {}", out.describe()));
        }
    }
    assert!(
        failures.is_empty(),
        "expected exit 64 and usage on stderr:\n{}",
        failures.join("\n\n")
    );
    assert_eq!(inv.request_count(), 0, "a usage error must not fetch");
    assert!(!dir.join("out").exists(), "a usage error must not write");
}

#[test]
fn help_lists_every_variable_with_default() {
    let dir = TestDir::new("cli-help");
    for flag in ["--help", "-h"] {
        let out = AgentCmd::bare(&dir).arg(flag).run(T);
        assert_eq!(out.code(), Some(0), "{flag}: {}", out.describe());
        let lines: Vec<&str> = out.stdout.lines().collect();
        for (var, default) in ALL_VARS {
            let i = lines.iter().position(|l| l.contains(var));
            let i = i.unwrap_or_else(|| panic!("{flag} does not list {var}\n{}", out.stdout));
            let near = format!("{} {}", lines[i], lines.get(i + 1).unwrap_or(&""));
            assert!(
                near.contains(default),
                "{flag}: {var} is listed without its default {default:?}: {near:?}"
            );
        }
        for cmd in ["--once", "--print", "--check-config", "--version"] {
            assert!(out.stdout.contains(cmd), "{flag} does not mention {cmd}");
        }
    }
}

#[test]
fn version_prints_name_and_version() {
    let dir = TestDir::new("cli-version");
    for flag in ["--version", "-V"] {
        let out = AgentCmd::bare(&dir).arg(flag).run(T);
        assert_eq!(out.code(), Some(0), "{}", out.describe());
        assert_eq!(
            out.stdout.trim(),
            format!("sd-updater {}", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}

#[test]
fn check_config_prints_settings_with_password_redacted() {
    let dir = TestDir::new("cli-check");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let url = format!("http://user:s3cret@127.0.0.1:{}/x", inv.port());
    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .env("METRICS_PORT", "9200")
        .env("METRICS_PATH", "/probe")
        .arg("--check-config")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    for (var, _) in ALL_VARS {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{var}="))),
            "no {var}= line\n{}",
            out.describe()
        );
    }
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !all.contains("s3cret"),
        "password leaked\n{}",
        out.describe()
    );
    let url_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("INVENTORY_URL="))
        .unwrap();
    assert_eq!(
        url_line,
        format!("INVENTORY_URL=http://user:***@127.0.0.1:{}/x", inv.port())
    );
    assert!(out.stdout.lines().any(|l| l == "METRICS_PORT=9200"));
    assert!(out.stdout.lines().any(|l| l == "METRICS_PATH=/probe"));
    assert_eq!(inv.request_count(), 0, "--check-config must not fetch");
    assert!(!dir.join("out").exists(), "--check-config must not write");
}

#[test]
fn password_never_printed_in_any_mode() {
    let dir = TestDir::new("cli-pw");
    let inv = FakeInventory::start(Behavior::status(500));
    let with_pw = |port: u16| format!("http://user:s3cret@127.0.0.1:{port}/inventory");
    // Port 1 on loopback: connection refused, the error text may carry the URL.
    let mut transcripts = Vec::new();
    for url in [with_pw(inv.port()), with_pw(1)] {
        for mode in ["--once", "--print", "--check-config"] {
            let out = AgentCmd::new(&dir)
                .env("INVENTORY_URL", &url)
                .env("LOG_LEVEL", "trace")
                .arg(mode)
                .run(T);
            transcripts.push((format!("{mode} {url}"), out.stdout, out.stderr));
        }
        // The daemon: start-up log, failures and retries, a SIGHUP cycle.
        let ndir = TestDir::new("cli-pw-n");
        let notify = NotifySocket::new(&ndir);
        let mut agent = AgentCmd::new(&dir)
            .env("INVENTORY_URL", &url)
            .env("LOG_LEVEL", "trace")
            .notify(&notify)
            .spawn();
        notify.wait_for("READY=1", T);
        wait_for(T, || agent.stderr().contains("Failed to fetch inventory"));
        agent.signal(Signal::SIGHUP);
        notify.wait_for("READY=1", T);
        agent.signal(Signal::SIGTERM);
        agent.wait_exit(T);
        let notes = notify.dump();
        transcripts.push((format!("daemon {url}"), agent.stdout(), agent.stderr()));
        transcripts.push((format!("daemon notify {url}"), notes, String::new()));
    }
    for (what, stdout, stderr) in &transcripts {
        assert!(
            !stdout.contains("s3cret") && !stderr.contains("s3cret"),
            "{what}: password leaked\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );
    }
    // The daemon must have actually run into failures for this to mean anything.
    assert!(
        transcripts
            .iter()
            .any(|(w, _, e)| w.starts_with("daemon") && e.contains("Failed to fetch inventory")),
        "the daemon never logged a failure"
    );
    assert!(
        inv.request_count() >= 2,
        "the fake inventory was never asked"
    );
}

#[test]
fn print_writes_json_to_stdout_and_no_file() {
    let dir = TestDir::new("cli-print");
    let inv = FakeInventory::start(Behavior::list(&["sensor_1", "sensor_0"]));
    let cmd = AgentCmd::new(&dir).inventory(&inv).arg("--print");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        out.stdout,
        render_default(&["sensor_0:9100", "sensor_1:9100"]),
        "{}",
        out.describe()
    );
    assert!(
        !cmd.targets_file().exists(),
        "--print wrote the targets file"
    );
    assert!(!dir.join("out").exists(), "--print created the output dir");
    assert_eq!(inv.request_count(), 1);
}

#[test]
fn print_fails_with_exit_1() {
    let dir = TestDir::new("cli-print-fail");
    let inv = FakeInventory::start(Behavior::status(500));
    let out = AgentCmd::new(&dir).inventory(&inv).arg("--print").run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(out.stdout.trim().is_empty(), "{}", out.describe());
    assert!(!dir.join("out").exists());
}

#[test]
fn once_writes_file_and_exits_0() {
    let dir = TestDir::new("cli-once");
    let inv = FakeInventory::start(Behavior::list(&["sensor_1", "sensor_0"]));
    let cmd = AgentCmd::new(&dir).inventory(&inv).arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let content = fs::read_to_string(cmd.targets_file()).expect("targets file written");
    assert_eq!(content, render_default(&["sensor_0:9100", "sensor_1:9100"]));
    assert!(
        temp_files(&dir.join("out"), "targets.json").is_empty(),
        "temp file left behind"
    );

    // A second identical run leaves the file alone.
    let before = stamp(&cmd.targets_file());
    std::thread::sleep(Duration::from_millis(20));
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        stamp(&cmd.targets_file()),
        before,
        "unchanged --once run touched the file"
    );
}

#[test]
fn once_fails_with_exit_1_and_keeps_file() {
    let dir = TestDir::new("cli-once-fail");
    let inv = FakeInventory::start(Behavior::status(500));
    let cmd = AgentCmd::new(&dir)
        .inventory(&inv)
        .env("RETRY_ATTEMPTS", "2")
        .arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(!cmd.targets_file().exists(), "a failed --once wrote a file");
    assert_eq!(
        inv.request_count(),
        3,
        "RETRY_ATTEMPTS=2 on 500: 1 try + 2 retries"
    );

    // An existing file survives a failed run byte for byte.
    fs::create_dir_all(dir.join("out")).unwrap();
    let old = render_default(&["old:9100"]);
    fs::write(cmd.targets_file(), &old).unwrap();
    let before = stamp(&cmd.targets_file());
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert_eq!(fs::read_to_string(cmd.targets_file()).unwrap(), old);
    assert_eq!(stamp(&cmd.targets_file()), before);
}

#[test]
fn file_inventory_works() {
    let dir = TestDir::new("cli-file");
    let inv_path = dir.join("inventory.json");
    fs::write(&inv_path, r#"["sensor_b", "sensor_a", "10.1.2.3:9999"]"#).unwrap();
    let url = format!("file://{}", inv_path.display());
    let expected = render_default(&["10.1.2.3:9999", "sensor_a:9100", "sensor_b:9100"]);

    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .arg("--print")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(out.stdout, expected);

    let cmd = AgentCmd::new(&dir).env("INVENTORY_URL", &url).arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(fs::read_to_string(cmd.targets_file()).unwrap(), expected);

    // The daemon follows changes of the file on SIGHUP.
    let notify = NotifySocket::new(&dir);
    let agent = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .notify(&notify)
        .spawn();
    assert!(
        notify.wait_for("READY=1", T).is_some(),
        "{}",
        agent.stderr()
    );
    fs::write(&inv_path, r#"["sensor_c"]"#).unwrap();
    agent.signal(Signal::SIGHUP);
    assert!(notify.wait_for("RELOADING=1", T).is_some());
    assert!(notify.wait_for("READY=1", T).is_some());
    let want = render_default(&["sensor_c:9100"]);
    assert!(
        wait_for(T, || fs::read_to_string(cmd.targets_file()).ok().as_deref()
            == Some(want.as_str())),
        "file:// change not applied after SIGHUP\n{}",
        agent.stderr()
    );
}

#[test]
fn missing_file_inventory_fails() {
    let dir = TestDir::new("cli-file-missing");
    let url = format!("file://{}", dir.join("nope.json").display());
    let cmd = AgentCmd::new(&dir).env("INVENTORY_URL", &url).arg("--once");
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(!cmd.targets_file().exists());
}

// ---------------------------------------------------------------------------
// Passwords with reserved characters, and credentials in trace output
// ---------------------------------------------------------------------------

/// Every mode: the three one-shot commands and the daemon (no argument).
const MODES: [Option<&str>; 4] = [
    Some("--check-config"),
    Some("--once"),
    Some("--print"),
    None,
];

/// The first of `needles` found in `text`, if any.
fn leaked<'a>(text: &str, needles: &'a [String]) -> Option<&'a str> {
    needles
        .iter()
        .map(String::as_str)
        .find(|n| text.contains(n))
}

/// A credential in every form it could leak in: as written, decoded, as
/// base64, and any 6-character piece of the base64 (a wire dump splits it
/// over lines).
fn forms(written: &str, decoded: &str, user_pass: &str) -> Vec<String> {
    let b64 = base64(user_pass.as_bytes());
    let mut v = vec![written.to_string(), decoded.to_string(), b64.clone()];
    let chars: Vec<char> = b64.trim_end_matches('=').chars().collect();
    v.extend(chars.windows(6).map(|w| w.iter().collect::<String>()));
    v
}

#[test]
fn reserved_characters_in_a_password_exit_78_and_never_show_it() {
    let dir = TestDir::new("cli-resv");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let p = inv.port();
    let urls = [
        format!("http://alice:Pa/ss-W0rd@127.0.0.1:{p}/x"),
        format!("http://alice:Pa?ss-W0rd@127.0.0.1:{p}/x"),
        format!("http://alice:Pa#ss-W0rd@127.0.0.1:{p}/x"),
        format!("https://alice:99999/ss-W0rd@127.0.0.1:{p}/x"),
        format!("http://alice:Pa@ss-W0rd@127.0.0.1:x{p}/x"),
    ];
    for url in &urls {
        for mode in MODES {
            let mut cmd = AgentCmd::new(&dir)
                .env("INVENTORY_URL", url)
                .env("LOG_LEVEL", "trace");
            if let Some(m) = mode {
                cmd = cmd.arg(m);
            }
            let out = cmd.run(T);
            let what = format!("{mode:?} {url}");
            assert_eq!(out.code(), Some(78), "{what}\n{}", out.describe());
            let lines = out.stderr_lines();
            assert_eq!(lines.len(), 1, "{what}\n{}", out.describe());
            assert!(
                lines[0].starts_with("sd-updater: invalid configuration: INVENTORY_URL: "),
                "{what}: {}",
                lines[0]
            );
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(
                !all.contains("ss-W0rd") && !all.contains("Pa/") && !all.contains("Pa?"),
                "{what}: password shown\n{}",
                out.describe()
            );
        }
    }
    assert_eq!(inv.request_count(), 0, "a refused URL was fetched");
}

/// A URL that parses (user u, host 127.0.0.1, port 1) but carries
/// something that looks like a password in its path: it is redacted
/// everywhere, even in the start-up lines, retries, failures and library
/// messages at trace. (Without the `u@`, an `@` in the path is refused.)
#[test]
fn anything_that_looks_like_a_password_is_redacted_whatever_the_shape() {
    let dir = TestDir::new("cli-shape");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let p = inv.port();
    let url = format!("http://u@127.0.0.1:1/er:Secr3t-Pw@127.0.0.1:{p}/x");
    let shown = format!("http://***@127.0.0.1:{p}/x");
    let mut transcripts = Vec::new();
    for mode in MODES {
        let cmd = AgentCmd::new(&dir)
            .env("INVENTORY_URL", &url)
            .env("LOG_LEVEL", "trace")
            .env("RETRY_ATTEMPTS", "1");
        let (stdout, stderr) = match mode {
            Some(m) => {
                let out = cmd.arg(m).run(T);
                if m == "--check-config" {
                    assert_eq!(out.code(), Some(0), "{}", out.describe());
                    assert!(
                        out.stdout
                            .lines()
                            .any(|l| l == format!("INVENTORY_URL={shown}")),
                        "{}",
                        out.describe()
                    );
                } else {
                    assert_eq!(out.code(), Some(1), "{m}\n{}", out.describe());
                }
                (out.stdout, out.stderr)
            }
            None => {
                let ndir = TestDir::new("cli-shape-n");
                let notify = NotifySocket::new(&ndir);
                let mut agent = cmd.notify(&notify).spawn();
                assert!(
                    notify.wait_for("READY=1", T).is_some(),
                    "{}",
                    agent.stderr()
                );
                assert!(
                    wait_for(T, || agent.stderr().contains("Failed to fetch inventory:")),
                    "{}",
                    agent.stderr()
                );
                agent.signal(Signal::SIGTERM);
                agent.wait_exit(T);
                let notes = notify.dump();
                (notes, agent.stderr())
            }
        };
        transcripts.push((mode, stdout, stderr));
    }
    for (mode, stdout, stderr) in &transcripts {
        assert!(
            !stdout.contains("Secr3t") && !stderr.contains("Secr3t"),
            "{mode:?}: password shown\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        );
    }
    let daemon_log = &transcripts[3].2;
    assert!(
        daemon_log.contains(&format!("INVENTORY_URL={shown}"))
            && daemon_log.contains(&format!("Failed to fetch inventory from {shown}")),
        "the start-up and retry lines must show the redacted URL\n{daemon_log}"
    );
    assert_eq!(inv.request_count(), 0);
}

#[test]
fn trace_logs_never_show_credentials_in_any_form() {
    let dir = TestDir::new("cli-trace");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    // A same-origin redirect first, so that the credential goes out twice.
    let url = format!("http://alice:s3cr%40t@127.0.0.1:{}/inventory", inv.port());
    let secrets = forms("s3cr%40t", "s3cr@t", "alice:s3cr@t");
    let mut transcripts = Vec::new();
    for mode in MODES {
        if mode != Some("--check-config") {
            inv.push_once(Behavior::redirect("/inventory/"));
        }
        let before = inv.request_count();
        let cmd = AgentCmd::new(&dir)
            .env("INVENTORY_URL", &url)
            .env("LOG_LEVEL", "trace");
        match mode {
            Some(m) => {
                let out = cmd.arg(m).run(T);
                assert_eq!(out.code(), Some(0), "{m}\n{}", out.describe());
                transcripts.push((m.to_string(), out.stdout + &out.stderr));
            }
            None => {
                let ndir = TestDir::new("cli-trace-n");
                let notify = NotifySocket::new(&ndir);
                let mut agent = cmd.notify(&notify).spawn();
                assert!(notify.wait_for("READY=1", T).is_some());
                assert!(
                    wait_for(T, || agent.stderr().contains("Successfully")),
                    "{}",
                    agent.stderr()
                );
                agent.signal(Signal::SIGTERM);
                agent.wait_exit(T);
                transcripts.push(("daemon".into(), agent.stderr() + &notify.dump()));
            }
        }
        if mode != Some("--check-config") {
            let sent = inv.requests()[before..].to_vec();
            assert_eq!(sent.len(), 2, "{mode:?}");
            assert!(
                sent.iter().all(|r| r.header("Authorization")
                    == Some(&format!("Basic {}", base64(b"alice:s3cr@t")))),
                "{mode:?}: the credential was not sent, the test would prove nothing"
            );
        }
    }
    for (what, text) in &transcripts {
        if let Some(s) = leaked(text, &secrets) {
            panic!("{what}: {s:?} is in the log\n{text}");
        }
        // Neither the header nor ureq's wire dump (hex rows) is logged.
        for line in text.lines() {
            let l = line.to_ascii_lowercase();
            assert!(!l.contains("authorization: basic"), "{what}: {line}");
            let msg = line.split(" - TRACE - ").nth(1).unwrap_or("");
            let hex_row = msg.len() > 10
                && msg.as_bytes()[..9].iter().enumerate().all(|(i, b)| {
                    if i == 4 {
                        *b == b' '
                    } else {
                        b.is_ascii_hexdigit()
                    }
                });
            assert!(!hex_row, "{what}: wire dump logged: {line}");
        }
    }
    assert!(
        transcripts.iter().any(|(_, t)| t.contains(" - TRACE - ")),
        "no trace output at all: the test would prove nothing"
    );
}

/// Passwords that start with digits and then hold `/`, `?` or `#` used to
/// pass for a port: the request went to the user name's host (or to the
/// host before the `/`), and with `?` or `#` the password was printed.
#[test]
fn digit_prefixed_passwords_with_reserved_characters_exit_78_and_never_show() {
    let dir = TestDir::new("cli-digits");
    let inv = FakeInventory::start(Behavior::list(&["sensor_0"]));
    let p = inv.port();
    let urls = [
        "http://alice:123#Secr3t@inventory.example/inv".to_string(),
        "http://alice:99?Secr3t@inventory.example/inv".to_string(),
        format!("http://alice:{p}/Secr3t@inventory.example/inv"),
        format!("http://localhost:{p}/Secr3t@inventory.example/inv"),
        format!("http://127.0.0.1:{p}/x?Secr3t@inventory.example"),
    ];
    for url in &urls {
        for mode in MODES {
            let mut cmd = AgentCmd::new(&dir)
                .env("INVENTORY_URL", url)
                .env("LOG_LEVEL", "trace");
            if let Some(m) = mode {
                cmd = cmd.arg(m);
            }
            let out = cmd.run(T);
            let what = format!("{mode:?} {url}");
            assert_eq!(out.code(), Some(78), "{what}\n{}", out.describe());
            let lines = out.stderr_lines();
            assert_eq!(lines.len(), 1, "{what}\n{}", out.describe());
            assert!(
                lines[0].starts_with("sd-updater: invalid configuration: INVENTORY_URL: ")
                    && lines[0].contains("percent-encode"),
                "{what}: {}",
                lines[0]
            );
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(!all.contains("Secr3t"), "{what}: password shown\n{all}");
        }
    }
    assert_eq!(inv.request_count(), 0, "a refused URL was fetched");
}

/// A token used as the user name (`https://TOKEN@host/`) is sent as basic
/// auth: a credential, hidden as `***@` in every mode and line.
#[test]
fn a_token_as_the_user_name_is_never_shown() {
    let dir = TestDir::new("cli-token");
    let inv = FakeInventory::start(Behavior::status(500));
    let p = inv.port();
    let token = "ghp_TokenAsUserName123";
    let url = format!("http://{token}@127.0.0.1:{p}/x");
    let shown = format!("http://***@127.0.0.1:{p}/x");
    let mut transcripts = Vec::new();
    for mode in MODES {
        let cmd = AgentCmd::new(&dir)
            .env("INVENTORY_URL", &url)
            .env("LOG_LEVEL", "trace")
            .env("RETRY_ATTEMPTS", "1");
        let text = match mode {
            Some(m) => {
                let out = cmd.arg(m).run(T);
                let want = if m == "--check-config" { 0 } else { 1 };
                assert_eq!(out.code(), Some(want), "{m}\n{}", out.describe());
                out.stdout + &out.stderr
            }
            None => {
                let ndir = TestDir::new("cli-token-n");
                let notify = NotifySocket::new(&ndir);
                let mut agent = cmd.notify(&notify).spawn();
                assert!(
                    notify.wait_for("READY=1", T).is_some(),
                    "{}",
                    agent.stderr()
                );
                assert!(
                    wait_for(T, || agent.stderr().contains("Failed to fetch inventory:")),
                    "{}",
                    agent.stderr()
                );
                agent.signal(Signal::SIGTERM);
                agent.wait_exit(T);
                agent.stderr() + &notify.dump()
            }
        };
        assert!(!text.contains(token), "{mode:?}: token shown\n{text}");
        // --print logs no configuration.
        assert!(
            mode == Some("--print") || text.contains(&format!("INVENTORY_URL={shown}")),
            "{mode:?}: no redacted URL line\n{text}"
        );
        transcripts.push(text);
    }
    assert!(
        transcripts[3].contains(&format!("Failed to fetch inventory from {shown}")),
        "{}",
        transcripts[3]
    );
    let auth = format!("Basic {}", base64(format!("{token}:").as_bytes()));
    assert!(
        inv.requests()
            .iter()
            .any(|r| r.header("Authorization") == Some(auth.as_str())),
        "the token was not sent as basic auth: the test would prove nothing"
    );
}

/// A short password that is also an ordinary word is not masked in free
/// text (which would tell a reader the password), only as a credential.
#[test]
fn a_short_password_is_not_masked_in_free_text() {
    let dir = TestDir::new("cli-short");
    let inv = FakeInventory::start(Behavior::status(500));
    let url = format!("http://user:Server@127.0.0.1:{}/x", inv.port());
    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .env("LOG_LEVEL", "trace")
        .env("RETRY_ATTEMPTS", "1")
        .arg("--once")
        .run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr
            .contains("Failed to fetch inventory: HTTP 500 Internal Server Error"),
        "{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("Internal *** Error"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("user:***@127.0.0.1") && !out.stderr.contains("user:Server@"),
        "{}",
        out.describe()
    );
    let basic = base64(b"user:Server");
    assert!(!out.stderr.contains(&basic), "{}", out.describe());
    let check = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .arg("--check-config")
        .run(T);
    assert!(!check.stdout.contains("Server"), "{}", check.describe());
}

/// What `--check-config` prints is itself a valid configuration with the
/// same effective values, so it can be pasted into an environment file.
#[test]
fn check_config_output_reads_back_as_the_same_configuration() {
    let dir = TestDir::new("cli-check-round");
    let first = AgentCmd::new(&dir)
        .env("INVENTORY_URL", "http://127.0.0.1:9/x")
        .env("RETRY_BACKOFF", "0.5")
        .env("UPDATE_INTERVAL", "1.5m")
        .env("HTTP_TIMEOUT", "2.5")
        .arg("--check-config")
        .run(T);
    assert_eq!(first.code(), Some(0), "{}", first.describe());
    let mut again = AgentCmd::new(&dir).arg("--check-config");
    for line in first.stdout.lines() {
        let (k, v) = line.split_once('=').expect("NAME=value");
        again = again.env(k, v);
    }
    let second = again.run(T);
    assert_eq!(second.code(), Some(0), "{}", second.describe());
    assert_eq!(first.stdout, second.stdout);
    assert!(
        first.stdout.lines().any(|l| l == "RETRY_BACKOFF=0.5"),
        "{}",
        first.stdout
    );
}
