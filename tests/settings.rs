//! The settings table, as `sd-updater --help` prints it, against the files
//! that document it: the commented conffile, the man page's ENVIRONMENT
//! section and README.md's short settings table. Each must list every
//! setting with its default, and name no setting the code lacks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sd-updater");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
    out
}

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_setting_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// The settings in table order, with their defaults, from `--help`: under
/// the "Environment" heading, a `NAME help` line then a `default: X` line.
fn table() -> Vec<(String, String)> {
    let out = run(&["--help"], &[]);
    let help = String::from_utf8(out.stdout).expect("--help is UTF-8");
    let section = help
        .split_once("\nEnvironment")
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map(|(_, rest)| rest.split("\n\n").next().unwrap_or(""))
        .unwrap_or_else(|| panic!("--help has no Environment section:\n{help}"));
    let mut settings: Vec<(String, Option<String>)> = Vec::new();
    for line in section.lines() {
        let line = line.trim();
        if let Some(default) = line.strip_prefix("default:") {
            let default = default.trim();
            let last = settings.last_mut().expect("a default before any setting");
            assert!(last.1.is_none(), "two defaults for {}", last.0);
            // An empty default is shown as "(empty)".
            let default = if default == "(empty)" { "" } else { default };
            last.1 = Some(default.to_string());
        } else {
            let name = line.split_whitespace().next().unwrap_or("");
            assert!(is_setting_name(name), "unexpected --help line {line:?}");
            settings.push((name.to_string(), None));
        }
    }
    let settings: Vec<(String, String)> = settings
        .into_iter()
        .map(|(n, d)| {
            let d = d.unwrap_or_else(|| panic!("--help gives no default for {n}"));
            (n, d)
        })
        .collect();
    assert!(
        settings.len() >= 10,
        "too few settings in --help: {settings:?}"
    );
    settings
}

/// Compares what a document lists (`NAME -> default as written`) with the
/// table; returns every difference.
fn differences(doc: &str, listed: &[(String, String)], table: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let documented: BTreeMap<&str, &str> = listed
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_str()))
        .collect();
    if documented.len() != listed.len() {
        problems.push(format!("{doc} lists a setting twice: {listed:?}"));
    }
    for (name, default) in table {
        match documented.get(name.as_str()) {
            None => problems.push(format!("{doc} does not list {name}")),
            Some(d) if d != default => problems.push(format!(
                "{doc} gives {name} the default {d:?}, the agent {default:?}"
            )),
            Some(_) => {}
        }
    }
    for (name, _) in listed {
        if !table.iter().any(|(n, _)| n == name) {
            problems.push(format!("{doc} names {name}, which is not a setting"));
        }
    }
    problems
}

fn assert_no_differences(problems: Vec<String>) {
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `#NAME=value` (and any uncommented `NAME=value`) lines of the conffile.
fn conffile_settings() -> Vec<(String, String)> {
    read("packaging/sd-updater.default")
        .lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix('#').unwrap_or(line).split_once('=')?;
            if !is_setting_name(name) {
                return None;
            }
            // An uncommented line would set the value: report it apart.
            let name = if line.starts_with('#') {
                name.to_string()
            } else {
                format!("{name} (not commented out)")
            };
            Some((name, value.to_string()))
        })
        .collect()
}

/// The `.TP` / `.B NAME` entries of the man page's ENVIRONMENT section,
/// with the value after each entry's "Default:".
fn man_page_settings() -> Vec<(String, String)> {
    let page = read("packaging/sd-updater.8");
    let section = page
        .split_once("\n.SH ENVIRONMENT\n")
        .map(|(_, rest)| rest.split("\n.SH ").next().unwrap_or(""))
        .expect("the man page has an ENVIRONMENT section");
    section
        .split("\n.TP\n")
        .skip(1)
        .map(|entry| {
            let mut lines = entry.lines();
            let name = lines
                .next()
                .and_then(|l| l.strip_prefix(".B "))
                .unwrap_or_else(|| panic!("ENVIRONMENT entry without .B NAME: {entry:?}"))
                .trim()
                .to_string();
            // "Default:" then a line such as ".BR 30 ." or ".IR /path ."
            let default = lines
                .skip_while(|l| !l.starts_with("Default:"))
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("")
                .replace("\\-", "-");
            (name, default)
        })
        .collect()
}

/// A default as a document writes it, for comparison: code quotes and
/// parentheses dropped, and "no value" made empty, also when followed by
/// what it then means (`(empty)`, `empty`, `empty: stem of TARGETS_FILE`).
/// `none` stays: the agent reads it as a value.
fn normalise_default(cell: &str) -> String {
    let cell = cell.trim().replace('`', "");
    let cell = cell
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .unwrap_or(&cell)
        .trim();
    let lower = cell.to_ascii_lowercase();
    let empty = lower == "\"\""
        || lower
            .strip_prefix("empty")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', ' ', ',', ';']));
    if empty {
        String::new()
    } else {
        cell.to_string()
    }
}

/// The settings table as the README compares it: defaults normalised.
fn readme_table() -> Vec<(String, String)> {
    table()
        .into_iter()
        .map(|(n, d)| (n, normalise_default(&d)))
        .collect()
}

/// The rows of README.md's short table under `| Setting | Default |`:
/// name, default and one line of meaning.
fn readme_settings() -> Vec<(String, String)> {
    let readme = read("README.md");
    let mut lines = readme
        .lines()
        .skip_while(|l| !l.starts_with("| Setting | Default |"));
    assert!(
        lines.next().is_some(),
        "README.md has no `| Setting | Default |` table"
    );
    let separator = lines.next().unwrap_or("");
    assert!(
        separator.starts_with("|---") || separator.starts_with("| ---"),
        "README.md's settings table has no separator row: {separator:?}"
    );
    let mut rows = Vec::new();
    for line in lines {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(
            cells.len() == 5,
            "README.md settings row is not `| name | default | meaning |`: {line:?}"
        );
        let name = cells[1].replace('`', "");
        assert!(
            is_setting_name(&name),
            "README.md settings row names no setting: {line:?}"
        );
        assert!(!cells[3].is_empty(), "README.md: {name} has no meaning");
        rows.push((name, normalise_default(cells[2])));
    }
    assert!(!rows.is_empty(), "README.md's settings table has no rows");
    rows
}

#[test]
fn conffile_lists_every_setting_commented_out_with_its_default() {
    let table = table();
    let listed = conffile_settings();
    let problems = differences("sd-updater.default", &listed, &table)
        .into_iter()
        .filter(|p| !p.contains("which is not a setting"))
        .collect();
    assert_no_differences(problems);
}

#[test]
fn conffile_names_no_other_setting() {
    let table = table();
    let listed = conffile_settings();
    let problems = differences("sd-updater.default", &listed, &table)
        .into_iter()
        .filter(|p| p.contains("which is not a setting"))
        .collect();
    assert_no_differences(problems);
}

#[test]
fn man_page_lists_every_setting_with_its_default() {
    let table = table();
    let problems = differences("sd-updater(8) ENVIRONMENT", &man_page_settings(), &table)
        .into_iter()
        .filter(|p| !p.contains("which is not a setting"))
        .collect();
    assert_no_differences(problems);
}

#[test]
fn man_page_names_no_other_setting() {
    let table = table();
    let problems = differences("sd-updater(8) ENVIRONMENT", &man_page_settings(), &table)
        .into_iter()
        .filter(|p| p.contains("which is not a setting"))
        .collect();
    assert_no_differences(problems);
}

#[test]
fn readme_lists_every_setting_with_its_default() {
    let table = readme_table();
    let problems = differences("README.md", &readme_settings(), &table)
        .into_iter()
        .filter(|p| !p.contains("which is not a setting"))
        .collect();
    assert_no_differences(problems);
}

#[test]
fn readme_names_no_other_setting() {
    let table = readme_table();
    let problems = differences("README.md", &readme_settings(), &table)
        .into_iter()
        .filter(|p| p.contains("which is not a setting"))
        .collect();
    assert_no_differences(problems);
}

#[test]
fn check_config_prints_the_help_table_in_order() {
    // RUN_AS_USER=root: as root, --check-config wants an existing user.
    let out = run(&["--check-config"], &[("RUN_AS_USER", "root")]);
    let stdout = String::from_utf8(out.stdout).expect("--check-config is UTF-8");
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once('=').map_or(l, |(n, _)| n))
        .collect();
    let table = table();
    let help: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, help, "--check-config:\n{stdout}");
}

#[test]
fn uncommenting_the_conffile_changes_nothing() {
    // The commented values are the agent's own defaults, as it reads them.
    let mut env: Vec<(String, String)> = conffile_settings();
    env.retain(|(name, _)| name != "RUN_AS_USER");
    env.push(("RUN_AS_USER".into(), "root".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let defaults = run(&["--check-config"], &[("RUN_AS_USER", "root")]);
    let uncommented = run(&["--check-config"], &env);
    assert_eq!(
        String::from_utf8_lossy(&uncommented.stdout),
        String::from_utf8_lossy(&defaults.stdout)
    );
}
