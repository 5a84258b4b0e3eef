//! The quick paths agree with the general ones: the reader of plain name
//! arrays with the full JSON reader, for every body, and the one-pass name
//! check with the general entry validator, for every entry.
//!
//! The number of cases per property is `PROPTEST_CASES` (256 by default).

use proptest::prelude::*;
use proptest::test_runner::Config;
use sd_updater::model::address;
use sd_updater::model::inventory::{self, ShapeError, Validated};

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

fn defaults() -> Vec<(String, String)> {
    vec![
        ("__metrics_path__".to_string(), "/metrics".to_string()),
        ("job".to_string(), "sensors".to_string()),
    ]
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Labels near every limit of a host name: digit-led, all digits, '-' at
/// either edge, 63 and 64 bytes, empty.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_-]{1,10}",
        2 => "[0-9]{1,4}",
        1 => "0[xX][0-9a-fA-F]{0,4}",
        1 => "[a-z0-9_-]{62,65}",
        1 => Just(String::new()),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(label(), 1..5).prop_map(|v| v.join(".")),
        // Around 253 bytes in all.
        1 => (prop::collection::vec("[a-z]{63}", 3..4), "[a-z]{58,64}")
            .prop_map(|(v, last)| format!("{}.{last}", v.join("."))),
        1 => any::<[u8; 4]>().prop_map(|b| format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..=70000).prop_map(|p| p.to_string()),
        "[0-9]{0,7}",
        "[+:a-z0-9]{0,4}",
    ]
}

/// Entries the quick check accepts, refuses or leaves alone, and bytes
/// no name may hold.
fn entry() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => host(),
        3 => (host(), port()).prop_map(|(h, p)| format!("{h}:{p}")),
        1 => (host(), "[\\x00-\\x20\\x7f\\u{80}-\\u{ff}\\[\\]:/@%\"\\\\]", host())
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
        1 => "[0-9a-fA-F:.\\[\\]%]{0,20}",
        1 => any::<String>(),
    ]
}

/// One array element as JSON text: mostly plain names, and everything the
/// quick reader must leave to the full one.
fn element() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => entry().prop_map(|e| serde_json::to_string(&e).unwrap()),
        // Raw, unescaped text: control bytes, quotes, backslashes, unicode.
        2 => "[ -~\\x00-\\x1f\\x7f\\u{80}-\\u{10ffff}]{0,6}".prop_map(|s| format!("\"{s}\"")),
        2 => prop::sample::select(vec![
            r#""\n""#, r#""a\"b""#, r#""\u0061""#, r#""\ud800""#, r#""\/""#,
            r#""\x""#, "1", "-0", "1e400", "01", "1.5", "null", "true", "false",
            "[]", r#"["a"]"#, "{}", r#"{"name": "a"}"#, r#"{"targets": ["a"]}"#,
            r#"{"name": "a", "labels": {"r": "1"}}"#, "nul", "\"", "'a'", "a",
        ])
        .prop_map(str::to_string),
    ]
}

/// JSON whitespace, and a little that is not.
fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[ \\t\\r\\n]{0,3}",
        1 => prop::sample::select(vec!["\x0b", "\x0c", "\u{a0}", "\u{feff}"]).prop_map(str::to_string),
    ]
}

/// A body: a BOM or not, an array (or some other value) of elements with
/// whitespace around every token, neighbours repeated, a trailing comma,
/// trailing text, and one byte maybe replaced by any byte.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let item = (element(), any::<bool>(), ws(), ws());
    (
        any::<bool>(),
        ws(),
        prop::collection::vec(item, 0..10),
        prop::sample::select(vec!["[", "[", "[", "{", "", "\"a\""]),
        prop::sample::select(vec!["]", "]", "]", ",]", "}", ""]),
        ws(),
        prop::sample::select(vec!["", "", "", "x", "]", "[]", ",", "\"a\"", "<"]),
        prop::option::weighted(0.2, (any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(bom, lead, items, open, close, end_ws, tail, flip)| {
            let mut s = String::new();
            s.push_str(&lead);
            s.push_str(open);
            let mut prev: Option<String> = None;
            for (i, (e, repeat, before, after)) in items.into_iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&before);
                let e = match (&prev, repeat) {
                    (Some(p), true) => p.clone(),
                    _ => e,
                };
                s.push_str(&e);
                s.push_str(&after);
                prev = Some(e);
            }
            s.push_str(close);
            s.push_str(&end_ws);
            s.push_str(tail);
            let mut b = Vec::new();
            if bom {
                b.extend_from_slice(b"\xEF\xBB\xBF");
            }
            b.extend_from_slice(s.as_bytes());
            if let Some((at, byte)) = flip {
                if !b.is_empty() {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
            }
            b
        })
}

fn quick(body: &[u8], budget: usize) -> Result<Validated, ShapeError> {
    inventory::parse_limited(body, 9100, defaults(), budget)
}

fn full(body: &[u8], budget: usize) -> Result<Validated, ShapeError> {
    inventory::parse_limited_slow(body, 9100, defaults(), budget)
}

/// The quick reader in two parts, split at byte `at` (which it confirms
/// or ignores), on two threads.
fn split(body: &[u8], budget: usize, at: usize) -> Result<Validated, ShapeError> {
    inventory::parse_limited_split(body, 9100, defaults(), budget, &[at])
}

/// The quick reader in parts cut at bytes `cuts`, which two threads take
/// in turn.
fn cut(body: &[u8], budget: usize, cuts: &[usize]) -> Result<Validated, ShapeError> {
    inventory::parse_limited_split(body, 9100, defaults(), budget, cuts)
}

/// Budgets: none, one that refuses the first label set, and one that
/// takes the plain names' label set only.
const BUDGETS: [usize; 3] = [usize::MAX, 100, 1000];

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Every body, and every cut of it, gives the same targets, counts and
    /// examples, or the same error text, on both readers.
    #[test]
    fn quick_reader_agrees_with_the_full_one(body in body(), b in 0..BUDGETS.len()) {
        let budget = BUDGETS[b];
        for cut in (0..=body.len()).rev() {
            let body = &body[..cut];
            prop_assert_eq!(
                quick(body, budget),
                full(body, budget),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// Every body read in two parts, split at any byte, gives what the full
    /// reader gives.
    #[test]
    fn a_split_anywhere_agrees_with_the_full_reader(body in body(), b in 0..BUDGETS.len()) {
        let budget = BUDGETS[b];
        let want = full(&body, budget);
        for at in 0..=body.len() + 1 {
            prop_assert_eq!(
                &split(&body, budget, at),
                &want,
                "split at {} of {:?}",
                at,
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// Every body read in three or four parts, cut at any bytes (in
    /// order or not), gives what the full reader gives.
    #[test]
    fn parts_cut_anywhere_agree_with_the_full_reader(
        body in body(),
        b in 0..BUDGETS.len(),
        more in prop::collection::vec(any::<prop::sample::Index>(), 1..3),
    ) {
        let budget = BUDGETS[b];
        let want = full(&body, budget);
        for at in 0..=body.len() + 1 {
            let mut cuts = vec![at];
            cuts.extend(more.iter().map(|i| i.index(body.len() + 2)));
            prop_assert_eq!(
                &cut(&body, budget, &cuts),
                &want,
                "cuts {:?} of {:?}",
                cuts,
                String::from_utf8_lossy(&body)
            );
            cuts.sort_unstable();
            prop_assert_eq!(&cut(&body, budget, &cuts), &want, "cuts {:?}", cuts);
        }
    }

    /// Arrays of plain names: those the quick reader takes whole.
    #[test]
    fn plain_name_arrays_agree(
        names in prop::collection::vec((entry(), any::<bool>()), 0..30),
        pretty in any::<bool>(),
    ) {
        let mut list: Vec<String> = Vec::new();
        for (n, repeat) in names {
            let n = match (list.last(), repeat) {
                (Some(p), true) => p.clone(),
                _ => n,
            };
            list.push(n);
        }
        let body = if pretty {
            serde_json::to_vec_pretty(&list).unwrap()
        } else {
            serde_json::to_vec(&list).unwrap()
        };
        for budget in BUDGETS {
            let want = full(&body, budget);
            prop_assert_eq!(&quick(&body, budget), &want);
            // Every element boundary, and the bytes just around it.
            let commas = body.iter().enumerate().filter(|&(_, &c)| c == b',');
            let near: Vec<usize> = commas.flat_map(|(i, _)| i..i + 3).collect();
            for &at in &near {
                prop_assert_eq!(&split(&body, budget, at), &want, "split at {}", at);
            }
            // Cut at every boundary at once, and at every other one.
            let bounds: Vec<usize> = near.iter().copied().skip(1).step_by(3).collect();
            prop_assert_eq!(&cut(&body, budget, &bounds), &want, "cuts {:?}", bounds);
            let every_other: Vec<usize> = bounds.iter().copied().step_by(2).collect();
            prop_assert_eq!(&cut(&body, budget, &every_other), &want);
        }
        let v = quick(&body, usize::MAX).unwrap();
        let want = inventory::validate(list.iter().map(String::as_str), 9100);
        prop_assert_eq!(v.sensor_count, want.sensor_count);
        prop_assert_eq!(v.invalid_count, want.invalid_count);
        prop_assert_eq!(v.rejected, want.rejected);
        prop_assert_eq!(v.targets.to_strings(), want.targets.to_strings());
    }

    /// The one-pass check accepts what the general validator accepts, as
    /// the same target, and leaves the rest to it.
    #[test]
    fn quick_check_agrees_with_the_general_one(e in entry(), p in any::<u16>()) {
        let got = address::parse(&e, p).map(|t| (t.to_string(), t.has_upper()));
        let want = address::parse_slow(&e, p).map(|t| (t.to_string(), t.has_upper()));
        prop_assert_eq!(got, want, "{:?}", e);
    }

    #[test]
    fn quick_check_agrees_on_any_text(e in "[a-z0-9_.:\\-\\[\\]\\x7f A-Z]{0,40}", p in any::<u16>()) {
        let got = address::parse(&e, p).map(|t| (t.to_string(), t.has_upper()));
        let want = address::parse_slow(&e, p).map(|t| (t.to_string(), t.has_upper()));
        prop_assert_eq!(got, want, "{:?}", e);
    }
}

// ---------------------------------------------------------------------------
// Anchors
// ---------------------------------------------------------------------------

/// Bodies at the edges of the quick reader: each gives the same result on
/// both readers, cut anywhere.
#[test]
fn edge_bodies_agree() {
    let bodies: [&[u8]; 24] = [
        b"[]",
        b" [ ] ",
        b"\xEF\xBB\xBF[\"a\"]",
        b"\xEF\xBB\xBF\xEF\xBB\xBF[\"a\"]",
        b"[\"a\",\"a\",\"b\",\"a\"]",
        b"[\"bad name\",\"bad name\",\"ok\"]",
        b"[\"a\",]",
        b"[\"a\"] x",
        b"[\"a\"]]",
        b"[\"a\" \"b\"]",
        b"[\"a\", \"\\n\"]",
        b"[\"a\", \"\xc3\xa9\"]",
        b"[\"a\", \"\xff\"]",
        b"[\"a\", \"\x01\"]",
        b"[\"a\", \"\x7f\"]",
        b"[\"a\", 1]",
        b"[\"a\", null, \"b\"]",
        b"[\"a\", [\"b\"]]",
        b"[\"a\", {\"name\": \"b\", \"labels\": {\"r\": \"1\"}}]",
        b"[\"a\", {\"targets\": [\"b\"]}]",
        b"[\x0c\"a\"]",
        b"\"a\"",
        b"{\"a\": [\"b\"]}",
        b"[\"a\"]\n\t\r ",
    ];
    for body in bodies {
        for cut in 0..=body.len() {
            let body = &body[..cut];
            for budget in BUDGETS {
                let want = full(body, budget);
                assert_eq!(quick(body, budget), want, "{body:?}");
                for at in 0..=body.len() {
                    assert_eq!(split(body, budget, at), want, "{body:?} at {at}");
                }
            }
        }
    }
}

/// Hosts that cannot stay where they are in the body (IPv6 addresses,
/// written in their canonical form), repeats across the split, case
/// variants and bad names, on both sides of every split.
#[test]
fn split_lists_merge_as_one() {
    let body = br#"["b", "::1", "A", "a", "[2001:DB8::1]:80", "x y", "c", "c",
        "2001:db8:0:0::2", "a", "b:1", "B", "[::1]:9100", "d", "x y", "e"]"#;
    for budget in BUDGETS {
        let want = full(body, budget);
        for at in 0..=body.len() {
            assert_eq!(split(body, budget, at), want, "at {at}");
        }
    }
    let v = full(body, usize::MAX).unwrap();
    assert!(v
        .targets
        .to_strings()
        .contains(&"[2001:db8::2]:9100".to_string()));
    assert_eq!(v.invalid_count, 2);
}

/// A capacity error is the same error whether or not the body would have
/// been left to the full reader further on.
#[test]
fn capacity_errors_are_the_same() {
    for body in [
        &b"[\"a\"]"[..],
        b"[\"bad name\", \"a\", \"\\n\"]",
        b"[\"bad name\", \"a\", 1",
        b"[\"\\n\", \"a\"]",
    ] {
        let e = quick(body, 100).unwrap_err();
        assert!(e.0.contains("distinct label sets"), "{e}");
        for at in 0..=body.len() {
            assert_eq!(split(body, 100, at), Err(e.clone()), "{body:?} at {at}");
        }
        assert_eq!(Err(e), full(body, 100));
    }
}
