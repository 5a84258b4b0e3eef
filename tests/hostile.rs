//! Hostile bodies, against the running daemon:
//!
//! - gzip bombs (`Content-Encoding: gzip`): a few KiB inflating to many
//!   times `MAX_RESPONSE_BYTES`, and an endless stream inflating past a GiB,
//!   are cut off at the limit, and peak RSS (VmHWM) stays below
//!   2 × `MAX_RESPONSE_BYTES` + 16 MiB;
//! - huge header lines, many headers, a header that never ends: the cycle
//!   fails cleanly and quickly, memory stays small;
//! - a body, or a response head, dripping one byte per second is cut at
//!   `HTTP_TIMEOUT`.
//!
//! In every case the old file stays byte-identical and the agent lives.

mod common;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

fn daemon(tag: &str, env: &[(&str, &str)]) -> (Daemon, Vec<u8>) {
    let first = GoodList::numbered("first", 10);
    let mut env = env.to_vec();
    env.push(("RETRY_ATTEMPTS", "0"));
    let d = Daemon::start(TestDir::new(tag), &first, &env);
    let old = fs::read(&d.file).unwrap();
    (d, old)
}

/// Peak RSS must stay under 2 × limit + 16 MiB.
fn bomb(tag: &str, max: u64, reply: impl Fn() -> Reply, what: &str) {
    let max_s = max.to_string();
    let (mut d, old) = daemon(
        tag,
        &[("MAX_RESPONSE_BYTES", &max_s), ("HTTP_TIMEOUT", "60")],
    );
    let hwm_before = d.agent.status_kb("VmHWM").unwrap();
    let t0 = Instant::now();
    let log = d.cycle_within("gzip-bomb", reply(), Duration::from_secs(90));
    let took = t0.elapsed();
    let hwm = d.agent.status_kb("VmHWM").unwrap() * 1024;
    let line = fetch_failure(&log).unwrap_or_else(|| panic!("{what}: no failure\n{log}"));
    assert!(
        line.contains("MAX_RESPONSE_BYTES"),
        "{what}: not cut at MAX_RESPONSE_BYTES: {line}"
    );
    assert_eq!(fs::read(&d.file).unwrap(), old, "{what}: old file changed");
    let bound = 2 * max + 16 * MIB;
    report(
        "faults.txt",
        &format!(
            "{what} (MAX_RESPONSE_BYTES={} MiB): cut off in {took:.1?}, VmHWM {:.1} MiB \
             (before {:.1} MiB, bound {} MiB), old file kept, agent alive",
            max / MIB,
            hwm as f64 / MIB as f64,
            hwm_before as f64 / 1024.0,
            bound / MIB
        ),
    );
    assert!(
        hwm < bound,
        "{what}: peak RSS {hwm} bytes is over 2 x {max} + 16 MiB"
    );
}

/// `Content-Length` body of `factor` × `max` spaces after a `[`, gzipped.
fn small_bomb(max: u64, factor: u64) -> Arc<Vec<u8>> {
    let (head, segment) = gzip_bomb_parts(MIB as usize);
    let mut gz = head;
    for _ in 0..(max * factor / MIB) {
        gz.extend_from_slice(&segment);
    }
    Arc::new(gz)
}

#[test]
fn gzip_bomb_few_kib_is_cut_at_the_limit() {
    let max = 4 * MIB;
    let gz = small_bomb(max, 4);
    assert!(gz.len() < 32 * 1024, "{} bytes", gz.len());
    let what = format!(
        "gzip bomb, {} KiB inflating to {} MiB",
        gz.len() / 1024,
        max * 4 / MIB
    );
    bomb("bomb-small", max, || Reply::GzipRaw(gz.clone()), &what);
}

#[test]
fn gzip_bomb_endless_stream_is_cut_at_the_default_limit() {
    let max = env_u64("SDU_BOMB_MAX_BYTES", 64 * MIB);
    let (head, segment) = gzip_bomb_parts(MIB as usize);
    let (head, segment) = (Arc::new(head), Arc::new(segment));
    bomb(
        "bomb-endless",
        max,
        || Reply::GzipBomb {
            head: head.clone(),
            segment: segment.clone(),
        },
        "gzip bomb, endless stream (would inflate without end)",
    );
}

#[test]
fn huge_headers_fail_cleanly() {
    let (mut d, old) = daemon("headers", &[("HTTP_TIMEOUT", "10")]);
    let cases: [(&'static str, Reply); 4] = [
        ("one 1 MiB header line", Reply::HugeHeader { len: 1 << 20 }),
        (
            "one 100 KiB header line",
            Reply::HugeHeader { len: 100 << 10 },
        ),
        ("100,000 headers", Reply::ManyHeaders { count: 100_000 }),
        ("a header line that never ends", Reply::EndlessHeader),
    ];
    for (what, reply) in cases {
        let t0 = Instant::now();
        let log = d.cycle(what, reply);
        let took = t0.elapsed();
        let line = fetch_failure(&log).unwrap_or_else(|| panic!("{what}: no failure\n{log}"));
        assert!(
            line.to_ascii_lowercase().contains("header"),
            "{what}: the error should say the header is the trouble: {line}"
        );
        assert!(
            took < Duration::from_secs(5),
            "{what}: took {took:?}, should fail at once"
        );
        assert_eq!(fs::read(&d.file).unwrap(), old, "{what}");
        let hwm = d.agent.status_kb("VmHWM").unwrap();
        assert!(hwm < 64 * 1024, "{what}: VmHWM {hwm} kB");
        report(
            "faults.txt",
            &format!(
                "{what}: failed in {took:.1?}, VmHWM {hwm} kB, old file kept, agent alive; \
                 logged: {}",
                line.split(" - ").last().unwrap_or(line)
            ),
        );
    }
}

/// A drip of one byte a second is cut at HTTP_TIMEOUT, measured on the
/// server side: the connection closes then, not when the body is done.
fn drip(tag: &str, reply: Reply, what: &str) {
    let timeout = 2.0;
    let (mut d, old) = daemon(tag, &[("HTTP_TIMEOUT", "2")]);
    let t0 = Instant::now();
    let log = d.cycle_within("drip", reply, Duration::from_secs(20));
    let took = t0.elapsed();
    let line = fetch_failure(&log).unwrap_or_else(|| panic!("{what}: no failure\n{log}"));
    assert!(line.contains("timed out"), "{what}: {line}");
    assert_eq!(fs::read(&d.file).unwrap(), old, "{what}");
    assert!(
        wait_for(Duration::from_secs(3), || !d.server.cut_after().is_empty()),
        "{what}: the server never saw the connection close"
    );
    let cut = d.server.cut_after()[0].as_secs_f64();
    assert!(
        cut > timeout - 0.2 && cut < timeout + 1.5,
        "{what}: connection closed after {cut:.2}s, HTTP_TIMEOUT is {timeout}s"
    );
    report(
        "faults.txt",
        &format!(
            "{what}: cut after {cut:.2}s (HTTP_TIMEOUT=2s), cycle {took:.1?}, old file kept, \
             agent alive"
        ),
    );
}

#[test]
fn body_dripping_one_byte_per_second_is_cut_at_http_timeout() {
    let body = GoodList::numbered("drip", 5).body;
    drip(
        "drip-body",
        Reply::Drip {
            body,
            every: Duration::from_secs(1),
        },
        "body dripping 1 byte/s",
    );
}

#[test]
fn head_dripping_one_byte_per_second_is_cut_at_http_timeout() {
    drip(
        "drip-head",
        Reply::DripHead {
            every: Duration::from_secs(1),
        },
        "response head dripping 1 byte/s",
    );
}

/// Hostile redirects: a Location of tens of KiB, relative paths climbing
/// past the root, a Location full of escapes and a 308 loop. Each fails (or
/// is followed) cleanly; messages stay short; the daemon lives.
#[test]
fn hostile_redirects_fail_cleanly_with_short_messages() {
    let (mut d, old) = daemon("hostile-redir", &[]);
    let long = format!("ftp://u:Long-Secr3t@h/{}", "a".repeat(30_000));
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("30 KiB Location", Reply::redirect(long), "refused"),
        (
            "escapes",
            Reply::redirect("/%00%0d%0a%1b[31m\\\\..%2f..%2f"),
            "too many redirects",
        ),
        (
            "308 loop",
            Reply::respond(308, &[("Location", "/inventory")], Vec::new()),
            "too many redirects",
        ),
        ("no host", Reply::redirect("http:///x"), "refused"),
    ];
    for (what, reply, word) in cases {
        let log = d.cycle(what, reply);
        let failure = fetch_failure(&log).unwrap_or_else(|| panic!("{what}: no failure\n{log}"));
        assert!(failure.contains(word), "{what}: {failure}");
        assert!(
            log.lines().all(|l| l.len() < 1024),
            "{what}: a log line over 1 KiB\n{log}"
        );
        assert!(!log.contains("Long-Secr3t"), "{what}: {log}");
        assert_eq!(fs::read(&d.file).unwrap(), old, "{what}");
    }
    // Relative paths that climb past the root stay on the server.
    let good = GoodList::numbered("climbed", 2);
    d.server
        .set("climb", Reply::redirect("../../../../etc/passwd"));
    d.agent.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(d.server.wait_served(d.server.served_count() + 1, DAEMON_T));
    d.server.set("good", Reply::ok(&good.body));
    assert!(d.notify.wait_for("READY=1", DAEMON_T).is_some());
    let served = d.server.served();
    let targets: Vec<&str> = served.iter().map(|s| s.target.as_str()).collect();
    assert!(
        targets.contains(&"/etc/passwd"),
        "the climb was not resolved within the server: {targets:?}"
    );
    assert!(d.agent.alive());
}
