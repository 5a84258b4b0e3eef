//! Fuzz target for the inventory parser, the entry validator and the
//! renderer: arbitrary bytes as a response body, and the same bytes as one
//! entry. Checks the properties of tests/prop.rs on every input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sd_updater::inventory;
use sd_updater::sensor::target_address;
use sd_updater::targets::{parse_targets, render, TargetGroup};

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
    if let Ok(entries) = inventory::parse(data) {
        let mut shuffled = entries.clone();
        shuffled.reverse();
        if let Some(first) = entries.first() {
            shuffled.push(first.clone());
        }
        let v = inventory::validate(entries, 9100);
        assert!(v.targets.windows(2).all(|w| w[0] < w[1]));
        for t in &v.targets {
            check_target(t);
        }
        let labels = vec![
            ("__metrics_path__".to_string(), "/metrics".to_string()),
            ("job".to_string(), "sensors".to_string()),
        ];
        let out = render(&[TargetGroup {
            targets: v.targets.clone(),
            labels: labels.clone(),
        }]);
        assert_eq!(parse_targets(&out).as_ref(), Some(&v.targets));
        let w = inventory::validate(shuffled, 9100);
        let out2 = render(&[TargetGroup {
            targets: w.targets,
            labels,
        }]);
        assert_eq!(out, out2, "order or duplicates changed the output");
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
