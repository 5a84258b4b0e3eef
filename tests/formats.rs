//! Inventory shapes (names, entry objects, target groups), inventory
//! labels and their rules, grouping and ordering, conflicting duplicates,
//! the MAX_INVALID_PERCENT guard and the shipped examples, each through the
//! real binary with `--once`.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// One `--once` run against `body`, with `env` on top of the test
/// defaults; the output and the file it wrote, if any.
fn once(tag: &str, body: &Value, env: &[(&str, &str)]) -> (RunOutput, Option<Vec<u8>>) {
    let dir = TestDir::new(tag);
    let inv = Server::start("formats", Reply::json(serde_json::to_vec(body).unwrap()));
    let mut cmd = AgentCmd::new(&dir).inventory(&inv).arg("--once");
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let out = cmd.run(T);
    let file = fs::read(cmd.targets_file()).ok();
    (out, file)
}

/// As [`once`], and the run must succeed: the file it wrote.
fn written(tag: &str, body: &Value, env: &[(&str, &str)]) -> (RunOutput, Vec<u8>) {
    let (out, file) = once(tag, body, env);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let file = file.unwrap_or_else(|| panic!("no targets file\n{}", out.describe()));
    (out, file)
}

/// A group as read back: its targets, and its labels sorted by name.
type Read = (Vec<String>, Vec<(String, String)>);

/// Groups as (targets, labels sorted by name), read strictly.
fn groups(file: &[u8]) -> Vec<Read> {
    parse_groups(file)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(file)))
        .into_iter()
        .map(|g| {
            let mut labels = g.labels;
            labels.sort();
            (g.targets, labels)
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `extra` on top of the default labels, sorted by name.
fn labels(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = vec![
        ("__metrics_path__".into(), "/metrics".into()),
        ("environment".into(), "production".into()),
        ("job".into(), "sensors".into()),
    ];
    for (k, v) in extra {
        match all.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => all.push((k.to_string(), v.to_string())),
        }
    }
    all.sort();
    all
}

/// The dropped-entry log lines.
fn dropped(out: &RunOutput) -> Vec<&str> {
    out.stderr
        .lines()
        .filter(|l| l.contains("Dropping invalid sensor entry"))
        .collect()
}

fn assert_dropped(out: &RunOutput, entry: &str, reason: &str) {
    let line = format!("Dropping invalid sensor entry \"{entry}\": {reason}");
    assert!(
        out.stderr.contains(&line),
        "no {line:?} in the log\n{}",
        out.describe()
    );
}

#[test]
fn names_render_byte_identical_to_before() {
    let (_, file) = written(
        "fmt-names",
        &json!(["sensor_1", "sensor_0", "db-1:9200", "sensor_0"]),
        &[],
    );
    assert_eq!(
        String::from_utf8(file).unwrap(),
        render_default(&["db-1:9200", "sensor_0:9100", "sensor_1:9100"])
    );
}

#[test]
fn entries_mix_names_and_objects_and_port_overrides_metrics_port() {
    let (out, file) = written(
        "fmt-entries",
        &json!([
            "sensor_0",
            {"name": "sensor_7", "port": 9200, "labels": {"rack": "r12", "role": "edge"}},
            {"name": "sensor_8", "labels": {"role": "edge", "rack": "r12"}, "port": 9200},
            {"name": "sensor_9", "port": 9300, "comment": {"ignored": [1, 2]}},
            {"name": "sensor_10:9400"},
            "sensor_11:9500"
        ]),
        &[],
    );
    assert!(dropped(&out).is_empty(), "{}", out.describe());
    assert_eq!(
        groups(&file),
        vec![
            (
                strings(&[
                    "sensor_0:9100",
                    "sensor_10:9400",
                    "sensor_11:9500",
                    "sensor_9:9300"
                ]),
                labels(&[])
            ),
            (
                strings(&["sensor_7:9200", "sensor_8:9200"]),
                labels(&[("rack", "r12"), ("role", "edge")])
            ),
        ]
    );
    // The default labels keep their order; the entry's own follow by name.
    let text = String::from_utf8(file).unwrap();
    let order = [
        "\"__metrics_path__\"",
        "\"job\"",
        "\"environment\"",
        "\"rack\"",
        "\"role\"",
    ];
    let second = text.rfind("\"__metrics_path__\"").unwrap();
    let at: Vec<usize> = order
        .iter()
        .map(|k| second + text[second..].find(k).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn a_port_that_differs_from_the_name_drops_the_entry() {
    let (out, file) = written(
        "fmt-port-conflict",
        &json!([
            "sensor_0",
            "sensor_1",
            {"name": "sensor_2:9100", "port": 9200},
            {"name": "sensor_3:9200", "port": 9200},
            {"name": "sensor_4", "port": 0},
            {"name": "sensor_5", "port": "9200"},
            {"name": "sensor_6", "port": 65536},
            {"name": "bad name", "port": 9200},
            {"port": 9200},
            "sensor_7", "sensor_8", "sensor_9"
        ]),
        &[],
    );
    assert_dropped(
        &out,
        "sensor_2:9100",
        "\"port\" differs from the port in \"name\"",
    );
    for e in ["sensor_4", "sensor_5", "sensor_6"] {
        assert_dropped(&out, e, "\"port\" is not a whole number 1-65535");
    }
    assert_dropped(&out, "bad name", "whitespace");
    assert_dropped(&out, "(entry object)", "entry object without a \"name\"");
    assert_eq!(dropped(&out).len(), 6, "{}", out.describe());
    assert_eq!(
        parse_file_sd(&file).unwrap(),
        strings(&[
            "sensor_0:9100",
            "sensor_1:9100",
            "sensor_3:9200",
            "sensor_7:9100",
            "sensor_8:9100",
            "sensor_9:9100"
        ])
    );
}

#[test]
fn inventory_labels_override_target_labels_and_metrics_path() {
    let (_, file) = written(
        "fmt-precedence",
        &json!([
            "plain",
            {"name": "probe", "labels": {"__metrics_path__": "/probe", "job": "blackbox"}},
            {"name": "same", "labels": {"job": "sensors"}}
        ]),
        &[
            ("METRICS_PATH", "/m"),
            ("TARGET_LABELS", "job=sensors,site=eu"),
        ],
    );
    let g = groups(&file);
    let lab = |v: &[(&str, &str)]| {
        let mut l: Vec<(String, String)> = v
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        l.sort();
        l
    };
    assert_eq!(
        g,
        vec![
            (
                strings(&["plain:9100", "same:9100"]),
                lab(&[
                    ("__metrics_path__", "/m"),
                    ("job", "sensors"),
                    ("site", "eu")
                ])
            ),
            (
                strings(&["probe:9100"]),
                lab(&[
                    ("__metrics_path__", "/probe"),
                    ("job", "blackbox"),
                    ("site", "eu")
                ])
            ),
        ]
    );
}

#[test]
fn refused_labels_drop_their_entry_with_the_reason() {
    let long = "v".repeat(4097);
    let ok = "v".repeat(4096);
    let (out, file) = written(
        "fmt-bad-labels",
        &json!([
            {"name": "bad_name", "labels": {"1rack": "x"}},
            {"name": "dash", "labels": {"ra-ck": "x"}},
            {"name": "reserved", "labels": {"__x": "x"}},
            {"name": "address", "labels": {"__address__": "evil:1"}},
            {"name": "number", "labels": {"rack": 12}},
            {"name": "null", "labels": {"rack": null}},
            {"name": "too_long", "labels": {"rack": long}},
            {"name": "not_object", "labels": ["rack"]},
            {"name": "longest", "labels": {"rack": ok}},
            "good"
        ]),
        &[("MAX_INVALID_PERCENT", "100")],
    );
    let m = "label name does not match [a-zA-Z_][a-zA-Z0-9_]*";
    assert_dropped(&out, "bad_name (label 1rack)", m);
    assert_dropped(&out, "dash (label ra-ck)", m);
    assert_dropped(
        &out,
        "reserved (label __x)",
        "label names starting with __ are reserved",
    );
    assert_dropped(
        &out,
        "address (label __address__)",
        "__address__ cannot be a label (the entry's address is the target)",
    );
    assert_dropped(&out, "number (label rack)", "label value is not a string");
    assert_dropped(&out, "null (label rack)", "label value is not a string");
    assert_dropped(
        &out,
        "too_long (label rack)",
        "label value is too long (more than 4096 bytes)",
    );
    assert_dropped(&out, "not_object", "\"labels\" is not an object of strings");
    assert_eq!(dropped(&out).len(), 8, "{}", out.describe());
    assert_eq!(
        parse_file_sd(&file).unwrap(),
        strings(&["good:9100", "longest:9100"])
    );
    assert!(!String::from_utf8_lossy(&file).contains("evil"));
}

#[test]
fn reserved_labels_that_prometheus_reads_are_allowed() {
    let (out, file) = written(
        "fmt-reserved-ok",
        &json!([{"name": "s", "labels": {
            "__param_module": "http_2xx",
            "__meta_site": "eu",
            "__scheme__": "https",
            "__scrape_interval__": "1m",
            "__scrape_timeout__": "10s",
            "empty": ""
        }}]),
        &[],
    );
    assert!(dropped(&out).is_empty(), "{}", out.describe());
    assert_eq!(
        groups(&file),
        vec![(
            strings(&["s:9100"]),
            labels(&[
                ("__param_module", "http_2xx"),
                ("__meta_site", "eu"),
                ("__scheme__", "https"),
                ("__scrape_interval__", "1m"),
                ("__scrape_timeout__", "10s"),
                ("empty", "")
            ])
        )]
    );
}

#[test]
fn the_same_address_with_other_labels_keeps_the_first() {
    let (out, file) = written(
        "fmt-conflicts",
        &json!([
            {"name": "a", "labels": {"rack": "r1"}},
            "a",
            {"name": "A:9100", "labels": {"rack": "r2"}},
            {"name": "a", "port": 9100, "labels": {"rack": "r1"}},
            "b",
            {"name": "b", "labels": {"rack": "r1"}},
            "c",
            "c"
        ]),
        &[],
    );
    let conflict = "conflicting duplicate: the same address with other labels came first";
    assert_dropped(&out, "a:9100", conflict);
    assert_dropped(&out, "A:9100", conflict);
    assert_dropped(&out, "b:9100", conflict);
    assert_eq!(dropped(&out).len(), 3, "{}", out.describe());
    assert_eq!(
        groups(&file),
        vec![
            (strings(&["b:9100", "c:9100"]), labels(&[])),
            (strings(&["a:9100"]), labels(&[("rack", "r1")])),
        ]
    );
}

#[test]
fn any_order_of_the_inventory_renders_the_same_bytes() {
    let mut items: Vec<Value> = Vec::new();
    for i in 0..60 {
        let rack = format!("r{}", i % 3);
        items.push(match i % 4 {
            0 => json!(format!("plain-{i}")),
            1 => json!({"name": format!("s{i}"), "labels": {"rack": rack, "role": "edge"}}),
            2 => json!({"name": format!("s{i}"), "port": 9000 + i % 2, "labels": {"role": "edge", "rack": rack}}),
            _ => json!({"name": format!("S{i}:9100"), "labels": {"job": "other"}}),
        });
    }
    // Repeats with the same labels change nothing.
    items.push(items[1].clone());
    items.push(items[0].clone());
    let (_, want) = written("fmt-order-0", &Value::Array(items.clone()), &[]);
    assert!(groups(&want).len() >= 4);
    let mut rng = Rng::from_env("formats order");
    for round in 1..=3 {
        rng.shuffle(&mut items);
        let (_, got) = written(&format!("fmt-order-{round}"), &json!(items), &[]);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "round {round}"
        );
    }
}

#[test]
fn target_groups_are_read_and_targets_without_port_get_metrics_port() {
    let (out, file) = written(
        "fmt-groups",
        &json!([
            {"targets": ["h1:9100", "h2"], "labels": {"rack": "r1"}},
            {"targets": ["h3", "[2001:db8::1]:9300"], "labels": {"rack": "r2", "__scheme__": "https"}},
            {"targets": ["h4"]},
            {"targets": []},
            {"targets": ["h5"], "labels": {"__address__": "x"}, "extra": 1}
        ]),
        &[("METRICS_PORT", "9200"), ("MAX_INVALID_PERCENT", "100")],
    );
    assert_dropped(
        &out,
        "h5 (label __address__)",
        "__address__ cannot be a label (the entry's address is the target)",
    );
    assert_eq!(
        groups(&file),
        // Ordered by label set: "__scheme__" sorts before "environment".
        vec![
            (
                strings(&["[2001:db8::1]:9300", "h3:9200"]),
                labels(&[("__scheme__", "https"), ("rack", "r2")])
            ),
            (strings(&["h4:9200"]), labels(&[])),
            (strings(&["h1:9100", "h2:9200"]), labels(&[("rack", "r1")])),
        ]
    );
    assert!(
        out.stderr.contains("Successfully fetched 6 sensors"),
        "{}",
        out.describe()
    );
}

#[test]
fn target_groups_mixed_with_names_fail_and_keep_the_old_file() {
    let dir = TestDir::new("fmt-mixed");
    let inv = Server::start("good", Reply::list(&["sensor_0"]));
    let cmd = AgentCmd::new(&dir).inventory(&inv).arg("--once");
    assert_eq!(cmd.run(T).code(), Some(0));
    let before = fs::read(cmd.targets_file()).unwrap();
    inv.set("mixed", Reply::json(r#"[{"targets": ["a"]}, "sensor_1"]"#));
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("element 1 is a name or entry object"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), before);
}

/// Ten entries of which `bad` are invalid.
fn share(bad: usize) -> Value {
    let mut v: Vec<Value> = (0..10 - bad).map(|i| json!(format!("ok-{i}"))).collect();
    v.extend((0..bad).map(|i| json!({"name": format!("bad-{i}"), "labels": {"__x": "1"}})));
    Value::Array(v)
}

#[test]
fn too_many_invalid_entries_refuse_the_inventory_and_keep_the_old_file() {
    let dir = TestDir::new("fmt-guard");
    let inv = Server::start("good", Reply::list(&["sensor_0", "sensor_1"]));
    let cmd = AgentCmd::new(&dir).inventory(&inv).arg("--once");
    assert_eq!(cmd.run(T).code(), Some(0));
    let before = fs::read(cmd.targets_file()).unwrap();
    let st = stamp(&cmd.targets_file());
    inv.set("bad", Reply::json(serde_json::to_vec(&share(6)).unwrap()));
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(
            "refused inventory: 6 of 10 entries (60%) are invalid, more than MAX_INVALID_PERCENT=50"
        ),
        "{}",
        out.describe()
    );
    // The invalid entries are still listed one by one.
    assert_eq!(dropped(&out).len(), 6, "{}", out.describe());
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), before);
    assert_eq!(stamp(&cmd.targets_file()), st);
    // All invalid: both reasons, ALLOW_EMPTY's and the share's.
    inv.set(
        "all-bad",
        Reply::json(serde_json::to_vec(&share(10)).unwrap()),
    );
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(
            "inventory has no valid sensors (10 entries, 10 invalid); refused inventory: \
             10 of 10 entries (100%) are invalid, more than MAX_INVALID_PERCENT=50"
        ),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), before);
    // Even ALLOW_EMPTY does not let an all-invalid inventory through.
    inv.set(
        "all-bad",
        Reply::json(serde_json::to_vec(&share(10)).unwrap()),
    );
    let out = cmd.clone().env("ALLOW_EMPTY", "true").run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(out.stderr.contains("(100%)"), "{}", out.describe());
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), before);
    // A lower threshold refuses a smaller share.
    inv.set(
        "some-bad",
        Reply::json(serde_json::to_vec(&share(3)).unwrap()),
    );
    let out = cmd.clone().env("MAX_INVALID_PERCENT", "20").run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr
            .contains("3 of 10 entries (30%) are invalid, more than MAX_INVALID_PERCENT=20"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), before);
}

#[test]
fn below_the_threshold_or_at_100_invalid_entries_are_dropped_one_by_one() {
    // Exactly half is not more than 50%.
    let (out, file) = written("fmt-guard-half", &share(5), &[]);
    assert_eq!(dropped(&out).len(), 5, "{}", out.describe());
    assert_eq!(parse_file_sd(&file).unwrap().len(), 5);
    let (out, file) = written(
        "fmt-guard-100",
        &share(9),
        &[("MAX_INVALID_PERCENT", "100")],
    );
    assert_eq!(dropped(&out).len(), 9, "{}", out.describe());
    assert_eq!(parse_file_sd(&file).unwrap(), strings(&["ok-0:9100"]));
    // In a target group every target is an entry: a bad label makes the
    // whole group invalid, here 2 of 5.
    let (out, file) = written(
        "fmt-guard-groups",
        &json!([
            {"targets": ["a", "b", "c"]},
            {"targets": ["d", "e"], "labels": {"1x": "y"}}
        ]),
        &[],
    );
    assert_eq!(dropped(&out).len(), 2, "{}", out.describe());
    assert_eq!(parse_file_sd(&file).unwrap().len(), 3);
    let (out, _) = once(
        "fmt-guard-groups-over",
        &json!([
            {"targets": ["a", "b"]},
            {"targets": ["d", "e", "f"], "labels": {"1x": "y"}}
        ]),
        &[],
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("3 of 5 entries (60%)"),
        "{}",
        out.describe()
    );
}

#[test]
fn max_invalid_percent_is_checked_at_start() {
    let dir = TestDir::new("fmt-guard-config");
    for bad in ["101", "-1", "50%", "x"] {
        let out = AgentCmd::new(&dir)
            .env("MAX_INVALID_PERCENT", bad)
            .arg("--check-config")
            .run(T);
        assert_eq!(out.code(), Some(78), "{bad}: {}", out.describe());
        assert!(
            out.stderr.contains("MAX_INVALID_PERCENT"),
            "{}",
            out.describe()
        );
    }
}

/// Every shipped example renders with `--once` to what it should.
#[test]
fn shipped_examples_render() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples");
    let run = |name: &str| {
        let dir = TestDir::new(&format!("fmt-example-{name}"));
        let url = format!("file://{}", root.join(name).display());
        let cmd = AgentCmd::new(&dir).env("INVENTORY_URL", url).arg("--once");
        let out = cmd.run(T);
        assert_eq!(out.code(), Some(0), "{name}: {}", out.describe());
        assert!(dropped(&out).is_empty(), "{name}: {}", out.describe());
        fs::read(cmd.targets_file()).unwrap()
    };
    let names = run("inventory.json");
    let want: Vec<String> = {
        let mut v: Vec<String> = (0..100).map(|i| format!("sensor_{i}:9100")).collect();
        v.sort();
        v
    };
    assert_eq!(parse_targets(&names).unwrap(), want);
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(String::from_utf8(names).unwrap(), render_default(&refs));

    let entries = run("entries.json");
    let lab = |v: &[(&str, &str)]| {
        let mut l: Vec<(String, String)> = v
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        l.sort();
        l
    };
    assert_eq!(
        groups(&entries),
        vec![
            (strings(&["db-1:9187"]), labels(&[("job", "postgres")])),
            (strings(&["sensor_0:9100", "sensor_1:9200"]), labels(&[])),
            (
                strings(&["sensor_7:9200", "sensor_8:9200"]),
                labels(&[("rack", "r12"), ("role", "edge")])
            ),
            (
                strings(&["10.0.0.5:9100"]),
                lab(&[
                    ("__metrics_path__", "/probe"),
                    ("__param_module", "http_2xx"),
                    ("environment", "production"),
                    ("job", "sensors")
                ])
            ),
        ]
    );

    let groups_file = run("target-groups.json");
    assert_eq!(
        groups(&groups_file),
        vec![
            (
                strings(&["[2001:db8::1]:9300", "h3:9100"]),
                labels(&[("__scheme__", "https"), ("rack", "r2")])
            ),
            (strings(&["h4:9100"]), labels(&[])),
            (strings(&["h1:9100", "h2:9100"]), labels(&[("rack", "r1")])),
        ]
    );
}
