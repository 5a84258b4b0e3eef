//! Inventory sources: where the raw document comes from. One fetch is one
//! attempt; retries belong to the cycle.

pub mod credentials;
pub mod retry;
pub mod url;

use std::fs::File;
use std::io::{Read, Seek};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use ureq::http::{HeaderValue, StatusCode, Uri};
use ureq::tls::{RootCerts, TlsConfig};

use crate::model::digest::KeyedHash;
use crate::source::credentials::{Files, Loaded};
use crate::sys::paths::Trust;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::{Agent, Proxy, ProxyProtocol};

use crate::source::url::{
    no_proxy_matches, resolve_redirect, same_origin, InventoryUrl, Location, ProxyUrl,
};
use crate::sys::logging::{self, redact};

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

/// The cache validators of a response: `ETag` and `Last-Modified`, sent
/// back as `If-None-Match` and `If-Modified-Since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The URI that gave them, after any redirect: they describe that
    /// resource only.
    pub uri: String,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What one successful attempt brought.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A full body, with the validators its origin gave (none for files).
    Body {
        body: Vec<u8>,
        validators: Validators,
    },
    /// `304 Not Modified` to the validators sent.
    NotModified,
}

/// A keyed hash of a body ([`KeyedHash`], keys random for each process):
/// an unchanged body is told apart without keeping a copy. One 64-bit
/// pass: without the key, no server can aim a body at another's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHash(u64);

impl BodyHash {
    pub fn of(body: &[u8]) -> BodyHash {
        BodyHash(KeyedHash::of(body))
    }
}

/// Something that can produce an inventory document.
pub trait Source: Send {
    /// One attempt, bounded by `timeout` from first byte out to last byte in.
    fn fetch(&mut self, timeout: Duration) -> Result<Vec<u8>, FetchError>;

    /// One attempt that sends `validators` (if any) to the inventory's
    /// origin, so that the answer may be `304 Not Modified`.
    fn fetch_if(
        &mut self,
        timeout: Duration,
        _validators: Option<&Validators>,
    ) -> Result<Response, FetchError> {
        self.fetch(timeout).map(|body| Response::Body {
            body,
            validators: Validators::default(),
        })
    }

    /// Reads the secret files again (SIGHUP); what cannot be read keeps
    /// its old value, with a warning.
    fn reload(&mut self) {}
}

/// Builds the source for an inventory URL; bodies over `limit` bytes fail.
pub fn source_for(url: &InventoryUrl, limit: u64) -> Box<dyn Source> {
    source_with(url, limit, Secrets::default())
}

/// The secret files and what they held when last read.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub files: Files,
    pub loaded: Loaded,
}

/// As `source_for`, with the secrets an http(s) inventory is fetched with.
pub fn source_with(url: &InventoryUrl, limit: u64, secrets: Secrets) -> Box<dyn Source> {
    match url.location() {
        Location::File(path) => Box::new(FileSource {
            path: path.clone(),
            limit,
        }),
        Location::Http { https, .. } => Box::new(
            HttpSource::new(url.clone(), *https, limit, &|name| std::env::var(name).ok())
                .with_secrets(secrets),
        ),
    }
}

/// Bodies at least this long are read with a helper thread: a regular
/// file in two halves at once, any other body with the pages of its last
/// three fifths mapped by the helper while this thread fills the first two.
const MAP_APART: usize = 4 << 20;

/// Reads a body of about `len` bytes (announced, or a file's length) into
/// a buffer made once, of zeroed pages mapped a part at a time rather than
/// one fault each (no copy of zeros first, as `read_to_end` makes for a
/// reader that is not a file), then whatever follows. Without the memory,
/// into a buffer that grows as it reads.
fn read_sized(mut reader: impl Read, len: u64) -> std::io::Result<Vec<u8>> {
    let len = usize::try_from(len).unwrap_or(0);
    let mut body = crate::sys::alloc::zeroed(len).unwrap_or_default();
    let split = if body.len() >= MAP_APART {
        body.len() / 5 * 2
    } else {
        body.len()
    };
    let (head, tail) = body.split_at_mut(split);
    let mut mapped = tail.is_empty();
    let mut filled = std::thread::scope(|s| {
        if !mapped {
            mapped = spawn_started(s, "map", || map_in_steps(tail)).is_some();
        }
        map_in_steps(head);
        fill(&mut reader, head)
    })?;
    if filled == split {
        if !mapped {
            map_in_steps(tail);
        }
        filled = filled.saturating_add(fill(&mut reader, tail)?);
    }
    body.truncate(filled);
    reader.read_to_end(&mut body)?;
    Ok(body)
}

/// Reads a regular file of about `len` bytes, no more than `limit` and one:
/// its second half on a helper (read at its offset) while this thread
/// reads the first, each mapping and filling its own pages; then whatever
/// follows. Without a helper, this thread reads both.
fn read_in_halves(file: &File, len: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    let most = limit.saturating_add(1);
    let len = usize::try_from(len.min(most)).unwrap_or(0);
    let Some(mut body) = crate::sys::alloc::zeroed(len) else {
        // Without the memory at once: one read from the start, into a
        // buffer that grows.
        let mut whole = file;
        whole.seek(std::io::SeekFrom::Start(0))?;
        return read_sized(whole.take(most), len as u64);
    };
    let split = body.len() / 2;
    let (head, tail) = body.split_at_mut(split);
    let mut tail_read = None;
    let head_read = std::thread::scope(|s| {
        let helper_tail = &mut *tail;
        let helper = spawn_started(s, "read", move || {
            map_in_steps(helper_tail);
            fill_at(file, helper_tail, split as u64)
        });
        map_in_steps(head);
        let got = fill_at(file, head, 0);
        tail_read = helper.and_then(|h| h.join().ok());
        got
    })?;
    // A head that came up short is where the file ended: the tail is not
    // used.
    let mut filled = head_read;
    if filled == split {
        let tail_read = match tail_read {
            Some(got) => got?,
            None => {
                map_in_steps(tail);
                fill_at(file, tail, split as u64)?
            }
        };
        filled = filled.saturating_add(tail_read);
    }
    body.truncate(filled);
    if filled == len {
        // Longer than its length said: read on to the limit and one.
        let mut rest = file;
        rest.seek(std::io::SeekFrom::Start(filled as u64))?;
        rest.take(most.saturating_sub(filled as u64))
            .read_to_end(&mut body)?;
    }
    Ok(body)
}

/// Reads `file` from offset `at` into `buf` until it is full or the file
/// ends: how many bytes.
fn fill_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    fill_with(buf, |room, filled| {
        file.read_at(room, at.saturating_add(filled as u64))
    })
}

/// Runs `work` on a helper thread called `name`, returning once the
/// thread has started (or after a while): a thread starting maps memory
/// of its own, which would wait for all the pages this one then maps.
fn spawn_started<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    work: impl FnOnce() -> T + Send + 'scope,
) -> Option<std::thread::ScopedJoinHandle<'scope, T>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let started = std::sync::Arc::new(AtomicBool::new(false));
    let (flag, me) = (std::sync::Arc::clone(&started), std::thread::current());
    let helper = std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, move || {
            flag.store(true, Ordering::Release);
            me.unpark();
            work()
        })
        .ok()?;
    let deadline = Instant::now().checked_add(Duration::from_millis(20));
    while !started.load(Ordering::Acquire) {
        let left = deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            break;
        }
        std::thread::park_timeout(left);
    }
    Some(helper)
}

/// Maps the pages of `buf` a MiB a call: an mmap elsewhere in the process
/// need not wait for all of them (mapping holds the address space lock).
fn map_in_steps(buf: &mut [u8]) {
    for part in buf.chunks_mut(1 << 20) {
        crate::sys::alloc::populate(part);
    }
}

/// Reads into `buf` until it is full or the reader ends: how many bytes.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    fill_with(buf, |room, _| reader.read(room))
}

/// Fills `buf` with `read` (given the room left and how much is filled)
/// until it is full or a read gives nothing: how many bytes.
fn fill_with(
    buf: &mut [u8],
    mut read: impl FnMut(&mut [u8], usize) -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    let mut filled = 0;
    while let Some(room) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match read(room, filled) {
            Ok(0) => break,
            Ok(n) => filled = filled.saturating_add(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
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
        // Sized once from the file's length (a hint: the file may change),
        // not grown by doubling from a few bytes.
        let meta = file.metadata().ok();
        let hint = meta.as_ref().map_or(0, |m| m.len()).min(self.limit);
        let room = hint.saturating_add(1);
        let body = if meta.is_some_and(|m| m.is_file()) && room >= MAP_APART as u64 {
            read_in_halves(&file, room, self.limit)
        } else {
            read_sized(file.take(self.limit.saturating_add(1)), room)
        }
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
    https: bool,
    agent: Agent,
    limit: u64,
    secrets: Secrets,
    /// `Authorization` for the inventory's origin, from `secrets` or the URL.
    authorization: Option<String>,
    /// The proxy variables as they were when the source was built.
    env: Vec<(&'static str, String)>,
    /// Proxies built from those values, each built (and warned about) once.
    proxies: Vec<(&'static str, String, Option<Proxy>)>,
}

/// The variables that choose a proxy.
const PROXY_VARS: [&str; 8] = [
    "no_proxy",
    "NO_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Redirects followed within one attempt, as curl and browsers allow.
pub const MAX_REDIRECTS: u32 = 10;

/// The proxy for a request to `host` from the usual variables:
/// `https_proxy` for https, `http_proxy` for http (either case), then
/// `all_proxy`; none when `no_proxy` matches the host. Returns the
/// variable's name and value.
pub fn proxy_for(
    host: &str,
    https: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    let get = |names: &[&'static str]| {
        names
            .iter()
            .find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)))
    };
    if let Some((_, no_proxy)) = get(&["no_proxy", "NO_PROXY"]) {
        if no_proxy_matches(&no_proxy, host) {
            return None;
        }
    }
    let scheme_vars: &[&'static str] = if https {
        &["https_proxy", "HTTPS_PROXY"]
    } else {
        &["http_proxy", "HTTP_PROXY"]
    };
    get(scheme_vars).or_else(|| get(&["all_proxy", "ALL_PROXY"]))
}

/// The ureq proxy for a proxy variable's value. Its secrets are registered
/// with the logger before anything about it is logged. Only `http://` and
/// `https://` proxies (or no scheme, meaning `http://`) are accepted:
/// anything else would make ureq panic or fail every request.
pub fn proxy_from(var: &str, value: &str) -> Result<Proxy, String> {
    if let (_, Some(p)) = redact(value.trim()) {
        logging::register_secret(&p);
    }
    let shown = logging::one_line(&ProxyUrl::shown(value));
    let parsed = ProxyUrl::parse(value)
        .map_err(|e| format!("Ignoring invalid proxy setting {var}={shown}: {e}"))?;
    for s in parsed.secrets() {
        logging::register_secret(&s);
    }
    let proxy = ureq_proxy(&parsed)
        .map_err(|e| format!("Ignoring invalid proxy setting {var}={shown}: {e}"))?;
    log::debug!("Using proxy {var}={shown}");
    Ok(proxy)
}

/// The ureq proxy for a parsed proxy setting.
pub fn ureq_proxy(parsed: &ProxyUrl) -> Result<Proxy, ureq::Error> {
    let protocol = if parsed.https {
        ProxyProtocol::Https
    } else {
        ProxyProtocol::Http
    };
    let mut builder = Proxy::builder(protocol)
        .host(&parsed.host)
        .port(parsed.port);
    if let Some(c) = &parsed.credentials {
        builder = builder.username(&c.user);
        if let Some(p) = &c.password {
            builder = builder.password(p);
        }
    }
    builder.build()
}

impl HttpSource {
    pub fn new(
        url: InventoryUrl,
        https: bool,
        limit: u64,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> HttpSource {
        for s in url.secrets() {
            logging::register_secret(s);
        }
        let env = PROXY_VARS
            .iter()
            .filter_map(|n| env(n).map(|v| (*n, v)))
            .collect();
        let mut source = HttpSource {
            authorization: url.authorization().map(str::to_string),
            agent: build_agent(https, &Loaded::default()),
            url,
            https,
            limit,
            secrets: Secrets::default(),
            env,
            proxies: Vec::new(),
        };
        // A bad proxy value is reported at start-up, not at the first fetch.
        if let Location::Http { uri, .. } = source.url.location().clone() {
            source.proxy_to(&uri);
        }
        source
    }

    /// Uses `secrets`: the token or password file for `Authorization`, the
    /// CA bundle and client certificate for TLS.
    pub fn with_secrets(mut self, secrets: Secrets) -> HttpSource {
        self.secrets = secrets;
        self.agent = build_agent(self.https, &self.secrets.loaded);
        self.authorization = self.secrets.loaded.authorization(&self.url);
        self
    }

    /// The proxy for a request to `uri`, decided for its own scheme and
    /// host, so that a redirect to another host follows NO_PROXY too.
    fn proxy_to(&mut self, uri: &Uri) -> Option<Proxy> {
        let https = uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"));
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let env = &self.env;
        let (var, value) = proxy_for(host, https, &|n| {
            env.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
        })?;
        if let Some((_, _, built)) = self
            .proxies
            .iter()
            .find(|(k, v, _)| *k == var && *v == value)
        {
            return built.clone();
        }
        let built = match proxy_from(var, &value) {
            Ok(p) => Some(p),
            Err(e) => {
                log::warn!("{e}; connecting directly");
                None
            }
        };
        self.proxies.push((var, value, built.clone()));
        built
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
            ureq::Error::Io(ref io) if is_rustls_error(io) => FetchError::Permanent(reason),
            _ => FetchError::Transient {
                reason,
                retry_after: None,
            },
        }
    }

    /// The next URI of a redirect answered by `from`, or why it is refused.
    fn redirect_target(
        &self,
        from: &Uri,
        status: StatusCode,
        location: Option<&HeaderValue>,
    ) -> Result<Uri, FetchError> {
        let code = status_text(status);
        let Some(location) = location else {
            return Err(FetchError::Permanent(format!(
                "{code} without a Location header"
            )));
        };
        let text = String::from_utf8_lossy(location.as_bytes());
        let shown = shown_location(&text);
        let refuse = |why: String| {
            FetchError::Permanent(format!("{code}: redirect to {shown} refused: {why}"))
        };
        let next = resolve_redirect(from, &text).map_err(refuse)?;
        let https = matches!(self.url.location(), Location::Http { https: true, .. });
        if https && next.scheme_str() != Some("https") {
            return Err(refuse(
                "an https inventory never follows a redirect to plain http".into(),
            ));
        }
        Ok(next)
    }
}

/// The agent for an inventory: redirects, statuses and proxies are left to
/// `HttpSource`; TLS trusts the CA bundle if one is given, else the system.
fn build_agent(https: bool, tls: &Loaded) -> Agent {
    let roots = match &tls.ca {
        Some(certs) => RootCerts::new_with_certs(certs),
        None => RootCerts::PlatformVerifier,
    };
    let config = Agent::config_builder()
        // Statuses are ours to judge: 429 and 5xx retry, other 4xx fail.
        .http_status_as_error(false)
        // An https inventory never falls back to plain http on a redirect.
        .https_only(https)
        // Chosen for each request, by its own host (NO_PROXY included).
        .proxy(None)
        // Redirects are followed here, so that credentials stay with
        // their origin (scheme, host and port).
        .max_redirects(0)
        // No pooled connections: a connection's buffers are sized for the
        // request that opened it (see `fetch_if`), so none is reused by a
        // larger one (a longer redirect URL, validators).
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(format!("sd-updater/{}", env!("CARGO_PKG_VERSION")))
        .accept("application/json")
        .tls_config(
            TlsConfig::builder()
                .root_certs(roots)
                .client_cert(tls.client.clone())
                .build(),
        )
        .build();
    Agent::with_parts(config, DefaultConnector::default(), LiteralFirst::default())
}

/// Name resolution: an IP address in the URL is used as it is; a name
/// goes to ureq's resolver, which starts a thread per lookup while a
/// timeout is set.
#[derive(Debug, Default)]
struct LiteralFirst(DefaultResolver);

impl Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        match literal_address(uri) {
            Some(addr) => {
                let mut found = self.empty();
                found.push(addr);
                Ok(found)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

/// The socket address of a URL whose host is an IP address, as the
/// standard library reads one (no `127.1` forms: those go to the resolver).
fn literal_address(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = bare.parse().ok()?;
    let port = uri.port_u16().or_else(|| match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Some(80),
        Some(s) if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

/// Whether an I/O error carries a rustls error: the TLS stream reports a
/// handshake failure (an untrusted, expired or misnamed certificate, an
/// alert) as an I/O error around it. The type is named through ureq's
/// `Error::Rustls` variant, so no other crate is needed.
fn is_rustls_error(io: &std::io::Error) -> bool {
    fn inner_is<T: std::error::Error + 'static>(
        _variant: fn(T) -> ureq::Error,
        e: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> bool {
        e.downcast_ref::<T>().is_some()
    }
    io.get_ref()
        .is_some_and(|e| inner_is(ureq::Error::Rustls, e))
}

/// A Location as messages show it: password redacted, one line, at most
/// 200 characters.
fn shown_location(text: &str) -> String {
    let one = logging::one_line(&redact(text).0);
    match one.char_indices().nth(200) {
        Some((cut, _)) => format!("\"{}\"...", one.get(..cut).unwrap_or("")),
        None => format!("\"{one}\""),
    }
}

/// `HTTP 206 Partial Content`.
fn status_text(status: StatusCode) -> String {
    format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string()
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
        match self.fetch_if(timeout, None)? {
            Response::Body { body, .. } => Ok(body),
            Response::NotModified => Err(not_modified_unasked()),
        }
    }

    fn fetch_if(
        &mut self,
        timeout: Duration,
        validators: Option<&Validators>,
    ) -> Result<Response, FetchError> {
        let first = match self.url.location() {
            Location::Http { uri, .. } => uri.clone(),
            Location::File(_) => return Err(FetchError::Permanent("not an http(s) URL".into())),
        };
        let validators = validators.filter(|v| !v.is_empty());
        // One deadline for the whole attempt, redirects and body included.
        let start = Instant::now();
        let mut uri = first.clone();
        let mut redirects = 0u32;
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(self.classify(ureq::Error::Timeout(ureq::Timeout::Global)));
            }
            let proxy = self.proxy_to(&uri);
            let mut request = self.agent.get(uri.clone());
            // Credentials and validators go only to the inventory's origin.
            let home = same_origin(&uri, &first);
            if home {
                if let Some(auth) = &self.authorization {
                    request = request.header("Authorization", auth);
                }
            }
            let conditional = validators.filter(|v| home && v.uri == uri.to_string());
            if let Some(v) = conditional {
                if let Some(etag) = &v.etag {
                    request = request.header("If-None-Match", etag);
                }
                if let Some(date) = &v.last_modified {
                    request = request.header("If-Modified-Since", date);
                }
            }
            // ureq's default buffers are 128 KiB each, zero-filled: much
            // of a small run's memory. The request head must fit the
            // output buffer.
            let head = [
                uri.to_string().len(),
                self.authorization
                    .as_ref()
                    .filter(|_| home)
                    .map_or(0, String::len),
                conditional.map_or(0, |v| {
                    v.etag.as_ref().map_or(0, String::len)
                        + v.last_modified.as_ref().map_or(0, String::len)
                }),
            ];
            // A proxy adds its own credentials: ureq's default size stays.
            let output = match proxy {
                None => head.iter().fold(HEAD_SLACK, |a, &n| a.saturating_add(n)),
                Some(_) => DEFAULT_BUFFER,
            };
            let mut response = request
                .config()
                .proxy(proxy)
                .timeout_global(Some(left))
                .max_response_header_size(MAX_HEADER)
                .input_buffer_size(INPUT_BUFFER)
                .output_buffer_size(output)
                .build()
                .call()
                .map_err(|e| self.classify(e))?;
            let status = response.status();
            let code = status.as_u16();
            if code == 200 {
                let header = |name| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| !v.is_empty() && v.len() <= MAX_VALIDATOR)
                        .map(str::to_string)
                };
                // Validators of another origin are never sent back to ours.
                let validators = if home {
                    Validators {
                        etag: header(ureq::http::header::ETAG),
                        last_modified: header(ureq::http::header::LAST_MODIFIED),
                        uri: uri.to_string(),
                    }
                } else {
                    Validators::default()
                };
                // Sized from Content-Length, but not for a length past the
                // limit (refused anyway).
                let expected = response
                    .body()
                    .content_length()
                    .filter(|&n| n <= self.limit)
                    .unwrap_or(0);
                let reader = response.body_mut().with_config().limit(self.limit).reader();
                let body = read_sized(reader, expected)
                    .map_err(|e| self.classify(ureq::Error::from(e)))?;
                return Ok(Response::Body { body, validators });
            }
            if code == 304 {
                return match conditional {
                    Some(_) => Ok(Response::NotModified),
                    None => Err(not_modified_unasked()),
                };
            }
            if matches!(code, 301 | 302 | 303 | 307 | 308) {
                if redirects >= MAX_REDIRECTS {
                    return Err(self.classify(ureq::Error::TooManyRedirects));
                }
                uri = self.redirect_target(
                    &uri,
                    status,
                    response.headers().get(ureq::http::header::LOCATION),
                )?;
                redirects = redirects.saturating_add(1);
                continue;
            }
            let reason = status_text(status);
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
                // Other 4xx, 1xx, any 2xx but 200 (a 206 is a partial body),
                // and 3xx that are not redirects.
                FetchError::Permanent(reason)
            });
        }
    }

    fn reload(&mut self) {
        let tls = self
            .secrets
            .files
            .reload(Trust::current(), &mut self.secrets.loaded);
        if tls {
            log::info!("TLS files changed: new connections use them");
            self.agent = build_agent(self.https, &self.secrets.loaded);
        }
        self.authorization = self.secrets.loaded.authorization(&self.url);
    }
}

/// Longest `ETag` or `Last-Modified` value kept.
const MAX_VALIDATOR: usize = 1024;

/// The largest response header accepted (ureq's default).
const MAX_HEADER: usize = 64 * 1024;

/// Read buffer for responses: the body passes through it in pieces. It
/// must be larger than [`MAX_HEADER`], or a header too large would be
/// reported as a stalled connection instead.
const INPUT_BUFFER: usize = MAX_HEADER + 1024;

/// Room for a request head beyond its URL, credentials and validators:
/// the request line, Host, User-Agent, Accept and the rest.
const HEAD_SLACK: usize = 4096;

/// ureq's own buffer size.
const DEFAULT_BUFFER: usize = 128 * 1024;

/// A 304 is an answer to validators; without them it carries no body.
fn not_modified_unasked() -> FetchError {
    FetchError::Permanent(
        "HTTP 304 Not Modified to a request that sent no If-None-Match or If-Modified-Since".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` a few bytes at a time, interrupted now and then,
    /// failing at byte `fail_at` if given.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        calls: usize,
        fail_at: Option<usize>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 5 == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            if self.fail_at.is_some_and(|f| self.at >= f) {
                return Err(std::io::Error::other("reset"));
            }
            let n = (self.calls % 7 + 1)
                .min(buf.len())
                .min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Long bodies, whose tail a helper maps: cut before, at and after
    /// the split, and longer than announced.
    #[test]
    fn long_sized_reads_give_the_body_whatever_length_was_announced() {
        for announced in [MAP_APART, 2 * MAP_APART + 3] {
            let split = announced / 5 * 2;
            for len in [0, split - 1, split, split + 1, announced, announced + 5] {
                let data: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
                let reader = std::io::Cursor::new(data.clone()).take(u64::MAX);
                let got = read_sized(reader, announced as u64).unwrap();
                assert!(got == data, "{len} of {announced}");
            }
        }
    }

    /// Long files read in halves: the length as found, a file that grew
    /// or shrank since, and the limit.
    #[test]
    fn files_read_in_halves_give_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("sdu-halves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inv.json");
        let len = MAP_APART + 12_345;
        let data: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let n = len as u64;
        for hint in [n + 1, n, n - 1, n / 2, MAP_APART as u64, n + 100, 2 * n] {
            let got = read_in_halves(&file, hint, u64::MAX).unwrap();
            assert!(got == data, "{hint}: {} of {len}", got.len());
        }
        // No more than the limit and one, whatever the length said.
        for limit in [n - 1, n / 2 + 7] {
            for hint in [n + 1, limit + 1, limit] {
                let got = read_in_halves(&file, hint, limit).unwrap();
                assert_eq!(got.len() as u64, limit + 1, "{limit} {hint}");
                assert!(got[..] == data[..got.len()]);
            }
        }
        // A length no buffer can be made for at once: read all the same.
        assert!(read_in_halves(&file, 1 << 60, u64::MAX).unwrap() == data);
        let mut source = FileSource {
            path: path.clone(),
            limit: n,
        };
        assert!(source.fetch(Duration::from_secs(1)).unwrap() == data);
        source.limit = n - 1;
        assert!(matches!(
            source.fetch(Duration::from_secs(1)),
            Err(FetchError::Permanent(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The helper is started, not finished, when the spawn returns.
    #[test]
    fn helpers_are_waited_for_only_until_they_start() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let got = std::thread::scope(|s| {
            // Were the spawn to wait for the work, the work would time out.
            let work = move || wait.recv_timeout(Duration::from_secs(5)).map(|()| 7);
            let helper = spawn_started(s, "t", work).unwrap();
            go.send(()).unwrap();
            helper.join().unwrap()
        });
        assert_eq!(got, Ok(7));
    }

    #[test]
    fn sized_reads_give_the_body_whatever_length_was_announced() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let trickle = |fail_at| Trickle {
            data: data.clone(),
            at: 0,
            calls: 0,
            fail_at,
        };
        for announced in [0, 1, 4999, 5000, 5001, 9000] {
            assert_eq!(
                read_sized(trickle(None), announced).unwrap(),
                data,
                "{announced}"
            );
            let e = read_sized(trickle(Some(3000)), announced).unwrap_err();
            assert_eq!(e.to_string(), "reset");
        }
    }
    use std::collections::HashMap;

    #[test]
    fn ip_address_urls_need_no_lookup() {
        let addr = |u: &str| literal_address(&u.parse::<Uri>().unwrap()).map(|a| a.to_string());
        assert_eq!(
            addr("http://127.0.0.1:8080/x").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(addr("http://10.0.0.1/x").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(addr("HTTPS://[::1]/x").as_deref(), Some("[::1]:443"));
        assert_eq!(
            addr("http://[fe80::1]:81/").as_deref(),
            Some("[fe80::1]:81")
        );
        // Names, and what only the C resolver reads as an address.
        assert_eq!(addr("http://localhost:80/"), None);
        assert_eq!(addr("http://127.1/"), None);
        assert_eq!(addr("socks5://127.0.0.1/"), None);
    }

    fn proxy(url: &str, vars: &[(&str, &str)]) -> Option<String> {
        let map: HashMap<&str, &str> = vars.iter().cloned().collect();
        let url = InventoryUrl::parse(url).unwrap();
        let https = matches!(url.location(), Location::Http { https: true, .. });
        proxy_for(url.host()?, https, &|n| map.get(n).map(|v| v.to_string())).map(|(_, v)| v)
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

    #[test]
    fn proxy_selection_names_the_variable() {
        let map: HashMap<&str, &str> = [("all_proxy", "socks5h://u:p@h:1080")].into();
        assert_eq!(
            proxy_for("inv", true, &|n| map.get(n).map(|v| v.to_string())),
            Some(("all_proxy", "socks5h://u:p@h:1080".to_string()))
        );
    }

    #[test]
    fn only_http_and_https_proxies_are_built() {
        for (value, protocol) in [
            ("http://p:3128", ProxyProtocol::Http),
            ("HTTPS://p", ProxyProtocol::Https),
            ("pu:Pw-Unit-Test@127.0.0.1:3128", ProxyProtocol::Http),
            ("p", ProxyProtocol::Http),
            ("[::1]:3128", ProxyProtocol::Http),
        ] {
            let p = proxy_from("HTTP_PROXY", value).unwrap();
            assert_eq!(p.protocol(), protocol, "{value}");
        }
        let p = proxy_from("HTTP_PROXY", "http://pu:s%2F3cr%40t@p:3128").unwrap();
        assert_eq!((p.username(), p.password()), (Some("pu"), Some("s/3cr@t")));
        assert_eq!((p.host(), p.port()), ("p", 3128));
        for var in ["ALL_PROXY", "all_proxy", "https_proxy", "HTTP_PROXY"] {
            for scheme in ["socks5h", "socks5", "socks4", "socks4a", "socks", "Socks5"] {
                let value = format!("{scheme}://pu:Sock-Secr3t@127.0.0.1:1080");
                let e = proxy_from(var, &value).unwrap_err();
                assert!(e.contains(var), "{e}");
                assert!(e.contains("pu:***@127.0.0.1:1080"), "{e}");
                assert!(!e.contains("Sock-Secr3t"), "{e}");
            }
        }
        // Where the password ends is unknown: only the scheme is shown.
        for (value, shown) in [
            ("pu:Pr/oxyPW@127.0.0.1:3128", "http_proxy=...:"),
            (
                "http://pu:se#Cret99@127.0.0.1:3128",
                "http_proxy=http://...:",
            ),
            ("pu:se?Cret77@127.0.0.1:3128", "http_proxy=...:"),
            ("http://h:1/se@Cret77", "http_proxy=http://...:"),
        ] {
            let e = proxy_from("http_proxy", value).unwrap_err();
            assert!(e.contains(shown), "{value}: {e}");
            assert!(!e.contains("Cret") && !e.contains("oxyPW"), "{e}");
        }
    }

    #[test]
    fn tls_failures_are_told_apart_by_type() {
        use std::io;
        let source = HttpSource::new(
            InventoryUrl::parse("https://127.0.0.1:1/x").unwrap(),
            true,
            10,
            &|_| None,
        );
        let trust = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, trust);
        assert!(matches!(
            source.classify(ureq::Error::Io(wrapped)),
            FetchError::Permanent(_)
        ));
        // The word alone is no TLS failure: a retry may help.
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "certificate reset");
        assert!(matches!(
            source.classify(ureq::Error::Io(plain)),
            FetchError::Transient { .. }
        ));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            source.classify(ureq::Error::Io(refused)),
            FetchError::Transient { .. }
        ));
    }

    #[test]
    fn the_proxy_is_chosen_for_each_host() {
        let env = |n: &str| match n {
            "http_proxy" => Some("http://127.0.0.1:3128".to_string()),
            "https_proxy" => Some("http://127.0.0.1:3129".to_string()),
            "no_proxy" => Some("inside.example".to_string()),
            _ => None,
        };
        let mut source = HttpSource::new(
            InventoryUrl::parse("http://inside.example/x").unwrap(),
            false,
            10,
            &env,
        );
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert!(source.proxy_to(&uri("http://inside.example/y")).is_none());
        let p = source.proxy_to(&uri("http://outside.example/y")).unwrap();
        assert_eq!(p.port(), 3128);
        let p = source.proxy_to(&uri("https://outside.example/y")).unwrap();
        assert_eq!(p.port(), 3129);
        assert!(source.proxy_to(&uri("https://a.inside.example/")).is_none());
    }

    #[test]
    fn locations_are_shown_redacted_escaped_and_short() {
        assert_eq!(
            shown_location("http://u:Secr3t@h/\u{202e}x\u{2028}"),
            "\"http://u:***@h/\\u{202e}x\\u{2028}\""
        );
        let long = shown_location(&"a".repeat(500));
        assert!(long.len() < 210 && long.ends_with("..."), "{long}");
        assert_eq!(
            status_text(StatusCode::PARTIAL_CONTENT),
            "HTTP 206 Partial Content"
        );
        assert_eq!(status_text(StatusCode::from_u16(299).unwrap()), "HTTP 299");
    }
}
