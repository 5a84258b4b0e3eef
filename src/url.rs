//! The inventory URL: scheme checks, the parts the fetcher needs, and a
//! redacted form that is safe to print anywhere.

use std::fmt;
use std::path::PathBuf;

use ureq::http::Uri;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://`: fetched with ureq.
    Http { uri: Uri, https: bool },
    /// `file://`: a local JSON file.
    File(PathBuf),
}

/// A validated inventory URL. Its `Display` is the redacted form.
#[derive(Clone, PartialEq, Eq)]
pub struct InventoryUrl {
    raw: String,
    redacted: String,
    password: Option<String>,
    location: Location,
}

impl InventoryUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err("must not contain spaces or control characters".into());
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| "expected an http://, https:// or file:// URL".to_string())?;
        let (redacted, password) = redact(raw);
        let location = match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let uri: Uri = raw
                    .parse()
                    .map_err(|e| format!("not a valid URL ({e}): {redacted}"))?;
                match uri.host() {
                    Some(h) if !h.is_empty() => {}
                    _ => return Err(format!("no host in {redacted}")),
                }
                Location::Http {
                    https: scheme.eq_ignore_ascii_case("https"),
                    uri,
                }
            }
            "file" => Location::File(file_path(rest)?),
            other => {
                return Err(format!(
                    "unsupported scheme {:?}: use http, https or file",
                    other
                ))
            }
        };
        Ok(InventoryUrl {
            raw: raw.to_string(),
            redacted,
            password,
            location,
        })
    }

    /// The URL as configured, password included: only for the request itself.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Host name for NO_PROXY matching (brackets removed).
    pub fn host(&self) -> Option<&str> {
        match &self.location {
            Location::Http { uri, .. } => uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']')),
            Location::File(_) => None,
        }
    }

    /// Removes the password from any text, such as an error message from a
    /// library that echoes the URL back.
    pub fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "***"),
            _ => text.to_string(),
        }
    }
}

impl fmt::Display for InventoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for InventoryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InventoryUrl({})", self.redacted)
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
/// Returns the redacted text and the password that was removed.
pub fn redact(raw: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return (raw.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return (raw.to_string(), None);
    };
    let userinfo = &authority[..at];
    match userinfo.split_once(':') {
        Some((user, password)) => (
            format!("{scheme}://{user}:***@{}", &rest[at + 1..]),
            Some(password.to_string()),
        ),
        None => (raw.to_string(), None),
    }
}

fn file_path(rest: &str) -> Result<PathBuf, String> {
    // file:///abs/path or file://localhost/abs/path
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(
            "a file:// URL needs an absolute path, as in file:///etc/sd-updater/inventory.json"
                .into(),
        );
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Ok(PathBuf::from(percent_decode(path)?))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in file path {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("file path {s:?} is not UTF-8"))
}

/// Whether `host` matches a `NO_PROXY` list: comma-separated names, where
/// `example.com` and `.example.com` match the domain and its subdomains,
/// `*` matches everything, and a bare IP matches itself.
pub fn no_proxy_matches(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy
        .split([',', ' '])
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_start_matches('[');
            // Drop a :port and IPv6 brackets.
            let entry = match entry.split_once(']') {
                Some((inner, _)) => inner,
                None if entry.matches(':').count() == 1 => entry.split(':').next().unwrap_or(entry),
                None => entry,
            }
            .to_ascii_lowercase();
            !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert!(matches!(
            InventoryUrl::parse("http://inv:1337/inventory")
                .unwrap()
                .location(),
            Location::Http { https: false, .. }
        ));
        assert!(matches!(
            InventoryUrl::parse("HTTPS://inv/x").unwrap().location(),
            Location::Http { https: true, .. }
        ));
        assert_eq!(
            InventoryUrl::parse("file:///srv/inv%20x.json")
                .unwrap()
                .location(),
            &Location::File(PathBuf::from("/srv/inv x.json"))
        );
        assert_eq!(
            InventoryUrl::parse("file://localhost/a.json")
                .unwrap()
                .location(),
            &Location::File(PathBuf::from("/a.json"))
        );
        for bad in [
            "ftp://x/y",
            "inventory:1337",
            "http://",
            "file://relative.json",
            "http://a b/",
            "",
        ] {
            assert!(InventoryUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn redaction() {
        let u = InventoryUrl::parse("https://bob:s3cr%40t@inv.example:8443/api?x=1").unwrap();
        assert_eq!(u.to_string(), "https://bob:***@inv.example:8443/api?x=1");
        assert!(!format!("{u:?}").contains("s3cr"));
        assert_eq!(
            u.scrub("error for bob:s3cr%40t@inv"),
            "error for bob:***@inv"
        );
        assert_eq!(u.raw(), "https://bob:s3cr%40t@inv.example:8443/api?x=1");
        assert_eq!(u.host(), Some("inv.example"));

        // No password: nothing to hide, user names stay.
        let u = InventoryUrl::parse("http://bob@inv/x").unwrap();
        assert_eq!(u.to_string(), "http://bob@inv/x");
        assert_eq!(u.scrub("bob"), "bob");

        // An '@' in the path is not userinfo.
        assert_eq!(redact("http://h/p@q:r").0, "http://h/p@q:r");
        // A bad URL's error does not echo the password.
        let e = InventoryUrl::parse("http://u:pw@[bad/").unwrap_err();
        assert!(!e.contains("pw@"), "{e}");
    }

    #[test]
    fn ipv6_host() {
        let u = InventoryUrl::parse("http://[::1]:8080/inv").unwrap();
        assert_eq!(u.host(), Some("::1"));
    }

    #[test]
    fn no_proxy() {
        assert!(no_proxy_matches("localhost,127.0.0.1", "127.0.0.1"));
        assert!(no_proxy_matches("example.com", "inv.example.com"));
        assert!(no_proxy_matches(".example.com", "inv.example.com"));
        assert!(no_proxy_matches("*.example.com", "inv.example.com"));
        assert!(no_proxy_matches("*", "anything"));
        assert!(no_proxy_matches("inv:1337", "inv"));
        assert!(no_proxy_matches("[::1]", "::1"));
        assert!(no_proxy_matches("::1", "::1"));
        assert!(!no_proxy_matches("example.com", "notexample.com"));
        assert!(!no_proxy_matches("", "inv"));
        assert!(!no_proxy_matches("other", "inv"));
    }
}
