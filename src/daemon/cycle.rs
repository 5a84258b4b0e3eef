//! One update cycle: fetch with retries, parse, validate, render. It decides
//! what the file should hold; writing it is the caller's job.

use std::time::{Duration, Instant};

use log::Level;

use crate::config::Config;
use crate::model::inventory::{self, Validated};
use crate::model::targets::Entries;
use crate::model::text::count;
use crate::output::publish::{self, Fetched};
use crate::source::retry;
use crate::source::{BodyHash, FetchError, Response, Source, Validators};
use crate::sys::clock;

/// At most this many dropped entries are logged one by one per cycle, so a
/// broken inventory cannot flood the journal.
const MAX_LOGGED_INVALID: usize = inventory::MAX_EXAMPLES;

/// A good inventory, ready to render and write.
#[derive(Debug, Clone)]
pub struct Update {
    pub sensor_count: usize,
    pub invalid_count: usize,
    /// Sorted and unique.
    pub targets: Entries,
    pub attempts: u32,
    pub duration: Duration,
}

impl Update {
    /// The fetch facts for the log line; `source` is the redacted URL.
    pub fn fetched<'a>(&self, source: &'a str) -> Fetched<'a> {
        Fetched {
            sensor_count: self.sensor_count,
            invalid_count: self.invalid_count,
            attempt: self.attempts,
            duration: self.duration,
            source,
        }
    }
}

/// What the last accepted response left to compare the next one with.
/// Empty after a restart: the first request is unconditional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Sent as `If-None-Match` / `If-Modified-Since`.
    pub validators: Option<Validators>,
    pub body_hash: Option<BodyHash>,
}

/// What an accepted response leaves behind, once its targets are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub validators: Validators,
    /// `None` when the caller keeps nothing for a next cycle.
    pub body_hash: Option<BodyHash>,
}

/// A cycle that got an answer.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new body, parsed and validated: to publish.
    Changed { update: Update, accepted: Accepted },
    /// A 200 whose body is the last accepted one: not parsed again.
    Unchanged {
        accepted: Accepted,
        attempts: u32,
        duration: Duration,
    },
    /// `304 Not Modified`: the last accepted body still holds.
    NotModified { attempts: u32, duration: Duration },
}

/// A cycle that produced nothing to write.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    pub attempts: u32,
    pub duration: Duration,
    /// The server's `Retry-After` on the last try, which outlasts the cycle.
    pub retry_after: Option<Duration>,
}

/// Reported before each retry, so the caller can show it in STATUS=.
#[derive(Debug, Clone)]
pub struct Retrying {
    pub attempt: u32,
    pub reason: String,
    pub delay: Duration,
}

/// Runs one cycle without anything known from before (`--once`,
/// `--print`): always a full fetch.
pub fn run(
    source: &mut dyn Source,
    config: &Config,
    deadline: Instant,
    on_retry: &mut dyn FnMut(&Retrying),
) -> Result<Update, Failure> {
    // Nothing is remembered after this cycle: the body is not hashed.
    match run_keyed(source, config, deadline, &Known::default(), false, on_retry)? {
        Outcome::Changed { update, .. } => Ok(update),
        Outcome::Unchanged {
            attempts, duration, ..
        }
        | Outcome::NotModified { attempts, duration } => Err(Failure {
            reason: "internal error: an unconditional fetch came back unchanged".into(),
            attempts,
            duration,
            retry_after: None,
        }),
    }
}

/// Runs one cycle. Retries stop at `deadline`, so a cycle never runs into
/// the next one. `known` makes the request conditional, and a body equal
/// to the last accepted one skips parsing.
pub fn run_with(
    source: &mut dyn Source,
    config: &Config,
    deadline: Instant,
    known: &Known,
    on_retry: &mut dyn FnMut(&Retrying),
) -> Result<Outcome, Failure> {
    run_keyed(source, config, deadline, known, true, on_retry)
}

/// As [`run_with`]; `hash_body` says whether the accepted body's hash is
/// wanted (it costs a pass over the body).
fn run_keyed(
    source: &mut dyn Source,
    config: &Config,
    deadline: Instant,
    known: &Known,
    hash_body: bool,
    on_retry: &mut dyn FnMut(&Retrying),
) -> Result<Outcome, Failure> {
    let start = Instant::now();
    let tries = config.retry_attempts.saturating_add(1);
    let url = &config.inventory_url;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        // The first try always gets the full timeout; retries fit the budget.
        let timeout = if attempt == 1 {
            config.http_timeout
        } else {
            config.http_timeout.min(remaining)
        };
        let fail = |reason: String| Failure {
            reason,
            attempts: attempt,
            duration: start.elapsed(),
            retry_after: None,
        };
        let error = match source.fetch_if(timeout, known.validators.as_ref()) {
            Ok(Response::NotModified) => {
                return Ok(Outcome::NotModified {
                    attempts: attempt,
                    duration: start.elapsed(),
                })
            }
            Ok(Response::Body { body, validators }) => {
                let elapsed = start.elapsed();
                let accepted = Accepted {
                    validators,
                    body_hash: hash_body.then(|| BodyHash::of(&body)),
                };
                if known.body_hash.is_some() && known.body_hash == accepted.body_hash {
                    return Ok(Outcome::Unchanged {
                        accepted,
                        attempts: attempt,
                        duration: elapsed,
                    });
                }
                // Label sets may take twice the largest body.
                let label_budget = usize::try_from(config.max_response_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(2);
                // The body goes to the parse: a list of plain names keeps
                // it as the text of its targets, anything else frees it
                // before the sort needs its memory.
                let parsed = inventory::collect_limited(
                    body,
                    config.metrics_port,
                    config.default_labels(),
                    label_budget,
                )
                .map(inventory::Collector::finish);
                return match parsed {
                    Ok(v) => accept(v, config, attempt, elapsed)
                        .map(|update| Outcome::Changed { update, accepted }),
                    Err(e) => Err(fail(format!("bad inventory from {url}: {e}"))),
                };
            }
            Err(e) => e,
        };
        let reason = error.reason().to_string();
        let retry_after = match &error {
            FetchError::Permanent(_) => return Err(fail(reason)),
            FetchError::Transient { retry_after, .. } => *retry_after,
        };
        if attempt >= tries {
            return Err(Failure {
                retry_after,
                ..fail(reason)
            });
        }
        let delay = retry_after
            .unwrap_or_else(|| retry::backoff(config.retry_backoff, attempt, retry::random_unit()));
        let left = deadline.saturating_duration_since(Instant::now());
        // A retry needs its wait plus a useful slice of time to run in.
        let useful = config.http_timeout.min(Duration::from_secs(1));
        if delay.saturating_add(useful) > left {
            return Err(Failure {
                retry_after,
                ..fail(format!(
                    "{reason} (no time left for another try before the next cycle)"
                ))
            });
        }
        log::warn!(
            ATTEMPT = attempt, ERROR = reason.as_str(), INVENTORY_URL = url.to_string().as_str();
            "Failed to fetch inventory from {url} (attempt {attempt}/{tries}): {reason}; retrying in {}",
            clock::human(delay)
        );
        on_retry(&Retrying {
            attempt,
            reason,
            delay,
        });
        std::thread::sleep(delay);
    }
}

fn accept(
    v: Validated,
    config: &Config,
    attempts: u32,
    duration: Duration,
) -> Result<Update, Failure> {
    let empty = v.targets.is_empty() && !config.allow_empty;
    let too_many_invalid = too_many_invalid(&v, config.max_invalid_percent);
    let refused = empty || too_many_invalid.is_some();
    if refused {
        // A good fetch is otherwise logged with its outcome, once published.
        let source = config.inventory_url.to_string();
        let fetched = Fetched {
            sensor_count: v.sensor_count,
            invalid_count: v.invalid_count,
            attempt: attempts,
            duration,
            source: &source,
        };
        publish::log_fetched(&fetched, Level::Info);
    }
    // Entries are escaped for the log already.
    for r in v.rejected.iter().take(MAX_LOGGED_INVALID) {
        log::warn!(
            ERROR = r.reason;
            "Dropping invalid sensor entry \"{}\": {}", r.entry, r.reason
        );
    }
    if v.invalid_count > MAX_LOGGED_INVALID {
        log::warn!(
            INVALID_COUNT = v.invalid_count;
            "... and {} more invalid entries not listed", v.invalid_count - MAX_LOGGED_INVALID
        );
    }
    let no_valid = || {
        format!(
            "inventory has no valid sensors ({}, {} invalid)",
            count(v.sensor_count, "entry", "entries"),
            v.invalid_count
        )
    };
    // Both reasons are given when both apply: ALLOW_EMPTY alone would not
    // let a mostly invalid inventory through.
    let reason = match (empty, too_many_invalid) {
        (false, None) => None,
        (true, None) => Some(format!(
            "{}; keeping the previous targets (ALLOW_EMPTY=true would write an empty list)",
            no_valid()
        )),
        (true, Some(share)) => Some(format!(
            "{}; {share}; keeping the previous targets",
            no_valid()
        )),
        (false, Some(share)) => Some(format!("{share}; keeping the previous targets")),
    };
    if let Some(reason) = reason {
        return Err(Failure {
            reason,
            attempts,
            duration,
            retry_after: None,
        });
    }
    Ok(Update {
        sensor_count: v.sensor_count,
        invalid_count: v.invalid_count,
        targets: v.targets,
        attempts,
        duration,
    })
}

/// Why the inventory is refused as a whole: more than `max_percent` of
/// its entries are invalid. 100 never refuses; an inventory without
/// entries is left to `ALLOW_EMPTY`.
fn too_many_invalid(v: &Validated, max_percent: u8) -> Option<String> {
    let (invalid, all) = (v.invalid_count, v.sensor_count);
    let over = max_percent < 100
        && all > 0
        && (invalid as u128) * 100 > u128::from(max_percent) * (all as u128);
    over.then(|| {
        let share = (invalid as u128) * 100 / (all as u128);
        let verb = if invalid == 1 { "is" } else { "are" };
        format!(
            "refused inventory: {invalid} of {} ({share}%) {verb} invalid, \
             more than MAX_INVALID_PERCENT={max_percent}",
            count(all, "entry", "entries")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct Script(VecDeque<Result<Vec<u8>, FetchError>>, u32);

    impl Source for Script {
        fn fetch(&mut self, _t: Duration) -> Result<Vec<u8>, FetchError> {
            self.1 += 1;
            self.0
                .pop_front()
                .unwrap_or(Err(FetchError::Permanent("script ran out".into())))
        }
    }

    fn transient() -> Result<Vec<u8>, FetchError> {
        Err(FetchError::Transient {
            reason: "HTTP 503".into(),
            retry_after: None,
        })
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| Ok(v.clone()))
        })
        .unwrap()
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Answers 304 to a request with validators, else the body.
    struct Conditional(Vec<u8>, Vec<Option<Validators>>);

    impl Source for Conditional {
        fn fetch(&mut self, _t: Duration) -> Result<Vec<u8>, FetchError> {
            Ok(self.0.clone())
        }

        fn fetch_if(
            &mut self,
            _t: Duration,
            v: Option<&Validators>,
        ) -> Result<Response, FetchError> {
            self.1.push(v.cloned());
            Ok(match v {
                Some(_) => Response::NotModified,
                None => Response::Body {
                    body: self.0.clone(),
                    validators: Validators {
                        etag: Some("\"e1\"".into()),
                        last_modified: None,
                        uri: String::new(),
                    },
                },
            })
        }
    }

    #[test]
    fn known_validators_and_bodies_skip_the_parse() {
        let c = config(&[]);
        let mut s = Conditional(b"[\"a\"]".to_vec(), vec![]);
        let first = run_with(&mut s, &c, far(), &Known::default(), &mut |_| {}).unwrap();
        let Outcome::Changed { update, accepted } = first else {
            panic!("{first:?}")
        };
        assert_eq!(update.targets.to_strings(), ["a:9100"]);
        assert_eq!(accepted.validators.etag.as_deref(), Some("\"e1\""));
        assert_eq!(accepted.body_hash, Some(BodyHash::of(b"[\"a\"]")));
        // The same body again: not parsed (a broken parse would fail).
        let known = Known {
            validators: None,
            body_hash: accepted.body_hash,
        };
        let same = run_with(&mut s, &c, far(), &known, &mut |_| {}).unwrap();
        assert!(matches!(same, Outcome::Unchanged { .. }), "{same:?}");
        let known = Known {
            validators: Some(accepted.validators),
            body_hash: accepted.body_hash,
        };
        let not = run_with(&mut s, &c, far(), &known, &mut |_| {}).unwrap();
        assert!(
            matches!(not, Outcome::NotModified { attempts: 1, .. }),
            "{not:?}"
        );
        assert_eq!(s.1.iter().filter(|v| v.is_some()).count(), 1);
        // Another body is parsed as usual.
        s.0 = b"[\"b\"]".to_vec();
        let known = Known {
            validators: None,
            body_hash: Some(BodyHash::of(b"[\"a\"]")),
        };
        assert!(matches!(
            run_with(&mut s, &c, far(), &known, &mut |_| {}).unwrap(),
            Outcome::Changed { .. }
        ));
    }

    #[test]
    fn retries_transient_errors_then_succeeds() {
        let c = config(&[("RETRY_BACKOFF", "0.01"), ("RETRY_ATTEMPTS", "3")]);
        let mut s = Script(
            VecDeque::from([transient(), transient(), Ok(b"[\"b\",\"a\"]".to_vec())]),
            0,
        );
        let mut retries = vec![];
        let u = run(&mut s, &c, far(), &mut |r| retries.push(r.attempt)).unwrap();
        assert_eq!(u.attempts, 3);
        assert_eq!(retries, vec![1, 2]);
        assert_eq!(u.targets.to_strings(), ["a:9100", "b:9100"]);
    }

    #[test]
    fn gives_up_after_the_configured_retries() {
        let c = config(&[("RETRY_BACKOFF", "0.01"), ("RETRY_ATTEMPTS", "2")]);
        let mut s = Script(
            VecDeque::from([transient(), transient(), transient(), transient()]),
            0,
        );
        let f = run(&mut s, &c, far(), &mut |_| {}).unwrap_err();
        assert_eq!((f.attempts, s.1), (3, 3));
        assert!(f.reason.contains("503"));
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let c = config(&[("RETRY_BACKOFF", "0.01")]);
        let mut s = Script(
            VecDeque::from([Err(FetchError::Permanent("HTTP 404".into()))]),
            0,
        );
        let f = run(&mut s, &c, far(), &mut |_| {}).unwrap_err();
        assert_eq!((f.attempts, s.1), (1, 1));
    }

    fn body_with(valid: usize, invalid: usize) -> Vec<u8> {
        let mut names: Vec<String> = (0..valid).map(|i| format!("s{i}")).collect();
        names.extend((0..invalid).map(|i| format!("bad {i}")));
        serde_json::to_vec(&names).unwrap()
    }

    #[test]
    fn too_many_invalid_entries_refuse_the_inventory() {
        let run_with = |percent: &str, valid: usize, invalid: usize| {
            let c = config(&[("MAX_INVALID_PERCENT", percent), ("ALLOW_EMPTY", "true")]);
            let mut s = Script(VecDeque::from([Ok(body_with(valid, invalid))]), 0);
            run(&mut s, &c, far(), &mut |_| {})
        };
        let f = run_with("50", 388, 612).unwrap_err();
        assert_eq!(
            f.reason,
            "refused inventory: 612 of 1000 entries (61%) are invalid, more than \
             MAX_INVALID_PERCENT=50; keeping the previous targets"
        );
        // Exactly the limit is still accepted.
        assert_eq!(run_with("50", 5, 5).unwrap().invalid_count, 5);
        assert!(run_with("49", 5, 5).is_err());
        let f = run_with("0", 9, 1).unwrap_err();
        assert!(
            f.reason.contains("1 of 10 entries (10%) is invalid"),
            "{}",
            f.reason
        );
        assert!(run_with("0", 9, 0).is_ok());
        // 100 never refuses; ALLOW_EMPTY then decides about an empty result.
        assert!(run_with("100", 0, 7).unwrap().targets.is_empty());
        let f = run_with("50", 0, 1).unwrap_err();
        assert!(
            f.reason.contains("1 of 1 entry (100%) is invalid"),
            "{}",
            f.reason
        );
        // Without ALLOW_EMPTY, both reasons are given.
        let c = config(&[]);
        let mut s = Script(VecDeque::from([Ok(body_with(0, 3))]), 0);
        let f = run(&mut s, &c, far(), &mut |_| {}).unwrap_err();
        assert_eq!(
            f.reason,
            "inventory has no valid sensors (3 entries, 3 invalid); refused inventory: \
             3 of 3 entries (100%) are invalid, more than MAX_INVALID_PERCENT=50; \
             keeping the previous targets"
        );
        assert!(run_with("50", 0, 0).unwrap().targets.is_empty());
    }

    #[test]
    fn bad_shapes_and_empty_lists_fail() {
        let c = config(&[]);
        let mut s = Script(VecDeque::from([Ok(b"{}".to_vec())]), 0);
        assert!(run(&mut s, &c, far(), &mut |_| {})
            .unwrap_err()
            .reason
            .contains("object"));
        let mut s = Script(VecDeque::from([Ok(b"[\"bad name\"]".to_vec())]), 0);
        let c100 = config(&[("MAX_INVALID_PERCENT", "100")]);
        assert!(run(&mut s, &c100, far(), &mut |_| {})
            .unwrap_err()
            .reason
            .contains("no valid sensors"));
        let c = config(&[("ALLOW_EMPTY", "true")]);
        let mut s = Script(VecDeque::from([Ok(b"[]".to_vec())]), 0);
        assert!(run(&mut s, &c, far(), &mut |_| {})
            .unwrap()
            .targets
            .is_empty());
    }

    #[test]
    fn retries_stop_at_the_deadline() {
        let c = config(&[("RETRY_BACKOFF", "5"), ("RETRY_ATTEMPTS", "5")]);
        let mut s = Script(VecDeque::from([transient(), transient()]), 0);
        let deadline = Instant::now() + Duration::from_secs(2);
        let f = run(&mut s, &c, deadline, &mut |_| {}).unwrap_err();
        assert_eq!(s.1, 1, "a 2.5-5 s backoff cannot fit in 2 s");
        assert!(f.reason.contains("no time left"));
    }

    #[test]
    fn retry_after_is_honoured() {
        let c = config(&[("RETRY_BACKOFF", "30")]);
        let mut s = Script(
            VecDeque::from([
                Err(FetchError::Transient {
                    reason: "HTTP 429".into(),
                    retry_after: Some(Duration::from_millis(20)),
                }),
                Ok(b"[\"a\"]".to_vec()),
            ]),
            0,
        );
        let mut delays = vec![];
        run(&mut s, &c, far(), &mut |r| delays.push(r.delay)).unwrap();
        assert_eq!(delays, vec![Duration::from_millis(20)]);
    }

    #[test]
    fn a_long_retry_after_is_passed_on() {
        let c = config(&[("RETRY_ATTEMPTS", "1")]);
        let mut s = Script(
            VecDeque::from([Err(FetchError::Transient {
                reason: "HTTP 503".into(),
                retry_after: Some(Duration::from_secs(600)),
            })]),
            0,
        );
        let f = run(&mut s, &c, far(), &mut |_| {}).unwrap_err();
        assert_eq!(s.1, 1, "a 600 s wait does not fit in the cycle");
        assert_eq!(f.retry_after, Some(Duration::from_secs(600)));
    }
}
