//! Fuzz target for everything that reads a URL or a header value from the
//! outside: INVENTORY_URL parsing, password redaction, proxy values and
//! their selection, redirect Locations, Retry-After, and the log cleaning.
//! Nothing may panic, and no password may survive redaction.
//!
//! The input is split at newlines: the first part is used as a whole in
//! every parser; the next parts build a URL around a password that starts
//! with a marker, which no output may show.

#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sd_updater::source::retry::{parse_retry_after, MAX_RETRY_AFTER};
use sd_updater::source::url::{resolve_redirect, InventoryUrl, Location, ProxyUrl};
use sd_updater::source::{proxy_for, ureq_proxy};
use sd_updater::sys::logging;
use sd_updater::sys::logging::redact;

/// Never part of any fixed message text.
const MARKER: &str = "Zq9Xw7";

/// The redacted form of a text that had a password shows only `***` where
/// it was, so redacting it again finds `***` or nothing.
fn check_redaction(text: &str) {
    let (shown, password) = redact(text);
    match password {
        None => assert_eq!(shown, text),
        Some(_) => {
            let again = redact(&shown).1;
            assert!(
                again.is_none() || again.as_deref() == Some("***"),
                "{text:?}"
            );
        }
    }
}

fn check_inventory_url(s: &str) {
    match InventoryUrl::parse(s) {
        Ok(u) => {
            check_redaction(&u.to_string());
            if let Location::Http { uri, .. } = u.location() {
                let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
                assert!(
                    !authority.contains('@'),
                    "userinfo in the request URI: {uri}"
                );
                assert!(uri.host().is_some_and(|h| !h.is_empty()));
                assert!(u.host().is_some());
                if let Some(auth) = u.authorization() {
                    assert!(auth.starts_with("Basic ") && auth.is_ascii());
                }
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

fn check_proxy(s: &str) {
    if let Ok(p) = ProxyUrl::parse(s) {
        assert!(!p.host.is_empty() && p.port != 0);
        // Building ureq's proxy from what we accepted never panics.
        let _ = ureq_proxy(&p);
    }
    // Selection from variables holding this value, for both schemes.
    let env = |name: &str| match name {
        "http_proxy" | "HTTPS_PROXY" | "all_proxy" => Some(s.to_string()),
        "no_proxy" => s.split_once(',').map(|(a, _)| a.to_string()),
        _ => None,
    };
    for (url, https) in [
        ("http://inv.example/x", false),
        ("https://[::1]:8443/x", true),
    ] {
        let url = InventoryUrl::parse(url).expect("a valid URL");
        let host = url.host().expect("an http URL has a host");
        if let Some((var, value)) = proxy_for(host, https, &env) {
            assert!(!value.trim().is_empty());
            assert!(["http_proxy", "HTTPS_PROXY", "all_proxy"].contains(&var));
        }
    }
}

fn check_redirect(s: &str) {
    let base = "https://inv.example:8443/a/b?q=1"
        .parse()
        .expect("a valid base");
    if let Ok(uri) = resolve_redirect(&base, s) {
        assert!(matches!(uri.scheme_str(), Some("http") | Some("https")));
        assert!(uri.host().is_some_and(|h| !h.is_empty()));
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        assert!(!authority.contains('@'), "userinfo kept from {s:?}");
    }
}

fn check_logging(s: &str) {
    let line = logging::one_line(s);
    assert!(!line.chars().any(|c| c.is_control()
        || matches!(u32::from(c), 0x2028..=0x202E | 0x2066..=0x2069 | 0xFEFF | 0xE0000..=0xE007F)));
    let _ = logging::redact_headers(s);
    let _ = logging::redact_urls(s);
}

fn check_retry_after(s: &str) {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Some(d) = parse_retry_after(s, now) {
        assert!(d <= MAX_RETRY_AFTER);
    }
    let _ = parse_retry_after(s, SystemTime::UNIX_EPOCH);
}

/// A URL around a marked password: whatever else it holds, no output shows
/// the marker. User and password hold no `?` or `#` (after either, an `@`
/// no longer marks userinfo), no whitespace (which ends a URL in a log
/// message) and no control characters.
fn check_marked(scheme: &str, user: &str, password: &str, rest: &str) {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '?' | '#') && !c.is_control() && !c.is_whitespace())
            .collect()
    };
    // Only the password may hold the marker.
    let unmarked = |s: &str| s.replace(MARKER, "_");
    let url = format!(
        "{}://{}:{MARKER}{}@{}",
        unmarked(&clean(scheme)),
        unmarked(&clean(user)),
        clean(password),
        unmarked(rest)
    );
    let outputs = |u: &str| -> Vec<String> {
        let mut out = vec![redact(u).0, logging::redact_urls(&format!("at {u} now"))];
        match InventoryUrl::parse(u) {
            Ok(p) => {
                out.push(p.to_string());
                out.push(format!("{p:?}"));
                out.push(p.scrub(&format!("echo {u}")));
            }
            Err(e) => out.push(e),
        }
        if let Err(e) = ProxyUrl::parse(u) {
            out.push(e);
        }
        out
    };
    for text in outputs(&url) {
        assert!(!text.contains(MARKER), "{url:?} shown as {text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = s.split('\n');
    let whole = parts.next().unwrap_or("");
    check_redaction(whole);
    check_inventory_url(whole);
    check_proxy(whole);
    check_redirect(whole);
    check_logging(whole);
    check_retry_after(whole);
    let scheme = parts.next().unwrap_or("http");
    let user = parts.next().unwrap_or("");
    let password = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("h/x");
    check_marked(scheme, user, password, rest);
});
