//! Logging: native journal entries with structured fields under systemd,
//! the seed's timestamped lines on stderr otherwise.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::clock;

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

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
            && (self.level == LevelFilter::Trace || m.level() <= Level::Warn || is_ours(m.target()))
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // One entry is one line, whatever a library put in its message.
        let message = one_line(&record.args().to_string());
        match &self.sink {
            Sink::Journal(journal) => {
                let _ = journal.journal_send(
                    &Record::builder()
                        .args(format_args!("{message}"))
                        .level(record.level())
                        .target(record.target())
                        .module_path(record.module_path())
                        .file(record.file())
                        .line(record.line())
                        .key_values(record.key_values())
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

/// Escapes line breaks and other control characters.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
            if c.is_control() {
                Box::new(c.escape_default())
            } else {
                Box::new(std::iter::once(c))
            }
        })
        .collect()
}

/// Which sink is in use, for the start-up message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Journal,
    Stderr,
}

/// Installs the logger: the journal when stderr is connected to it
/// (`JOURNAL_STREAM`), stderr otherwise.
pub fn init(level: LevelFilter) -> Mode {
    let (sink, mode) = match systemd_journal_logger::connected_to_journal()
        .then(JournalLog::empty)
        .and_then(Result::ok)
    {
        Some(j) => (
            Sink::Journal(j.with_syslog_identifier(IDENTIFIER.to_string())),
            Mode::Journal,
        ),
        None => (Sink::Stderr, Mode::Stderr),
    };
    if log::set_boxed_logger(Box::new(Logger { level, sink })).is_ok() {
        log::set_max_level(level);
    }
    mode
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
}
