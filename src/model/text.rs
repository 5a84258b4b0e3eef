//! Text for log lines and STATUS=: which characters are safe to show as
//! they are, and counts with the right plural.

use std::borrow::Cow;

/// What a character is, as far as a log line cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Printable ASCII other than quotes and the backslash.
    Plain,
    /// `"`, `'` and `\`: visible, but they end or escape a quoted value.
    Quote,
    /// Any other visible character (`é`, `日`, `✓`).
    Visible,
    /// Control characters (Cc), line and paragraph separators, bidirectional
    /// controls and the other invisible format characters (Cf), which can
    /// break a line or reorder what a reader sees.
    Invisible,
}

pub fn class(c: char) -> Class {
    match c {
        '"' | '\'' | '\\' => Class::Quote,
        ' '..='~' => Class::Plain,
        _ if is_invisible(c) => Class::Invisible,
        _ => Class::Visible,
    }
}

fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            u32::from(c),
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// `s` with every character that `escape` picks written as Rust writes it
/// (`\n`, `\"`, `\u{202e}`); borrowed when there is none.
pub fn escape_where(s: &str, escape: impl Fn(Class) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| escape(class(c))) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().saturating_add(8));
    for c in s.chars() {
        if escape(class(c)) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `1 target`, `0 targets`, `3 targets`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class('a'), Class::Plain);
        assert_eq!(class(' '), Class::Plain);
        assert_eq!(class('~'), Class::Plain);
        for c in ['"', '\'', '\\'] {
            assert_eq!(class(c), Class::Quote, "{c:?}");
        }
        for c in ['é', '日', '✓', '\u{a0}'] {
            assert_eq!(class(c), Class::Visible, "{c:?}");
        }
        for c in ['\n', '\t', '\0', '\u{7f}', '\u{85}', '\u{202e}', '\u{feff}'] {
            assert_eq!(class(c), Class::Invisible, "{c:?}");
        }
    }

    /// Escaping every non-plain character is exactly `escape_default`.
    #[test]
    fn escaping_all_but_plain_is_escape_default() {
        let all: String = (0..0x3000u32)
            .chain(0xE0000..0xE0100)
            .filter_map(char::from_u32)
            .collect();
        let want: String = all.chars().flat_map(char::escape_default).collect();
        assert_eq!(escape_where(&all, |c| c != Class::Plain), want);
    }

    #[test]
    fn nothing_to_escape_borrows() {
        assert!(matches!(
            escape_where("plain é", |c| c == Class::Invisible),
            Cow::Borrowed("plain é")
        ));
    }

    #[test]
    fn counts() {
        assert_eq!(count(0, "target", "targets"), "0 targets");
        assert_eq!(count(1, "target", "targets"), "1 target");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
    }
}
