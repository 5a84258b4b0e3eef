//! The commands of README.md's quick starts, so that none of them rots: the
//! developer quick start's sample-inventory command is run with the
//! README's own variables and arguments, its test commands are the ones
//! `.ci/run` runs, and `tests/readme-commands.sh` (which the end-to-end
//! suite uses for the operator quick start) reads the same commands as this
//! file does.

mod common;

use common::{TestDir, BIN};
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of the fenced block right after `marker` in the README.
fn block_after(readme: &str, marker: &str) -> Vec<String> {
    let mut lines = readme.lines().skip_while(|l| l.trim() != marker).skip(1);
    let fence = lines.next().unwrap_or("");
    assert!(
        fence.starts_with("```"),
        "README.md: no fenced block right after {marker}"
    );
    let block: Vec<String> = lines
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect();
    assert!(!block.is_empty(), "README.md: empty block after {marker}");
    block
}

/// A quick start's commands, as `tests/readme-commands.sh` reads them: no
/// blank or comment lines, no trailing comment (a `#` after a blank).
fn commands(name: &str) -> Vec<String> {
    let marker = format!("<!-- readme-commands: {name} -->");
    block_after(&read("README.md"), &marker)
        .iter()
        .map(|line| {
            let cut = line
                .char_indices()
                .find(|&(i, c)| c == '#' && i > 0 && line[..i].ends_with([' ', '\t']))
                .map_or(line.len(), |(i, _)| i);
            line[..cut].trim().to_string()
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Splits a shell command line into words, honouring double and single
/// quotes and expanding `$PWD` (the repository root, where the README says
/// to run it). Anything else a shell would expand is refused.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (_, '$') => {
                let name: String = std::iter::from_fn(|| {
                    chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')
                })
                .collect();
                assert_eq!(name, "PWD", "README command uses ${name}: {line}");
                word.push_str(repo().to_str().expect("UTF-8 repository path"));
                in_word = true;
            }
            (None, ' ' | '\t') => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '\\' | '`' | ';' | '|' | '&' | '<' | '>' | '*' | '?') => {
                panic!("README command needs a real shell ({c:?}): {line}")
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(
        quote.is_none(),
        "unbalanced quote in README command: {line}"
    );
    if in_word {
        words.push(word);
    }
    words
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

#[test]
fn developer_quick_start_is_a_run_and_the_two_test_commands() {
    let cmds = commands("developer");
    let runs: Vec<&String> = cmds.iter().filter(|c| c.contains("cargo run")).collect();
    assert_eq!(runs.len(), 1, "one `cargo run` command: {cmds:?}");
    let tests: Vec<&String> = cmds
        .iter()
        .filter(|c| c.starts_with("cargo test"))
        .collect();
    assert_eq!(tests.len(), 2, "two `cargo test` commands: {cmds:?}");
    assert_eq!(
        cmds.len(),
        3,
        "a command here that no test runs: {cmds:?} (teach tests/readme.rs to run it)"
    );
}

#[test]
fn ci_runs_the_readme_test_command_verbatim() {
    let cmds = commands("developer");
    let root = cmds
        .iter()
        .find(|c| c.starts_with("cargo test") && c.ends_with(" -- --include-ignored"))
        .unwrap_or_else(|| panic!("no `cargo test ... -- --include-ignored`: {cmds:?}"));
    let user = cmds
        .iter()
        .find(|c| c.starts_with("cargo test") && !c.contains("--include-ignored"))
        .unwrap_or_else(|| panic!("no plain `cargo test`: {cmds:?}"));
    assert_eq!(
        format!("{user} -- --include-ignored"),
        *root,
        "the root variant is the plain command plus `-- --include-ignored`"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == root),
        ".ci/run does not run the README's test command {root:?} verbatim"
    );
}

#[test]
fn sample_inventory_command_runs_as_written() {
    let cmds = commands("developer");
    let line = cmds
        .iter()
        .find(|c| c.contains("cargo run"))
        .expect("a `cargo run` command");
    let words = words(line);
    let cargo = words
        .iter()
        .position(|w| w == "cargo")
        .unwrap_or_else(|| panic!("no `cargo` word: {line}"));
    let (env, rest) = words.split_at(cargo);
    assert!(
        env.iter().all(|w| is_assignment(w)),
        "only NAME=value before cargo: {line}"
    );
    assert_eq!(rest.get(1).map(String::as_str), Some("run"), "{line}");
    // Where the README says `cargo run`, the binary cargo has built runs:
    // with the arguments after `--`, and cargo's own flags refused.
    let args: Vec<&str> = match rest.iter().position(|w| w == "--") {
        Some(i) => {
            assert_eq!(i, 2, "cargo flags the test cannot honour: {line}");
            rest[i + 1..].iter().map(String::as_str).collect()
        }
        None => {
            assert_eq!(rest.len(), 2, "cargo flags the test cannot honour: {line}");
            Vec::new()
        }
    };
    assert_eq!(
        args,
        ["--once"],
        "the command should end on its own: {line}"
    );

    // TARGETS_FILE as written, moved into a fresh temp dir: the same file
    // name and missing directory, nothing left in /tmp.
    let dir = TestDir::new("readme");
    let mut target = None;
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(&args).current_dir(repo());
    for (name, value) in env.iter().filter_map(|w| w.split_once('=')) {
        let value = if name == "TARGETS_FILE" {
            let written = Path::new(value);
            let parent = written.parent().and_then(Path::file_name).expect("a dir");
            let path = dir.join(parent).join(written.file_name().expect("a file"));
            target = Some(path.clone());
            path.to_str().expect("UTF-8").to_string()
        } else {
            value.to_string()
        };
        cmd.env(name, value);
    }
    let target = target.expect("the command sets TARGETS_FILE");
    let out = cmd.output().expect("run sd-updater");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{line}\n{stderr}");

    let inventory: Vec<String> =
        serde_json::from_str(&read("packaging/examples/inventory.json")).expect("sample");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&target).expect("targets file"))
            .expect("targets file is JSON");
    let mut got: Vec<&str> = written[0]["targets"]
        .as_array()
        .expect("a target group")
        .iter()
        .map(|t| t.as_str().expect("a string"))
        .collect();
    let mut want: Vec<String> = inventory.iter().map(|s| format!("{s}:9100")).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "{stderr}");
    assert!(
        stderr.contains("Successfully updated targets file"),
        "{stderr}"
    );
}

#[test]
fn readme_commands_sh_prints_the_same_commands() {
    for name in ["operator", "developer"] {
        let out = Command::new("bash")
            .arg(repo().join("tests/readme-commands.sh"))
            .arg(name)
            .output()
            .expect("run tests/readme-commands.sh");
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        let printed: Vec<String> = String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(printed, commands(name), "{name}");
    }
}

#[test]
fn operator_quick_start_installs_configures_starts_and_checks() {
    let cmds = commands("operator");
    for want in [
        "apt install sd-updater",
        "systemctl enable --now sd-updater",
        "systemctl status sd-updater",
    ] {
        assert!(cmds.iter().any(|c| c == want), "no `{want}`: {cmds:?}");
    }
    assert!(
        cmds.iter()
            .any(|c| c.contains("INVENTORY_URL=") && c.contains("/etc/default/sd-updater")),
        "INVENTORY_URL is not set in /etc/default/sd-updater: {cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| c.starts_with("journalctl -u sd-updater")),
        "{cmds:?}"
    );
}

#[test]
fn every_quick_start_block_is_marked() {
    // A code block in a quick start without a marker would be run by nothing.
    let readme = read("README.md");
    let mut section = "";
    let mut previous = "";
    let mut in_block = false;
    for line in readme.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title;
        }
        if line.starts_with("```") {
            if !in_block && section.ends_with("quick start") {
                let marked = previous.starts_with("<!-- readme-commands: ")
                    || previous.starts_with("<!-- readme-snippet: ");
                assert!(
                    marked,
                    "README.md, {section}: a code block without a marker"
                );
            }
            in_block = !in_block;
        }
        previous = line;
    }
}

/// A YAML line without its comment and trailing blanks.
fn yaml_code(line: &str) -> &str {
    line.find(" #").map_or(line, |i| &line[..i]).trim_end()
}

/// Whether an example line is the snippet's line, where a `*` in the
/// snippet (a file_sd glob) stands for any file name.
fn same_yaml(example: &str, snippet: &str) -> bool {
    let (example, snippet) = (yaml_code(example), yaml_code(snippet));
    match snippet.split_once('*') {
        None => example == snippet,
        Some((head, tail)) => {
            example == snippet
                || example.len() >= head.len() + tail.len()
                    && example.starts_with(head)
                    && example.ends_with(tail)
                    && !example[head.len()..example.len() - tail.len()].contains('/')
        }
    }
}

#[test]
fn prometheus_snippet_is_the_shipped_example() {
    let snippet = block_after(&read("README.md"), "<!-- readme-snippet: prometheus -->");
    let example = read("packaging/prometheus-example.yml");
    let example: Vec<&str> = example.lines().collect();
    assert!(
        example
            .windows(snippet.len())
            .any(|w| w.iter().zip(&snippet).all(|(e, s)| same_yaml(e, s))),
        "README's file_sd_configs snippet is not in packaging/prometheus-example.yml:\n{}",
        snippet.join("\n")
    );
}

/// The README is a front page: the reference lives in the man page and docs/.
#[test]
fn readme_stays_a_front_page() {
    let size = read("README.md").len();
    assert!(size <= 13 * 1024, "README.md is {size} bytes, over 13 KiB");
}
