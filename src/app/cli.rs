//! Command line: at most one option, parsed by hand and strictly.

use crate::config::SETTINGS;

/// Exit codes, after sysexits.h where one fits.
pub mod exit {
    pub const OK: i32 = 0;
    /// A one-shot cycle failed, or a fatal runtime error.
    pub const FAILURE: i32 = 1;
    /// EX_USAGE: unknown argument.
    pub const USAGE: i32 = 64;
    /// EX_CONFIG: invalid configuration, unknown RUN_AS_USER.
    pub const CONFIG: i32 = 78;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Daemon,
    Once,
    Print,
    CheckConfig,
    Help,
    Version,
}

pub const USAGE: &str =
    "usage: sd-updater [--once | --print | --check-config | --help | --version]";

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> Result<Command, String> {
    let mut args = args.into_iter();
    let first = args.next();
    let command = match first.as_deref().map(std::ffi::OsStr::to_str) {
        None => Command::Daemon,
        Some(Some("--once")) => Command::Once,
        Some(Some("--print")) => Command::Print,
        Some(Some("--check-config")) => Command::CheckConfig,
        Some(Some("--help" | "-h")) => Command::Help,
        Some(Some("--version" | "-V")) => Command::Version,
        Some(_) => {
            let shown = first.as_deref().unwrap_or_default().to_string_lossy();
            return Err(format!("unknown argument {shown:?}"));
        }
    };
    if let Some(extra) = args.next() {
        return Err(format!(
            "unexpected extra argument {:?}",
            extra.to_string_lossy()
        ));
    }
    Ok(command)
}

pub fn version() -> String {
    format!("sd-updater {}", env!("CARGO_PKG_VERSION"))
}

pub fn help() -> String {
    let mut s = format!(
        "{}\n\n\
         Keeps a Prometheus file_sd targets file in step with a sensor inventory.\n\n\
         {USAGE}\n\n\
         Commands:\n  \
           (none)          run the daemon in the foreground\n  \
           --once          run one update cycle (with retries), write the file if it changed, exit\n  \
           --print         fetch once and print the targets JSON to stdout; write nothing\n  \
           --check-config  validate the configuration and print the effective settings\n  \
           -h, --help      show this help\n  \
           -V, --version   show the version\n\n\
         Environment (an empty value means the default):\n",
        version()
    );
    for setting in SETTINGS {
        s.push_str(&format!(
            "  {:<19} {}\n  {:<19} default: {}\n",
            setting.name,
            setting.help,
            "",
            if setting.default.is_empty() {
                "(empty)"
            } else {
                setting.default
            }
        ));
    }
    s.push_str(
        "\nSignals: SIGHUP refreshes at once; SIGTERM or SIGINT stops.\n\
         Exit codes: 0 ok, 1 cycle or runtime failure, 64 usage error, 78 configuration error.\n\
         See sd-updater(8).\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn commands() {
        assert_eq!(p(&[]), Ok(Command::Daemon));
        assert_eq!(p(&["--once"]), Ok(Command::Once));
        assert_eq!(p(&["--print"]), Ok(Command::Print));
        assert_eq!(p(&["--check-config"]), Ok(Command::CheckConfig));
        assert_eq!(p(&["-h"]), Ok(Command::Help));
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        for bad in [
            &["--nope"][..],
            &["once"],
            &["--once", "--print"],
            &["--once="],
            &[""],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn help_lists_every_variable_and_default() {
        let h = help();
        for s in SETTINGS {
            assert!(h.contains(s.name) && h.contains(s.default), "{}", s.name);
        }
    }
}
