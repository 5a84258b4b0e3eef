//! Proxy (issue 5, test 9): with `HTTP_PROXY` set to a small recording
//! proxy on loopback the request goes through it; with `NO_PROXY` matching
//! the host it does not. The inventory listens on 127.0.0.1 only and the
//! proxied URLs name 127.0.0.2, so a proxied fetch can succeed only through
//! the proxy; the proxy records every request, so a direct fetch shows as
//! none. ureq tunnels plain HTTP through CONNECT too; an absolute-form GET
//! is accepted as well. HTTPS through CONNECT is in tls.rs.

mod reliability;

use std::fs;
use std::time::Duration;

use reliability::*;

const T: Duration = Duration::from_secs(20);

/// Runs `--once` and returns (exit code, log, file content).
fn once(url: &str, env: &[(&str, &str)]) -> (Option<i32>, String, Option<Vec<u8>>) {
    let dir = TmpDir::new("proxy");
    let mut spawn = Spawn::new(&dir, url)
        .arg("--once")
        .env("LOG_LEVEL", "debug");
    for (k, v) in env {
        spawn = spawn.env(k, v);
    }
    let (st, log) = spawn.run(T);
    (
        st.and_then(|s| s.code()),
        log,
        fs::read(spawn.targets_file()).ok(),
    )
}

#[test]
fn http_proxy_carries_the_request() {
    let list = GoodList::numbered("proxied", 7);
    let inv = Server::start("good", Reply::ok(&list.body));
    let proxy = Proxy::start(inv.addr());
    let url = format!("http://127.0.0.2:{}/inventory", inv.port());
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY"] {
        let before = proxy.requests().len();
        let (code, log, file) = once(&url, &[(var, &proxy.url())]);
        assert_eq!(code, Some(0), "{var}: {log}");
        assert_eq!(file.as_deref(), Some(&list.rendered[..]), "{var}");
        let reqs = proxy.requests();
        assert_eq!(reqs.len(), before + 1, "{var}: {reqs:?}");
        let r = reqs.last().unwrap();
        let authority = format!("127.0.0.2:{}", inv.port());
        assert!(
            (r.method == "CONNECT" && r.target == authority)
                || (r.method == "GET" && r.target == url),
            "{var}: not a proxy request for the inventory: {r:?}"
        );
    }
    let served = inv.served();
    assert_eq!(served.len(), 3);
    assert!(
        served
            .iter()
            .all(|s| s.header("Host") == Some(&format!("127.0.0.2:{}", inv.port()))),
        "{served:?}"
    );
}

#[test]
fn proxy_credentials_are_used_but_never_logged() {
    let list = GoodList::numbered("auth", 3);
    let inv = Server::start("good", Reply::ok(&list.body));
    let proxy = Proxy::start(inv.addr());
    let url = format!("http://127.0.0.2:{}/inventory", inv.port());
    let proxy_url = proxy.url().replace("http://", "http://puser:s3cr3t-pw@");
    let (code, log, _) = once(&url, &[("HTTP_PROXY", &proxy_url)]);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("s3cr3t-pw"), "proxy password logged:\n{log}");
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1);
    let auth = reqs[0]
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.clone());
    assert!(
        auth.as_deref().is_some_and(|a| a.starts_with("Basic ")),
        "no Proxy-Authorization sent: {:?}",
        reqs[0].headers
    );
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let list = GoodList::numbered("direct", 5);
    let inv = Server::start("good", Reply::ok(&list.body));
    let proxy = Proxy::start(inv.addr());
    let url = inv.url(); // 127.0.0.1
    let cases: &[(&str, &str)] = &[
        ("NO_PROXY", "127.0.0.1"),
        ("no_proxy", "127.0.0.1"),
        ("NO_PROXY", "example.com, 127.0.0.1"),
        ("NO_PROXY", "*"),
        ("NO_PROXY", &format!("127.0.0.1:{}", inv.port())),
    ];
    for (var, value) in cases {
        let (code, log, file) = once(&url, &[("HTTP_PROXY", &proxy.url()), (var, value)]);
        assert_eq!(code, Some(0), "{var}={value}: {log}");
        assert_eq!(file.as_deref(), Some(&list.rendered[..]));
        assert!(
            proxy.requests().is_empty(),
            "{var}={value}: the request went through the proxy"
        );
    }
    // A NO_PROXY that does not match leaves the proxy in use.
    let (code, log, _) = once(
        &url,
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("NO_PROXY", "127.0.0.10,.example"),
        ],
    );
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        proxy.requests().len(),
        1,
        "a non-matching NO_PROXY bypassed"
    );
}

#[test]
fn https_proxy_is_not_used_for_http() {
    let list = GoodList::numbered("plain", 2);
    let inv = Server::start("good", Reply::ok(&list.body));
    let proxy = Proxy::start(inv.addr());
    let (code, log, _) = once(&inv.url(), &[("HTTPS_PROXY", &proxy.url())]);
    assert_eq!(code, Some(0), "{log}");
    assert!(proxy.requests().is_empty());
}
