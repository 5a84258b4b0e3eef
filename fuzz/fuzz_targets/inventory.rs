//! Fuzz target for the inventory parser (names, entry objects and target
//! groups), the entry validator and the renderer: arbitrary bytes as a
//! response body, and the same bytes as one entry. Checks the properties
//! of tests/prop.rs on every input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sd_updater::model::address::{self, target_address};
use sd_updater::model::inventory;
use sd_updater::model::labels;
use sd_updater::model::targets::{parse_targets, render};
use serde_json::Value;

fn check_target(t: &str) {
    assert!(!t.contains('/'), "{t:?}");
    assert!(t.bytes().all(|b| b.is_ascii_graphic()), "{t:?}");
    let (host, port) = match t.strip_prefix('[') {
        Some(rest) => {
            let (inner, after) = rest.split_once(']').expect("closing bracket");
            inner
                .parse::<std::net::Ipv6Addr>()
                .expect("IPv6 in brackets");
            (inner, after.strip_prefix(':').expect(":port"))
        }
        None => {
            let (h, p) = t.rsplit_once(':').expect(":port");
            assert!(!h.contains(':'), "bare IPv6 {t:?}");
            (h, p)
        }
    };
    assert!(!host.is_empty());
    let n: u32 = port.parse().expect("numeric port");
    assert!((1..=65535).contains(&n) && n.to_string() == port, "{t:?}");
}

/// A rendered document is strict file_sd: only `targets` and `labels`,
/// valid targets, label names Prometheus accepts and none refused.
fn check_document(out: &[u8]) {
    let v: Value = serde_json::from_slice(out).expect("rendered JSON");
    for g in v.as_array().expect("a list") {
        let g = g.as_object().expect("a group object");
        assert!(g.keys().all(|k| k == "targets" || k == "labels"), "{g:?}");
        for t in g["targets"].as_array().expect("targets") {
            check_target(t.as_str().expect("a target string"));
        }
        for (k, v) in g["labels"].as_object().expect("labels") {
            assert!(labels::is_label_name(k) && k != "__address__", "{k:?}");
            let v = v.as_str().expect("a label string");
            assert!(labels::check(k, v).is_ok(), "{k:?}={v:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let defaults = vec![
        ("__metrics_path__".to_string(), "/metrics".to_string()),
        ("job".to_string(), "sensors".to_string()),
    ];
    // The quick reader of plain name arrays agrees with the full one, also
    // when it reads in parts (cut near the middle, after the first comma,
    // or at both).
    let first_comma = data.iter().position(|&c| c == b',').map_or(0, |i| i + 1);
    for budget in [usize::MAX, 100] {
        let want = inventory::parse_limited_slow(data, 9100, defaults.clone(), budget);
        assert_eq!(
            inventory::parse_limited(data, 9100, defaults.clone(), budget),
            want
        );
        let middle = data.len() / 2;
        for cuts in [&[middle][..], &[first_comma], &[first_comma, middle]] {
            assert_eq!(
                inventory::parse_limited_split(data, 9100, defaults.clone(), budget, cuts),
                want
            );
        }
    }
    if let Ok(v) = inventory::parse_with_defaults(data, 9100, defaults.clone()) {
        assert!(v.invalid_count <= v.sensor_count);
        assert!(v.targets.len() <= v.sensor_count);
        assert_eq!(
            v.rejected.len(),
            v.invalid_count.min(inventory::MAX_EXAMPLES)
        );
        let texts = v.targets.to_strings();
        for t in &texts {
            check_target(t);
        }
        // Case variants and conflicting duplicates never reach the file.
        let mut folded: Vec<String> = texts.iter().map(|t| t.to_ascii_lowercase()).collect();
        folded.sort();
        let n = folded.len();
        folded.dedup();
        assert_eq!(n, folded.len(), "one address in two groups: {texts:?}");
        let groups = v.targets.into_groups(&defaults);
        let out = render(&groups).expect("render into memory");
        // The writer's renderer makes the same bytes as serde_json's.
        let mut direct = Vec::new();
        sd_updater::output::render::render_to(&mut direct, &groups).expect("direct render");
        assert_eq!(direct, out, "the two renderers differ");
        check_document(&out);
        let mut back = parse_targets(&out).expect("reads back");
        back.sort();
        let mut want = texts.clone();
        want.sort();
        assert_eq!(back, want);
    }
    // A list of names: any order and repeats give the same output.
    if let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(data) {
        let names: Option<Vec<String>> = items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect();
        if let Some(entries) = names {
            let v = inventory::parse(data, 9100).expect("a list of names parses");
            assert_eq!(v.sensor_count, entries.len());
            let texts = v.targets.to_strings();
            assert!(texts.windows(2).all(|w| w[0] < w[1]));
            assert!(texts.windows(2).all(|w| !w[0].eq_ignore_ascii_case(&w[1])));
            let mut shuffled = entries.clone();
            shuffled.reverse();
            if let Some(first) = entries.first() {
                shuffled.push(first.clone());
            }
            let out = render(&v.targets.into_groups(&defaults)).expect("render");
            let w = inventory::validate(shuffled.iter().map(String::as_str), 9100);
            let out2 = render(&w.targets.into_groups(&defaults)).expect("render");
            assert_eq!(out, out2, "order, duplicates or case changed the output");
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        // The one-pass name check agrees with the general validator.
        assert_eq!(
            address::parse(s, 9100).map(|t| t.to_string()),
            address::parse_slow(s, 9100).map(|t| t.to_string()),
        );
        if let Ok(t) = target_address(s, 9100) {
            check_target(&t);
            assert!(s.is_ascii() && !s.contains(['/', ' ', '\n', '\0']));
        }
        let e = inventory::escape(s);
        assert!(e.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
});
