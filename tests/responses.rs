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

// ---------------------------------------------------------------------------
// Only 200 is a success; redirects keep credentials on their origin only
// ---------------------------------------------------------------------------

/// `--once` against `inv` with a seeded targets file; returns the run and
/// whether the file is still the seed.
fn once_keeps_seed(dir: &TestDir, url: &str, env: &[(&str, &str)]) -> (RunOutput, bool) {
    let mut cmd = AgentCmd::new(dir)
        .env("INVENTORY_URL", url)
        .env("RETRY_ATTEMPTS", "2")
        .env("RETRY_BACKOFF", "0.05")
        .arg("--once");
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    let file = cmd.targets_file();
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"seed\n").unwrap();
    let out = cmd.run(T);
    let kept = fs::read(&file).unwrap() == b"seed\n";
    (out, kept)
}

#[test]
fn only_status_200_is_a_success_other_2xx_and_3xx_fail_without_retry() {
    for status in [206u16, 226, 201, 203, 204, 299, 300, 304, 305] {
        let dir = TestDir::new("r-non200");
        // A good-looking body: only the status can make it fail.
        let body = if matches!(status, 204 | 304) {
            ""
        } else {
            r#"["sensor_new"]"#
        };
        let inv = FakeInventory::start(Behavior::respond(
            status,
            &[("Content-Type", "application/json")],
            body,
        ));
        let (out, kept) = once_keeps_seed(&dir, &inv.url(), &[]);
        assert_eq!(out.code(), Some(1), "{status}\n{}", out.describe());
        assert!(kept, "{status}: the old file changed\n{}", out.describe());
        assert_eq!(inv.request_count(), 1, "{status} was retried");
        let failure = out
            .stderr
            .lines()
            .find(|l| l.contains("Failed to fetch inventory"))
            .unwrap_or_else(|| panic!("{status}: no failure line\n{}", out.describe()));
        assert!(
            failure.contains(&format!("HTTP {status}")),
            "{status}: the failure does not name the status: {failure}"
        );
    }
}

#[test]
fn status_206_keeps_file_in_the_daemon() {
    bad_response_keeps_file(
        "r-206",
        Behavior::respond(
            206,
            &[
                ("Content-Type", "application/json"),
                ("Content-Range", "bytes 0-11/40"),
            ],
            r#"["sensor_7"]"#,
        ),
        FAST,
        &["HTTP 206 Partial Content"],
    );
}

fn basic(user_pass: &str) -> String {
    format!("Basic {}", base64(user_pass.as_bytes()))
}

#[test]
fn percent_encoded_credentials_are_sent_decoded() {
    let dir = TestDir::new("r-auth-dec");
    let inv = FakeInventory::start(Behavior::list(&["sensor_a"]));
    let url = format!(
        "http://al%69ce:s3cr%40t%2F%3A%25@127.0.0.1:{}/inventory",
        inv.port()
    );
    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .arg("--once")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let r = inv.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].header("Authorization"),
        Some(basic("alice:s3cr@t/:%").as_str()),
        "the credentials must be percent-decoded before base64"
    );
    assert_eq!(r[0].path, "/inventory", "userinfo must not reach the path");
}

#[test]
fn same_origin_redirect_keeps_the_credentials() {
    let dir = TestDir::new("r-redir-same");
    let inv = FakeInventory::start(Behavior::list(&["sensor_r"]));
    // /sensors -> /sensors/ (relative), then an absolute one to the same origin
    // spelled with the explicit port.
    inv.push_once(Behavior::Redirect {
        status: 301,
        location: "/sensors/".into(),
    });
    inv.push_once(Behavior::Redirect {
        status: 307,
        location: format!("http://127.0.0.1:{}/sensors/v2?x=1", inv.port()),
    });
    let url = format!("http://alice:s3cret@127.0.0.1:{}/sensors", inv.port());
    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .arg("--once")
        .run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let r = inv.requests();
    let paths: Vec<&str> = r.iter().map(|q| q.path.as_str()).collect();
    assert_eq!(paths, ["/sensors", "/sensors/", "/sensors/v2?x=1"]);
    for q in &r {
        assert_eq!(
            q.header("Authorization"),
            Some(basic("alice:s3cret").as_str()),
            "{}: the same origin lost its credentials",
            q.path
        );
    }
    assert_eq!(
        fs::read_to_string(cmd_targets(&dir)).unwrap(),
        render_default(&["sensor_r:9100"])
    );
}

fn cmd_targets(dir: &TestDir) -> std::path::PathBuf {
    AgentCmd::new(dir).targets_file()
}

#[test]
fn cross_origin_redirects_drop_the_credentials() {
    let dir = TestDir::new("r-redir-cross");
    let other = FakeInventory::start(Behavior::list(&["sensor_o"]));
    let inv = FakeInventory::start(Behavior::list(&["sensor_i"]));
    let url = format!("http://alice:s3cret@127.0.0.1:{}/inventory", inv.port());
    let cases = [
        // Another port on the same host is another origin.
        format!("http://127.0.0.1:{}/inventory", other.port()),
        // So is another host name for the same address and port.
        format!("http://localhost:{}/elsewhere", inv.port()),
    ];
    for location in &cases {
        let before_inv = inv.request_count();
        let before_other = other.request_count();
        inv.push_once(Behavior::redirect(location.clone()));
        let out = AgentCmd::new(&dir)
            .env("INVENTORY_URL", &url)
            .arg("--once")
            .run(T);
        assert_eq!(out.code(), Some(0), "{location}\n{}", out.describe());
        let first = &inv.requests()[before_inv];
        assert_eq!(
            first.header("Authorization"),
            Some(basic("alice:s3cret").as_str())
        );
        let followed: Vec<Request> = inv.requests()[before_inv + 1..]
            .iter()
            .chain(other.requests()[before_other..].iter())
            .cloned()
            .collect();
        assert_eq!(followed.len(), 1, "{location}: {followed:?}");
        assert_eq!(
            followed[0].header("Authorization"),
            None,
            "{location}: credentials sent to another origin"
        );
    }
}

#[test]
fn redirect_limits_and_schemes_still_hold() {
    // Ten redirects are followed; the eleventh is refused.
    for (hops, code) in [(10usize, 0), (11, 1)] {
        let dir = TestDir::new("r-redir-10");
        let inv = FakeInventory::start(Behavior::list(&["sensor_h"]));
        for i in 0..hops {
            inv.push_once(Behavior::redirect(format!("/hop{i}")));
        }
        let (out, kept) = once_keeps_seed(&dir, &inv.url(), &[]);
        assert_eq!(out.code(), Some(code), "{hops} hops\n{}", out.describe());
        assert_eq!(kept, code == 1, "{hops} hops\n{}", out.describe());
        if code == 1 {
            assert!(
                out.stderr.contains("too many redirects"),
                "{}",
                out.describe()
            );
            assert_eq!(inv.request_count(), 11, "a refused chain is not retried");
        }
    }
    // Other schemes are refused, and the Location is shown without password.
    for location in [
        "file:///etc/passwd",
        "ftp://u:Loc-Secr3t@127.0.0.1/x",
        "gopher://127.0.0.1/",
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1:0/x",
    ] {
        let dir = TestDir::new("r-redir-scheme");
        let inv = FakeInventory::start(Behavior::redirect(location));
        let (out, kept) = once_keeps_seed(&dir, &inv.url(), &[]);
        assert_eq!(out.code(), Some(1), "{location}\n{}", out.describe());
        assert!(kept, "{location}");
        assert_eq!(inv.request_count(), 1, "{location}: retried or followed");
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains("Failed to fetch inventory"))
            .unwrap_or_else(|| panic!("{location}: no failure\n{}", out.describe()));
        assert!(line.contains("refused") && line.contains("302"), "{line}");
        assert!(!out.stderr.contains("Loc-Secr3t"), "{}", out.describe());
    }
    // A redirect without a Location fails and names the status.
    let dir = TestDir::new("r-redir-noloc");
    let inv = FakeInventory::start(Behavior::status(302));
    let (out, kept) = once_keeps_seed(&dir, &inv.url(), &[]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(kept);
    assert!(
        out.stderr.contains("HTTP 302 Found without a Location"),
        "{}",
        out.describe()
    );
}

/// HTTP_TIMEOUT bounds the whole attempt, redirects included: ten slow
/// redirects cannot stretch it ten times.
#[test]
fn redirects_share_one_http_timeout() {
    let dir = TestDir::new("r-redir-slow");
    let inv = FakeInventory::start(Behavior::Respond {
        status: 302,
        headers: vec![("Location".into(), "/inventory".into())],
        body: std::sync::Arc::new(Vec::new()),
        delay: Duration::from_millis(400),
    });
    let t0 = Instant::now();
    let (out, kept) = once_keeps_seed(
        &dir,
        &inv.url(),
        &[("HTTP_TIMEOUT", "1"), ("RETRY_ATTEMPTS", "0")],
    );
    let took = t0.elapsed();
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(kept);
    assert!(out.stderr.contains("timed out"), "{}", out.describe());
    assert!(
        took < Duration::from_millis(2500),
        "one attempt took {took:?} with HTTP_TIMEOUT=1"
    );
    assert!(inv.request_count() <= 3, "{} requests", inv.request_count());
}

/// Deep nesting cannot exhaust the stack: serde_json's recursion limit
/// refuses it, the old file stays and the agent lives on.
#[test]
fn deeply_nested_json_keeps_file() {
    let depth = 100_000;
    let mut body = "[".repeat(depth);
    body.push_str(&"]".repeat(depth));
    bad_response_keeps_file("r-nested", Behavior::json(body), FAST, &["recursion"]);
    let mut inner = String::from("[\"sensor_7\", ");
    inner.push_str(&"[".repeat(depth));
    inner.push_str(&"]".repeat(depth));
    inner.push(']');
    bad_response_keeps_file("r-nested-el", Behavior::json(inner), FAST, &[]);
}
