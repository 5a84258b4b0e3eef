//! Fuzz target for the inventory parser, the entry validator and the
//! renderer: arbitrary bytes as a response body, and the same bytes as one
//! entry. Checks the properties of tests/prop.rs on every input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sd_updater::model::address::target_address;
use sd_updater::model::inventory;
use sd_updater::model::targets::{parse_targets, render};

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

fuzz_target!(|data: &[u8]| {
    let mut entries: Vec<String> = Vec::new();
    let shape = inventory::for_each_entry(data, &mut |e| {
        entries.push(e.to_string());
        Ok(())
    });
    let parsed = inventory::parse(data, 9100);
    assert_eq!(shape.is_ok(), parsed.is_ok());
    if let Ok(v) = parsed {
        let mut shuffled = entries.clone();
        shuffled.reverse();
        if let Some(first) = entries.first() {
            shuffled.push(first.clone());
            // A case variant of an entry is the same target: one more
            // spelling never adds one.
            let mut variants = entries.clone();
            variants.push(first.to_ascii_uppercase());
            let n = inventory::validate(variants.iter().map(String::as_str), 9100)
                .targets
                .len();
            assert_eq!(n, v.targets.len(), "a case variant added a target");
        }
        assert_eq!(v.sensor_count, entries.len());
        let texts = v.targets.to_strings();
        assert!(texts.windows(2).all(|w| w[0] < w[1]));
        assert!(texts.windows(2).all(|w| !w[0].eq_ignore_ascii_case(&w[1])));
        for t in &texts {
            check_target(t);
        }
        let labels = vec![
            ("__metrics_path__".to_string(), "/metrics".to_string()),
            ("job".to_string(), "sensors".to_string()),
        ];
        let out = render(&v.targets.into_groups(&labels)).expect("render into memory");
        assert_eq!(parse_targets(&out).as_ref(), Some(&texts));
        let w = inventory::validate(shuffled.iter().map(String::as_str), 9100);
        let out2 = render(&w.targets.into_groups(&labels)).expect("render into memory");
        assert_eq!(out, out2, "order, duplicates or case changed the output");
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = target_address(s, 9100) {
            check_target(&t);
            assert!(s.is_ascii() && !s.contains(['/', ' ', '\n', '\0']));
        }
        let e = inventory::escape(s);
        assert!(e.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
});
