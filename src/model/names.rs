//! A quick reader for the most common inventory: a JSON array of plain
//! strings (printable ASCII without `"` or `\`). It reads exactly
//! `ws [ ws ( "plain" ws ( , ws "plain" ws )* )? ] ws` and gives up on
//! anything else, which is left to the full JSON reader.
//!
//! A long array can be read in parts at once, each from one guessed
//! element boundary to the next. A part confirms the guess at its end by
//! reaching it; if it does not, it reads on alone to the end.

/// JSON whitespace.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Bytes a plain string may hold: 0x20..=0x7E except `"` and `\`.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0x20;
    while i < 0x7f {
        t[i] = i != b'"' as usize && i != b'\\' as usize;
        i += 1;
    }
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that a plain string may not hold
/// (`"`, `\\`, control characters, DEL, anything past ASCII); exact up to
/// the first such byte, which is all the caller looks at.
fn not_plain(w: u64) -> u64 {
    // Zero bytes of `x`: its lowest flagged byte is always a true one.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (w & HIGH)
        | below_space
        | zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | zero(w ^ (ONES * 0x7f))
}

/// Where the plain string whose content starts at `start` ends (the index
/// of its closing quote), if it is plain and closed. Eight bytes at a time.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let rest = b.get(start..)?;
    let mut words = rest.chunks_exact(8);
    let mut len = 0;
    let mut found = None;
    for chunk in words.by_ref() {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let m = not_plain(w);
        if m != 0 {
            found = Some(len + (m.trailing_zeros() / 8) as usize);
            break;
        }
        len += 8;
    }
    let len = match found {
        Some(at) => at,
        None => {
            let tail = words.remainder();
            len + tail
                .iter()
                .position(|&c| !PLAIN[usize::from(c)])
                .unwrap_or(tail.len())
        }
    };
    let end = start.checked_add(len)?;
    (b.get(end) == Some(&b'"')).then_some(end)
}

/// How reading up to a boundary ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Read to the end of the body: every string (`true`), or it turned
    /// out not to be an array of plain strings (`false`).
    End(bool),
    /// An element follows a comma at the boundary, and every string before
    /// it was handed over: the rest is read from there.
    Boundary,
}

/// Hands each string of `body`, in order, to `each` with the string before
/// it, when `body` is an array of plain strings: `Ok(true)` once all are
/// read, `Ok(false)` as soon as the body turns out to be anything else (the
/// strings handed over so far then mean nothing), or the first error of
/// `each`, at once.
pub fn for_each<'a, E>(
    body: &'a [u8],
    each: impl FnMut(&'a str, Option<&'a str>) -> Result<(), E>,
) -> Result<bool, E> {
    match for_each_between(body, None, None, each)? {
        Reached::End(all) => Ok(all),
        Reached::Boundary => Ok(false),
    }
}

/// As [`for_each`], for one part of the array: from its start (`from`
/// `None`), or from byte `from` on as after a comma, the first string
/// there handed over without the one before it; up to `until`, where it
/// stops when the element after some comma starts there (whitespace
/// between them aside), so that the part from `until` on is read on its
/// own. Otherwise it reads to the end.
pub fn for_each_between<'a, E>(
    body: &'a [u8],
    from: Option<usize>,
    until: Option<usize>,
    each: impl FnMut(&'a str, Option<&'a str>) -> Result<(), E>,
) -> Result<Reached, E> {
    let b = body;
    let start = from.unwrap_or(0);
    // The part's own bytes are checked as text once; the rest only if
    // reading goes past its end (a wrong guess). A body with any byte
    // beyond ASCII is never an array of plain strings.
    let stop = until.map_or(b.len(), |at| at.min(b.len())).max(start);
    let Some(head) = b.get(start..stop).and_then(|h| std::str::from_utf8(h).ok()) else {
        return Ok(Reached::End(false));
    };
    let rest = std::cell::OnceCell::new();
    let text = |s: usize, e: usize| {
        let (s, e) = (s.checked_sub(start)?, e.checked_sub(start)?);
        if e <= head.len() {
            return head.get(s..e);
        }
        let rest: &Option<&'a str> =
            rest.get_or_init(|| b.get(start..).and_then(|r| std::str::from_utf8(r).ok()));
        rest.and_then(|t| t.get(s..e))
    };
    let until = until.unwrap_or(usize::MAX);
    if let Some(at) = from {
        return elements(b, skip_ws(b, at), until, text, each);
    }
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Ok(Reached::End(false));
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Ok(Reached::End(skip_ws(b, i + 1) == b.len()));
    }
    elements(b, i, until, text, each)
}

/// Reads elements from `i`, where one must start, to the end of the array,
/// stopping at `stop` as [`for_each_between`] does. `text` gives bytes
/// `start..end` of `b` as a string.
fn elements<'a, E>(
    b: &'a [u8],
    mut i: usize,
    stop: usize,
    text: impl Fn(usize, usize) -> Option<&'a str>,
    mut each: impl FnMut(&'a str, Option<&'a str>) -> Result<(), E>,
) -> Result<Reached, E> {
    let mut prev = None;
    loop {
        if b.get(i) != Some(&b'"') {
            return Ok(Reached::End(false));
        }
        let start = i + 1;
        let Some(end) = string_end(b, start) else {
            return Ok(Reached::End(false));
        };
        let Some(s) = text(start, end) else {
            return Ok(Reached::End(false));
        };
        each(s, prev)?;
        prev = Some(s);
        i = skip_ws(b, end + 1);
        match b.get(i) {
            Some(b',') => {
                let comma = i;
                i = skip_ws(b, i + 1);
                if comma < stop && i >= stop {
                    return Ok(Reached::Boundary);
                }
            }
            Some(b']') => return Ok(Reached::End(skip_ws(b, i + 1) == b.len())),
            _ => return Ok(Reached::End(false)),
        }
    }
}

/// Whether `body` starts as an array whose first element is a string:
/// only then may it be an array of plain strings with elements to split.
pub fn opens_with_string(body: &[u8]) -> bool {
    let i = skip_ws(body, 0);
    body.get(i) == Some(&b'[') && body.get(skip_ws(body, i + 1)) == Some(&b'"')
}

/// A boundary near `at` for reading a long array in parts: just after
/// the first comma from `at` on whose next byte past whitespace is `"`.
/// A guess (the comma may sit inside a string), which
/// [`for_each_between`] confirms or ignores.
pub fn boundary_near(body: &[u8], at: usize) -> Option<usize> {
    let rest = body.get(at..)?;
    let mut from = 0;
    loop {
        let comma = from + rest.get(from..)?.iter().position(|&c| c == b',')?;
        let next = skip_ws(rest, comma + 1);
        if rest.get(next) == Some(&b'"') {
            return at.checked_add(comma + 1);
        }
        from = comma + 1;
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_end_finds_the_first_byte_that_is_not_plain() {
        // Every byte value at every place of strings of 0 to 20 bytes,
        // against the byte table.
        for len in 0..20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'"'];
                    b.extend((0..len).map(|i| if i == at { byte } else { b'a' + (i % 26) as u8 }));
                    b.extend_from_slice(b"\"x");
                    let want = b[1..]
                        .iter()
                        .position(|&c| !PLAIN[usize::from(c)])
                        .map(|p| p + 1);
                    let want = want.filter(|&e| b[e] == b'"');
                    assert_eq!(string_end(&b, 1), want, "{b:?}");
                }
            }
        }
        // Bytes that flag more than one class, and borrows past a match.
        for w in [
            *b"\x00\x01\"\\\x7f\x80\xff ",
            *b"ab\x01\x00\x00cd\"",
            *b"\x21\x20\x1f\x00\x5d\x5b\x5c\x23",
        ] {
            let mut b = vec![b'"'];
            b.extend_from_slice(&w);
            b.push(b'"');
            let want = b[1..]
                .iter()
                .position(|&c| !PLAIN[usize::from(c)])
                .map(|p| p + 1);
            assert_eq!(string_end(&b, 1), want.filter(|&e| b[e] == b'"'), "{w:?}");
        }
        assert_eq!(string_end(b"\"", 1), None);
        assert_eq!(string_end(b"\"abc", 9), None);
    }

    /// The strings read with their predecessors, or `None` when given up.
    fn read(body: &str) -> Option<Vec<(String, Option<String>)>> {
        let mut got = Vec::new();
        let done = for_each(body.as_bytes(), |s, p| {
            got.push((s.to_string(), p.map(str::to_string)));
            Ok::<(), ()>(())
        })
        .unwrap();
        done.then_some(got)
    }

    fn names(body: &str) -> Option<Vec<String>> {
        read(body).map(|v| v.into_iter().map(|(s, _)| s).collect())
    }

    #[test]
    fn reads_arrays_of_plain_strings() {
        assert_eq!(names("[]"), Some(vec![]));
        assert_eq!(names(" \t\r\n[ \t\r\n] \t\r\n"), Some(vec![]));
        assert_eq!(names(r#"["a"]"#), Some(vec!["a".into()]));
        assert_eq!(
            names(" [ \"a b\" ,\n\"\" ,\"~!#:[]{}/'\"\r\n]\n"),
            Some(vec!["a b".into(), "".into(), "~!#:[]{}/'".into()])
        );
        assert_eq!(
            read(r#"["x", "y", "y"]"#),
            Some(vec![
                ("x".into(), None),
                ("y".into(), Some("x".into())),
                ("y".into(), Some("y".into())),
            ])
        );
    }

    #[test]
    fn gives_up_on_anything_else() {
        for body in [
            "",
            " ",
            "[",
            "[\"a\"",
            "[\"a\",",
            "[\"a",
            "[\"a\",]",
            "[,]",
            "[\"a\" \"b\"]",
            "[\"a\"] x",
            "[\"a\"]]",
            "[\"a\"][]",
            "[\"a\\n\"]",
            "[\"a\\\"\"]",
            "[\"\u{e9}\"]",
            "[\"a\tb\"]",
            "[\"a\x7f\"]",
            "[\"a\x1f\"]",
            "[1]",
            "[\"a\", 1]",
            "[\"a\", null]",
            "[[\"a\"]]",
            "[{\"name\": \"a\"}]",
            "{}",
            "\"a\"",
            "\u{feff}[]",
            "[\u{a0}]",
            "[\x0b]",
            "[\x0c\"a\"]",
        ] {
            assert_eq!(names(body), None, "{body:?}");
        }
        assert!(!for_each(b"[\"a\xff\"]", |_, _| Ok::<(), ()>(())).unwrap());
    }

    /// The strings of `body` read in parts from one of `cuts` to the next,
    /// or `None` when given up; and how many cuts were reached.
    fn read_parts(body: &str, cuts: &[usize]) -> (Option<Vec<String>>, usize) {
        let mut got = Vec::new();
        let mut from = None;
        for (k, &cut) in cuts.iter().chain([usize::MAX].iter()).enumerate() {
            let until = (k < cuts.len()).then_some(cut);
            let reached = for_each_between(body.as_bytes(), from, until, |s, _| {
                got.push(s.to_string());
                Ok::<(), ()>(())
            })
            .unwrap();
            match reached {
                Reached::End(all) => return (all.then_some(got), k),
                Reached::Boundary => from = until,
            }
        }
        unreachable!("the last part reads to the end")
    }

    const SPLIT_BODIES: [&str; 10] = [
        r#"["a", "b", "c"]"#,
        " [ \"a\" ,\n \"b\",\"\" , \"c\" ] \n",
        r#"["a, ", "b", " ,c"]"#,
        r#"["a", "b"]]"#,
        r#"["a", "b",]"#,
        r#"["a", "b\n"]"#,
        r#"["a", 1, "b"]"#,
        r#"["a"]"#,
        "[]",
        "[\"a\", \"\u{e9}\"]",
    ];

    #[test]
    fn two_parts_read_what_one_pass_reads_at_every_boundary() {
        for body in SPLIT_BODIES {
            let whole = names(body);
            let mut split = 0;
            for boundary in 0..=body.len() + 1 {
                let (got, reached) = read_parts(body, &[boundary]);
                assert_eq!(got, whole, "{body:?} at {boundary}");
                split += reached;
            }
            let commas = whole.as_ref().map_or(0, |w| w.len().saturating_sub(1));
            if whole.is_some() {
                assert!(split >= commas, "{body:?}: {split} boundaries taken");
            }
        }
    }

    #[test]
    fn three_parts_read_what_one_pass_reads_at_every_pair_of_boundaries() {
        for body in SPLIT_BODIES {
            let whole = names(body);
            let mut both = 0;
            for a in 0..=body.len() + 1 {
                for b in 0..=body.len() + 1 {
                    let (got, reached) = read_parts(body, &[a, b]);
                    assert_eq!(got, whole, "{body:?} at {a} and {b}");
                    both += usize::from(reached == 2);
                }
            }
            let commas = whole.as_ref().map_or(0, |w| w.len().saturating_sub(1));
            if commas >= 2 {
                assert!(both > 0, "{body:?}: never read in three parts");
            }
        }
    }

    #[test]
    fn the_boundary_guess_is_just_after_a_comma_before_a_quote() {
        let body = br#"["a,b", "c" , "d"]"#;
        assert_eq!(boundary_near(body, 0), Some(7));
        assert_eq!(boundary_near(body, 7), Some(13));
        assert_eq!(boundary_near(body, 14), None);
        assert_eq!(boundary_near(body, 100), None);
        // Inside a string that holds `, "`: a guess the reader refuses.
        let body = br#"["x, ", "y"]"#;
        let guess = boundary_near(body, 0).unwrap();
        assert_eq!(guess, 4);
        let r = for_each_between(body, None, Some(guess), |_, _| Ok::<(), ()>(())).unwrap();
        assert_eq!(r, Reached::End(true));
    }

    #[test]
    fn only_arrays_that_open_with_a_string_are_split() {
        assert!(opens_with_string(b" [ \"a\", 1]"));
        assert!(!opens_with_string(b"[{\"targets\": [\"a\", \"b\"]}]"));
        assert!(!opens_with_string(b"[]"));
        assert!(!opens_with_string(b"\"a\""));
    }

    #[test]
    fn an_error_stops_at_once() {
        let mut seen = 0;
        let r = for_each(br#"["a", "b", "c"]"#, |s, _| {
            seen += 1;
            if s == "b" {
                Err(s.to_string())
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err("b".to_string()));
        assert_eq!(seen, 2);
    }
}
