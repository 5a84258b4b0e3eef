//! Property-based tests over the inventory parser, the
//! entry validator and the renderer, driven through the library crate.
//!
//! The number of cases per property is `PROPTEST_CASES` (256 by default;
//! the long run outside CI uses a million). Failures print the minimal
//! input; nothing is written to the source tree.

use std::net::Ipv6Addr;

use proptest::prelude::*;
use proptest::test_runner::Config;
use sd_updater::model::address::{parse, target_address};
use sd_updater::model::inventory::{self, escape};
use sd_updater::model::targets::{parse_targets, render, Entries};
use sd_updater::sys::logging::one_line;
use serde_json::Value;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,8}[a-zA-Z0-9_])?"
}

fn hostname() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|v| v.join("."))
}

fn ipv4() -> impl Strategy<Value = String> {
    any::<[u8; 4]>().prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
}

fn ipv6() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|n| Ipv6Addr::from(n).to_string()),
        any::<[u16; 2]>().prop_map(|g| format!("2001:db8::{:x}:{:x}", g[0], g[1])),
        Just("::1".to_string()),
        Just("::".to_string()),
        any::<[u8; 4]>().prop_map(|b| format!("::ffff:{}.{}.{}.{}", b[0], b[1], b[2], b[3])),
        // Upper case and uncompressed forms.
        any::<[u16; 8]>().prop_map(|g| g
            .iter()
            .map(|x| format!("{x:X}"))
            .collect::<Vec<_>>()
            .join(":")),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        (1u32..=65535).prop_map(|p| p.to_string()),
        (0u32..=99999).prop_map(|p| p.to_string()),
        "[0-9]{0,7}",
        "[+-]?[0-9a-z]{0,4}",
    ]
}

/// Plausible entries, with and without ports, mixed with arbitrary text
/// and near misses, so that both the accepting and the refusing paths are
/// exercised.
fn entry() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => hostname(),
        2 => ipv4(),
        2 => ipv6(),
        1 => ipv6().prop_map(|h| format!("[{h}]")),
        2 => (hostname(), port()).prop_map(|(h, p)| format!("{h}:{p}")),
        1 => (ipv4(), port()).prop_map(|(h, p)| format!("{h}:{p}")),
        2 => (ipv6(), port()).prop_map(|(h, p)| format!("[{h}]:{p}")),
        2 => any::<String>(),
        1 => "[ -~]{0,40}",
        1 => (hostname(), "[\\x00-\\x1f\\x7f /\"'\\\\%@\\[\\]]", hostname())
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        1 => "[a-z]{64,70}",
        1 => prop::collection::vec("[a-z]{60,63}", 4..6).prop_map(|v| v.join(".")),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        entry().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------
// An independent check of what Prometheus accepts as a target address
// ---------------------------------------------------------------------------

/// `host:port` as Prometheus takes it in `__address__`: no `/`, IPv6 in
/// brackets, a decimal port 1-65535 written canonically, a host of
/// printable ASCII without spaces, quotes or further colons.
fn prometheus_accepts(t: &str) -> Result<(), String> {
    if t.contains('/') {
        return Err("contains /".into());
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("not printable ASCII".into());
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or("unclosed [")?;
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{inner:?} in brackets is not IPv6"))?;
        (inner, after.strip_prefix(':').ok_or("no :port after ]")?)
    } else {
        let (h, p) = t.rsplit_once(':').ok_or("no port")?;
        if h.contains(':') {
            return Err("unbracketed IPv6 or stray colon".into());
        }
        if h.contains(['"', '\'', '\\', '[', ']', '%', '@', ',']) {
            return Err("odd characters in host".into());
        }
        (h, p)
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    let n: u32 = port.parse().map_err(|_| format!("port {port:?}"))?;
    if !(1..=65535).contains(&n) || n.to_string() != port {
        return Err(format!("port {port:?} out of range or not canonical"));
    }
    Ok(())
}

fn valid_label_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Parses a rendered document as Prometheus' file_sd would, strictly.
type Group = (Vec<String>, Vec<(String, String)>);

fn parse_file_sd(content: &[u8]) -> Result<Vec<Group>, String> {
    let v: Value = serde_json::from_slice(content).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for g in v.as_array().ok_or("not a list")? {
        let g = g.as_object().ok_or("group not an object")?;
        let targets = g
            .get("targets")
            .and_then(Value::as_array)
            .ok_or("no targets")?
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or("target not a string"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut labels = Vec::new();
        for (k, v) in g
            .get("labels")
            .and_then(Value::as_object)
            .ok_or("no labels")?
        {
            if !valid_label_name(k) {
                return Err(format!("invalid label name {k:?}"));
            }
            labels.push((k.clone(), v.as_str().ok_or("label not a string")?.into()));
        }
        out.push((targets, labels));
    }
    Ok(out)
}

fn labels() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,12}", any::<String>(), 0..5).prop_map(
        |m| {
            let mut v = vec![("__metrics_path__".to_string(), "/metrics".to_string())];
            v.extend(m.into_iter().filter(|(k, _)| k != "__metrics_path__"));
            v
        },
    )
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes never make the parser panic.
    #[test]
    fn parse_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = inventory::parse(&body, 9100);
    }

    /// Arbitrary JSON values: accepted exactly when they are an array of
    /// one shape (strings and entry objects, or target groups), and a list
    /// of strings gives the targets of its valid names.
    #[test]
    fn parse_accepts_exactly_inventories(v in json_value(), pretty in any::<bool>()) {
        let body = if pretty {
            serde_json::to_vec_pretty(&v).unwrap()
        } else {
            serde_json::to_vec(&v).unwrap()
        };
        // Per element: Some(true) a target group, Some(false) a name or
        // entry object, None anything else.
        let kinds: Option<Vec<Option<bool>>> = v.as_array().map(|items| {
            items
                .iter()
                .map(|i| match i {
                    Value::String(_) => Some(false),
                    Value::Object(o) => Some(o.contains_key("targets")),
                    _ => None,
                })
                .collect()
        });
        let expected = kinds.is_some_and(|k| {
            k.iter().all(|x| *x == Some(false)) || k.iter().all(|x| *x == Some(true))
        });
        let parsed = inventory::parse(&body, 9100);
        prop_assert_eq!(parsed.is_ok(), expected, "{}", String::from_utf8_lossy(&body));
        let strings: Option<Vec<&str>> = v
            .as_array()
            .and_then(|items| items.iter().map(Value::as_str).collect());
        if let (Ok(got), Some(names)) = (parsed, strings) {
            let want = inventory::validate(names.iter().copied(), 9100);
            prop_assert_eq!(got, want);
        }
    }

    /// What the validator notes about an accepted host is what the host
    /// holds: upper case as noted, and nothing a JSON string must escape.
    #[test]
    fn accepted_hosts_are_as_noted(e in entry(), default_port in 1u16..) {
        if let Ok(t) = parse(&e, default_port) {
            let host = t.host().as_bytes();
            prop_assert_eq!(t.has_upper(), host.iter().any(u8::is_ascii_uppercase), "{:?}", e);
            prop_assert!(!host.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\'), "{:?}", e);
        }
    }

    /// Arbitrary strings never make the validator panic, and whatever it
    /// accepts is a target Prometheus accepts.
    #[test]
    fn accepted_entries_are_prometheus_targets(e in entry(), default_port in 1u16..) {
        if let Ok(t) = target_address(&e, default_port) {
            if let Err(why) = prometheus_accepts(&t) {
                prop_assert!(false, "{:?} became {:?}: {}", e, t, why);
            }
            // IPv6 is always bracketed; the default port applies only when
            // the entry names none.
            if e.matches(':').count() >= 2 && !e.starts_with('[') {
                prop_assert!(t.starts_with('['), "{:?} -> {:?}", e, t);
                prop_assert!(t.ends_with(&format!("]:{default_port}")), "{:?} -> {:?}", e, t);
            }
            if e.contains(['/', ' ', '\n', '\0']) || !e.is_ascii() {
                prop_assert!(false, "{:?} should have been refused", e);
            }
        }
    }

    /// Arbitrary unicode strings, the raw way.
    #[test]
    fn validator_never_panics(e in any::<String>(), p in any::<u16>()) {
        let _ = target_address(&e, p.max(1));
    }

    /// validate(): sorted, unique, every input either accepted or
    /// rejected, and accepted ones are what target_address says, one per
    /// host and port whatever the letter case (the least in byte order).
    #[test]
    fn validate_partitions_and_sorts(entries in prop::collection::vec(entry(), 0..40)) {
        let v = inventory::validate(entries.iter().map(String::as_str), 9100);
        prop_assert_eq!(v.sensor_count, entries.len());
        let accepted: Vec<String> = entries
            .iter()
            .filter_map(|e| target_address(e, 9100).ok())
            .collect();
        prop_assert_eq!(accepted.len() + v.invalid_count, entries.len());
        prop_assert_eq!(v.rejected.len(), v.invalid_count.min(inventory::MAX_EXAMPLES));
        let want = fold_model(accepted);
        let got = v.targets.to_strings();
        prop_assert_eq!(&got, &want);
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    /// Names that differ only in letter case are one target: any mix of
    /// case variants, in any order, gives the least of them in byte order.
    #[test]
    fn case_variants_dedupe_to_one(
        hosts in prop::collection::vec(hostname(), 1..12),
        flips in prop::collection::vec(any::<u64>(), 1..40),
        port in prop::option::of(1u16..),
    ) {
        let with_port = |h: String| match port {
            Some(p) => format!("{h}:{p}"),
            None => h,
        };
        let mut entries = Vec::new();
        for (i, f) in flips.iter().enumerate() {
            let h = &hosts[i % hosts.len()];
            let variant: String = h
                .chars()
                .enumerate()
                .map(|(k, c)| if f >> (k % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            entries.push(with_port(variant));
        }
        let v = inventory::validate(entries.iter().map(String::as_str), 9100);
        let valid: Vec<String> = entries
            .iter()
            .filter_map(|e| target_address(e, 9100).ok())
            .collect();
        let mut classes: Vec<String> = valid.iter().map(|e| e.to_ascii_lowercase()).collect();
        classes.sort();
        classes.dedup();
        prop_assert_eq!(v.targets.len(), classes.len());
        prop_assert_eq!(v.invalid_count, entries.len() - valid.len());
        prop_assert_eq!(v.sensor_count, entries.len());
        prop_assert_eq!(v.targets.to_strings(), fold_model(valid));
        let mut reversed = entries.clone();
        reversed.reverse();
        let w = inventory::validate(reversed.iter().map(String::as_str), 9100);
        prop_assert_eq!(w.targets, v.targets);
    }

    /// What the C resolver reads as an IPv4 address is exactly what
    /// `inet_aton` reads, and only canonical dotted quads are accepted.
    #[test]
    fn inet_aton_agrees_with_glibc(s in "(0[xX][0-9a-fA-F]{0,9}|[0-9]{1,11})(\\.(0[xX][0-9a-fA-F]{0,3}|[0-9]{1,4})){0,4}") {
        let ours = sd_updater::model::address::inet_aton(&s).map(u32::from);
        prop_assert_eq!(ours, libc_inet_aton(&s), "{}", s);
        if ours.is_some() {
            let accepted = target_address(&s, 9100).is_ok();
            let canonical = s
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_unspecified() && !ip.is_broadcast());
            prop_assert_eq!(accepted, canonical, "{}", s);
        }
    }

    /// Rendered output parses back as a file_sd list with valid label
    /// names, the same targets and the same labels in order.
    #[test]
    fn rendered_output_parses_back(
        entries in prop::collection::vec(entry(), 0..40),
        labels in labels(),
    ) {
        let list = inventory::validate(entries.iter().map(String::as_str), 9100).targets;
        let targets = list.to_strings();
        let out = render(&list.into_groups(&labels)).unwrap();
        prop_assert!(out.ends_with(b"\n"));
        let groups = parse_file_sd(&out).map_err(|e| TestCaseError::fail(format!(
            "{e}: {}", String::from_utf8_lossy(&out))))?;
        prop_assert_eq!(groups.len(), 1);
        prop_assert_eq!(&groups[0].0, &targets);
        // serde_json's map sorts keys: compare as sets, and the order in
        // the text.
        let mut got = groups[0].1.clone();
        got.sort();
        let mut want = labels.clone();
        want.sort();
        prop_assert_eq!(got, want);
        let text = String::from_utf8_lossy(&out);
        let from = text.find("\"labels\": {").unwrap_or(0);
        let positions: Vec<usize> = labels
            .iter()
            .map(|(k, _)| text[from..].find(&format!("\"{k}\": ")).unwrap_or(usize::MAX))
            .collect();
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "label order: {}", text);
        prop_assert_eq!(parse_targets(&out), Some(targets.clone()));
        // The same bytes as the former renderer: serde_json over strings.
        let mut old = serde_json::to_vec_pretty(&[OldGroup { targets: &targets, labels: &labels }]).unwrap();
        old.push(b'\n');
        prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&old));
    }

    /// The same inventory in any order, with any entries repeated, renders
    /// to the same bytes.
    #[test]
    fn output_ignores_order_and_duplicates(
        entries in prop::collection::vec(entry(), 0..40),
        perm_seed in any::<u64>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let base = render_of(&entries);
        let mut other = entries.clone();
        if !entries.is_empty() {
            for d in &dups {
                other.push(entries[d.index(entries.len())].clone());
            }
        }
        shuffle(&mut other, perm_seed);
        prop_assert_eq!(render_of(&other), base);
    }

    /// Any permutation of an inventory (no entry added or dropped) renders
    /// the same bytes, also past the sizes where sorting switches method.
    #[test]
    fn any_permutation_renders_the_same(
        entries in prop::collection::vec(entry(), 0..64),
        perm_seed in any::<u64>(),
    ) {
        let mut other = entries.clone();
        shuffle(&mut other, perm_seed);
        prop_assert_eq!(render_of(&other), render_of(&entries));
    }

    /// What goes into a log line is one line of printable ASCII, whatever
    /// the entry held (newlines, ANSI escapes, NUL, unicode).
    #[test]
    fn escaped_entries_are_one_printable_line(s in any::<String>(), c in "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{2029}]") {
        let s = format!("{s}{c}{s}");
        let e = escape(&s);
        prop_assert!(e.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{:?}", e);
        let l = one_line(&format!("Dropping invalid sensor entry \"{e}\" / raw {s}"));
        prop_assert!(!l.chars().any(char::is_control), "{:?}", l);
    }
}

/// One target group as the renderer wrote it before targets were held
/// compactly: serde_json, pretty, over a list of strings.
struct OldGroup<'a> {
    targets: &'a [String],
    labels: &'a [(String, String)],
}

impl serde::Serialize for OldGroup<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeStruct};
        struct Labels<'a>(&'a [(String, String)]);
        impl serde::Serialize for Labels<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let mut st = s.serialize_struct("GroupOut", 2)?;
        st.serialize_field("targets", self.targets)?;
        st.serialize_field("labels", &Labels(self.labels))?;
        st.end()
    }
}

/// The rendered file for `entries`, with fixed labels.
fn render_of(entries: &[String]) -> Vec<u8> {
    let t: Entries = inventory::validate(entries.iter().map(String::as_str), 9100).targets;
    render(&t.into_groups(&[
        ("__metrics_path__".into(), "/metrics".into()),
        ("job".into(), "sensors".into()),
    ]))
    .unwrap()
}

/// Fisher-Yates with a splitmix64 stream.
fn shuffle(v: &mut [String], seed: u64) {
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

/// Targets as the agent must keep them: one per lower-case form, the
/// least in byte order, all in byte order.
fn fold_model(mut targets: Vec<String>) -> Vec<String> {
    targets.sort();
    let mut seen = std::collections::HashSet::new();
    targets.retain(|t| seen.insert(t.to_ascii_lowercase()));
    targets
}

extern "C" {
    // The libc crate does not bind it; glibc exports it.
    fn inet_aton(cp: *const nix::libc::c_char, inp: *mut nix::libc::in_addr) -> nix::libc::c_int;
}

/// glibc's own `inet_aton`, as the C resolver uses it.
fn libc_inet_aton(s: &str) -> Option<u32> {
    let c = std::ffi::CString::new(s).ok()?;
    let mut addr = nix::libc::in_addr { s_addr: 0 };
    // SAFETY: `c` is a NUL-terminated string and `addr` a valid in_addr,
    // both alive for the call; inet_aton writes only `addr`.
    let ok = unsafe { inet_aton(c.as_ptr(), &mut addr) };
    (ok != 0).then(|| u32::from_be(addr.s_addr))
}

/// Known bad shapes stay refused: a sanity anchor for the
/// generated cases above.
#[test]
fn known_bad_shapes_are_refused() {
    for body in [
        &b"{}"[..],
        b"[1,2]",
        b"<html></html>",
        b"[\"a\"",
        b"",
        b"null",
        b"\"a\"",
        b"[[\"a\"]]",
    ] {
        assert!(inventory::parse(body, 9100).is_err(), "{body:?}");
    }
    for t in ["[::1]:9100", "sensor_0:9100", "10.0.0.1:1"] {
        prometheus_accepts(t).unwrap();
    }
    for t in [
        "::1:9100", "a/b:1", "a:0", "a:65536", "[::1]", "a:09100", "[x]:1",
    ] {
        assert!(prometheus_accepts(t).is_err(), "{t}");
    }
}

// ---------------------------------------------------------------------------
// Entries with labels and target groups
// ---------------------------------------------------------------------------

fn defaults() -> Vec<(String, String)> {
    vec![
        ("__metrics_path__".to_string(), "/metrics".to_string()),
        ("job".to_string(), "sensors".to_string()),
    ]
}

/// Label names: valid ones, reserved ones allowed or not, and bad ones.
fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z_][a-z0-9_]{0,6}",
        1 => Just("job".to_string()),
        1 => Just("__metrics_path__".to_string()),
        1 => Just("__param_module".to_string()),
        1 => Just("__meta_x".to_string()),
        1 => Just("__scheme__".to_string()),
        1 => Just("__x".to_string()),
        1 => Just("__address__".to_string()),
        1 => "[0-9-][a-z]{0,3}",
    ]
}

fn label_set() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::btree_map(
        label_name(),
        prop_oneof![
            8 => any::<String>().prop_map(Value::String),
            1 => any::<i64>().prop_map(Value::from),
        ],
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// An inventory of names and entry objects whose labels are those of its
/// name (one of a small pool), so that no two entries conflict and any
/// order must give the same output. Some entries are invalid.
fn labelled_inventory() -> impl Strategy<Value = Vec<Value>> {
    (
        prop::collection::vec(label_set(), 4),
        prop::collection::vec((0usize..24, prop::option::of(1u16..4), 0u8..3), 0..40),
    )
        .prop_map(|(sets, picks)| {
            picks
                .into_iter()
                .map(|(n, port, form)| {
                    let name = if n == 23 {
                        "bad name".to_string()
                    } else {
                        format!("h{n}")
                    };
                    let labels = sets[n % 4].clone();
                    let port = port.map(|p| 9000 + p);
                    match (form, port) {
                        (0, None) if labels.is_empty() => Value::String(name),
                        (1, Some(p)) => serde_json::json!({
                            "name": format!("{name}:{p}"), "labels": labels, "x": [1]
                        }),
                        (_, Some(p)) => serde_json::json!({
                            "name": name, "port": p, "labels": labels
                        }),
                        _ => serde_json::json!({"name": name, "labels": labels}),
                    }
                })
                .collect()
        })
}

/// Target groups, some with bad labels or targets.
fn group_inventory() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(
        (
            prop::collection::vec(entry(), 0..6),
            prop::option::of(label_set()),
        ),
        0..6,
    )
    .prop_map(|groups| {
        groups
            .into_iter()
            .map(|(targets, labels)| match labels {
                Some(l) => serde_json::json!({"targets": targets, "labels": l}),
                None => serde_json::json!({"targets": targets}),
            })
            .collect()
    })
}

fn render_inventory(items: &[Value]) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(items).unwrap();
    let v = inventory::parse_with_defaults(&body, 9100, defaults()).map_err(|e| e.0)?;
    Ok(render(&v.targets.into_groups(&defaults())).unwrap())
}

/// A rendered document read as strictly as Prometheus' file_sd: a list
/// of objects with exactly `targets` and `labels`, targets non-empty
/// strings that Prometheus accepts, label names valid, values strings.
fn check_strict_file_sd(content: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(content).map_err(|e| e.to_string())?;
    for g in v.as_array().ok_or("not a list")? {
        let g = g.as_object().ok_or("group not an object")?;
        let mut keys: Vec<&str> = g.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["labels", "targets"] {
            return Err(format!("group keys {keys:?}"));
        }
        for t in g["targets"].as_array().ok_or("targets not a list")? {
            let t = t.as_str().ok_or("target not a string")?;
            if t.is_empty() {
                return Err("empty target".into());
            }
            prometheus_accepts(t)?;
        }
        for (k, v) in g["labels"].as_object().ok_or("labels not an object")? {
            if !valid_label_name(k) || k == "__address__" {
                return Err(format!("invalid label name {k:?}"));
            }
            v.as_str().ok_or("label value not a string")?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any permutation of an inventory of labelled entries renders the
    /// same bytes.
    #[test]
    fn any_order_of_labelled_entries_renders_the_same(
        items in labelled_inventory(),
        seed in any::<u64>(),
    ) {
        let out = render_inventory(&items).unwrap();
        let mut shuffled = items.clone();
        let mut seed = seed;
        for i in (1..shuffled.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let again = render_inventory(&shuffled).unwrap();
        prop_assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&again)
        );
    }

    /// Every rendered document is strict file_sd, whatever the shape.
    #[test]
    fn rendered_documents_are_strict_file_sd(
        items in prop_oneof![labelled_inventory(), group_inventory()],
    ) {
        let out = render_inventory(&items).unwrap();
        check_strict_file_sd(&out).map_err(|e| TestCaseError::fail(format!(
            "{e}: {}", String::from_utf8_lossy(&out))))?;
    }
}
