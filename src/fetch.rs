//! Inventory sources: where the raw document comes from. One fetch is one
//! attempt; retries belong to the cycle.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use ureq::tls::{RootCerts, TlsConfig};
use ureq::{Agent, Proxy};

use crate::config::Config;
use crate::retry;
use crate::url::{no_proxy_matches, InventoryUrl, Location};

/// Why one attempt failed, and whether another attempt may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Connection trouble, timeouts, 429 and 5xx: worth retrying.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Anything a retry would only repeat: other 4xx, TLS trust, limits.
    Permanent(String),
}

impl FetchError {
    pub fn reason(&self) -> &str {
        match self {
            FetchError::Transient { reason, .. } | FetchError::Permanent(reason) => reason,
        }
    }
}

/// Something that can produce an inventory document.
pub trait Source: Send {
    /// One attempt, bounded by `timeout` from first byte out to last byte in.
    fn fetch(&mut self, timeout: Duration) -> Result<Vec<u8>, FetchError>;
}

/// Builds the source for the configured URL.
pub fn source_for(config: &Config) -> Box<dyn Source> {
    match config.inventory_url.location() {
        Location::File(path) => Box::new(FileSource {
            path: path.clone(),
            limit: config.max_response_bytes,
        }),
        Location::Http { https, .. } => Box::new(HttpSource::new(
            config.inventory_url.clone(),
            *https,
            config.max_response_bytes,
            &|name| std::env::var(name).ok(),
        )),
    }
}

pub struct FileSource {
    path: PathBuf,
    limit: u64,
}

impl Source for FileSource {
    fn fetch(&mut self, _timeout: Duration) -> Result<Vec<u8>, FetchError> {
        let transient = |e: std::io::Error| FetchError::Transient {
            reason: format!("cannot read {}: {e}", self.path.display()),
            retry_after: None,
        };
        let file = File::open(&self.path).map_err(transient)?;
        let mut body = Vec::new();
        file.take(self.limit.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(transient)?;
        if body.len() as u64 > self.limit {
            return Err(FetchError::Permanent(format!(
                "{} is larger than MAX_RESPONSE_BYTES ({} bytes)",
                self.path.display(),
                self.limit
            )));
        }
        Ok(body)
    }
}

pub struct HttpSource {
    url: InventoryUrl,
    agent: Agent,
    limit: u64,
}

/// The proxy for `url` from the usual variables: `https_proxy` for https,
/// `http_proxy` for http (either case), then `all_proxy`; none when
/// `no_proxy` matches the host.
pub fn proxy_for(
    url: &InventoryUrl,
    https: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
    };
    let host = url.host()?;
    if let Some(no_proxy) = get(&["no_proxy", "NO_PROXY"]) {
        if no_proxy_matches(&no_proxy, host) {
            return None;
        }
    }
    let scheme_vars: &[&str] = if https {
        &["https_proxy", "HTTPS_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY"]
    };
    get(scheme_vars).or_else(|| get(&["all_proxy", "ALL_PROXY"]))
}

impl HttpSource {
    pub fn new(
        url: InventoryUrl,
        https: bool,
        limit: u64,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> HttpSource {
        let proxy = proxy_for(&url, https, env).and_then(|p| match Proxy::new(&p) {
            Ok(proxy) => {
                log::debug!("Using proxy {}", crate::url::redact(&p).0);
                Some(proxy)
            }
            Err(e) => {
                log::warn!(
                    "Ignoring invalid proxy setting {}: {e}",
                    crate::url::redact(&p).0
                );
                None
            }
        });
        let config = Agent::config_builder()
            // Statuses are ours to judge: 429 and 5xx retry, other 4xx fail.
            .http_status_as_error(false)
            // An https inventory never falls back to plain http on a redirect.
            .https_only(https)
            .proxy(proxy)
            .max_redirects(10)
            .user_agent(format!("sd-updater/{}", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        HttpSource {
            url,
            agent: Agent::new_with_config(config),
            limit,
        }
    }

    fn classify(&self, e: ureq::Error) -> FetchError {
        let reason = self.url.scrub(&describe(&e));
        match e {
            ureq::Error::BodyExceedsLimit(n) => FetchError::Permanent(format!(
                "response body is larger than MAX_RESPONSE_BYTES ({n} bytes)"
            )),
            ureq::Error::TooManyRedirects
            | ureq::Error::RedirectFailed
            | ureq::Error::BadUri(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::LargeResponseHeader(..)
            | ureq::Error::Tls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::InvalidProxyUrl => FetchError::Permanent(reason),
            ureq::Error::Io(ref io) if io.to_string().contains("certificate") => {
                FetchError::Permanent(reason)
            }
            _ => FetchError::Transient {
                reason,
                retry_after: None,
            },
        }
    }
}

/// ureq's message, with a plainer word for the common cases.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t}) within HTTP_TIMEOUT"),
        ureq::Error::HostNotFound => "host not found (DNS)".to_string(),
        ureq::Error::TooManyRedirects => "too many redirects (a redirect loop?)".to_string(),
        other => other.to_string(),
    }
}

impl Source for HttpSource {
    fn fetch(&mut self, timeout: Duration) -> Result<Vec<u8>, FetchError> {
        let mut response = self
            .agent
            .get(self.url.raw())
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|e| self.classify(e))?;
        let status = response.status();
        if !status.is_success() {
            let code = status.as_u16();
            let reason = format!("HTTP {code} {}", status.canonical_reason().unwrap_or(""))
                .trim_end()
                .to_string();
            return Err(if code == 429 || status.is_server_error() {
                let retry_after = (code == 429 || code == 503)
                    .then(|| response.headers().get("retry-after"))
                    .flatten()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
                FetchError::Transient {
                    reason,
                    retry_after,
                }
            } else {
                FetchError::Permanent(reason)
            });
        }
        response
            .body_mut()
            .with_config()
            .limit(self.limit)
            .read_to_vec()
            .map_err(|e| self.classify(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn proxy(url: &str, vars: &[(&str, &str)]) -> Option<String> {
        let map: HashMap<&str, &str> = vars.iter().cloned().collect();
        let url = InventoryUrl::parse(url).unwrap();
        let https = matches!(url.location(), Location::Http { https: true, .. });
        proxy_for(&url, https, &|n| map.get(n).map(|v| v.to_string()))
    }

    #[test]
    fn proxy_selection() {
        assert_eq!(proxy("http://inv/x", &[]), None);
        assert_eq!(
            proxy("http://inv/x", &[("HTTP_PROXY", "http://p:3128")]).as_deref(),
            Some("http://p:3128")
        );
        assert_eq!(
            proxy("http://inv/x", &[("https_proxy", "http://s:3128")]),
            None
        );
        assert_eq!(
            proxy(
                "https://inv/x",
                &[("https_proxy", "http://s:3128"), ("http_proxy", "http://p")]
            )
            .as_deref(),
            Some("http://s:3128")
        );
        assert_eq!(
            proxy("https://inv/x", &[("ALL_PROXY", "http://a:1")]).as_deref(),
            Some("http://a:1")
        );
        assert_eq!(
            proxy(
                "http://inv.corp/x",
                &[("http_proxy", "http://p"), ("NO_PROXY", ".corp")]
            ),
            None
        );
        assert_eq!(proxy("file:///x.json", &[("http_proxy", "http://p")]), None);
    }

    #[test]
    fn file_source_enforces_the_limit() {
        let dir = std::env::temp_dir().join(format!("sdu-fetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inv.json");
        std::fs::write(&path, b"[\"a\"]").unwrap();
        let mut ok = FileSource {
            path: path.clone(),
            limit: 5,
        };
        assert_eq!(ok.fetch(Duration::from_secs(1)).unwrap(), b"[\"a\"]");
        let mut small = FileSource {
            path: path.clone(),
            limit: 4,
        };
        assert!(matches!(
            small.fetch(Duration::from_secs(1)),
            Err(FetchError::Permanent(_))
        ));
        let mut missing = FileSource {
            path: dir.join("nope.json"),
            limit: 5,
        };
        let e = missing.fetch(Duration::from_secs(1)).unwrap_err();
        assert!(e.reason().contains("nope.json"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
