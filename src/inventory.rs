//! The inventory document: a JSON array of sensor names. Parsing is strict
//! about the shape and lenient about single bad entries, which are dropped.

use std::fmt;

use serde_json::Value;

use crate::sensor;

/// Why a response body is not an inventory. The cycle fails and the old
/// targets file stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a response body into the list of sensor names it holds.
pub fn parse(body: &[u8]) -> Result<Vec<String>, ShapeError> {
    let trimmed = body.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(ShapeError("empty response body".into()));
    }
    if trimmed.first() == Some(&b'<') {
        return Err(ShapeError(
            "got an HTML/XML page, not JSON (a login page or a proxy error?)".into(),
        ));
    }
    // The common case in one pass, without a `Value` tree per entry.
    if let Ok(names) = serde_json::from_slice::<Vec<String>>(body) {
        return Ok(names);
    }
    // Otherwise parse again, only to say precisely what is wrong.
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let kind = if e.is_eof() {
            "truncated JSON"
        } else {
            "invalid JSON"
        };
        ShapeError(format!("{kind}: {e}"))
    })?;
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(ShapeError(format!(
                "got a JSON {}, expected an array of sensor names",
                kind_of(&other)
            )))
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s),
            other => Err(ShapeError(format!(
                "element {i} is a JSON {}, expected an array of sensor names (strings)",
                kind_of(&other)
            ))),
        })
        .collect()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An entry that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub entry: String,
    pub reason: &'static str,
}

/// The validated inventory: sorted, de-duplicated target addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validated {
    pub sensor_count: usize,
    pub targets: Vec<String>,
    pub rejected: Vec<Rejected>,
}

/// Validates every entry, keeping the good ones even when others are bad.
pub fn validate(entries: Vec<String>, default_port: u16) -> Validated {
    let sensor_count = entries.len();
    let mut targets = Vec::with_capacity(entries.len());
    let mut rejected = Vec::new();
    for entry in entries {
        match sensor::target_address(&entry, default_port) {
            Ok(t) => targets.push(t),
            Err(reason) => rejected.push(Rejected { entry, reason }),
        }
    }
    // Sorted and unique, so the file changes only when the set changes.
    targets.sort_unstable();
    targets.dedup();
    Validated {
        sensor_count,
        targets,
        rejected,
    }
}

/// An untrusted string made safe for one log line: ASCII only, control
/// characters and quotes escaped, and cut short when huge.
pub fn escape(s: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_default).collect();
    let n = s.chars().count();
    if n > MAX {
        out.push_str(&format!("...({} more characters)", n - MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_an_array_of_strings() {
        assert_eq!(parse(br#"["a", "b"]"#).unwrap(), vec!["a", "b"]);
        assert_eq!(parse(b" \n[]\n").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn refuses_other_shapes() {
        for (body, needle) in [
            (&b""[..], "empty"),
            (b"  ", "empty"),
            (b"{\"sensors\": []}", "object"),
            (b"[1, 2]", "number"),
            (b"[\"a\", null]", "null"),
            (b"[\"a\", [\"b\"]]", "array"),
            (b"\"sensor\"", "string"),
            (b"[\"a\", \"b\"", "truncated"),
            (b"[\"a\",, ]", "invalid JSON"),
            (b"<html><body>Login</body></html>", "HTML"),
            (b"\xff\xfe", "invalid JSON"),
            (b"[\"a\"] trailing", "invalid JSON"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.0.contains(needle), "{body:?}: {e}");
        }
    }

    #[test]
    fn validation_keeps_good_entries_sorted_and_unique() {
        let v = validate(
            ["s2", "s1", "bad name", "s1", "s1:9100", "::1", ""]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            9100,
        );
        assert_eq!(v.sensor_count, 7);
        assert_eq!(v.targets, vec!["[::1]:9100", "s1:9100", "s2:9100"]);
        assert_eq!(v.rejected.len(), 2);
        assert_eq!(v.rejected[0].entry, "bad name");
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
