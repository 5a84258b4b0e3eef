//! Settings from the environment, validated once at start-up.
//!
//! Every setting is declared once, in the `settings!` table below: its
//! `Config` field and type, variable name, default, help text, parser and
//! formatter. `Config`, `SETTINGS` (which feeds `--help`), reading the
//! environment and `--check-config` all come from that table.

mod values;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

pub use self::values::TokenFile;
use self::values::*;
use crate::model::targets::{Entries, TargetGroup};
use crate::source::url::InventoryUrl;

/// One environment variable, as `--help` and `--check-config` show it.
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
    /// The effective value, with any password redacted.
    show: fn(&Config) -> String,
}

impl Setting {
    /// The effective value of this setting in `config`, secrets redacted.
    pub fn show(&self, config: &Config) -> String {
        (self.show)(config)
    }
}

/// Declares the settings: generates `Config` with one field per entry,
/// `SETTINGS` in the same order, and `Config::read`, which parses every
/// field in that order and stops at the first invalid value. An empty
/// value means the default unless the entry says `empty_is_default: false`.
macro_rules! settings {
    (@empty) => { true };
    (@empty $empty:literal) => { $empty };
    ($(
        $field:ident: $ty:ty {
            name: $name:literal,
            default: $default:literal,
            help: $help:literal,
            $(empty_is_default: $empty:literal,)?
            parse: $parse:expr,
            show: $show:expr $(,)?
        }
    )*) => {
        #[derive(Debug, Clone)]
        pub struct Config {
            $(pub $field: $ty,)*
        }

        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                name: $name,
                default: $default,
                help: $help,
                show: |config: &Config| {
                    let show: fn(&$ty) -> String = $show;
                    show(&config.$field)
                },
            },
        )*];

        impl Config {
            /// Parses each setting from `raw(name, default, empty_is_default)`,
            /// the text to parse.
            fn read<R>(raw: R) -> Result<Config, ConfigError>
            where
                R: Fn(&'static str, &'static str, bool) -> Result<String, ConfigError>,
            {
                Ok(Config {$(
                    $field: {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        let text = raw($name, $default, settings!(@empty $($empty)?))?;
                        parse(&text).map_err(|m| err($name, m))?
                    },
                )*})
            }
        }
    };
}

settings! {
    inventory_url: InventoryUrl {
        name: "INVENTORY_URL",
        default: "http://inventory_server:1337/inventory",
        help: "http://, https:// or file:// URL of the sensor list",
        parse: InventoryUrl::parse,
        // The Display form has the password redacted.
        show: |url| url.to_string(),
    }
    inventory_token_file: TokenFile {
        name: "INVENTORY_TOKEN_FILE",
        default: "auto",
        help: "bearer token file; auto: $CREDENTIALS_DIRECTORY/inventory-token",
        parse: parse_token_file,
        show: format_token_file,
    }
    inventory_password_file: Option<PathBuf> {
        name: "INVENTORY_PASSWORD_FILE",
        default: "none",
        help: "password file for the user in INVENTORY_URL (https://user@host/)",
        parse: parse_file_setting,
        show: format_file_setting,
    }
    inventory_ca_file: Option<PathBuf> {
        name: "INVENTORY_CA_FILE",
        default: "none",
        help: "PEM bundle of CAs to trust instead of the system store",
        parse: parse_file_setting,
        show: format_file_setting,
    }
    inventory_client_cert: Option<PathBuf> {
        name: "INVENTORY_CLIENT_CERT",
        default: "none",
        help: "PEM client certificate (chain) for mutual TLS",
        parse: parse_file_setting,
        show: format_file_setting,
    }
    inventory_client_key: Option<PathBuf> {
        name: "INVENTORY_CLIENT_KEY",
        default: "none",
        help: "PEM private key of INVENTORY_CLIENT_CERT",
        parse: parse_file_setting,
        show: format_file_setting,
    }
    update_interval: Duration {
        name: "UPDATE_INTERVAL",
        default: "30",
        help: "time between cycles: seconds, or a number with s/m/h (min 1s)",
        parse: parse_interval,
        show: format_duration,
    }
    targets_file: PathBuf {
        name: "TARGETS_FILE",
        default: "/var/lib/sd-updater/targets.json",
        help: "output file; must end in .json, no .. component",
        parse: parse_targets_file,
        show: |path| format_path(path),
    }
    metrics_port: u16 {
        name: "METRICS_PORT",
        default: "9100",
        help: "port added to sensors that name none (1-65535)",
        parse: parse_port,
        show: |port| port.to_string(),
    }
    metrics_path: String {
        name: "METRICS_PATH",
        default: "/metrics",
        help: "becomes __metrics_path__; starts with /",
        parse: parse_metrics_path,
        show: String::clone,
    }
    target_labels: Vec<(String, String)> {
        name: "TARGET_LABELS",
        default: "job=sensors,environment=production",
        help: "labels of the target group, name=value,...",
        // Empty means "no extra labels", not "the default".
        empty_is_default: false,
        parse: parse_labels,
        show: |labels| format_labels(labels),
    }
    http_timeout: Duration {
        name: "HTTP_TIMEOUT",
        default: "10",
        help: "limit for one whole request, connect to last byte (min 0.1s)",
        parse: parse_timeout,
        show: format_duration,
    }
    retry_attempts: u32 {
        name: "RETRY_ATTEMPTS",
        default: "3",
        help: "retries within a cycle after the first try",
        parse: parse_retries,
        show: |n| n.to_string(),
    }
    retry_backoff: Duration {
        name: "RETRY_BACKOFF",
        default: "1",
        help: "base seconds of the exponential backoff (decimals allowed)",
        parse: parse_seconds,
        show: format_seconds,
    }
    max_response_bytes: u64 {
        name: "MAX_RESPONSE_BYTES",
        default: "67108864",
        help: "cap on the decompressed response body",
        parse: parse_body_limit,
        show: |n| n.to_string(),
    }
    allow_empty: bool {
        name: "ALLOW_EMPTY",
        default: "false",
        help: "write an empty target list instead of keeping the old file",
        parse: parse_bool,
        show: |b| b.to_string(),
    }
    max_invalid_percent: u8 {
        name: "MAX_INVALID_PERCENT",
        default: "50",
        help: "refuse an inventory with more invalid entries than this (0-100; 100: never)",
        parse: parse_percent,
        show: |n| n.to_string(),
    }
    run_as_user: String {
        name: "RUN_AS_USER",
        default: "sd-updater",
        help: "user (name or UID) to switch to when started as root",
        parse: parse_user,
        show: String::clone,
    }
    log_level: LevelFilter {
        name: "LOG_LEVEL",
        default: "info",
        help: "error, warn, info, debug or trace",
        parse: parse_log_level,
        show: format_log_level,
    }
    metrics_file: Option<PathBuf> {
        name: "METRICS_FILE",
        default: "",
        help: "health metrics file for node_exporter, ending in .prom; empty: none",
        parse: parse_metrics_file,
        show: format_optional_path,
    }
    source_name: String {
        name: "SOURCE_NAME",
        default: "",
        help: "metrics source label and journald field: [A-Za-z0-9_.@:-], max 64 bytes; empty: TARGETS_FILE stem",
        parse: parse_source_name,
        show: String::clone,
    }
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
        entries.into_groups(&self.default_labels())
    }

    /// The labels of a plain name: `__metrics_path__` first, then
    /// `TARGET_LABELS` in their order.
    pub fn default_labels(&self) -> Vec<(String, String)> {
        let mut defaults = Vec::with_capacity(self.target_labels.len() + 1);
        defaults.push(("__metrics_path__".to_string(), self.metrics_path.clone()));
        defaults.extend(self.target_labels.iter().cloned());
        defaults
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var_os(name).map(|v| v.into_string()))
    }

    /// Reads settings through `lookup`, which returns `Err` for a value that
    /// is not valid UTF-8. An empty value counts as unset, except where the
    /// table says otherwise.
    pub fn from_lookup<F>(lookup: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<Result<String, std::ffi::OsString>>,
    {
        let mut config = Config::read(|name, default, empty_is_default| match lookup(name) {
            Some(Err(_)) => Err(err(name, "value is not valid UTF-8")),
            Some(Ok(v)) if !(v.is_empty() && empty_is_default) => Ok(v),
            _ => Ok(default.to_string()),
        })?;
        // The one default that depends on another setting.
        if config.source_name.is_empty() {
            config.source_name = source_name_for(&config.targets_file);
        }
        Ok(config)
    }

    /// The effective settings as `(NAME, value)` pairs in table order,
    /// passwords redacted.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.name, s.show(self))).collect()
    }
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
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
    fn defaults() {
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
        assert_eq!(c.max_invalid_percent, 50);
        assert_eq!(c.run_as_user, "sd-updater");
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.metrics_file, None);
        assert_eq!(c.source_name, "targets");
    }

    #[test]
    fn source_name_defaults_to_the_targets_file_stem() {
        let c = config(&[("TARGETS_FILE", "/var/lib/sd-updater/netbox.json")]).unwrap();
        assert_eq!(c.source_name, "netbox");
        assert!(c
            .effective()
            .contains(&("SOURCE_NAME", "netbox".to_string())));
        let c = config(&[
            ("TARGETS_FILE", "/x/netbox.json"),
            ("SOURCE_NAME", "site-1"),
            ("METRICS_FILE", "/x/sd.prom"),
        ])
        .unwrap();
        assert_eq!(c.source_name, "site-1");
        assert_eq!(c.metrics_file, Some(PathBuf::from("/x/sd.prom")));
        assert!(c
            .effective()
            .contains(&("METRICS_FILE", "/x/sd.prom".to_string())));
    }

    #[test]
    fn effective_lists_the_table_in_order() {
        let shown = config(&[]).unwrap().effective();
        let names: Vec<_> = shown.iter().map(|(n, _)| *n).collect();
        let table: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(names, table);
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
            ("TARGETS_FILE", "/tmp/../x.json"),
            ("TARGETS_FILE", "../x.json"),
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
            ("RETRY_ATTEMPTS", "1001"),
            ("RETRY_BACKOFF", "fast"),
            ("MAX_RESPONSE_BYTES", "1"),
            ("MAX_RESPONSE_BYTES", "99999999999999999999999"),
            ("ALLOW_EMPTY", "maybe"),
            ("MAX_INVALID_PERCENT", "101"),
            ("RUN_AS_USER", "a b"),
            ("LOG_LEVEL", "loud"),
            ("INVENTORY_TOKEN_FILE", "/etc/sd-updater/"),
            ("INVENTORY_CA_FILE", "/etc/ssl/\u{7}x.pem"),
            ("METRICS_FILE", "/tmp/metrics.txt"),
            ("METRICS_FILE", "/tmp/../x.prom"),
            ("METRICS_FILE", "/tmp/x.prom/"),
            ("SOURCE_NAME", "a b"),
            ("SOURCE_NAME", "a\nb"),
        ];
        for (var, value) in cases {
            let e = config(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, *var, "{var}={value}: {e}");
            assert!(e.to_string().starts_with(var));
        }
    }

    #[test]
    fn file_settings_take_a_path_none_or_auto() {
        let c = config(&[]).unwrap();
        assert_eq!(c.inventory_token_file, TokenFile::Auto);
        assert_eq!(c.inventory_ca_file, None);
        let c = config(&[
            ("INVENTORY_TOKEN_FILE", "none"),
            ("INVENTORY_PASSWORD_FILE", "/etc/sd-updater/pw"),
            ("INVENTORY_CLIENT_KEY", "./none"),
        ])
        .unwrap();
        assert_eq!(c.inventory_token_file, TokenFile::Off);
        assert_eq!(
            c.inventory_password_file,
            Some(PathBuf::from("/etc/sd-updater/pw"))
        );
        assert_eq!(c.inventory_client_key, Some(PathBuf::from("./none")));
        let shown = c.effective();
        assert!(shown.contains(&("INVENTORY_TOKEN_FILE", "none".to_string())));
        assert!(shown.contains(&("INVENTORY_PASSWORD_FILE", "/etc/sd-updater/pw".to_string())));
        let c = config(&[("INVENTORY_TOKEN_FILE", "/run/t")]).unwrap();
        assert_eq!(
            c.inventory_token_file,
            TokenFile::Path(PathBuf::from("/run/t"))
        );
    }

    #[test]
    fn the_first_invalid_setting_in_table_order_is_reported() {
        let e = config(&[("LOG_LEVEL", "loud"), ("METRICS_PORT", "0")]).unwrap_err();
        assert_eq!(e.var, "METRICS_PORT");
    }

    #[test]
    fn non_utf8_is_an_error() {
        for var in ["METRICS_PATH", "TARGET_LABELS"] {
            let e = Config::from_lookup(|k| (k == var).then(|| Err(std::ffi::OsString::from("x"))))
                .unwrap_err();
            assert_eq!(e, err(var, "value is not valid UTF-8"));
        }
    }

    #[test]
    fn empty_means_default_except_labels() {
        let c = config(&[("UPDATE_INTERVAL", ""), ("TARGET_LABELS", "")]).unwrap();
        assert_eq!(c.update_interval, Duration::from_secs(30));
        assert!(c.target_labels.is_empty());
        let shown = c.effective();
        assert!(shown.contains(&("TARGET_LABELS", String::new())));
        // Every other setting reads an empty value as its default.
        let empty: Vec<(&str, &str)> = SETTINGS.iter().map(|s| (s.name, "")).collect();
        let c = config(&empty).unwrap();
        let defaults = config(&[]).unwrap().effective();
        for ((name, value), (_, default)) in c.effective().iter().zip(&defaults) {
            if *name != "TARGET_LABELS" {
                assert_eq!(value, default, "{name}");
            }
        }
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
        assert!(shown.contains(&("INVENTORY_URL", "http://u:***@h/x".to_string())));
        assert!(shown.contains(&("RETRY_BACKOFF", "0.5".to_string())));
        assert!(shown.contains(&("LOG_LEVEL", "debug".to_string())));
    }

    #[test]
    fn limits_are_inclusive() {
        let c = config(&[("HTTP_TIMEOUT", "0.1"), ("TARGETS_FILE", "./x.json")]).unwrap();
        assert_eq!(c.http_timeout, Duration::from_millis(100));
        assert_eq!(c.targets_file, PathBuf::from("./x.json"));
        let e = config(&[("HTTP_TIMEOUT", "0.000000001")]).unwrap_err();
        assert!(e.message.contains("0.1s"), "{e}");
        assert_eq!(
            config(&[("RETRY_ATTEMPTS", "1000")])
                .unwrap()
                .retry_attempts,
            1000
        );
    }
}
