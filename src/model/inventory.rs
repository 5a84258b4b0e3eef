//! The inventory document: a JSON array of sensor names. Parsing is strict
//! about the shape and lenient about single bad entries, which are dropped.
//!
//! The body is read in one streaming pass: each element is validated as it
//! arrives and only valid targets are kept, compactly, so memory stays a
//! small multiple of the body whatever it holds.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::model::address;
use crate::model::targets::Entries;
use crate::model::text::{self, Class};

/// At most this many dropped entries are kept, to be logged one by one.
pub const MAX_EXAMPLES: usize = 100;

/// Why a response body is not an inventory. The cycle fails and the old
/// targets file stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entry that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry, already escaped and cut short for a log line.
    pub entry: String,
    pub reason: &'static str,
}

/// The validated inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validated {
    /// Every string entry, duplicates and invalid ones included.
    pub sensor_count: usize,
    pub invalid_count: usize,
    /// The first [`MAX_EXAMPLES`] invalid entries.
    pub rejected: Vec<Rejected>,
    /// Grouped by their own labels, each group sorted and unique.
    pub targets: Entries,
}

/// Validates entries one at a time, keeping the good ones even when others
/// are bad.
pub struct Collector {
    default_port: u16,
    v: Validated,
    /// The previous entry, when short, and why it was refused (`None`:
    /// valid): a run of one entry is validated once.
    last: Vec<u8>,
    last_outcome: Option<Option<&'static str>>,
}

/// Longest entry remembered as the previous one; no valid entry is longer.
const MAX_REMEMBERED: usize = 300;

impl Collector {
    pub fn new(default_port: u16) -> Collector {
        Collector {
            default_port,
            v: Validated::default(),
            last: Vec::with_capacity(MAX_REMEMBERED),
            last_outcome: None,
        }
    }

    pub fn add(&mut self, entry: &str) -> Result<(), ShapeError> {
        self.v.sensor_count = self.v.sensor_count.saturating_add(1);
        if let Some(outcome) = self.last_outcome {
            if entry.as_bytes() == self.last.as_slice() {
                // A valid repeat is already the last target added.
                if let Some(reason) = outcome {
                    self.reject(entry, reason);
                }
                return Ok(());
            }
        }
        let outcome = match address::parse(entry, self.default_port) {
            Ok(t) => {
                self.v
                    .targets
                    .push(t.host(), t.port(), &[])
                    .map_err(|e| ShapeError(format!("cannot keep the inventory: {e}")))?;
                None
            }
            Err(reason) => {
                self.reject(entry, reason);
                Some(reason)
            }
        };
        self.last.clear();
        if entry.len() <= MAX_REMEMBERED {
            self.last.extend_from_slice(entry.as_bytes());
            self.last_outcome = Some(outcome);
        } else {
            self.last_outcome = None;
        }
        Ok(())
    }

    fn reject(&mut self, entry: &str, reason: &'static str) {
        self.v.invalid_count = self.v.invalid_count.saturating_add(1);
        if self.v.rejected.len() < MAX_EXAMPLES {
            self.v.rejected.push(Rejected {
                entry: escape(entry),
                reason,
            });
        }
    }

    /// Sorts and de-duplicates what was collected.
    pub fn finish(mut self) -> Validated {
        self.v.targets.finish();
        self.v
    }
}

/// Validates a list of entries, as [`parse`] does for a body.
pub fn validate<'a>(entries: impl IntoIterator<Item = &'a str>, default_port: u16) -> Validated {
    let mut c = Collector::new(default_port);
    for e in entries {
        // Only running out of memory stops a collector; a test list never does.
        if c.add(e).is_err() {
            break;
        }
    }
    c.finish()
}

/// Parses and validates a response body.
pub fn parse(body: &[u8], default_port: u16) -> Result<Validated, ShapeError> {
    let mut c = Collector::new(default_port);
    for_each_entry(body, &mut |e| c.add(e))?;
    Ok(c.finish())
}

/// Checks that `body` is a JSON array of strings and hands each string to
/// `on_entry`, in order, as it is read. Entries after the first element that
/// is not a string are not handed over; the result is then an error.
pub fn for_each_entry(
    body: &[u8],
    on_entry: &mut dyn FnMut(&str) -> Result<(), ShapeError>,
) -> Result<(), ShapeError> {
    // Windows tools start UTF-8 files with a byte-order mark.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(ShapeError("empty response body".into()));
    }
    if trimmed.first() == Some(&b'<') {
        return Err(ShapeError(
            "got an HTML/XML page, not JSON (a login page or a proxy error?)".into(),
        ));
    }
    let mut walk = Walk {
        on_entry,
        index: 0,
        not_array: None,
        not_string: None,
        stopped: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    // The whole body is read even after a bad element: a syntax error
    // anywhere is reported first, as the more basic fault.
    let read = Top(&mut walk).deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = walk.stopped {
        return Err(e);
    }
    if let Err(e) = read {
        let kind = if e.is_eof() {
            "truncated JSON"
        } else {
            "invalid JSON"
        };
        return Err(ShapeError(format!("{kind}: {e}")));
    }
    if let Some(kind) = walk.not_array {
        return Err(ShapeError(format!(
            "got a JSON {kind}, expected an array of sensor names"
        )));
    }
    if let Some((i, kind)) = walk.not_string {
        return Err(ShapeError(format!(
            "element {i} is a JSON {kind}, expected an array of sensor names (strings)"
        )));
    }
    Ok(())
}

/// What the single pass over a body has seen.
struct Walk<'a> {
    on_entry: &'a mut dyn FnMut(&str) -> Result<(), ShapeError>,
    index: usize,
    /// The kind of the top-level value, when it is not an array.
    not_array: Option<&'static str>,
    /// The first element that is not a string: its index and kind.
    not_string: Option<(usize, &'static str)>,
    /// `on_entry` failed: reading stopped.
    stopped: Option<ShapeError>,
}

/// The top-level value.
struct Top<'w, 'a>(&'w mut Walk<'a>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of sensor names")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Element(&mut *self.0))?.is_some() {
            self.0.index = self.0.index.saturating_add(1);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.not_array = Some("object");
        skip_map(map)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.not_array = Some("string");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.not_array = Some("boolean");
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.not_array = Some("number");
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.not_array = Some("number");
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.not_array = Some("number");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.not_array = Some("null");
        Ok(())
    }
}

/// One element of the top-level array.
struct Element<'w, 'a>(&'w mut Walk<'a>);

impl Element<'_, '_> {
    fn not_string(self, kind: &'static str) {
        let w = self.0;
        if w.not_string.is_none() {
            w.not_string = Some((w.index, kind));
        }
    }
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sensor name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let w = self.0;
        // After a bad element the body is only checked, not collected.
        if w.not_string.is_some() {
            return Ok(());
        }
        (w.on_entry)(s).map_err(|e| {
            w.stopped = Some(e);
            E::custom("stopped")
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.not_string("array");
        skip_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.not_string("object");
        skip_map(map)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_string("boolean");
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_string("number");
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_string("number");
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_string("number");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_string("null");
        Ok(())
    }
}

/// Any JSON value, read in full (numbers, strings and nesting checked as
/// strictly as a `serde_json::Value` would be) and thrown away.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        skip_seq(seq).map(|()| Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        skip_map(map).map(|()| Skip)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

/// An untrusted string made safe for one log line: ASCII only, control
/// characters and quotes escaped, and cut short when huge.
pub fn escape(s: &str) -> String {
    const MAX: usize = 200;
    let cut = s
        .char_indices()
        .nth(MAX)
        .map_or(s, |(i, _)| s.get(..i).unwrap_or(s));
    let mut out = text::escape_where(cut, |c| c != Class::Plain).into_owned();
    let n = s.chars().count();
    if n > MAX {
        out.push_str(&format!("...({} more characters)", n - MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(body: &[u8]) -> Result<Vec<String>, ShapeError> {
        let mut out = Vec::new();
        for_each_entry(body, &mut |e| {
            out.push(e.to_string());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn accepts_an_array_of_strings() {
        assert_eq!(entries(br#"["a", "b"]"#).unwrap(), vec!["a", "b"]);
        assert_eq!(entries(b" \n[]\n").unwrap(), Vec::<String>::new());
        assert_eq!(entries(br#"["\u0061\n"]"#).unwrap(), vec!["a\n"]);
        let v = parse(br#"["b", "a", "a:9100"]"#, 9100).unwrap();
        assert_eq!(v.targets.to_strings(), ["a:9100", "b:9100"]);
        assert_eq!((v.sensor_count, v.invalid_count), (3, 0));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let v = parse(b"\xEF\xBB\xBF[\"a\"]", 9100).unwrap();
        assert_eq!(v.targets.to_strings(), ["a:9100"]);
        let v = parse(b"\xEF\xBB\xBF \r\n[\"a\"]\r\n", 9100).unwrap();
        assert_eq!(v.targets.to_strings(), ["a:9100"]);
        let e = parse(b"\xEF\xBB\xBF<html>", 9100).unwrap_err();
        assert!(e.0.contains("HTML"), "{e}");
        let e = parse(b"\xEF\xBB\xBF", 9100).unwrap_err();
        assert!(e.0.contains("empty"), "{e}");
        // Only one, and only at the very start.
        for body in [
            &b"\xEF\xBB\xBF\xEF\xBB\xBF[]"[..],
            b" \xEF\xBB\xBF[]",
            b"\xEF\xBB[]",
        ] {
            let e = parse(body, 9100).unwrap_err();
            assert!(e.0.contains("invalid JSON"), "{body:?}: {e}");
        }
    }

    #[test]
    fn refuses_other_shapes() {
        for (body, needle) in [
            (&b""[..], "empty"),
            (b"  ", "empty"),
            (b"{\"sensors\": []}", "got a JSON object, expected an array"),
            (b"[1, 2]", "element 0 is a JSON number"),
            (b"[\"a\", null]", "element 1 is a JSON null"),
            (b"[\"a\", [\"b\"]]", "element 1 is a JSON array"),
            (b"[\"a\", \"b\", true, {}]", "element 2 is a JSON boolean"),
            (
                b"[\"a\", \"b\", \"c\", {\"x\": 1}]",
                "element 3 is a JSON object",
            ),
            (b"\"sensor\"", "got a JSON string"),
            (b"null", "got a JSON null"),
            (b"12", "got a JSON number"),
            (b"[\"a\", \"b\"", "truncated"),
            (b"[\"a\", null, \"b\"", "truncated"),
            (b"[\"a\",, ]", "invalid JSON"),
            (b"<html><body>Login</body></html>", "HTML"),
            (b"\xff\xfe", "invalid JSON"),
            (b"[\"a\"] trailing", "invalid JSON"),
            (b"[\"a\", null] trailing", "invalid JSON"),
            (b"{\"a\": 1} x", "invalid JSON"),
            (b"[1e400]", "invalid JSON"),
            (b"[[1e400]]", "invalid JSON"),
            (b"[\"\\ud800\"]", "invalid JSON"),
            (b"[[\"\\ud800\"]]", "invalid JSON"),
            (b"[\"\xff\"]", "invalid JSON"),
        ] {
            let e = parse(body, 9100).unwrap_err();
            assert!(e.0.contains(needle), "{body:?}: {e}");
        }
    }

    /// The messages are those of the former two-step parse, which read
    /// the body as a `serde_json::Value` once it failed.
    #[test]
    fn messages_match_a_value_parse() {
        for body in [
            &b"[\"a\", \"b\""[..],
            b"[\"a\",, ]",
            b"[\"a\"] trailing",
            b"[1, 2",
            b"[{\"a\": [1, 2}]",
            b"[1e400, \"a\"]",
            b"{\"a\": 1e400}",
            b"[\"a\" \"b\"]",
            b"[\"a\\x\"]",
            b"  [\n\"a\",\n nul]",
        ] {
            let want = match serde_json::from_slice::<serde_json::Value>(body) {
                Err(e) if e.is_eof() => format!("truncated JSON: {e}"),
                Err(e) => format!("invalid JSON: {e}"),
                Ok(v) => panic!("{body:?} parsed as {v}"),
            };
            assert_eq!(parse(body, 9100).unwrap_err().0, want);
        }
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        let e = parse(deep.as_bytes(), 9100).unwrap_err();
        assert!(e.0.contains("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn validation_keeps_good_entries_sorted_and_unique() {
        let v = validate(["s2", "s1", "bad name", "s1", "s1:9100", "::1", ""], 9100);
        assert_eq!(v.sensor_count, 7);
        assert_eq!(v.targets.to_strings(), ["[::1]:9100", "s1:9100", "s2:9100"]);
        assert_eq!(v.invalid_count, 2);
        assert_eq!(v.rejected[0].entry, "bad name");
        assert_eq!(v.rejected[1].entry, "");
    }

    #[test]
    fn case_variants_count_as_duplicates() {
        let v = validate(["ok", "OK", "Ok:9100", "oK:1", "x"], 9100);
        assert_eq!(v.targets.to_strings(), ["OK:9100", "oK:1", "x:9100"]);
        assert_eq!((v.sensor_count, v.invalid_count), (5, 0));
    }

    #[test]
    fn invalid_entries_are_counted_and_only_the_first_kept() {
        let long = "\n".repeat(1000);
        let mut body = b"[".to_vec();
        for i in 0..1000 {
            body.extend_from_slice(if i == 500 { b"\"ok\"," } else { b"\"\\n\\n\"," });
        }
        body.extend_from_slice(format!("{:?}]", long).as_bytes());
        let v = parse(&body, 9100).unwrap();
        assert_eq!(v.sensor_count, 1001);
        assert_eq!(v.invalid_count, 1000);
        assert_eq!(v.rejected.len(), MAX_EXAMPLES);
        assert!(v.rejected.iter().all(|r| r.entry == "\\n\\n"));
        assert_eq!(v.targets.to_strings(), ["ok:9100"]);
    }

    #[test]
    fn escaping_is_single_line_ascii() {
        assert_eq!(
            escape("a\nb\u{1b}[31m\0\"é"),
            "a\\nb\\u{1b}[31m\\u{0}\\\"\\u{e9}"
        );
        let long = escape(&"x".repeat(1000));
        assert!(long.len() < 260 && long.ends_with("(800 more characters)"));
    }
}
