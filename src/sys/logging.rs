//! Logging: native journal entries with structured fields under systemd,
//! timestamped lines on stderr otherwise (the format existing log parsers
//! of the replaced Python tool expect).

use std::cmp::Reverse;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use log::kv::{self, Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::model::text::{self, Class};
use crate::sys::clock;

pub const IDENTIFIER: &str = "sd-updater";

enum Sink {
    Journal(JournalLog),
    Stderr,
}

struct Logger {
    level: LevelFilter,
    sink: Sink,
}

/// Our own log targets all start with the crate name; anything else is a
/// dependency (ureq, rustls), whose info and debug chatter only `trace`
/// lets through. Their warnings and errors always pass.
fn is_ours(target: &str) -> bool {
    target.starts_with("sd_updater")
}

/// ureq's wire dump: every byte sent and received, 16 to a line, as hex
/// and ASCII. A credential split over two lines escapes any filter, so the
/// dump is never logged.
fn is_wire_dump(target: &str) -> bool {
    target == "ureq_proto::util"
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
            && (self.level == LevelFilter::Trace || m.level() <= Level::Warn || is_ours(m.target()))
            && !is_wire_dump(m.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One entry is one line without secrets, whatever a library put in it.
        let message = clean(&record.args().to_string());
        match &self.sink {
            Sink::Journal(journal) => {
                let mut fields = Fields(Vec::new());
                let _ = record.key_values().visit(&mut fields);
                let fields: Vec<(&str, &str)> = fields
                    .0
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let _ = journal.journal_send(
                    &Record::builder()
                        .args(format_args!("{message}"))
                        .level(record.level())
                        .target(record.target())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .key_values(&fields)
                        .build(),
                );
            }
            Sink::Stderr => {
                let line = format!(
                    "{} - {IDENTIFIER} - {} - {message}\n",
                    clock::datetime(SystemTime::now()),
                    level_name(record.level())
                );
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// The key-value fields of a record, cleaned like the message.
struct Fields(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        self.0
            .push((key.as_str().to_string(), clean(&value.to_string())));
        Ok(())
    }
}

/// What every message and field goes through: sensitive headers and
/// registered secrets become `***`, and the text becomes one line.
pub fn clean(s: &str) -> String {
    scrub(&one_line(&scrub(&redact_urls(&redact_headers(s)))))
}

/// Redacts the password of every `scheme://` URL in `text`, such as a
/// redirect Location that a library logs.
pub fn redact_urls(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    // Only whitespace ends a URL here: a quote may be part of a password,
    // and going on too far only redacts more.
    let url_end = char::is_whitespace;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let before = rest.get(..sep).unwrap_or("");
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !scheme_char(*c))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let after = rest.get(sep + 3..).unwrap_or("");
        let end = sep + 3 + after.find(url_end).unwrap_or(after.len());
        out.push_str(rest.get(..start).unwrap_or(""));
        out.push_str(&redact(rest.get(start..end).unwrap_or("")).0);
        rest = rest.get(end..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Escapes line breaks, other control characters and invisible format
/// characters (`\n`, `\u{1b}`, `\u{202e}`); visible text stays as it is.
pub fn one_line(s: &str) -> String {
    text::escape_where(s, |c| c == Class::Invisible).into_owned()
}

/// Secrets known to the process, longest first.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds a secret (a password, a credential) that no log line or field may
/// show: from now on it is replaced by `***` wherever it appears.
pub fn register_secret(secret: &str) {
    if secret.is_empty() {
        return;
    }
    let mut list = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    for form in [secret.to_string(), one_line(secret)] {
        if !list.contains(&form) {
            list.push(form);
        }
    }
    list.sort_by_key(|s| Reverse(s.len()));
}

/// Below this length a secret is too likely to be an ordinary word (a
/// password `Server` in `Internal Server Error`): masking it in free text
/// would tell a reader the secret. It is still masked where it stands as a
/// credential.
pub const MIN_FREE_TEXT_SECRET: usize = 8;

/// Replaces every registered secret in `text` with `***`.
pub fn scrub(text: &str) -> String {
    let list = SECRETS.lock().unwrap_or_else(PoisonError::into_inner);
    scrub_secrets(text, &list)
}

/// Replaces `secrets` (longest first) in `text` with `***`: anywhere when
/// they have at least [`MIN_FREE_TEXT_SECRET`] characters, otherwise only
/// as URL userinfo (`:secret@`, `//secret@`, `//secret:`).
pub fn scrub_secrets(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| Reverse(s.len()));
    let mut out = text.to_string();
    for secret in sorted {
        if !out.contains(secret.as_str()) {
            continue;
        }
        if secret.chars().count() >= MIN_FREE_TEXT_SECRET {
            out = out.replace(secret.as_str(), "***");
            continue;
        }
        for (before, after) in [(":", "@"), ("//", "@"), ("//", ":")] {
            let from = format!("{before}{secret}{after}");
            if out.contains(&from) {
                out = out.replace(&from, &format!("{before}***{after}"));
            }
        }
    }
    out
}

/// Headers whose values are credentials. Longer names first, so that
/// `proxy-authorization` is not taken for `authorization`.
const SENSITIVE_HEADERS: [&str; 4] = [
    "proxy-authorization",
    "authorization",
    "set-cookie",
    "cookie",
];

/// Replaces the value of every credential header in `text` with `***`:
/// `Authorization: Basic ...`, `"cookie": "..."`, `set-cookie=...`, in any
/// case. A value ends at a line break, a quote or a backslash (an escaped
/// line break).
pub fn redact_headers(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(name_end) = next_header_name(&lower, from) {
        from = name_end;
        let Some((start, end)) = header_value(bytes, name_end) else {
            continue;
        };
        out.push_str(text.get(copied..start).unwrap_or(""));
        out.push_str("***");
        copied = end;
        from = end;
    }
    out.push_str(text.get(copied..).unwrap_or(""));
    out
}

/// The end of the first credential header name at or after `from` that
/// does not continue a longer word.
fn next_header_name(lower: &str, from: usize) -> Option<usize> {
    let bytes = lower.as_bytes();
    SENSITIVE_HEADERS
        .iter()
        .filter_map(|name| {
            let mut at = from;
            while let Some(i) = lower.get(at..).and_then(|s| s.find(name)) {
                let start = at.saturating_add(i);
                let end = start.saturating_add(name.len());
                let word = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
                // An escaped line break (a literal `\r\n`) before the name counts as one.
                let escaped_break = start >= 2
                    && bytes.get(start - 2) == Some(&b'\\')
                    && matches!(bytes.get(start - 1), Some(b'n' | b'r' | b't'));
                let before_ok =
                    start == 0 || escaped_break || !bytes.get(start - 1).copied().is_some_and(word);
                let after_ok = !bytes.get(end).copied().is_some_and(word);
                if before_ok && after_ok {
                    return Some((start, end));
                }
                at = end;
            }
            None
        })
        .min()
        .map(|(_, end)| end)
}

/// The span of a header value after its name: an optional closing quote,
/// `:` or `=`, blanks, then a quoted or bare value.
fn header_value(bytes: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    if bytes.get(i) == Some(&b'"') {
        i += 1;
    }
    while bytes.get(i).is_some_and(blank) {
        i += 1;
    }
    if !matches!(bytes.get(i), Some(b':') | Some(b'=')) {
        return None;
    }
    i += 1;
    while bytes.get(i).is_some_and(blank) {
        i += 1;
    }
    let quoted = bytes.get(i) == Some(&b'"');
    let start = if quoted { i + 1 } else { i };
    let mut end = start;
    while let Some(&b) = bytes.get(end) {
        let stop = match b {
            b'\r' | b'\n' => true,
            b'"' => !quoted || bytes.get(end.wrapping_sub(1)) != Some(&b'\\'),
            b'\\' => !quoted,
            _ => false,
        };
        if stop {
            break;
        }
        end += 1;
    }
    (end > start).then_some((start, end))
}

/// Which sink is in use, for the start-up message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Journal,
    Stderr,
}

/// Installs the logger: the journal when stderr is connected to it
/// (`JOURNAL_STREAM`), stderr otherwise. Every journal entry carries
/// `SOURCE_NAME=source`; stderr lines stay as they are.
pub fn init(level: LevelFilter, source: &str) -> Mode {
    let (sink, mode) = match systemd_journal_logger::connected_to_journal()
        .then(JournalLog::empty)
        .and_then(Result::ok)
    {
        Some(j) => (
            Sink::Journal(
                j.with_syslog_identifier(IDENTIFIER.to_string())
                    .add_extra_field("SOURCE_NAME", clean(source)),
            ),
            Mode::Journal,
        ),
        None => (Sink::Stderr, Mode::Stderr),
    };
    if log::set_boxed_logger(Box::new(Logger { level, sink })).is_ok() {
        log::set_max_level(level);
    }
    mode
}

/// `scheme` and the rest after `://`, when the text starts with a valid
/// scheme (a letter, then letters, digits, `+`, `-` or `.`).
pub fn split_scheme(raw: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = raw.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Replaces anything that looks like a credential with `***`: in
/// `[scheme://]userinfo@rest`, where the `@` is the last one in the text
/// (a password may hold `/`, `?`, `#` and `@`; hiding too much is safe),
/// everything between the first `:` and that `@`, or the whole userinfo
/// when it has no `:` (a token used as the user name is sent as basic
/// auth too) or an `@` before its first `:`. The scheme is optional, so proxy values such as
/// `user:pw@host:3128` are covered. Returns the redacted text and what was
/// removed.
pub fn redact(raw: &str) -> (String, Option<String>) {
    let (prefix, rest) = match split_scheme(raw) {
        Some((scheme, rest)) => (raw.get(..scheme.len() + 3).unwrap_or(""), rest),
        None => ("", raw),
    };
    let Some(at) = rest.rfind('@') else {
        return (raw.to_string(), None);
    };
    let userinfo = rest.get(..at).unwrap_or("");
    let tail = rest.get(at..).unwrap_or("");
    match userinfo.split_once(':') {
        // A user name with an `@` may itself be a token: all is hidden.
        Some((user, password)) if !user.contains('@') => (
            format!("{prefix}{user}:***{tail}"),
            Some(password.to_string()),
        ),
        _ if userinfo.is_empty() => (raw.to_string(), None),
        _ => (format!("{prefix}***{tail}"), Some(userinfo.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_dependencies_unless_trace() {
        let l = Logger {
            level: LevelFilter::Debug,
            sink: Sink::Stderr,
        };
        let m = |target| {
            Metadata::builder()
                .level(Level::Debug)
                .target(target)
                .build()
        };
        assert!(l.enabled(&m("sd_updater::cycle")));
        assert!(!l.enabled(&m("ureq::unversioned")));
        assert!(!l.enabled(&m("rustls::client")));
        let t = Logger {
            level: LevelFilter::Trace,
            sink: Sink::Stderr,
        };
        assert!(t.enabled(&m("rustls::client")));
        let warn = Metadata::builder()
            .level(Level::Warn)
            .target("rustls_platform_verifier")
            .build();
        assert!(l.enabled(&warn), "a dependency's warnings always pass");
        let info = Logger {
            level: LevelFilter::Info,
            sink: Sink::Stderr,
        };
        assert!(!info.enabled(&m("sd_updater::cycle")));
    }

    #[test]
    fn messages_become_one_line() {
        assert_eq!(one_line("a\nb\r\u{1b}[0m\0"), "a\\nb\\r\\u{1b}[0m\\u{0}");
        assert_eq!(one_line("plain é"), "plain é");
    }

    #[test]
    fn invisible_and_reordering_characters_are_escaped() {
        for (raw, want) in [
            ("bidi\u{202e}gnp.exe", "bidi\\u{202e}gnp.exe"),
            ("a\u{2028}b\u{2029}c", "a\\u{2028}b\\u{2029}c"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
            ),
            (
                "\u{2066}\u{2067}\u{2068}\u{2069}",
                "\\u{2066}\\u{2067}\\u{2068}\\u{2069}",
            ),
            ("soft\u{ad}hyphen", "soft\\u{ad}hyphen"),
            (
                "\u{61c}\u{180e}\u{200b}\u{200f}",
                "\\u{61c}\\u{180e}\\u{200b}\\u{200f}",
            ),
            (
                "\u{2060}\u{2064}\u{206a}\u{206f}",
                "\\u{2060}\\u{2064}\\u{206a}\\u{206f}",
            ),
            ("bom\u{feff}", "bom\\u{feff}"),
            ("\u{fff9}\u{fffb}", "\\u{fff9}\\u{fffb}"),
            (
                "tag\u{e0001}\u{e0041}\u{e007f}",
                "tag\\u{e0001}\\u{e0041}\\u{e007f}",
            ),
            ("nel\u{85}", "nel\\u{85}"),
        ] {
            assert_eq!(one_line(raw), want, "{raw:?}");
        }
        // Visible text, emoji joiners' neighbours and accents stay.
        assert_eq!(one_line("café ✓ 日本"), "café ✓ 日本");
    }

    #[test]
    fn credential_headers_are_redacted() {
        for (raw, want) in [
            (
                "Authorization: Basic YWxpY2U6czNjckB0",
                "Authorization: ***",
            ),
            (
                "authorization:Basic x\r\nHost: h",
                "authorization:***\r\nHost: h",
            ),
            (
                "{\"authorization\": \"Basic eA==\", \"host\": \"h\"}",
                "{\"authorization\": \"***\", \"host\": \"h\"}",
            ),
            (
                "PROXY-AUTHORIZATION: Basic cHU6cHc=",
                "PROXY-AUTHORIZATION: ***",
            ),
            ("Cookie: a=1; b=2\nnext", "Cookie: ***\nnext"),
            ("set-cookie=sid=abc; Path=/", "set-cookie=***"),
            ("\"cookie\": \"a=\\\"q\\\"\", x", "\"cookie\": \"***\", x"),
            (
                "GET /x\\r\\nauthorization: Basic eA==\\r\\n",
                "GET /x\\r\\nauthorization: ***\\r\\n",
            ),
        ] {
            assert_eq!(redact_headers(raw), want, "{raw:?}");
        }
        // Words that merely contain a header name, or no value, stay.
        for same in [
            "no authorization given",
            "authorizations: 3",
            "x-cookie-jar: on",
            "authorization:",
            "cookie",
        ] {
            assert_eq!(redact_headers(same), same);
        }
    }

    #[test]
    fn registered_secrets_never_reach_messages_or_fields() {
        register_secret("Zebra-Secret-1");
        register_secret("WmVicmEtU2VjcmV0LTE=");
        register_secret("");
        assert_eq!(
            clean("GET with Zebra-Secret-1 and WmVicmEtU2VjcmV0LTE=!"),
            "GET with *** and ***!"
        );
        register_secret("nl\nZebra");
        assert_eq!(clean("x nl\nZebra y"), "x *** y");
        assert_eq!(clean("x nl\\nZebra y"), "x *** y");
        // Key-value fields go through the same cleaning.
        let kvs: [(&str, &str); 2] = [("ERROR", "bad Zebra-Secret-1\u{202e}"), ("N", "3")];
        let mut fields = Fields(Vec::new());
        kv::Source::visit(&kvs[..], &mut fields).unwrap();
        assert_eq!(
            fields.0,
            vec![
                ("ERROR".to_string(), "bad ***\\u{202e}".to_string()),
                ("N".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn passwords_in_urls_anywhere_in_a_message_are_redacted() {
        for (raw, want) in [
            (
                "\"location\": \"http://u:Loc-Pw@h:1/x\"",
                "\"location\": \"http://u:***@h:1/x\"",
            ),
            (
                "GET https://a:b@h/x and ftp://c:d@e/ then",
                "GET https://a:***@h/x and ftp://c:***@e/ then",
            ),
            ("no url here: a:b@c", "no url here: a:b@c"),
            // Past ? and #, up to the last @: too much is hidden, never too little.
            ("http://h/x?m=a:b@c", "http://h/x?m=a:***@c"),
            (
                "http://pu:se#Cret99@127.0.0.1:3128",
                "http://pu:***@127.0.0.1:3128",
            ),
            (
                "x http://alice:99?Secr3t@h/inv y",
                "x http://alice:***@h/inv y",
            ),
            ("GET https://ghp_Token123@h/x", "GET https://***@h/x"),
            ("é://u:p@h", "é:***@h"),
            ("://u:p@h", ":***@h"),
        ] {
            assert_eq!(redact_urls(raw), want, "{raw}");
        }
    }

    #[test]
    fn redact_hides_up_to_the_last_at_whatever_comes_between() {
        for (raw, want, removed) in [
            (
                "pu:se?Cret77@127.0.0.1:3128",
                "pu:***@127.0.0.1:3128",
                "se?Cret77",
            ),
            ("http://a:1#S@h@i/x", "http://a:***@i/x", "1#S@h"),
            ("https://TOKEN@host/", "https://***@host/", "TOKEN"),
            ("http://h/p@q", "http://***@q", "h/p"),
            ("http://t@h:1/p:w@q", "http://***@q", "t@h:1/p:w"),
        ] {
            assert_eq!(redact(raw), (want.to_string(), Some(removed.to_string())));
        }
        for same in ["http://h/x", "host:3128", "http://@h/x", ""] {
            assert_eq!(redact(same), (same.to_string(), None), "{same}");
        }
    }

    #[test]
    fn short_secrets_are_masked_only_as_credentials() {
        let secrets = vec!["Server".to_string(), "Long-Secret-9".to_string()];
        assert_eq!(
            scrub_secrets("HTTP 500 Internal Server Error", &secrets),
            "HTTP 500 Internal Server Error"
        );
        assert_eq!(
            scrub_secrets("u:Server@h //Server@h //Server:x", &secrets),
            "u:***@h //***@h //***:x"
        );
        assert_eq!(scrub_secrets("a Long-Secret-9 b", &secrets), "a *** b");
        // Credential headers need no registration at all.
        assert_eq!(clean("Authorization: Basic Server"), "Authorization: ***");
    }

    #[test]
    fn the_wire_dump_is_never_logged() {
        let l = Logger {
            level: LevelFilter::Trace,
            sink: Sink::Stderr,
        };
        let m = |target| {
            Metadata::builder()
                .level(Level::Trace)
                .target(target)
                .build()
        };
        assert!(!l.enabled(&m("ureq_proto::util")));
        assert!(l.enabled(&m("ureq_proto::client")));
        assert!(l.enabled(&m("ureq::unversioned::transport::tcp")));
    }
}
