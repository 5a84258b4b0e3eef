//! Label rules: which names and values a target group may carry.

/// Longest label value accepted from an inventory, in bytes of UTF-8.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;

/// Most labels one inventory entry or target group may carry.
pub const MAX_LABELS: usize = 64;

/// Longest label name, in bytes; names are ASCII.
pub const MAX_LABEL_NAME_BYTES: usize = 256;

/// Whether `name` is a legacy Prometheus label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The reserved (`__`) names an inventory may set: they change how
/// Prometheus scrapes the target, or pass through as metadata.
fn reserved_allowed(name: &str) -> bool {
    matches!(
        name,
        "__metrics_path__" | "__scheme__" | "__scrape_interval__" | "__scrape_timeout__"
    ) || name.starts_with("__param_")
        || name.starts_with("__meta_")
}

/// Checks one label of an inventory entry or target group: why it is
/// refused, or `Ok`. An empty value is allowed: Prometheus reads it as the
/// label being unset, so it clears a default for that entry.
pub fn check(name: &str, value: &str) -> Result<(), &'static str> {
    if name.len() > MAX_LABEL_NAME_BYTES {
        return Err("label name is too long (more than 256 bytes)");
    }
    if !is_label_name(name) {
        return Err("label name does not match [a-zA-Z_][a-zA-Z0-9_]*");
    }
    if name == "__address__" {
        return Err("__address__ cannot be a label (the entry's address is the target)");
    }
    if name.starts_with("__") && !reserved_allowed(name) {
        return Err("label names starting with __ are reserved");
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err("label value is too long (more than 4096 bytes)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "_a1", "A_b", "job", "__metrics_path__"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "é", "a b", "a.b"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn inventory_labels() {
        for ok in [
            "rack",
            "__metrics_path__",
            "__scheme__",
            "__scrape_interval__",
            "__scrape_timeout__",
            "__param_module",
            "__meta_x",
            "_single",
        ] {
            assert_eq!(check(ok, "v"), Ok(()), "{ok}");
        }
        assert_eq!(check("rack", ""), Ok(()));
        assert!(check("__address__", "x")
            .unwrap_err()
            .contains("__address__"));
        assert!(check("__x", "x").unwrap_err().contains("reserved"));
        assert!(check("__name__", "x").unwrap_err().contains("reserved"));
        assert!(check("1x", "x").unwrap_err().contains("does not match"));
        assert!(check(&"a".repeat(257), "x")
            .unwrap_err()
            .contains("too long"));
        let long = "v".repeat(MAX_LABEL_VALUE_BYTES);
        assert_eq!(check("a", &long), Ok(()));
        assert!(check("a", &format!("{long}v"))
            .unwrap_err()
            .contains("value is too long"));
    }
}
