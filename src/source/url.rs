//! The inventory URL: scheme checks, the parts the fetcher needs, and a
//! redacted form that is safe to print anywhere. Also proxy settings and
//! redirect targets, which share the same authority rules.

use std::fmt;
use std::path::PathBuf;

use crate::sys::logging::{redact, scrub_secrets, split_scheme};
use ureq::http::Uri;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://`: fetched with ureq. `uri` carries neither
    /// user name nor password (they travel in `Authorization`) nor fragment.
    Http { uri: Uri, https: bool },
    /// `file://`: a local JSON file.
    File(PathBuf),
}

/// A validated inventory URL. Its `Display` is the redacted form.
#[derive(Clone, PartialEq, Eq)]
pub struct InventoryUrl {
    redacted: String,
    /// `Basic base64(user:password)`, from the percent-decoded userinfo.
    authorization: Option<String>,
    /// Every form of the password that must never be logged.
    secrets: Vec<String>,
    location: Location,
    /// The decoded user name of the userinfo, and whether a password
    /// came with it: INVENTORY_PASSWORD_FILE needs the one, not the other.
    user: Option<String>,
    has_password: bool,
}

/// The fix for a password that breaks the URL apart.
const ENCODE_HINT: &str =
    "percent-encode / ? # @ and : in a user name or password (%2F %3F %23 %40 %3A)";

impl InventoryUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err("must not contain spaces or control characters".into());
        }
        let (scheme, rest) = split_scheme(raw)
            .ok_or_else(|| "expected an http://, https:// or file:// URL".to_string())?;
        let (redacted, loose_password) = redact(raw);
        let mut secrets: Vec<String> = loose_password.into_iter().collect();
        let mut authorization = None;
        let mut user = None;
        let mut has_password = false;
        let location = match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => {
                let https = scheme.eq_ignore_ascii_case("https");
                let parts = split_http(rest).map_err(|why| {
                    let hint = if raw.contains('@') {
                        format!("; {ENCODE_HINT}")
                    } else {
                        String::new()
                    };
                    format!("{why} in {}{hint}", shown_on_error(raw, scheme))
                })?;
                if let Some(userinfo) = parts.userinfo {
                    let creds = Credentials::parse(userinfo)?;
                    secrets.extend(creds.secrets());
                    secrets.extend(creds.basic());
                    authorization = creds.header();
                    has_password = creds.password.is_some();
                    user = Some(creds.user);
                }
                let uri = parts
                    .uri(if https { "https" } else { "http" })
                    .map_err(|e| format!("not a valid URL ({e}): {redacted}"))?;
                Location::Http { uri, https }
            }
            "file" => Location::File(file_path(rest)?),
            other => {
                return Err(format!(
                    "unsupported scheme {:?}: use http, https or file",
                    other
                ))
            }
        };
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        Ok(InventoryUrl {
            redacted,
            authorization,
            secrets,
            location,
            user,
            has_password,
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The `Authorization` header value for the inventory's own origin.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    /// The user name of an http(s) URL's userinfo, percent-decoded; `None`
    /// for an empty one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref().filter(|u| !u.is_empty())
    }

    /// Whether the URL holds a password (after a `:` in the userinfo).
    pub fn has_password(&self) -> bool {
        self.has_password
    }

    /// The password as written, decoded, and inside the basic-auth
    /// credential: what the logger must scrub.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
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

    /// Removes the credentials from any text, such as an error message
    /// from a library that echoes the URL back (short ones only where they
    /// stand as userinfo, as the logger does).
    pub fn scrub(&self, text: &str) -> String {
        scrub_secrets(text, &self.secrets)
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

/// What an error may show of a URL whose authority did not parse: the
/// redacted form when it finds a password, the URL itself when it holds no
/// `@` at all, and only the scheme otherwise (the password may hold `?`).
fn shown_on_error(raw: &str, scheme: &str) -> String {
    let (redacted, password) = redact(raw);
    if password.is_some() || !raw.contains('@') {
        redacted
    } else {
        format!("{scheme}://...")
    }
}

/// An http(s) URL after the scheme, split along RFC 3986.
struct HttpParts<'a> {
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
    /// Path and query, without the fragment.
    path_query: &'a str,
}

impl HttpParts<'_> {
    /// The request URI: no userinfo, no fragment.
    fn uri(&self, scheme: &str) -> Result<Uri, String> {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let path = if self.path_query.starts_with('/') {
            self.path_query.to_string()
        } else {
            format!("/{}", self.path_query)
        };
        let uri: Uri = format!("{scheme}://{}{port}{path}", self.host)
            .parse()
            .map_err(|e: ureq::http::uri::InvalidUri| e.to_string())?;
        match uri.host() {
            Some(h) if !h.is_empty() => Ok(uri),
            _ => Err("no host".into()),
        }
    }
}

/// Splits what follows `scheme://`. The errors never echo any part of the
/// input: a misplaced password may be in any of them.
fn split_http(rest: &str) -> Result<HttpParts<'_>, String> {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end).unwrap_or("");
    let tail = rest.get(end..).unwrap_or("");
    let path_query = tail.split('#').next().unwrap_or("");
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (authority.get(..at), authority.get(at + 1..).unwrap_or("")),
        // `user:123/pw@host`: a password with a reserved character would
        // send the request to `user`, port 123, with the rest as its path.
        None if tail.contains('@') => {
            return Err(
                "an @ follows the end of the host (in the path, query or fragment), \
                 as when a user name or password holds / ? or #"
                    .into(),
            )
        }
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport)?;
    Ok(HttpParts {
        userinfo,
        host,
        port,
        path_query,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`. An empty port means the
/// scheme's default; any other port must be a number from 1 to 65535.
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(inner) => {
            let close = inner
                .find(']')
                .ok_or_else(|| "cannot parse the host: unclosed [".to_string())?;
            let after = &inner[close + 1..];
            let port =
                match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| {
                        "cannot parse the host and port: junk after ]".to_string()
                    })?),
                };
            (&s[..close + 2], port)
        }
        None => match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    if host.is_empty() || host == "[]" {
        return Err("no host".into());
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    "cannot parse the host and port: the port is not a number from 1 to 65535"
                        .to_string()
                })?,
        ),
    };
    Ok((host, port))
}

/// A user name and password from a URL, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
    /// The password as written, before decoding.
    raw_password: Option<String>,
    /// The user name as written, a secret when it comes alone (a token).
    raw_user: String,
}

impl Credentials {
    /// `user[:password]`. Errors name the part, never its text.
    pub fn parse(userinfo: &str) -> Result<Credentials, String> {
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        let decode = |what: &str, s: &str| {
            percent_decode_bytes(s)
                .ok_or_else(|| format!("bad percent-escape in the {what}"))
                .and_then(|b| {
                    String::from_utf8(b)
                        .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
                })
        };
        Ok(Credentials {
            user: decode("user name", user)?,
            password: password.map(|p| decode("password", p)).transpose()?,
            raw_password: password.map(str::to_string),
            raw_user: user.to_string(),
        })
    }

    /// `base64(user:password)`, or nothing for an empty userinfo.
    pub fn basic(&self) -> Option<String> {
        if self.user.is_empty() && self.password.is_none() {
            return None;
        }
        let pair = format!("{}:{}", self.user, self.password.as_deref().unwrap_or(""));
        Some(base64(pair.as_bytes()))
    }

    /// The `Authorization` (or `Proxy-Authorization`) header value.
    pub fn header(&self) -> Option<String> {
        self.basic().map(|b| format!("Basic {b}"))
    }

    /// The password in both forms, for the logger to scrub; the user name
    /// in both forms when it comes without a password (a token sent as
    /// basic auth).
    pub fn secrets(&self) -> Vec<String> {
        let forms = match (&self.password, &self.raw_password) {
            (Some(p), Some(raw)) => vec![p, raw],
            _ => vec![&self.user, &self.raw_user],
        };
        forms
            .into_iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }
}

/// Standard base64 with padding (RFC 4648), as basic auth uses it.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3).saturating_mul(4));
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 0x3f) as usize;
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A proxy setting that the agent can use: `http://` or `https://`, or no
/// scheme (meaning `http://`), with an optional user name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub https: bool,
    /// As it goes in a URL: IPv6 addresses keep their brackets.
    pub host: String,
    pub port: u16,
    pub credentials: Option<Credentials>,
}

impl ProxyUrl {
    /// Parses a proxy variable's value. Errors never echo the value; the
    /// caller shows its redacted form.
    pub fn parse(value: &str) -> Result<ProxyUrl, String> {
        let value = value.trim();
        if value.chars().any(|c| c.is_control() || c == ' ') {
            return Err("spaces or control characters".into());
        }
        let (https, rest) = match split_scheme(value) {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (false, rest),
                "https" => (true, rest),
                other => {
                    return Err(format!(
                        "unsupported proxy scheme {other:?}: only http:// and https:// proxies are supported"
                    ))
                }
            },
            None if value.contains("://") => return Err("not a valid proxy URL".into()),
            None => (false, value),
        };
        let parts = split_http(rest)?;
        let credentials = parts.userinfo.map(Credentials::parse).transpose()?;
        Ok(ProxyUrl {
            https,
            host: parts.host.to_string(),
            port: parts.port.unwrap_or(if https { 443 } else { 80 }),
            credentials,
        })
    }

    /// A proxy value as a message may show it: redacted, and when it does
    /// not parse and holds an `@` only its scheme, since where its password
    /// ends is then unknown. A value refused only for its scheme has an
    /// authority that parsed, and shows redacted.
    pub fn shown(value: &str) -> String {
        let value = value.trim();
        let (scheme, rest) = match split_scheme(value) {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, value),
        };
        let authority_ok = !value.chars().any(|c| c.is_control() || c == ' ')
            && (scheme.is_some() || !value.contains("://"))
            && split_http(rest)
                .and_then(|p| p.userinfo.map(Credentials::parse).transpose())
                .is_ok();
        if !value.contains('@') || authority_ok {
            return redact(value).0;
        }
        match scheme {
            Some(s) => format!("{s}://..."),
            None => "...".into(),
        }
    }

    /// What the logger must scrub: the password in both forms and the
    /// base64 credential of `Proxy-Authorization`.
    pub fn secrets(&self) -> Vec<String> {
        let Some(c) = &self.credentials else {
            return Vec::new();
        };
        let mut s = c.secrets();
        s.extend(c.basic());
        s
    }
}

/// Where a redirect goes: `location` resolved against `base` (RFC 3986
/// section 5), fragment dropped, userinfo dropped (a server's credentials
/// are never sent). Only http and https are accepted. Errors never echo
/// the location; the caller shows it redacted and escaped.
pub fn resolve_redirect(base: &Uri, location: &str) -> Result<Uri, String> {
    let location = location.trim();
    if !location.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the Location holds spaces, control or non-ASCII characters".into());
    }
    let reference = location.split('#').next().unwrap_or("");
    let base_scheme = base.scheme_str().unwrap_or("http").to_ascii_lowercase();
    let base_authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    let base_path = base.path();
    let base_query = base.query();

    let (ref_path, ref_query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    let (scheme, authority, path, query) = if let Some((s, rest)) = split_scheme_colon(reference) {
        let s = s.to_ascii_lowercase();
        if s != "http" && s != "https" {
            return Err(format!("the scheme {s:?} is not http or https"));
        }
        let rest = rest
            .strip_prefix("//")
            .ok_or_else(|| "the Location has no host".to_string())?;
        let (a, p, q) = split_network_path(rest);
        (s, a, remove_dot_segments(p), q)
    } else if let Some(rest) = reference.strip_prefix("//") {
        let (a, p, q) = split_network_path(rest);
        (base_scheme, a, remove_dot_segments(p), q)
    } else if ref_path.is_empty() {
        (
            base_scheme,
            base_authority,
            base_path.to_string(),
            ref_query.or(base_query),
        )
    } else if ref_path.starts_with('/') {
        (
            base_scheme,
            base_authority,
            remove_dot_segments(ref_path),
            ref_query,
        )
    } else {
        let dir = base_path
            .rfind('/')
            .map(|i| &base_path[..=i])
            .unwrap_or("/");
        (
            base_scheme,
            base_authority,
            remove_dot_segments(&format!("{dir}{ref_path}")),
            ref_query,
        )
    };
    let hostport = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let (host, port) = split_host_port(hostport).map_err(|e| format!("the Location: {e}"))?;
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let uri: Uri = format!("{scheme}://{host}{port}{path}{query}")
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| {
            format!("the Location is not a valid URL ({e})")
        })?;
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(uri),
        _ => Err("the Location has no host".into()),
    }
}

/// `scheme:rest` when the text starts with a scheme and a colon.
fn split_scheme_colon(s: &str) -> Option<(&str, &str)> {
    let colon = s.find(':')?;
    let scheme = &s[..colon];
    let mut chars = scheme.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| (scheme, &s[colon + 1..]))
}

/// `authority/path?query` (the part after `//`).
fn split_network_path(rest: &str) -> (&str, &str, Option<&str>) {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let tail = &rest[end..];
    match tail.split_once('?') {
        Some((p, q)) => (authority, p, Some(q)),
        None => (authority, tail, None),
    }
}

/// RFC 3986 section 5.2.4: resolves `.` and `..` segments.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    if path.starts_with('/') && !joined.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Whether two request URIs share scheme, host and port (the port being
/// the scheme's default when none is given).
pub fn same_origin(a: &Uri, b: &Uri) -> bool {
    fn origin(u: &Uri) -> Option<(String, String, u16)> {
        let scheme = u.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let host = u.host()?.to_ascii_lowercase();
        Some((scheme, host, u.port_u16().unwrap_or(default)))
    }
    match (origin(a), origin(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
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
    let bytes = percent_decode_bytes(path)
        .ok_or_else(|| format!("bad percent-escape in file path {path:?}"))?;
    String::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| format!("file path {path:?} is not UTF-8"))
}

/// Decodes `%xx` escapes; None on a bad one.
fn percent_decode_bytes(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
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
        assert_eq!(u.host(), Some("inv.example"));

        // A user name alone is a token sent as basic auth: hidden too.
        let u = InventoryUrl::parse("http://ghp_TokenAsUserName123@inv/x").unwrap();
        assert_eq!(u.to_string(), "http://***@inv/x");
        assert!(u.secrets().iter().any(|s| s == "ghp_TokenAsUserName123"));
        assert_eq!(u.scrub("for ghp_TokenAsUserName123 here"), "for *** here");
        // With a password, the user name stays.
        let u = InventoryUrl::parse("http://bob:pw@inv/x").unwrap();
        assert_eq!(u.to_string(), "http://bob:***@inv/x");
        assert!(!u.secrets().iter().any(|s| s == "bob"));
        // A short password is masked only where it stands as a credential.
        assert_eq!(
            u.scrub("pw and http://bob:pw@inv"),
            "pw and http://bob:***@inv"
        );
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

    #[test]
    fn reserved_characters_in_a_password_never_show_and_never_misroute() {
        for (raw, hidden) in [
            ("http://alice:Pa/ss-W0rd@127.0.0.1:18080/x", "ss-W0rd"),
            ("http://alice:Pa?ss-W0rd@127.0.0.1:18080/x", "ss-W0rd"),
            ("http://alice:Pa#ss-W0rd@127.0.0.1:18080/x", "ss-W0rd"),
            ("http://alice:Pa:ss-W0rd/x@127.0.0.1/x", "ss-W0rd"),
            // A password starting with digits looked like a port.
            ("http://alice:123#ss-W0rd@host/inv", "ss-W0rd"),
            ("http://alice:99?ss-W0rd@host/inv", "ss-W0rd"),
            ("http://alice:12/ss-W0rd@host/inv", "ss-W0rd"),
            (
                "http://localhost:18080/ss-W0rd@inventory.example/inv",
                "ss-W0rd",
            ),
            ("http://h/x?q=ss-W0rd@other", "ss-W0rd"),
            ("https://alice:99999/ss-W0rd@host/x", "ss-W0rd"),
            ("http://alice:0/ss-W0rd@host/x", "ss-W0rd"),
            ("http://alice:Pa@ss-W0rd@[::1/x", "ss-W0rd"),
        ] {
            let e = InventoryUrl::parse(raw).expect_err(raw);
            assert!(!e.contains(hidden) && !e.contains("Pa"), "{raw}: {e}");
        }
        // A '/' before the ':' is the same trick: refused, not sent to `us`.
        let e = InventoryUrl::parse("http://us/er:Secr3t@127.0.0.1/x").unwrap_err();
        assert!(e.contains("percent-encode") && !e.contains("Secr3t"), "{e}");
        // An '@' in an unencoded password: the last '@' ends the userinfo.
        let u = InventoryUrl::parse("http://alice:p@ss@127.0.0.1:8080/x").unwrap();
        assert_eq!(u.to_string(), "http://alice:***@127.0.0.1:8080/x");
        assert_eq!(
            u.authorization(),
            Some(format!("Basic {}", base64(b"alice:p@ss")).as_str())
        );
        assert_eq!(u.host(), Some("127.0.0.1"));
    }

    #[test]
    fn redact_covers_every_shape() {
        for (raw, want) in [
            ("http://u:pw@h/x", "http://u:***@h/x"),
            ("pu:Pr/oxyPW@host:3128", "pu:***@host:3128"),
            ("socks5h://u:p@h:1080", "socks5h://u:***@h:1080"),
            ("HTTP://u:a:b@h", "HTTP://u:***@h"),
            ("u:pw@h/?next=http://x", "u:***@h/?next=http://x"),
            ("http://h/x?mail=a:b@c", "http://h/x?mail=a:***@c"),
            ("http://bob@h/x", "http://***@h/x"),
            ("http://pu:se#Cret99@h:3128", "http://pu:***@h:3128"),
            ("host:3128", "host:3128"),
            ("", ""),
        ] {
            assert_eq!(redact(raw).0, want, "{raw}");
        }
        assert_eq!(redact("pu:Pr/oxyPW@host").1.as_deref(), Some("Pr/oxyPW"));
    }

    #[test]
    fn userinfo_is_percent_decoded_and_kept_out_of_the_uri() {
        let u = InventoryUrl::parse("http://alice:s3cr%40t@127.0.0.1:18080/x?y=1#frag").unwrap();
        let Location::Http { uri, https } = u.location() else {
            panic!("not http");
        };
        assert!(!https);
        assert_eq!(uri.to_string(), "http://127.0.0.1:18080/x?y=1");
        assert_eq!(
            u.authorization(),
            Some(format!("Basic {}", base64(b"alice:s3cr@t")).as_str())
        );
        for s in ["s3cr%40t", "s3cr@t", &base64(b"alice:s3cr@t")] {
            assert!(u.secrets().iter().any(|x| x == s), "{s} not a secret");
        }
        let u = InventoryUrl::parse("http://al%69ce@h/x").unwrap();
        assert_eq!(
            u.authorization(),
            Some(format!("Basic {}", base64(b"alice:")).as_str())
        );
        assert_eq!(
            InventoryUrl::parse("http://@h/x").unwrap().authorization(),
            None
        );
        assert_eq!(
            InventoryUrl::parse("http://h/x").unwrap().authorization(),
            None
        );
        for bad in ["http://u:p%zzw@h/x", "http://u:p%@h/x", "http://u:%ff@h/x"] {
            let e = InventoryUrl::parse(bad).expect_err(bad);
            assert!(e.contains("password") && !e.contains("%zz"), "{e}");
        }
    }

    #[test]
    fn ports() {
        for (raw, port) in [
            ("http://h:1/x", Some(1)),
            ("http://h:65535/x", Some(65535)),
            ("http://h:/x", None),
            ("http://[::1]:8080/x", Some(8080)),
        ] {
            let u = InventoryUrl::parse(raw).unwrap();
            let Location::Http { uri, .. } = u.location() else {
                panic!()
            };
            assert_eq!(uri.port_u16(), port, "{raw}");
        }
        for bad in [
            "http://h:0/x",
            "http://h:65536/x",
            "http://h:80a/x",
            "http://h:+80/x",
            "http://h:-1/x",
            "http://[::1]x/",
            "http://[::1/",
            "http://:80/",
            "http://u:p@/x",
        ] {
            assert!(InventoryUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn base64_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("alice:s3cr@t", "YWxpY2U6czNjckB0"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn proxy_values() {
        let p = ProxyUrl::parse("http://pu:s%2Fcret@proxy:3128").unwrap();
        assert_eq!((p.https, p.host.as_str(), p.port), (false, "proxy", 3128));
        let c = p.credentials.clone().unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_deref()),
            ("pu", Some("s/cret"))
        );
        for s in ["s%2Fcret", "s/cret", &base64(b"pu:s/cret")] {
            assert!(p.secrets().iter().any(|x| x == s), "{s}");
        }
        let p = ProxyUrl::parse("pu:pw@127.0.0.1:3128").unwrap();
        assert_eq!((p.https, p.port), (false, 3128));
        let p = ProxyUrl::parse("HTTPS://[::1]").unwrap();
        assert_eq!((p.https, p.host.as_str(), p.port), (true, "[::1]", 443));
        assert_eq!(ProxyUrl::parse("proxy").unwrap().port, 80);
        for scheme in [
            "socks5h", "socks5", "socks4", "socks4a", "socks", "SOCKS5H", "ftp",
        ] {
            let e = ProxyUrl::parse(&format!("{scheme}://u:Secr3t@h:1080")).unwrap_err();
            assert!(e.contains("unsupported proxy scheme"), "{e}");
            assert!(!e.contains("Secr3t"), "{e}");
        }
        for bad in [
            "pu:Pr/oxyPW@host:3128",
            "http://pu:12#oxyPW@host:3128",
            "pu:3?oxyPW@host:3128",
            "http://h:0",
            "http://",
            "1x://h",
            "http://u:%zz@h",
        ] {
            let e = ProxyUrl::parse(bad).expect_err(bad);
            assert!(!e.contains("oxyPW") && !e.contains("%zz"), "{e}");
        }
    }

    fn base() -> Uri {
        "http://inv.example:8080/a/b/sensors?q=1".parse().unwrap()
    }

    #[test]
    fn redirect_targets_resolve_like_rfc_3986() {
        for (location, want) in [
            ("/sensors/", "http://inv.example:8080/sensors/"),
            ("sensors/", "http://inv.example:8080/a/b/sensors/"),
            ("../c", "http://inv.example:8080/a/c"),
            ("./c?x=2", "http://inv.example:8080/a/b/c?x=2"),
            ("../../../../c", "http://inv.example:8080/c"),
            ("?x=2", "http://inv.example:8080/a/b/sensors?x=2"),
            ("#frag", "http://inv.example:8080/a/b/sensors?q=1"),
            ("", "http://inv.example:8080/a/b/sensors?q=1"),
            ("//other:81/x", "http://other:81/x"),
            ("https://other/x/./y/../z#f", "https://other/x/z"),
            ("HTTP://u:Secr3t@other:82", "http://other:82/"),
            ("http://[::1]:9/x", "http://[::1]:9/x"),
        ] {
            assert_eq!(
                resolve_redirect(&base(), location).map(|u| u.to_string()),
                Ok(want.to_string()),
                "{location}"
            );
        }
        for bad in [
            "file:///etc/passwd",
            "ftp://h/x",
            "javascript:alert(1)",
            "data:text/plain,x",
            "http:/x",
            "http://",
            "http://h:0/",
            "http://h:99999/",
            "http://a b/",
            "/a\u{202e}b",
            "http://u:Secr3t@h:x/",
        ] {
            let e = resolve_redirect(&base(), bad).expect_err(bad);
            assert!(!e.contains("Secr3t") && !e.contains('\u{202e}'), "{e}");
        }
    }

    #[test]
    fn origins() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert!(same_origin(&u("http://h/x"), &u("http://h:80/y")));
        assert!(same_origin(&u("https://H/x"), &u("https://h:443/")));
        assert!(!same_origin(&u("http://h:8080/"), &u("http://h:8081/")));
        assert!(!same_origin(&u("http://h/"), &u("https://h/")));
        assert!(!same_origin(&u("http://h:443/"), &u("https://h/")));
        assert!(!same_origin(
            &u("http://127.0.0.1/"),
            &u("http://localhost/")
        ));
    }
}
