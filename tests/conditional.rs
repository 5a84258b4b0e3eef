//! Conditional requests and unchanged bodies: the daemon sends back the
//! `ETag` and `Last-Modified` of the last accepted response; a 304 keeps
//! the targets file untouched and says "not modified"; a body equal to the
//! last accepted one is not parsed again; a targets file changed behind the
//! agent's back, or a restart, makes the next request unconditional.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);
const BODY: &str = r#"["sensor_1", "sensor_2"]"#;

fn with_headers(headers: &[(&str, &str)]) -> Reply {
    Reply::respond(200, headers, BODY)
}

fn header(r: &Served, name: &str) -> Option<String> {
    r.header(name).map(str::to_string)
}

/// Waits for request `n` (1-based) and returns it.
fn nth(srv: &Server, n: usize, agent: &Agent) -> Served {
    assert!(srv.wait_for_requests(n, T), "{}", agent.stderr());
    srv.requests()[n - 1].clone()
}

/// Starts a daemon against `srv` and waits for its first file.
fn start(dir: &TestDir, srv: &Server, notify: &NotifySocket) -> Agent {
    let agent = AgentCmd::new(dir).inventory(srv).notify(notify).spawn();
    assert!(
        notify.wait_for("READY=1", T).is_some(),
        "{}",
        agent.stderr()
    );
    assert!(agent.wait_for_file(T), "{}", agent.stderr());
    // The file can appear before the first cycle's last log line: wait for
    // it, so that a later log_skip() leaves nothing of that cycle behind.
    let mut agent = agent;
    assert!(
        agent
            .wait_log("Successfully updated targets file", T)
            .is_some(),
        "{}",
        agent.stderr()
    );
    agent
}

#[test]
fn etag_round_trip_and_a_304_that_keeps_the_file() {
    let dir = TestDir::new("cond-etag");
    let srv = Server::start("inv", with_headers(&[("ETag", "\"v1\"")]));
    let notify = NotifySocket::new(&dir);
    let mut agent = start(&dir, &srv, &notify);
    let first = nth(&srv, 1, &agent);
    assert_eq!(
        header(&first, "if-none-match"),
        None,
        "the first request is unconditional"
    );
    let file = agent.targets_file().to_path_buf();
    let before = stamp(&file);
    let content = fs::read(&file).unwrap();

    srv.replace("304", Reply::status(304));
    notify.drain();
    agent.log_skip();
    agent.signal(Signal::SIGHUP);
    let second = nth(&srv, 2, &agent);
    assert_eq!(header(&second, "if-none-match").as_deref(), Some("\"v1\""));
    assert_eq!(header(&second, "if-modified-since"), None);
    let log = agent
        .wait_log("Inventory not modified (304): 2 targets kept", T)
        .unwrap_or_else(|| panic!("{}", agent.stderr()));
    assert!(!log.contains("Failed"), "{log}");
    let status = notify
        .recv_until(T, |m| m.has("READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 after the reload\n{}", notify.dump()));
    let status = status.get("STATUS").unwrap_or_default().to_string();
    assert!(status.contains("not modified"), "{status}");
    assert!(status.starts_with("2 targets, updated"), "{status}");
    // Not rewritten: same inode, same mtime, same bytes.
    assert_eq!(stamp(&file), before);
    assert_eq!(fs::read(&file).unwrap(), content);

    // Once more: a 304 stays a success and sends the same validator.
    agent.signal(Signal::SIGHUP);
    let third = nth(&srv, 3, &agent);
    assert_eq!(header(&third, "if-none-match").as_deref(), Some("\"v1\""));
    assert!(agent.is_alive());
}

#[test]
fn last_modified_round_trip() {
    let dir = TestDir::new("cond-lm");
    let date = "Wed, 21 Oct 2015 07:28:00 GMT";
    let srv = Server::start("inv", with_headers(&[("Last-Modified", date)]));
    let notify = NotifySocket::new(&dir);
    let agent = start(&dir, &srv, &notify);
    assert_eq!(header(&nth(&srv, 1, &agent), "if-modified-since"), None);
    srv.replace("304", Reply::status(304));
    agent.signal(Signal::SIGHUP);
    let second = nth(&srv, 2, &agent);
    assert_eq!(header(&second, "if-modified-since").as_deref(), Some(date));
    assert_eq!(header(&second, "if-none-match"), None);
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("Inventory not modified (304)")),
        "{}",
        agent.stderr()
    );
}

#[test]
fn a_304_to_an_unconditional_request_is_a_failure() {
    let dir = TestDir::new("cond-304-bare");
    // No validators in the first answer: nothing to send back.
    let srv = Server::start("inv", Reply::list(&["a"]));
    let notify = NotifySocket::new(&dir);
    let agent = start(&dir, &srv, &notify);
    srv.replace("304", Reply::status(304));
    agent.signal(Signal::SIGHUP);
    let second = nth(&srv, 2, &agent);
    assert_eq!(header(&second, "if-none-match"), None);
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("Failed to fetch inventory")
            && l.contains("304")),
        "{}",
        agent.stderr()
    );
    assert!(!agent.stderr().contains("not modified (304)"));
}

#[test]
fn an_unchanged_body_is_not_parsed_again() {
    let dir = TestDir::new("cond-same");
    let srv = Server::start("inv", Reply::list(&["a", "b", "c"]));
    let notify = NotifySocket::new(&dir);
    let mut agent = start(&dir, &srv, &notify);
    let file = agent.targets_file().to_path_buf();
    let before = stamp(&file);
    agent.log_skip();
    agent.signal(Signal::SIGHUP);
    let log = agent
        .wait_log("the same body as before: not parsed again", T)
        .unwrap_or_else(|| panic!("{}", agent.stderr()));
    // At debug level a parsed body logs "Successfully fetched": not here.
    std::thread::sleep(Duration::from_millis(200));
    let log = log + &agent.log_new();
    assert!(!log.contains("Successfully fetched"), "{log}");
    assert!(
        log.contains("Targets unchanged (3 targets from 3 sensors fetched in "),
        "{log}"
    );
    assert_eq!(stamp(&file), before);

    // A different body is parsed and written.
    srv.replace("new", Reply::list(&["a", "b"]));
    agent.signal(Signal::SIGHUP);
    assert!(
        agent
            .wait_log("Successfully updated targets file", T)
            .is_some(),
        "{}",
        agent.stderr()
    );
    assert_eq!(parse_targets(&fs::read(&file).unwrap()).unwrap().len(), 2);
}

#[test]
fn a_file_inventory_skips_an_unchanged_body_too() {
    let dir = TestDir::new("cond-file");
    let inv = dir.join("inventory.json");
    fs::write(&inv, BODY).unwrap();
    let notify = NotifySocket::new(&dir);
    let mut agent = AgentCmd::new(&dir)
        .env("INVENTORY_URL", format!("file://{}", inv.display()))
        .notify(&notify)
        .spawn();
    assert!(
        notify.wait_for("READY=1", T).is_some(),
        "{}",
        agent.stderr()
    );
    agent.log_skip();
    agent.signal(Signal::SIGHUP);
    assert!(
        agent
            .wait_log("the same body as before: not parsed again", T)
            .is_some(),
        "{}",
        agent.stderr()
    );
}

#[test]
fn a_targets_file_changed_behind_the_agents_back_makes_the_next_request_unconditional() {
    let dir = TestDir::new("cond-deleted");
    let srv = Server::start("inv", with_headers(&[("ETag", "\"v1\"")]));
    let notify = NotifySocket::new(&dir);
    let mut agent = start(&dir, &srv, &notify);
    let file = agent.targets_file().to_path_buf();
    let good = fs::read(&file).unwrap();

    // Deleted: the next request sends no validator, and the file comes back.
    fs::remove_file(&file).unwrap();
    agent.log_skip();
    agent.signal(Signal::SIGHUP);
    let second = nth(&srv, 2, &agent);
    assert_eq!(header(&second, "if-none-match"), None);
    assert!(
        agent
            .wait_log("Successfully updated targets file", T)
            .is_some(),
        "{}",
        agent.stderr()
    );
    assert_eq!(fs::read(&file).unwrap(), good);

    // Edited in place: the same.
    fs::write(&file, b"[]").unwrap();
    agent.signal(Signal::SIGHUP);
    let third = nth(&srv, 3, &agent);
    assert_eq!(header(&third, "if-none-match"), None);
    assert!(
        wait_for(T, || fs::read(&file).unwrap() == good),
        "{}",
        agent.stderr()
    );

    // Left alone: validators again, and the 304 keeps it.
    srv.replace("304", Reply::status(304));
    agent.signal(Signal::SIGHUP);
    let fourth = nth(&srv, 4, &agent);
    assert_eq!(header(&fourth, "if-none-match").as_deref(), Some("\"v1\""));
}

#[test]
fn after_a_restart_the_first_request_is_unconditional() {
    let dir = TestDir::new("cond-restart");
    let srv = Server::start("inv", with_headers(&[("ETag", "\"v1\"")]));
    let notify = NotifySocket::new(&dir);
    let agent = start(&dir, &srv, &notify);
    agent.signal(Signal::SIGHUP);
    assert_eq!(
        header(&nth(&srv, 2, &agent), "if-none-match").as_deref(),
        Some("\"v1\"")
    );
    drop(agent);
    notify.drain();
    let agent = AgentCmd::new(&dir).inventory(&srv).notify(&notify).spawn();
    assert_eq!(header(&nth(&srv, 3, &agent), "if-none-match"), None);
    // --once never sends any.
    let out = AgentCmd::new(&dir).inventory(&srv).arg("--once").run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        header(srv.requests().last().unwrap(), "if-none-match"),
        None
    );
}

#[test]
fn validators_of_another_origin_are_not_sent_back() {
    let dir = TestDir::new("cond-origin");
    let elsewhere = Server::start("elsewhere", with_headers(&[("ETag", "\"far\"")]));
    let home = Server::start("home", Reply::redirect(elsewhere.url()));
    let notify = NotifySocket::new(&dir);
    let agent = start(&dir, &home, &notify);
    agent.signal(Signal::SIGHUP);
    assert!(elsewhere.wait_for_requests(2, T), "{}", agent.stderr());
    for r in home.requests().iter().chain(&elsewhere.requests()) {
        assert_eq!(header(r, "if-none-match"), None, "{r:?}");
    }
}

#[test]
fn validators_go_back_only_to_the_resource_that_gave_them() {
    let dir = TestDir::new("cond-resource");
    let srv = Server::start("inv", Reply::status(500));
    let base = format!("http://127.0.0.1:{}", srv.port());
    // Two snapshots behind one redirect, with the same ETag (as a server
    // that derives it from mtime and size gives two files).
    let snapshot = |path: &str, body: &str| {
        vec![
            Step {
                label: "redirect",
                reply: Reply::redirect(format!("{base}{path}")),
            },
            Step {
                label: "snapshot",
                reply: Reply::respond(200, &[("ETag", "\"same\"")], body),
            },
        ]
    };
    srv.begin(1, snapshot("/v1", BODY));
    let notify = NotifySocket::new(&dir);
    let agent = start(&dir, &srv, &notify);
    srv.begin(2, snapshot("/v2", r#"["sensor_3"]"#));
    agent.signal(Signal::SIGHUP);
    assert!(
        wait_for(T, || srv.requests().iter().any(|r| r.path == "/v2")),
        "{}",
        agent.stderr()
    );
    let served = srv.requests();
    let v2 = served
        .iter()
        .find(|r| r.path == "/v2")
        .unwrap_or_else(|| panic!("no request for /v2: {served:?}"));
    assert_eq!(header(v2, "if-none-match"), None, "{v2:?}");
    assert!(
        wait_for(T, || fs::read_to_string(agent.targets_file())
            .is_ok_and(|s| s.contains("sensor_3"))),
        "{}",
        agent.stderr()
    );
}
