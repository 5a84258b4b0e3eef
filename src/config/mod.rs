//! Settings from the environment, validated once at start-up.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::model::targets::{Entries, TargetGroup};
use crate::source::url::InventoryUrl;

/// One environment variable: its name, default and meaning. The table feeds
/// `--help`, `--check-config` and the documentation tests.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "INVENTORY_URL",
        default: "http://inventory_server:1337/inventory",
        meaning: "http://, https:// or file:// URL of the sensor list",
    },
    Setting {
        name: "UPDATE_INTERVAL",
        default: "30",
        meaning: "time between cycles: seconds, or a number with s/m/h (min 1s)",
    },
    Setting {
        name: "TARGETS_FILE",
        default: "/var/lib/sd-updater/targets.json",
        meaning: "output file; must end in .json",
    },
    Setting {
        name: "METRICS_PORT",
        default: "9100",
        meaning: "port added to sensors that name none (1-65535)",
    },
    Setting {
        name: "METRICS_PATH",
        default: "/metrics",
        meaning: "becomes __metrics_path__; starts with /",
    },
    Setting {
        name: "TARGET_LABELS",
        default: "job=sensors,environment=production",
        meaning: "labels of the target group, name=value,...",
    },
    Setting {
        name: "HTTP_TIMEOUT",
        default: "10",
        meaning: "limit for one whole request, connect to last byte (min 0.1s)",
    },
    Setting {
        name: "RETRY_ATTEMPTS",
        default: "3",
        meaning: "retries within a cycle after the first try",
    },
    Setting {
        name: "RETRY_BACKOFF",
        default: "1",
        meaning: "base seconds of the exponential backoff (decimals allowed)",
    },
    Setting {
        name: "MAX_RESPONSE_BYTES",
        default: "67108864",
        meaning: "cap on the decompressed response body",
    },
    Setting {
        name: "ALLOW_EMPTY",
        default: "false",
        meaning: "write an empty target list instead of keeping the old file",
    },
    Setting {
        name: "RUN_AS_USER",
        default: "sd-updater",
        meaning: "user (name or UID) to switch to when started as root",
    },
    Setting {
        name: "LOG_LEVEL",
        default: "info",
        meaning: "error, warn, info, debug or trace",
    },
];

/// The shortest HTTP timeout: below it not even a loopback request can
/// complete, and the retry arithmetic only spins.
const MIN_HTTP_TIMEOUT: Duration = Duration::from_millis(100);

/// The longest interval or timeout accepted: a year is already absurd, and
/// the cap keeps every later `Instant` addition far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub inventory_url: InventoryUrl,
    pub update_interval: Duration,
    pub targets_file: PathBuf,
    pub metrics_port: u16,
    pub metrics_path: String,
    pub target_labels: Vec<(String, String)>,
    pub http_timeout: Duration,
    pub retry_attempts: u32,
    pub retry_backoff: Duration,
    pub max_response_bytes: u64,
    pub allow_empty: bool,
    pub run_as_user: String,
    pub log_level: LevelFilter,
}

/// An invalid setting: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The target groups the output holds: the configured `METRICS_PATH`
    /// and `TARGET_LABELS` are every group's defaults, which an entry's own
    /// labels override.
    pub fn target_groups(&self, entries: Entries) -> Vec<TargetGroup> {
        let mut defaults = Vec::with_capacity(self.target_labels.len() + 1);
        defaults.push(("__metrics_path__".to_string(), self.metrics_path.clone()));
        defaults.extend(self.target_labels.iter().cloned());
        entries.into_groups(&defaults)
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var_os(name).map(|v| v.into_string()))
    }

    /// Reads settings through `lookup`, which returns `Err` for a value that
    /// is not valid UTF-8. An empty value counts as unset.
    pub fn from_lookup<F>(lookup: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<Result<String, std::ffi::OsString>>,
    {
        let get = |var: &'static str| -> Result<Option<String>, ConfigError> {
            match lookup(var) {
                None => Ok(None),
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(_)) => Err(err(var, "value is not valid UTF-8")),
            }
        };
        let value = |var: &'static str| -> Result<String, ConfigError> {
            Ok(get(var)?
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default_of(var).to_string()))
        };
        fn field<T>(
            var: &'static str,
            v: Result<String, ConfigError>,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<T, ConfigError> {
            parse(&v?).map_err(|m| err(var, m))
        }

        let inventory_url = {
            let v = value("INVENTORY_URL")?;
            InventoryUrl::parse(&v).map_err(|m| err("INVENTORY_URL", m))?
        };
        let update_interval = field("UPDATE_INTERVAL", value("UPDATE_INTERVAL"), |v| {
            let d = parse_duration(v)?;
            if d < Duration::from_secs(1) {
                return Err(format!("{v:?} is shorter than the minimum of 1s"));
            }
            Ok(d)
        })?;
        let targets_file = PathBuf::from(field("TARGETS_FILE", value("TARGETS_FILE"), |v| {
            parse_targets_file(v)
        })?);
        let metrics_port = field("METRICS_PORT", value("METRICS_PORT"), parse_port)?;
        let metrics_path = field("METRICS_PATH", value("METRICS_PATH"), |v| {
            parse_metrics_path(v)
        })?;
        // Empty TARGET_LABELS means "no extra labels", not "the default".
        let target_labels = match get("TARGET_LABELS")? {
            Some(v) => parse_labels(&v),
            None => parse_labels(default_of("TARGET_LABELS")),
        }
        .map_err(|m| err("TARGET_LABELS", m))?;
        let http_timeout = field("HTTP_TIMEOUT", value("HTTP_TIMEOUT"), |v| {
            let d = parse_duration(v)?;
            if d < MIN_HTTP_TIMEOUT {
                return Err(format!("{v:?} is shorter than the minimum of 0.1s"));
            }
            Ok(d)
        })?;
        let retry_attempts = field("RETRY_ATTEMPTS", value("RETRY_ATTEMPTS"), |v| {
            parse_uint(v)?
                .try_into()
                .ok()
                .filter(|n: &u32| *n <= 1000)
                .ok_or_else(|| format!("{v:?} is more than 1000 retries"))
        })?;
        let retry_backoff = field("RETRY_BACKOFF", value("RETRY_BACKOFF"), |v| {
            parse_seconds(v)
        })?;
        let max_response_bytes = field("MAX_RESPONSE_BYTES", value("MAX_RESPONSE_BYTES"), |v| {
            let n = parse_uint(v)?;
            if n < 2 {
                return Err("must be at least 2 bytes, enough for \"[]\"".into());
            }
            Ok(n)
        })?;
        let allow_empty = field("ALLOW_EMPTY", value("ALLOW_EMPTY"), parse_bool)?;
        let run_as_user = field("RUN_AS_USER", value("RUN_AS_USER"), |v| {
            if v.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ':' || c == '/')
            {
                Err(format!("{:?} is not a user name or UID", v))
            } else {
                Ok(v.to_string())
            }
        })?;
        let log_level = field("LOG_LEVEL", value("LOG_LEVEL"), parse_log_level)?;

        Ok(Config {
            inventory_url,
            update_interval,
            targets_file,
            metrics_port,
            metrics_path,
            target_labels,
            http_timeout,
            retry_attempts,
            retry_backoff,
            max_response_bytes,
            allow_empty,
            run_as_user,
            log_level,
        })
    }

    /// The effective settings as `NAME=value` lines, password redacted.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        vec![
            ("INVENTORY_URL", self.inventory_url.to_string()),
            ("UPDATE_INTERVAL", format_duration(self.update_interval)),
            ("TARGETS_FILE", self.targets_file.display().to_string()),
            ("METRICS_PORT", self.metrics_port.to_string()),
            ("METRICS_PATH", self.metrics_path.clone()),
            ("TARGET_LABELS", format_labels(&self.target_labels)),
            ("HTTP_TIMEOUT", format_duration(self.http_timeout)),
            ("RETRY_ATTEMPTS", self.retry_attempts.to_string()),
            ("RETRY_BACKOFF", format_duration(self.retry_backoff)),
            ("MAX_RESPONSE_BYTES", self.max_response_bytes.to_string()),
            ("ALLOW_EMPTY", self.allow_empty.to_string()),
            ("RUN_AS_USER", self.run_as_user.clone()),
            ("LOG_LEVEL", self.log_level.to_string().to_ascii_lowercase()),
        ]
    }
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

fn default_of(var: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|s| s.name == var)
        .map(|s| s.default)
        .unwrap_or("")
}

/// `30`, `2.5`, `30s`, `5m`, `1h`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let (number, unit) = match v.strip_suffix(['s', 'm', 'h']) {
        Some(n) => (n, v.as_bytes()[v.len() - 1]),
        None => (v, b's'),
    };
    let scale = match unit {
        b'm' => 60.0,
        b'h' => 3600.0,
        _ => 1.0,
    };
    let n = parse_number(number).map_err(|_| {
        format!("{v:?} is not a duration (use seconds, or a number with s, m or h)")
    })?;
    to_duration(n * scale, v)
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

fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

fn parse_uint(v: &str) -> Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not a non-negative whole number"));
    }
    v.parse::<u64>().map_err(|_| format!("{v:?} is too large"))
}

pub fn parse_port(v: &str) -> Result<u16, String> {
    match parse_uint(v) {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(format!("{v:?} is not a port number (1-65535)")),
    }
}

fn parse_targets_file(v: &str) -> Result<String, String> {
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
    Ok(v.to_string())
}

fn parse_metrics_path(v: &str) -> Result<String, String> {
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

/// Whether `name` is a legacy Prometheus label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
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

fn format_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

fn parse_log_level(v: &str) -> Result<LevelFilter, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned().map(Ok))
    }

    #[test]
    fn defaults_match_the_seed_and_the_table() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.inventory_url.to_string(),
            "http://inventory_server:1337/inventory"
        );
        assert_eq!(c.update_interval, Duration::from_secs(30));
        assert_eq!(
            c.targets_file,
            PathBuf::from("/var/lib/sd-updater/targets.json")
        );
        assert_eq!(c.metrics_port, 9100);
        assert_eq!(c.metrics_path, "/metrics");
        assert_eq!(
            c.target_labels,
            vec![
                ("job".to_string(), "sensors".to_string()),
                ("environment".to_string(), "production".to_string())
            ]
        );
        assert_eq!(c.http_timeout, Duration::from_secs(10));
        assert_eq!(c.retry_attempts, 3);
        assert_eq!(c.retry_backoff, Duration::from_secs(1));
        assert_eq!(c.max_response_bytes, 67_108_864);
        assert!(!c.allow_empty);
        assert_eq!(c.run_as_user, "sd-updater");
        assert_eq!(c.log_level, LevelFilter::Info);
        // --check-config prints every variable of the table.
        let names: Vec<_> = c.effective().iter().map(|(n, _)| *n).collect();
        let table: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(names, table);
    }

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
    fn errors_name_the_variable() {
        let cases: &[(&str, &str)] = &[
            ("UPDATE_INTERVAL", "abc"),
            ("UPDATE_INTERVAL", "0"),
            ("UPDATE_INTERVAL", "0.5"),
            ("INVENTORY_URL", "ftp://x/y"),
            ("TARGETS_FILE", "/tmp/targets.txt"),
            ("TARGETS_FILE", "/tmp/dir/"),
            ("METRICS_PORT", "0"),
            ("METRICS_PORT", "65536"),
            ("METRICS_PORT", "http"),
            ("METRICS_PATH", "metrics"),
            ("TARGET_LABELS", "1bad=x"),
            ("TARGET_LABELS", "job"),
            ("TARGET_LABELS", "job=a,job=b"),
            ("TARGET_LABELS", "job="),
            ("TARGET_LABELS", "__metrics_path__=/x"),
            ("HTTP_TIMEOUT", "0"),
            ("HTTP_TIMEOUT", "0.000000001"),
            ("HTTP_TIMEOUT", "0.099"),
            ("TARGETS_FILE", "/tmp/x.json/."),
            ("TARGETS_FILE", "/tmp/x.json/"),
            ("TARGETS_FILE", "/tmp/x.json/.."),
            ("TARGETS_FILE", "x.json/."),
            ("RETRY_ATTEMPTS", "-1"),
            ("RETRY_ATTEMPTS", "1.5"),
            ("RETRY_BACKOFF", "fast"),
            ("MAX_RESPONSE_BYTES", "1"),
            ("MAX_RESPONSE_BYTES", "99999999999999999999999"),
            ("ALLOW_EMPTY", "maybe"),
            ("RUN_AS_USER", "a b"),
            ("LOG_LEVEL", "loud"),
        ];
        for (var, value) in cases {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, *var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var));
        }
    }

    #[test]
    fn non_utf8_is_an_error() {
        let e = Config::from_lookup(|k| {
            (k == "METRICS_PATH").then(|| Err(std::ffi::OsString::from("x")))
        })
        .unwrap_err();
        assert_eq!(e.var, "METRICS_PATH");
    }

    #[test]
    fn empty_means_default_except_labels() {
        let c = config(&[("UPDATE_INTERVAL", ""), ("TARGET_LABELS", "")]).unwrap();
        assert_eq!(c.update_interval, Duration::from_secs(30));
        assert!(c.target_labels.is_empty());
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

    #[test]
    fn values() {
        let c = config(&[
            ("ALLOW_EMPTY", "yes"),
            ("LOG_LEVEL", "DEBUG"),
            ("RETRY_BACKOFF", "0.5"),
            ("RUN_AS_USER", "1000"),
            ("INVENTORY_URL", "http://u:pw@h/x"),
        ])
        .unwrap();
        assert!(c.allow_empty);
        assert_eq!(c.log_level, LevelFilter::Debug);
        assert_eq!(c.retry_backoff, Duration::from_millis(500));
        let shown = c.effective();
        assert!(shown.iter().all(|(_, v)| !v.contains("pw")));
        assert!(shown.contains(&("RETRY_BACKOFF", "0.5s".to_string())));
    }

    #[test]
    fn limits_are_inclusive() {
        let c = config(&[("HTTP_TIMEOUT", "0.1"), ("TARGETS_FILE", "./x.json")]).unwrap();
        assert_eq!(c.http_timeout, Duration::from_millis(100));
        assert_eq!(c.targets_file, PathBuf::from("./x.json"));
        let e = config(&[("HTTP_TIMEOUT", "0.000000001")]).unwrap_err();
        assert!(e.message.contains("0.1s"), "{e}");
    }
}
