//! A quick reader for the most common inventory: a JSON array of plain
//! strings (printable ASCII without `"` or `\`). It reads exactly
//! `ws [ ws ( "plain" ws ( , ws "plain" ws )* )? ] ws` and gives up on
//! anything else, which is left to the full JSON reader.

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

/// Where the plain string whose content starts at `start` ends (the index
/// of its closing quote), if it is plain and closed.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let rest = b.get(start..)?;
    let len = rest
        .iter()
        .position(|&c| !PLAIN[usize::from(c)])
        .unwrap_or(rest.len());
    let end = start.checked_add(len)?;
    (b.get(end) == Some(&b'"')).then_some(end)
}

/// Hands each string of `body`, in order, to `each` with the string before
/// it, when `body` is an array of plain strings: `Ok(true)` once all are
/// read, `Ok(false)` as soon as the body turns out to be anything else (the
/// strings handed over so far then mean nothing), or the first error of
/// `each`, at once.
pub fn for_each<'a, E>(
    body: &'a [u8],
    mut each: impl FnMut(&'a str, Option<&'a str>) -> Result<(), E>,
) -> Result<bool, E> {
    // One check for the whole body: the strings are then sliced for free.
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(false);
    };
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Ok(false);
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        return Ok(skip_ws(b, i + 1) == b.len());
    }
    let mut prev = None;
    loop {
        if b.get(i) != Some(&b'"') {
            return Ok(false);
        }
        let start = i + 1;
        let Some(end) = string_end(b, start) else {
            return Ok(false);
        };
        let Some(s) = text.get(start..end) else {
            return Ok(false);
        };
        each(s, prev)?;
        prev = Some(s);
        i = skip_ws(b, end + 1);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Ok(skip_ws(b, i + 1) == b.len()),
            _ => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
