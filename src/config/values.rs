//! Parsers and formatters of single setting values. Each parser returns the
//! typed value or a message that does not repeat the variable's name (the
//! caller adds it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use crate::model::address;
use crate::model::labels::is_label_name;

/// The shortest HTTP timeout: below it not even a loopback request can
/// complete, and the retry arithmetic only spins.
const MIN_HTTP_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest interval or timeout accepted: a year is already absurd, and
/// the cap keeps every later `Instant` addition far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most retries within one cycle.
const MAX_RETRIES: u32 = 1000;

/// `30`, `2.5`, `30s`, `5m`, `1h`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = v.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v.strip_suffix('s').unwrap_or(v), 1.0)
    };
    let n = parse_number(number).map_err(|_| {
        format!("{v:?} is not a duration (use seconds, or a number with s, m or h)")
    })?;
    to_duration(n * scale, v)
}

/// `UPDATE_INTERVAL`: a duration of at least a second.
pub fn parse_interval(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{v:?} is shorter than the minimum of 1s"));
    }
    Ok(d)
}

/// `HTTP_TIMEOUT`: a duration of at least 0.1s.
pub fn parse_timeout(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < MIN_HTTP_TIMEOUT {
        return Err(format!("{v:?} is shorter than the minimum of 0.1s"));
    }
    Ok(d)
}

/// Plain decimal seconds, as in `RETRY_BACKOFF=0.5`.
pub fn parse_seconds(v: &str) -> Result<Duration, String> {
    let n = parse_number(v).map_err(|_| format!("{v:?} is not a number of seconds"))?;
    to_duration(n, v)
}

fn parse_number(v: &str) -> Result<f64, ()> {
    // Digits with at most one dot: no signs, exponents, "inf" or "nan".
    let ok = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_digit() || c == '.')
        && v.chars().filter(|&c| c == '.').count() <= 1
        && v.chars().any(|c| c.is_ascii_digit());
    if !ok {
        return Err(());
    }
    v.parse::<f64>().map_err(|_| ())
}

fn to_duration(secs: f64, v: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("{v:?} is longer than a year"))
}

pub fn format_duration(d: &Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Plain decimal seconds, as `RETRY_BACKOFF` takes them.
pub fn format_seconds(d: &Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        d.as_secs_f64().to_string()
    }
}

fn parse_uint(v: &str) -> Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not a non-negative whole number"));
    }
    v.parse::<u64>().map_err(|_| format!("{v:?} is too large"))
}

/// `METRICS_PORT`: digits only, 1-65535. The sensor-address parser caps a
/// port at five characters; leading zeros were always accepted here, so
/// they are dropped before it sees the value.
pub fn parse_port(v: &str) -> Result<u16, String> {
    address::parse_port(v.trim_start_matches('0'))
        .map_err(|_| format!("{v:?} is not a port number (1-65535)"))
}

/// `RETRY_ATTEMPTS`: a whole number up to 1000.
pub fn parse_retries(v: &str) -> Result<u32, String> {
    parse_uint(v)?
        .try_into()
        .ok()
        .filter(|n: &u32| *n <= MAX_RETRIES)
        .ok_or_else(|| format!("{v:?} is more than {MAX_RETRIES} retries"))
}

/// `MAX_RESPONSE_BYTES`: enough for at least `[]`.
pub fn parse_body_limit(v: &str) -> Result<u64, String> {
    let n = parse_uint(v)?;
    if n < 2 {
        return Err("must be at least 2 bytes, enough for \"[]\"".into());
    }
    Ok(n)
}

/// `TARGETS_FILE`: a path whose last segment, as written, is a `.json` file.
pub fn parse_targets_file(v: &str) -> Result<PathBuf, String> {
    // The last segment as written: Path::file_name() would skip a trailing
    // "/." and name the directory before it.
    let name = v.rsplit('/').next().unwrap_or(v);
    if !name.ends_with(".json") || name == ".json" {
        return Err(format!(
            "{v:?} must name a file ending in .json (Prometheus picks the parser from the extension)"
        ));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    // As root, missing directories on the way are created and handed to
    // the service user: a ".." would create (and leave behind) directories
    // that are not parents of the file.
    if v.split('/').any(|segment| segment == "..") {
        return Err(format!("{v:?} must not contain a .. component"));
    }
    Ok(PathBuf::from(v))
}

/// `INVENTORY_TOKEN_FILE`: where the bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFile {
    /// `$CREDENTIALS_DIRECTORY/inventory-token` when that exists, else none.
    Auto,
    /// No token, even in the credentials directory.
    Off,
    Path(PathBuf),
}

pub fn parse_token_file(v: &str) -> Result<TokenFile, String> {
    Ok(match v {
        "auto" => TokenFile::Auto,
        _ => match parse_file_setting(v)? {
            None => TokenFile::Off,
            Some(p) => TokenFile::Path(p),
        },
    })
}

pub fn format_token_file(t: &TokenFile) -> String {
    match t {
        TokenFile::Auto => "auto".into(),
        TokenFile::Off => "none".into(),
        TokenFile::Path(p) => format_path(p),
    }
}

/// A file setting: a path, or `none` (write `./none` for a file of
/// that name).
pub fn parse_file_setting(v: &str) -> Result<Option<PathBuf>, String> {
    if v == "none" {
        return Ok(None);
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if v.ends_with('/') {
        return Err(format!("{v:?} names a directory, not a file"));
    }
    Ok(Some(PathBuf::from(v)))
}

pub fn format_file_setting(p: &Option<PathBuf>) -> String {
    p.as_deref().map_or_else(|| "none".into(), format_path)
}

/// `METRICS_FILE`: empty for none, else a path checked as `TARGETS_FILE`
/// is, ending in `.prom` (node_exporter's textfile collector reads only
/// those).
pub fn parse_metrics_file(v: &str) -> Result<Option<PathBuf>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let name = v.rsplit('/').next().unwrap_or(v);
    if !name.ends_with(".prom") || name == ".prom" {
        return Err(format!(
            "{v:?} must name a file ending in .prom (the textfile collector reads only those)"
        ));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if v.split('/').any(|segment| segment == "..") {
        return Err(format!("{v:?} must not contain a .. component"));
    }
    Ok(Some(PathBuf::from(v)))
}

pub fn format_optional_path(p: &Option<PathBuf>) -> String {
    p.as_deref().map(format_path).unwrap_or_default()
}

/// The longest `SOURCE_NAME`, in bytes.
pub const MAX_SOURCE_NAME: usize = 64;

/// A `SOURCE_NAME` character: those of systemd instance names.
fn is_source_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | ':' | '-')
}

/// `SOURCE_NAME`: `[A-Za-z0-9_.@:-]`, 1 to 64 bytes; empty for the
/// default, which `source_name_for` derives.
pub fn parse_source_name(v: &str) -> Result<String, String> {
    if v.len() > MAX_SOURCE_NAME {
        return Err(format!(
            "is {} bytes long, more than {MAX_SOURCE_NAME}",
            v.len()
        ));
    }
    if let Some(c) = v.chars().find(|c| !is_source_char(*c)) {
        return Err(format!(
            "{v:?} contains {c:?}; use only letters, digits and _ . @ : -"
        ));
    }
    Ok(v.to_string())
}

/// The default `SOURCE_NAME`: the file stem of `TARGETS_FILE`, with any
/// other character replaced by `_` and cut to the maximum length.
pub fn source_name_for(targets_file: &Path) -> String {
    let stem = targets_file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if is_source_char(c) { c } else { '_' })
        .take(MAX_SOURCE_NAME)
        .collect();
    if name.is_empty() {
        "targets".to_string()
    } else {
        name
    }
}

pub fn format_path(p: &Path) -> String {
    p.display().to_string()
}

/// `METRICS_PATH`: an absolute URL path.
pub fn parse_metrics_path(v: &str) -> Result<String, String> {
    if !v.starts_with('/') {
        return Err(format!("{v:?} must start with /"));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{v:?} must not contain whitespace or control characters"
        ));
    }
    Ok(v.to_string())
}

/// `MAX_INVALID_PERCENT`: a whole number 0-100.
pub fn parse_percent(v: &str) -> Result<u8, String> {
    parse_uint(v)
        .ok()
        .and_then(|n| u8::try_from(n).ok())
        .filter(|n| *n <= 100)
        .ok_or_else(|| format!("{v:?} is not a whole number from 0 to 100"))
}

/// `RUN_AS_USER`: a user name or UID; whether it exists is checked later.
pub fn parse_user(v: &str) -> Result<String, String> {
    if v.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
    {
        Err(format!("{v:?} is not a user name or UID"))
    } else {
        Ok(v.to_string())
    }
}

/// `job=sensors, environment=production` (spaces around names and values are trimmed).
pub fn parse_labels(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels: Vec<(String, String)> = Vec::new();
    for pair in v.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not a name=value pair"))?;
        let (name, value) = (name.trim(), value.trim());
        if !is_label_name(name) {
            return Err(format!(
                "label name {name:?} does not match [a-zA-Z_][a-zA-Z0-9_]*"
            ));
        }
        if name == "__metrics_path__" {
            return Err("set __metrics_path__ with METRICS_PATH, not here".into());
        }
        if name == "__address__" {
            return Err("__address__ is set per target and cannot be a group label".into());
        }
        if value.is_empty() {
            return Err(format!("label {name:?} has an empty value"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!(
                "label {name:?} has control characters in its value"
            ));
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name:?} is given twice"));
        }
        labels.push((name.to_string(), value.to_string()));
    }
    Ok(labels)
}

pub fn format_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

pub fn parse_log_level(v: &str) -> Result<LevelFilter, String> {
    match v.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "{v:?} is not one of error, warn, info, debug, trace"
        )),
    }
}

pub fn format_log_level(level: &LevelFilter) -> String {
    level.to_string().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        for bad in [
            "",
            "abc",
            "-1",
            "1d",
            "s",
            "m",
            "5ms",
            "5sm",
            "1e3",
            "inf",
            "NaN",
            "1..2",
            " 5",
            "99999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("1s").is_err());
    }

    #[test]
    fn ports_keep_their_rules() {
        for (v, port) in [("1", 1), ("9100", 9100), ("65535", 65535), ("09100", 9100)] {
            assert_eq!(parse_port(v), Ok(port), "{v}");
        }
        // Leading zeros past five characters, as before.
        assert_eq!(parse_port("0000000080"), Ok(80));
        for bad in [
            "", "0", "00", "65536", "70000", "-1", "+80", " 80", "http", "8o",
        ] {
            assert_eq!(
                parse_port(bad),
                Err(format!("{bad:?} is not a port number (1-65535)")),
                "{bad:?}"
            );
        }
        assert!(parse_port("99999999999999999999999").is_err());
    }

    #[test]
    fn targets_file_refuses_dot_dot_components() {
        for bad in [
            "../x.json",
            "/var/lib/../x.json",
            "a/../b.json",
            "/a/b/..//c.json",
        ] {
            let e = parse_targets_file(bad).unwrap_err();
            assert!(e.contains(".. component"), "{bad}: {e}");
        }
        for ok in [
            "./x.json",
            "/a/..b/x.json",
            "/a/b../x.json",
            "/a/.../x.json",
            "..x.json",
        ] {
            assert_eq!(parse_targets_file(ok), Ok(PathBuf::from(ok)), "{ok}");
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("0"), Ok(0));
        assert_eq!(parse_percent("50"), Ok(50));
        assert_eq!(parse_percent("100"), Ok(100));
        for bad in ["", "101", "-1", "5.5", "50%", "999999999999999999999"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_file() {
        assert_eq!(parse_metrics_file(""), Ok(None));
        assert_eq!(
            parse_metrics_file("/x/sd.prom"),
            Ok(Some(PathBuf::from("/x/sd.prom")))
        );
        for bad in [
            "/x/sd.json",
            "/x/.prom",
            "/x/sd.prom/",
            "/x/../sd.prom",
            "/x/s\nd.prom",
            "/x/s\td.prom",
        ] {
            assert!(parse_metrics_file(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn source_names() {
        for ok in ["", "targets", "netbox", "a-b_c.d@e:f", &"x".repeat(64)] {
            assert_eq!(parse_source_name(ok), Ok(ok.to_string()), "{ok}");
        }
        for bad in ["a b", "a\nb", "é", "a/b", "a\"b", &"x".repeat(65)] {
            assert!(parse_source_name(bad).is_err(), "{bad:?}");
        }
        for (file, name) in [
            ("/var/lib/sd-updater/targets.json", "targets"),
            ("/var/lib/sd-updater/netbox.json", "netbox"),
            ("rel/my site.json", "my_site"),
            ("..json", "."),
        ] {
            assert_eq!(source_name_for(Path::new(file)), name, "{file}");
        }
        let long = format!("/x/{}.json", "y".repeat(100));
        assert_eq!(source_name_for(Path::new(&long)).len(), MAX_SOURCE_NAME);
    }

    #[test]
    fn labels() {
        assert_eq!(
            parse_labels(" job = sensors , site=eu-1,").unwrap(),
            vec![
                ("job".to_string(), "sensors".to_string()),
                ("site".to_string(), "eu-1".to_string())
            ]
        );
        assert!(parse_labels("__scheme__=https").is_ok());
        assert!(is_label_name("_a1"));
        assert!(!is_label_name("a-b"));
        assert!(!is_label_name(""));
        assert!(!is_label_name("é"));
    }
}
