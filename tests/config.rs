//! Configuration validation: every invalid value exits 78 (EX_CONFIG) with
//! one stderr line naming the variable; valid spellings are accepted.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

/// A daemon environment that would be valid (file:// inventory in `dir`).
fn valid_env(dir: &TestDir) -> AgentCmd {
    let inv = dir.join("inventory.json");
    fs::write(&inv, r#"["sensor_0"]"#).unwrap();
    AgentCmd::new(dir).env("INVENTORY_URL", format!("file://{}", inv.display()))
}

/// Runs the daemon with `var=value` and returns a description of what was
/// wrong, or None when it behaved as agreed.
fn check_rejected(var: &str, value: &str, args: &[&str]) -> Option<String> {
    let dir = TestDir::new("cfg");
    let mut cmd = valid_env(&dir).env(var, value);
    for a in args {
        cmd = cmd.arg(a);
    }
    let out = cmd.run(Duration::from_secs(5));
    let lines = out.stderr_lines();
    let mut problems = Vec::new();
    if out.code() != Some(78) {
        problems.push(format!("exit {:?}, expected 78", out.status));
    }
    if lines.len() != 1 {
        problems.push(format!("{} stderr lines, expected exactly 1", lines.len()));
    }
    if !lines.iter().any(|l| l.contains(var)) {
        problems.push(format!("stderr does not name {var}"));
    }
    if !lines
        .iter()
        .any(|l| l.contains("sd-updater: invalid configuration:"))
    {
        problems.push("stderr lacks `sd-updater: invalid configuration:`".into());
    }
    if dir.join("out").exists() || dir.join("sub").exists() {
        problems.push("output directory was created despite the invalid config".into());
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{var}={value:?} {args:?}: {}\n{}",
            problems.join("; "),
            out.describe()
        ))
    }
}

fn assert_all_rejected(cases: &[(&str, &str)], args: &[&str]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(var, value)| check_rejected(var, value, args))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} invalid configurations were not rejected as agreed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

const INVALID: &[(&str, &str)] = &[
    ("UPDATE_INTERVAL", "abc"),
    ("UPDATE_INTERVAL", "0"),
    ("UPDATE_INTERVAL", "0.5"),
    ("UPDATE_INTERVAL", "-5"),
    ("UPDATE_INTERVAL", "5d"),
    ("UPDATE_INTERVAL", "inf"),
    ("UPDATE_INTERVAL", "NaN"),
    ("HTTP_TIMEOUT", "0"),
    ("HTTP_TIMEOUT", "soon"),
    ("HTTP_TIMEOUT", "0.000000001"),
    ("HTTP_TIMEOUT", "0.05"),
    ("METRICS_PORT", "0"),
    ("METRICS_PORT", "70000"),
    ("METRICS_PORT", "-1"),
    ("METRICS_PORT", "http"),
    ("METRICS_PATH", "metrics"),
    ("TARGETS_FILE", "/tmp/x.txt"),
    ("TARGETS_FILE", "/tmp/targets"),
    // Relative, so that an agent that accepted them would only touch its
    // test directory.
    ("TARGETS_FILE", "sub/x.json/."),
    ("TARGETS_FILE", "sub/x.json/"),
    ("TARGETS_FILE", "sub/x.json/.."),
    ("INVENTORY_URL", "ftp://x"),
    ("INVENTORY_URL", "not a url"),
    ("INVENTORY_URL", "file://relative/inventory.json"),
    ("TARGET_LABELS", "1bad=x"),
    ("TARGET_LABELS", "job"),
    ("TARGET_LABELS", "bad-name=x"),
    ("TARGET_LABELS", "=x"),
    ("TARGET_LABELS", "a=1,a=2"),
    ("LOG_LEVEL", "loud"),
    ("RETRY_ATTEMPTS", "-1"),
    ("RETRY_ATTEMPTS", "many"),
    ("RETRY_BACKOFF", "-1"),
    ("RETRY_BACKOFF", "abc"),
    ("MAX_RESPONSE_BYTES", "abc"),
    ("MAX_RESPONSE_BYTES", "-1"),
    ("ALLOW_EMPTY", "maybe"),
];

#[test]
fn invalid_values_exit_78_naming_the_variable() {
    assert_all_rejected(INVALID, &[]);
}

#[test]
fn invalid_values_exit_78_in_every_mode() {
    let cases = &[
        ("UPDATE_INTERVAL", "abc"),
        ("METRICS_PORT", "70000"),
        ("INVENTORY_URL", "ftp://x"),
    ];
    for mode in ["--once", "--print", "--check-config"] {
        assert_all_rejected(cases, &[mode]);
    }
}

#[test]
#[ignore = "needs root"]
fn unknown_run_as_user_exits_78_naming_it() {
    require_root();
    let dir = TestDir::new("cfg-user");
    let out = valid_env(&dir)
        .env("RUN_AS_USER", "no-such-user-xyz")
        .run(Duration::from_secs(5));
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    let lines = out.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "one stderr line expected\n{}",
        out.describe()
    );
    assert!(
        lines[0].contains("no-such-user-xyz") && lines[0].contains("RUN_AS_USER"),
        "the line must name the variable and the user\n{}",
        out.describe()
    );
    assert!(!dir.join("out").exists(), "no output dir for a bad user");
}

#[test]
fn config_error_does_not_leak_password() {
    let dir = TestDir::new("cfg-pw");
    let out = valid_env(&dir)
        .env("INVENTORY_URL", "ftp://user:s3cret@127.0.0.1:1/x")
        .run(Duration::from_secs(5));
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    assert!(out.stderr.contains("INVENTORY_URL"), "{}", out.describe());
    assert!(
        !out.stderr.contains("s3cret") && !out.stdout.contains("s3cret"),
        "password leaked\n{}",
        out.describe()
    );
}

/// `--check-config` with `var=value` must exit 0.
fn accepted(var: &str, value: &str) -> Option<String> {
    let dir = TestDir::new("cfg-ok");
    let out = valid_env(&dir)
        .env(var, value)
        .arg("--check-config")
        .run(Duration::from_secs(5));
    if out.code() == Some(0) {
        None
    } else {
        Some(format!("{var}={value:?}: {}", out.describe()))
    }
}

#[test]
fn valid_spellings_are_accepted() {
    let cases: &[(&str, &str)] = &[
        ("UPDATE_INTERVAL", "1"),
        ("UPDATE_INTERVAL", "1.5"),
        ("UPDATE_INTERVAL", "90s"),
        ("UPDATE_INTERVAL", "2m"),
        ("UPDATE_INTERVAL", "1h"),
        ("UPDATE_INTERVAL", "0.5m"),
        ("UPDATE_INTERVAL", ""),
        ("HTTP_TIMEOUT", "0.5"),
        ("HTTP_TIMEOUT", "0.1"),
        ("HTTP_TIMEOUT", "1m"),
        ("METRICS_PORT", "1"),
        ("METRICS_PORT", "65535"),
        ("METRICS_PATH", "/probe/metrics"),
        ("TARGETS_FILE", "relative/targets.json"),
        ("INVENTORY_URL", "https://inventory.example:8443/api?x=1"),
        ("INVENTORY_URL", "http://[::1]:1337/inventory"),
        ("INVENTORY_URL", "file:///srv/inventory.json"),
        ("TARGET_LABELS", ""),
        ("TARGET_LABELS", "a=b"),
        ("TARGET_LABELS", "_x=1,dc=eu-west_1"),
        ("RETRY_ATTEMPTS", "0"),
        ("RETRY_BACKOFF", "0"),
        ("RETRY_BACKOFF", "0.25"),
        ("MAX_RESPONSE_BYTES", "1024"),
        ("ALLOW_EMPTY", "true"),
        ("ALLOW_EMPTY", "false"),
        ("ALLOW_EMPTY", "1"),
        ("ALLOW_EMPTY", "0"),
        ("ALLOW_EMPTY", "yes"),
        ("ALLOW_EMPTY", "no"),
        ("LOG_LEVEL", "error"),
        ("LOG_LEVEL", "warn"),
        ("LOG_LEVEL", "info"),
        ("LOG_LEVEL", "debug"),
        ("LOG_LEVEL", "trace"),
    ];
    let failures: Vec<String> = cases.iter().filter_map(|(k, v)| accepted(k, v)).collect();
    assert!(
        failures.is_empty(),
        "valid values rejected:\n\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn empty_value_means_default() {
    let dir = TestDir::new("cfg-empty");
    let out = valid_env(&dir)
        .env("UPDATE_INTERVAL", "")
        .env("METRICS_PORT", "")
        .env("METRICS_PATH", "")
        .arg("--check-config")
        .run(Duration::from_secs(5));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= line\n{}", out.describe()))
            .to_string()
    };
    assert!(line("UPDATE_INTERVAL").contains("30"), "{}", out.describe());
    assert_eq!(line("METRICS_PORT"), "METRICS_PORT=9100");
    assert_eq!(line("METRICS_PATH"), "METRICS_PATH=/metrics");
}

#[test]
fn targets_file_with_dot_dot_component_exits_78() {
    // Relative to the test directory: an agent that accepted them would
    // create out/ or sub/ there (as root, owned by the service user).
    let cases = &[
        ("TARGETS_FILE", "sub/../out/targets.json"),
        ("TARGETS_FILE", "out/sub/../targets.json"),
        ("TARGETS_FILE", "./out/../targets.json"),
    ];
    for args in [&[][..], &["--once"], &["--check-config"]] {
        assert_all_rejected(cases, args);
    }
    let dir = TestDir::new("cfg-dotdot");
    let out = valid_env(&dir)
        .env("TARGETS_FILE", "out/../targets.json")
        .arg("--check-config")
        .run(Duration::from_secs(5));
    assert!(
        out.stderr.contains("must not contain a .. component"),
        "{}",
        out.describe()
    );
}
