//! Self-tests of the test harness (fake inventory, notify socket, rendering),
//! so that a failing agent test is never a harness bug in disguise.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// Sends a GET and returns (everything read, whether EOF came) within `limit`.
fn get(inv: &FakeInventory, limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", inv.port())).unwrap();
    s.write_all(b"GET /inventory HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    (out, false)
}

fn body(resp: &[u8]) -> &[u8] {
    let pos = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &resp[pos + 4..]
}

#[test]
fn fake_inventory_serves_and_counts() {
    let inv = FakeInventory::start(Behavior::list(&["a", "b"]));
    let (resp, eof) = get(&inv, SEC * 2);
    assert!(eof);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 9\r\n"), "{text}");
    assert_eq!(body(&resp), br#"["a","b"]"#);
    assert!(inv.wait_for_requests(1, SEC));
    assert_eq!(inv.requests()[0].path, "/inventory");
    assert_eq!(inv.requests()[0].header("accept-encoding"), Some("gzip"));

    inv.push_once(Behavior::respond(429, &[("Retry-After", "1")], "slow down"));
    let (resp, _) = get(&inv, SEC * 2);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 429 "), "{text}");
    assert!(text.contains("Retry-After: 1\r\n"), "{text}");
    let (resp, _) = get(&inv, SEC * 2);
    assert_eq!(body(&resp), br#"["a","b"]"#, "queued behaviour is one-shot");
    assert_eq!(inv.request_count(), 3);
}

#[test]
fn fake_inventory_bad_behaviours() {
    let inv = FakeInventory::start(Behavior::Hang);
    let (resp, eof) = get(&inv, Duration::from_millis(500));
    assert!(resp.is_empty() && !eof, "hang answers nothing");

    inv.set(Behavior::drip("[\"abcdef\"]", Duration::from_millis(100)));
    let (resp, _) = get(&inv, Duration::from_millis(450));
    let b = body(&resp);
    assert!(!b.is_empty() && b.len() < 8, "drip sent {} bytes", b.len());

    inv.set(Behavior::Endless { chunked: false });
    let (resp, eof) = get(&inv, Duration::from_millis(300));
    assert!(!eof && resp.len() > 100_000, "endless sent {}", resp.len());

    inv.set(Behavior::Endless { chunked: true });
    let (resp, eof) = get(&inv, Duration::from_millis(300));
    assert!(!eof && resp.len() > 100_000);
    assert!(String::from_utf8_lossy(&resp[..200]).contains("Transfer-Encoding: chunked"));

    inv.set(Behavior::truncated("[\"a\"]", 100));
    let (resp, eof) = get(&inv, SEC * 2);
    assert!(eof);
    assert!(String::from_utf8_lossy(&resp).contains("Content-Length: 100\r\n"));
    assert_eq!(body(&resp), b"[\"a\"]");

    inv.set(Behavior::RedirectLoop);
    let (resp, _) = get(&inv, SEC * 2);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 302 "));
    assert!(text.contains("Location: /inventory\r\n"));

    inv.set(Behavior::gzip_json(b"[\"zipped\"]"));
    let (resp, _) = get(&inv, SEC * 2);
    let mut d = flate2::read::GzDecoder::new(body(&resp));
    let mut plain = String::new();
    d.read_to_string(&mut plain).unwrap();
    assert_eq!(plain, "[\"zipped\"]");

    // Dropping with hung and endless connections open must not block.
    inv.set(Behavior::Hang);
    let _held = TcpStream::connect(("127.0.0.1", inv.port())).map(|mut s| {
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        s
    });
    assert!(inv.wait_for_requests(8, SEC * 2));
    let t = Instant::now();
    drop(inv);
    assert!(t.elapsed() < SEC * 3, "drop took {:?}", t.elapsed());
}

#[test]
fn notify_socket_orders_messages() {
    let dir = TestDir::new("harness");
    let n = NotifySocket::new(&dir);
    let tx = UnixDatagram::unbound().unwrap();
    tx.send_to(b"READY=1\nSTATUS=starting\n", n.path()).unwrap();
    tx.send_to(b"RELOADING=1\nMONOTONIC_USEC=12\n", n.path())
        .unwrap();
    tx.send_to(b"READY=1", n.path()).unwrap();
    let first = n.wait_for("READY=1", SEC).unwrap();
    assert_eq!(first.get("STATUS"), Some("starting"));
    let r = n.wait_for("RELOADING=1", SEC).unwrap();
    assert_eq!(r.get("MONOTONIC_USEC"), Some("12"));
    let again = n.wait_for("READY=1", SEC).unwrap();
    assert_eq!(again.get("STATUS"), None);
    assert!(n.wait_for("READY=1", Duration::from_millis(100)).is_none());
    assert_eq!(n.all().len(), 3);
    tx.send_to(b"READY=1", n.path()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    n.skip_pending();
    assert!(n.wait_for("READY=1", Duration::from_millis(100)).is_none());
    assert_eq!(n.all().len(), 4);
}

#[test]
fn render_matches_agreed_format() {
    let expected =
        "[\n  {\n    \"targets\": [\n      \"sensor_0:9100\"\n    ],\n    \"labels\": {\n      \
                    \"__metrics_path__\": \"/metrics\",\n      \"job\": \"sensors\",\n      \
                    \"environment\": \"production\"\n    }\n  }\n]\n";
    assert_eq!(render_default(&["sensor_0:9100"]), expected);
    assert_eq!(
        parse_targets(expected.as_bytes()).unwrap(),
        vec!["sensor_0:9100"]
    );
    // serde_json's pretty printer agrees on the shape (it sorts the labels).
    let v: serde_json::Value = serde_json::from_str(&render_default(&["a:1", "b:2"])).unwrap();
    assert_eq!(v[0]["targets"][1], "b:2");
    assert!(render(&[], "/m", &[]).contains("\"targets\": [],"));
}

#[test]
fn redirect_behaviour_and_base64_helper() {
    let inv = FakeInventory::start(Behavior::Redirect {
        status: 307,
        location: "http://u:p@h:1/\u{202e}x".into(),
    });
    let (resp, eof) = get(&inv, SEC * 2);
    assert!(eof);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 307 "), "{text}");
    // The Location goes out verbatim, raw UTF-8 included.
    assert!(
        text.contains("Location: http://u:p@h:1/\u{202e}x\r\n"),
        "{text}"
    );
    inv.set(Behavior::redirect("/next"));
    let (resp, _) = get(&inv, SEC * 2);
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 302 ") && text.contains("Location: /next\r\n"));
    // RFC 4648 test vectors.
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc);
    }
}
