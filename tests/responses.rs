//! Bad inventory responses: each keeps the old file byte-identical and the
//! agent alive. Plus retry policy: what is retried, Retry-After, the cap of
//! the backoff by the interval, gzip bodies.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

const GOOD: &[&str] = &["sensor_1", "sensor_0", "sensor_2"];
const GOOD_TARGETS: &[&str] = &["sensor_0:9100", "sensor_1:9100", "sensor_2:9100"];

/// A daemon that has written GOOD, plus what it wrote.
struct Started {
    _dir: TestDir,
    inv: FakeInventory,
    notify: NotifySocket,
    agent: Agent,
    original: Vec<u8>,
}

fn start_good(tag: &str, env: &[(&str, &str)]) -> Started {
    let dir = TestDir::new(tag);
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::list(GOOD));
    let mut cmd = daemon(&dir, &inv, &notify);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let agent = cmd.spawn();
    let want = render_default(GOOD_TARGETS);
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .ok()
            .as_deref()
            == Some(want.as_str())),
        "the good inventory was not written\n{}",
        agent.stderr()
    );
    // Let the first cycle finish completely (READY, STATUS) before going on.
    inv.wait_quiet(Duration::from_millis(300), T);
    let original = fs::read(agent.targets_file()).unwrap();
    Started {
        _dir: dir,
        inv,
        notify,
        agent,
        original,
    }
}

/// Runs one SIGHUP cycle and returns (requests it made, how long it took,
/// the log it wrote).
fn hup_cycle(s: &mut Started, timeout: Duration) -> (usize, Duration, String) {
    let before = s.inv.wait_quiet(Duration::from_millis(200), T);
    let mark = s.agent.log_mark();
    let t0 = Instant::now();
    s.agent.signal(Signal::SIGHUP);
    assert!(
        s.notify.wait_for("RELOADING=1", T).is_some(),
        "no RELOADING=1\n{}",
        s.agent.stderr()
    );
    let ready = s.notify.wait_for("READY=1", timeout);
    let took = t0.elapsed();
    assert!(
        ready.is_some(),
        "the reload cycle did not finish (no READY=1) within {timeout:?}\n{}\n{}",
        s.notify.dump(),
        s.agent.stderr()
    );
    let after = s.inv.wait_quiet(Duration::from_millis(500), T);
    (after - before, took, s.agent.log_since(mark))
}

/// Serves `bad` to a daemon that holds a good file and checks that the file
/// stays byte-identical and untouched, the agent alive, the failure logged
/// (with each of `expect_in_log`), and that it recovers afterwards.
fn bad_response_keeps_file(
    tag: &str,
    bad: Behavior,
    env: &[(&str, &str)],
    expect_in_log: &[&str],
) -> Started {
    let mut s = start_good(tag, env);
    let before = stamp(s.agent.targets_file());
    s.inv.set(bad);
    for round in 0..2 {
        let reloading_seen = s.notify.all().len();
        let (reqs, _, log) = hup_cycle(&mut s, Duration::from_secs(20));
        assert!(reqs >= 1, "round {round}: the reload made no request");
        assert!(s.agent.is_alive(), "agent died\n{}", s.agent.stderr());
        assert_eq!(
            fs::read(s.agent.targets_file()).unwrap(),
            s.original,
            "round {round}: the old file changed\n{log}"
        );
        assert_eq!(
            stamp(s.agent.targets_file()),
            before,
            "round {round}: the file was rewritten (inode/mtime changed)"
        );
        assert!(
            log.lines()
                .any(|l| l.contains(" - ERROR - ") || l.contains(" - WARN")),
            "round {round}: no ERROR/WARN line logged for the failure:\n{log}"
        );
        for e in expect_in_log {
            assert!(
                log.to_lowercase().contains(&e.to_lowercase()),
                "round {round}: log does not mention {e:?}:\n{log}"
            );
        }
        let statuses: Vec<String> = s.notify.all()[reloading_seen..]
            .iter()
            .filter_map(|m| m.get("STATUS").map(str::to_string))
            .collect();
        assert!(
            !statuses.is_empty(),
            "round {round}: no STATUS= after the failed cycle\n{}",
            s.notify.dump()
        );
        assert!(
            statuses.iter().any(|st| st.contains('3')),
            "round {round}: STATUS should tell the 3 targets kept: {statuses:?}"
        );
    }
    assert!(
        temp_files(s.agent.targets_file().parent().unwrap(), "targets.json").is_empty(),
        "temp file left behind"
    );
    // And it recovers once the inventory is good again.
    s.inv.set(Behavior::list(&["sensor_9"]));
    hup_cycle(&mut s, Duration::from_secs(20));
    assert_eq!(
        fs::read_to_string(s.agent.targets_file()).unwrap(),
        render_default(&["sensor_9:9100"]),
        "no recovery after the inventory came back\n{}",
        s.agent.stderr()
    );
    s
}

const FAST: &[(&str, &str)] = &[("RETRY_ATTEMPTS", "1"), ("RETRY_BACKOFF", "0.1")];

#[test]
fn status_500_keeps_file() {
    bad_response_keeps_file("r-500", Behavior::status(500), FAST, &["500"]);
}

#[test]
fn status_503_keeps_file() {
    bad_response_keeps_file("r-503", Behavior::status(503), FAST, &["503"]);
}

#[test]
fn status_404_keeps_file() {
    bad_response_keeps_file("r-404", Behavior::status(404), FAST, &["404"]);
}

#[test]
fn status_429_keeps_file() {
    bad_response_keeps_file("r-429", Behavior::status(429), FAST, &["429"]);
}

#[test]
fn invalid_json_keeps_file() {
    bad_response_keeps_file("r-badjson", Behavior::json("this is {not json"), FAST, &[]);
}

#[test]
fn truncated_body_keeps_file() {
    bad_response_keeps_file(
        "r-trunc",
        Behavior::truncated(r#"["sensor_7","sensor_8","sens"#, 200),
        FAST,
        &[],
    );
}

#[test]
fn truncated_body_that_happens_to_parse_keeps_file() {
    // The bytes received form valid JSON, but the body is shorter than its
    // Content-Length: the response is incomplete and must not be applied.
    bad_response_keeps_file(
        "r-trunc2",
        Behavior::truncated(r#"["sensor_7"]"#, 200),
        FAST,
        &[],
    );
}

#[test]
fn json_object_keeps_file() {
    bad_response_keeps_file(
        "r-object",
        Behavior::json(r#"{"sensors": ["sensor_7", "sensor_8"]}"#),
        FAST,
        &[],
    );
}

#[test]
fn array_of_numbers_keeps_file() {
    bad_response_keeps_file("r-numbers", Behavior::json("[1, 2, 3]"), FAST, &[]);
}

#[test]
fn json_null_keeps_file() {
    bad_response_keeps_file("r-null", Behavior::json("null"), FAST, &[]);
}

#[test]
fn html_login_page_keeps_file() {
    bad_response_keeps_file("r-html", Behavior::html_login(), FAST, &[]);
}

#[test]
fn redirect_loop_keeps_file() {
    bad_response_keeps_file("r-redirect", Behavior::RedirectLoop, FAST, &[]);
}

/// A long HTTP_TIMEOUT, so that only the size cap can end an endless body
/// within the 20 s a reload cycle is given here.
const SMALL_MAX: &[(&str, &str)] = &[
    ("RETRY_ATTEMPTS", "1"),
    ("RETRY_BACKOFF", "0.1"),
    ("MAX_RESPONSE_BYTES", "4096"),
    ("HTTP_TIMEOUT", "60"),
];

#[test]
fn endless_body_past_max_response_bytes_keeps_file() {
    bad_response_keeps_file(
        "r-endless",
        Behavior::Endless { chunked: false },
        SMALL_MAX,
        &[],
    );
}

#[test]
fn endless_chunked_body_past_max_response_bytes_keeps_file() {
    bad_response_keeps_file(
        "r-endless-ch",
        Behavior::Endless { chunked: true },
        SMALL_MAX,
        &[],
    );
}

#[test]
fn finite_body_over_max_response_bytes_keeps_file() {
    let names: Vec<String> = (0..1000).map(|i| format!("sensor_{i}")).collect();
    let body = serde_json::to_vec(&names).unwrap();
    assert!(body.len() > 8000);
    bad_response_keeps_file("r-big", Behavior::json(body), SMALL_MAX, &[]);
}

#[test]
fn gzip_bomb_past_max_response_bytes_keeps_file() {
    // Tiny on the wire, 1 MiB after decompression: the cap applies after it.
    let mut body = b"[\"sensor_7\"".to_vec();
    body.resize(1 << 20, b' ');
    body.push(b']');
    bad_response_keeps_file("r-gzbomb", Behavior::gzip_json(&body), SMALL_MAX, &[]);
}

#[test]
fn empty_list_keeps_file_unless_allowed() {
    bad_response_keeps_file("r-empty", Behavior::json("[]"), FAST, &[]);
}

#[test]
fn only_invalid_entries_keeps_file() {
    bad_response_keeps_file(
        "r-allbad",
        Behavior::json(r#"["", "bad/name", "white space"]"#),
        FAST,
        &[],
    );
}

#[test]
fn dripping_body_past_http_timeout_keeps_file() {
    // 40 bytes of valid JSON at 4 bytes/s: 10 s per attempt if the timeout
    // were per read. HTTP_TIMEOUT=1 covers the whole request.
    let body = r#"["sensor_7","sensor_8","sensor_9000001"]"#;
    assert_eq!(body.len(), 40);
    let env = &[
        ("RETRY_ATTEMPTS", "1"),
        ("RETRY_BACKOFF", "0.1"),
        ("HTTP_TIMEOUT", "1"),
    ];
    let mut s = bad_response_keeps_file(
        "r-drip",
        Behavior::drip(body, Duration::from_millis(250)),
        env,
        &[],
    );
    // How long does a dripping cycle take? 2 attempts of 1 s plus backoff.
    s.inv.set(Behavior::drip(body, Duration::from_millis(250)));
    let (reqs, took, _) = hup_cycle(&mut s, Duration::from_secs(30));
    assert_eq!(reqs, 2, "1 try + RETRY_ATTEMPTS=1 retry");
    assert!(
        took < Duration::from_secs(5),
        "a dripping server stretched the cycle to {took:?} with HTTP_TIMEOUT=1"
    );
}

#[test]
fn inventory_going_away_keeps_file() {
    let mut s = start_good("r-gone", FAST);
    let before = stamp(s.agent.targets_file());
    let port = s.inv.port();
    // Replace the server by nothing: connections are refused.
    let dead = std::mem::replace(&mut s.inv, FakeInventory::start(Behavior::Hang));
    drop(dead);
    let mark = s.agent.log_mark();
    s.agent.signal(Signal::SIGHUP);
    assert!(s.notify.wait_for("RELOADING=1", T).is_some());
    assert!(
        s.notify.wait_for("READY=1", T).is_some(),
        "{}",
        s.agent.stderr()
    );
    assert!(s.agent.is_alive());
    assert_eq!(fs::read(s.agent.targets_file()).unwrap(), s.original);
    assert_eq!(stamp(s.agent.targets_file()), before);
    let log = s.agent.log_since(mark);
    assert!(
        log.contains("Failed to fetch inventory"),
        "connection refused to port {port} not logged as a failed fetch:\n{log}"
    );
}

#[test]
fn allow_empty_writes_empty_target_list() {
    let mut s = start_good(
        "r-allow-empty",
        &[
            ("ALLOW_EMPTY", "true"),
            ("RETRY_ATTEMPTS", "1"),
            ("RETRY_BACKOFF", "0.1"),
        ],
    );
    s.inv.set(Behavior::json("[]"));
    hup_cycle(&mut s, T);
    assert_eq!(
        fs::read_to_string(s.agent.targets_file()).unwrap(),
        render_default(&[]),
        "ALLOW_EMPTY=true must write an empty target group\n{}",
        s.agent.stderr()
    );
}

/// Requests made by one cycle that fails with `status`.
fn requests_per_failed_cycle(tag: &str, status: u16) -> usize {
    let mut s = start_good(tag, &[("RETRY_ATTEMPTS", "2"), ("RETRY_BACKOFF", "0.1")]);
    s.inv.set(Behavior::status(status));
    let (reqs, _, log) = hup_cycle(&mut s, Duration::from_secs(20));
    assert!(s.agent.is_alive());
    if reqs > 1 {
        assert!(
            log.contains("retrying in") || log.contains("next attempt"),
            "retries are not announced with their time:\n{log}"
        );
    }
    reqs
}

#[test]
fn status_404_is_not_retried() {
    assert_eq!(
        requests_per_failed_cycle("r-404-once", 404),
        1,
        "a 404 must fail the cycle at once"
    );
}

#[test]
fn status_500_is_retried() {
    assert_eq!(
        requests_per_failed_cycle("r-500-retry", 500),
        3,
        "RETRY_ATTEMPTS=2: one try and two retries"
    );
}

fn retry_after_honoured(tag: &str, status: u16) {
    let mut s = start_good(tag, FAST);
    s.inv.set(Behavior::list(&["sensor_5"]));
    s.inv
        .push_once(Behavior::respond(status, &[("Retry-After", "1")], "wait"));
    let before = s.inv.wait_quiet(Duration::from_millis(200), T);
    let (reqs, _, log) = hup_cycle(&mut s, T);
    assert_eq!(reqs, 2, "{status} then success\n{log}");
    let r = s.inv.requests();
    let gap = r[before + 1].at - r[before].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retry after {gap:?}, but {status} said Retry-After: 1 (RETRY_BACKOFF=0.1)"
    );
    assert_eq!(
        fs::read_to_string(s.agent.targets_file()).unwrap(),
        render_default(&["sensor_5:9100"])
    );
}

#[test]
fn retry_after_on_429_is_honoured() {
    retry_after_honoured("r-429-ra", 429);
}

#[test]
fn retry_after_on_503_is_honoured() {
    retry_after_honoured("r-503-ra", 503);
}

#[test]
fn backoff_never_runs_past_the_next_cycle() {
    let dir = TestDir::new("r-cap");
    let notify = NotifySocket::new(&dir);
    let inv = FakeInventory::start(Behavior::status(500));
    let agent = daemon(&dir, &inv, &notify)
        .env("UPDATE_INTERVAL", "2")
        .env("RETRY_ATTEMPTS", "5")
        .env("RETRY_BACKOFF", "10")
        .spawn();
    assert!(inv.wait_for_requests(1, T), "{}", agent.stderr());
    std::thread::sleep(Duration::from_secs(7));
    let r = inv.requests();
    let max_gap = r
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .max()
        .unwrap_or(Duration::MAX);
    assert!(
        r.len() >= 3 && max_gap < Duration::from_millis(3500),
        "RETRY_BACKOFF=10 with UPDATE_INTERVAL=2: {} requests in 7 s, largest gap {max_gap:?}; \
         the backoff must be capped so a cycle never runs past the next one",
        r.len()
    );
}

#[test]
fn gzip_body_is_decoded() {
    let mut s = start_good("r-gzip", FAST);
    s.inv
        .set(Behavior::gzip_json(br#"["sensor_z", "sensor_y"]"#));
    hup_cycle(&mut s, T);
    assert_eq!(
        fs::read_to_string(s.agent.targets_file()).unwrap(),
        render_default(&["sensor_y:9100", "sensor_z:9100"]),
        "{}",
        s.agent.stderr()
    );
}

/// A server-supplied number never overflows time arithmetic: the one-shot
/// modes fail with exit 1 (not a panic, 101), and the daemon reports the 503.
#[test]
fn huge_retry_after_is_capped_not_a_panic() {
    const HUGE: &str = "18446744073709551615";
    for mode in ["--once", "--print"] {
        let dir = TestDir::new("r-huge-ra");
        let inv = FakeInventory::start(Behavior::respond(503, &[("Retry-After", HUGE)], "wait"));
        let out = AgentCmd::new(&dir)
            .inventory(&inv)
            .env("RETRY_ATTEMPTS", "1")
            .arg(mode)
            .run(T);
        assert_eq!(out.code(), Some(1), "{mode}\n{}", out.describe());
        assert!(!out.stderr.contains("panicked"), "{}", out.describe());
        assert!(out.stderr.contains("503"), "{}", out.describe());
    }
    let mut s = start_good("r-huge-ra-d", FAST);
    s.inv
        .set(Behavior::respond(503, &[("Retry-After", HUGE)], "wait"));
    let (_, _, log) = hup_cycle(&mut s, T);
    assert!(
        log.contains("HTTP 503") && !log.contains("internal error") && !log.contains("panic"),
        "{log}"
    );
    assert_eq!(fs::read(s.agent.targets_file()).unwrap(), s.original);
    assert!(s.agent.is_alive(), "{log}");
}
