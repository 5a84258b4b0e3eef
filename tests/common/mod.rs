//! Shared harness for the integration tests: a fake inventory server on
//! loopback, a fake `NOTIFY_SOCKET`, a temp-dir helper and a spawner for the
//! built `sd-updater` binary that never leaks a process.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sd-updater");

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir (mode 0755), removed on drop
/// unless `SDU_KEEP_TMP` is set in the test's environment.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Keep it short: the notify socket lives in here and sun_path is 108 bytes.
        let tag: String = tag.chars().take(20).collect();
        let path =
            std::env::temp_dir().join(format!("sdu-{tag}-{}-{n}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&path).expect("create test dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("SDU_KEEP_TMP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Fake inventory
// ---------------------------------------------------------------------------

/// What the fake inventory does with a request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// A complete response, sent after `delay`.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Arc<Vec<u8>>,
        delay: Duration,
    },
    /// Read the request, then never answer (until the server is dropped).
    Hang,
    /// Send the headers (with the right Content-Length), then one byte of
    /// `body` every `every`.
    Drip { body: Arc<Vec<u8>>, every: Duration },
    /// 200 with a body that never ends: a JSON array of names that goes on
    /// forever. `chunked` picks Transfer-Encoding: chunked, otherwise no
    /// Content-Length and the body runs until the connection closes.
    Endless { chunked: bool },
    /// Declare `declared_len` in Content-Length, send `body` (shorter), close.
    Truncated {
        body: Arc<Vec<u8>>,
        declared_len: usize,
    },
    /// 302 to the very same URL, forever.
    RedirectLoop,
    /// A redirect (`status`, e.g. 301 or 307) to `location`, given verbatim.
    Redirect { status: u16, location: String },
}

impl Behavior {
    pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Behavior {
        Behavior::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Arc::new(body.into()),
            delay: Duration::ZERO,
        }
    }

    /// 200 with a JSON body given verbatim.
    pub fn json(body: impl Into<Vec<u8>>) -> Behavior {
        Behavior::respond(200, &[("Content-Type", "application/json")], body)
    }

    /// 200 with a JSON array of the given names.
    pub fn list(names: &[&str]) -> Behavior {
        Behavior::json(serde_json::to_vec(names).unwrap())
    }

    /// 200 with a JSON array of the given names, after `delay`.
    pub fn slow_list(names: &[&str], delay: Duration) -> Behavior {
        match Behavior::list(names) {
            Behavior::Respond {
                status,
                headers,
                body,
                ..
            } => Behavior::Respond {
                status,
                headers,
                body,
                delay,
            },
            _ => unreachable!(),
        }
    }

    /// A status with a small plain-text body.
    pub fn status(status: u16) -> Behavior {
        Behavior::respond(
            status,
            &[("Content-Type", "text/plain")],
            format!("status {status}\n"),
        )
    }

    /// 200, `Content-Encoding: gzip`, body gzip-compressed.
    pub fn gzip_json(body: &[u8]) -> Behavior {
        use flate2::write::GzEncoder;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(body).unwrap();
        let gz = enc.finish().unwrap();
        Behavior::respond(
            200,
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            gz,
        )
    }

    /// 200 with an HTML login page, as a captive portal or SSO proxy would.
    pub fn html_login() -> Behavior {
        Behavior::respond(
            200,
            &[("Content-Type", "text/html; charset=utf-8")],
            "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><form method=\"post\" \
             action=\"/login\"><input name=\"user\"><input type=\"password\" name=\"pass\">\
             </form></body></html>\n",
        )
    }

    pub fn drip(body: impl Into<Vec<u8>>, every: Duration) -> Behavior {
        Behavior::Drip {
            body: Arc::new(body.into()),
            every,
        }
    }

    pub fn truncated(body: impl Into<Vec<u8>>, declared_len: usize) -> Behavior {
        Behavior::Truncated {
            body: Arc::new(body.into()),
            declared_len,
        }
    }

    /// 302 to `location`.
    pub fn redirect(location: impl Into<String>) -> Behavior {
        Behavior::Redirect {
            status: 302,
            location: location.into(),
        }
    }
}

/// One request as the fake inventory saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct InvState {
    default: Behavior,
    queue: VecDeque<Behavior>,
    requests: Vec<Request>,
}

struct InvShared {
    state: Mutex<InvState>,
    cond: Condvar,
    shutdown: AtomicBool,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// An HTTP/1.1 server on 127.0.0.1 (thread per connection) whose behaviour
/// can be changed while the agent runs.
pub struct FakeInventory {
    shared: Arc<InvShared>,
    port: u16,
    acceptor: Option<JoinHandle<()>>,
}

const IO_TICK: Duration = Duration::from_millis(50);

impl FakeInventory {
    pub fn start(initial: Behavior) -> FakeInventory {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake inventory");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(InvShared {
            state: Mutex::new(InvState {
                default: initial,
                queue: VecDeque::new(),
                requests: Vec::new(),
            }),
            cond: Condvar::new(),
            shutdown: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let acceptor = thread::spawn(move || {
            while !sh.shutdown.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let sh2 = sh.clone();
                        let h = thread::spawn(move || handle_conn(stream, &sh2));
                        let mut conns = sh.conns.lock().unwrap();
                        conns.retain(|h| !h.is_finished());
                        conns.push(h);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeInventory {
            shared,
            port,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/inventory`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/inventory", self.port)
    }

    /// Replaces the default behaviour (queued one-shot behaviours still go first).
    pub fn set(&self, b: Behavior) {
        let mut st = self.shared.state.lock().unwrap();
        st.queue.clear();
        st.default = b;
    }

    /// Queues a behaviour used for exactly one upcoming request.
    pub fn push_once(&self, b: Behavior) {
        self.shared.state.lock().unwrap().queue.push_back(b);
    }

    pub fn request_count(&self) -> usize {
        self.shared.state.lock().unwrap().requests.len()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests have arrived in total.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        while st.requests.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.shared.cond.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }

    /// Waits until no request has arrived for `quiet` (at most `max`), and
    /// returns the request count then.
    pub fn wait_quiet(&self, quiet: Duration, max: Duration) -> usize {
        let deadline = Instant::now() + max;
        loop {
            let (count, last) = {
                let st = self.shared.state.lock().unwrap();
                (st.requests.len(), st.requests.last().map(|r| r.at))
            };
            let quiet_since = last.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
            if quiet_since >= quiet || Instant::now() >= deadline {
                return count;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeInventory {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let conns: Vec<_> = self.shared.conns.lock().unwrap().drain(..).collect();
        for h in conns {
            let _ = h.join();
        }
    }
}

fn handle_conn(mut stream: TcpStream, sh: &InvShared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IO_TICK));
    let _ = stream.set_write_timeout(Some(IO_TICK));
    let head = match read_head(&mut stream, sh) {
        Some(h) => h,
        None => return,
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let behavior = {
        let mut st = sh.state.lock().unwrap();
        st.requests.push(Request {
            method,
            path: path.clone(),
            headers,
            at: Instant::now(),
        });
        sh.cond.notify_all();
        st.queue.pop_front().unwrap_or_else(|| st.default.clone())
    };
    let _ = respond(&mut stream, sh, behavior, &path);
}

/// Reads up to the end of the request head; None on EOF, error or shutdown.
fn read_head(stream: &mut TcpStream, sh: &InvShared) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            buf.truncate(pos);
            return Some(buf);
        }
        if sh.shutdown.load(Ordering::SeqCst) || buf.len() > 1 << 20 {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return None,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// write_all that survives the short write timeout and gives up on shutdown.
fn send(stream: &mut TcpStream, sh: &InvShared, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        if sh.shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::other("shutdown"));
        }
        match stream.write(data) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sleeps `d` in small steps; false if the server shut down meanwhile.
fn nap(sh: &InvShared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if sh.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(IO_TICK));
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn head(status: u16, headers: &[(String, String)], extra: &[(&str, String)]) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("Connection: close\r\n\r\n");
    h.into_bytes()
}

/// Closes our side gracefully and waits (briefly) for the peer to close.
fn finish(stream: &mut TcpStream, sh: &InvShared) {
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !sh.shutdown.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => continue,
            Err(_) => break,
        }
    }
}

fn respond(stream: &mut TcpStream, sh: &InvShared, b: Behavior, path: &str) -> io::Result<()> {
    match b {
        Behavior::Respond {
            status,
            headers,
            body,
            delay,
        } => {
            if !nap(sh, delay) {
                return Ok(());
            }
            let mut out = head(
                status,
                &headers,
                &[("Content-Length", body.len().to_string())],
            );
            out.extend_from_slice(&body);
            send(stream, sh, &out)?;
            finish(stream, sh);
        }
        Behavior::Hang => while nap(sh, IO_TICK) {},
        Behavior::Drip { body, every } => {
            send(
                stream,
                sh,
                &head(
                    200,
                    &[("Content-Type".into(), "application/json".into())],
                    &[("Content-Length", body.len().to_string())],
                ),
            )?;
            for byte in body.iter() {
                if !nap(sh, every) {
                    return Ok(());
                }
                send(stream, sh, &[*byte])?;
            }
            finish(stream, sh);
        }
        Behavior::Endless { chunked } => {
            let mut extra = Vec::new();
            if chunked {
                extra.push(("Transfer-Encoding", "chunked".to_string()));
            }
            send(
                stream,
                sh,
                &head(
                    200,
                    &[("Content-Type".into(), "application/json".into())],
                    &extra,
                ),
            )?;
            let mut piece = b"[\"sensor_0\"".to_vec();
            while piece.len() < 4096 {
                piece.extend_from_slice(b",\"sensor_0\"");
            }
            let filler: Vec<u8> = {
                let mut f = Vec::new();
                while f.len() < 4096 {
                    f.extend_from_slice(b",\"sensor_1\"");
                }
                f
            };
            let mut first = true;
            loop {
                let data: &[u8] = if first { &piece } else { &filler };
                first = false;
                if chunked {
                    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
                    c.extend_from_slice(data);
                    c.extend_from_slice(b"\r\n");
                    send(stream, sh, &c)?;
                } else {
                    send(stream, sh, data)?;
                }
            }
        }
        Behavior::Truncated { body, declared_len } => {
            let mut out = head(
                200,
                &[("Content-Type".into(), "application/json".into())],
                &[("Content-Length", declared_len.to_string())],
            );
            out.extend_from_slice(&body);
            send(stream, sh, &out)?;
            let _ = stream.flush();
            let _ = stream.shutdown(Shutdown::Both);
        }
        Behavior::Redirect { status, location } => {
            send(
                stream,
                sh,
                &head(
                    status,
                    &[],
                    &[("Location", location), ("Content-Length", "0".to_string())],
                ),
            )?;
            finish(stream, sh);
        }
        Behavior::RedirectLoop => {
            send(
                stream,
                sh,
                &head(
                    302,
                    &[],
                    &[
                        ("Location", path.to_string()),
                        ("Content-Length", "0".to_string()),
                    ],
                ),
            )?;
            finish(stream, sh);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Fake NOTIFY_SOCKET
// ---------------------------------------------------------------------------

/// One datagram received on the notify socket.
#[derive(Clone, Debug)]
pub struct Msg {
    pub raw: String,
    pub at: Instant,
}

impl Msg {
    pub fn fields(&self) -> Vec<(&str, &str)> {
        self.raw
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|l| l.split_once('=').unwrap_or((l, "")))
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// True when the datagram has the exact line `KEY=VALUE` given as `kv`.
    pub fn has(&self, kv: &str) -> bool {
        self.raw.split('\n').any(|l| l == kv)
    }
}

pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    inner: Mutex<(Vec<Msg>, usize)>,
}

impl NotifySocket {
    /// Binds `notify.sock` in `dir`, world-writable like systemd's, so an
    /// agent that dropped privileges can still talk to it.
    pub fn new(dir: &TestDir) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        NotifySocket {
            sock,
            path,
            inner: Mutex::new((Vec::new(), 0)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives one datagram, waiting at most `timeout`.
    fn recv_one(&self, timeout: Duration) -> Option<Msg> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 65536];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(Msg {
                raw: String::from_utf8_lossy(&buf[..n]).into_owned(),
                at: Instant::now(),
            }),
            Err(_) => None,
        }
    }

    /// Pulls in everything already queued on the socket, without waiting.
    pub fn drain(&self) {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while let Ok(n) = self.sock.recv(&mut buf) {
            got.push(Msg {
                raw: String::from_utf8_lossy(&buf[..n]).into_owned(),
                at: Instant::now(),
            });
        }
        self.sock.set_nonblocking(false).unwrap();
        self.inner.lock().unwrap().0.extend(got);
    }

    /// Forgets everything received or queued so far: later waits only see
    /// messages sent after this call (e.g. from a restarted agent).
    pub fn skip_pending(&self) {
        self.drain();
        let mut g = self.inner.lock().unwrap();
        g.1 = g.0.len();
    }

    /// Returns the first message not yet consumed by an earlier
    /// `recv_until` that satisfies `pred`, receiving more as needed for up
    /// to `timeout`. The cursor moves past the returned message, so
    /// successive calls check ordering.
    pub fn recv_until(&self, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Option<Msg> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut g = self.inner.lock().unwrap();
                let (msgs, cursor) = &mut *g;
                if let Some(i) = msgs[*cursor..].iter().position(&pred) {
                    let idx = *cursor + i;
                    *cursor = idx + 1;
                    return Some(msgs[idx].clone());
                }
                *cursor = msgs.len();
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if let Some(m) = self.recv_one(deadline - now) {
                self.inner.lock().unwrap().0.push(m);
            }
        }
    }

    /// Waits for a message with the exact line `kv` (e.g. `READY=1`).
    pub fn wait_for(&self, kv: &str, timeout: Duration) -> Option<Msg> {
        self.recv_until(timeout, |m| m.has(kv))
    }

    /// Collects messages for the whole of `d`.
    pub fn collect_for(&self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Some(m) = self.recv_one(deadline - now) {
                self.inner.lock().unwrap().0.push(m);
            }
        }
    }

    /// Every message received so far.
    pub fn all(&self) -> Vec<Msg> {
        self.inner.lock().unwrap().0.clone()
    }

    /// Everything received so far, for assertion messages.
    pub fn dump(&self) -> String {
        self.all()
            .iter()
            .map(|m| format!("{:?}", m.raw))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A command line for the agent with a clean environment.
#[derive(Clone)]
pub struct AgentCmd {
    env: BTreeMap<String, String>,
    args: Vec<String>,
    dir: PathBuf,
    umask: Option<u32>,
}

impl AgentCmd {
    /// Defaults for tests: `TARGETS_FILE=<dir>/out/targets.json`,
    /// `RUN_AS_USER=root` (the documented opt-out; CI runs as root),
    /// `LOG_LEVEL=debug`, fast retries and a long interval, so cycles run
    /// only at start-up and on SIGHUP unless a test says otherwise.
    pub fn new(dir: &TestDir) -> AgentCmd {
        let mut env = BTreeMap::new();
        env.insert(
            "TARGETS_FILE".to_string(),
            dir.join("out/targets.json").display().to_string(),
        );
        env.insert("RUN_AS_USER".into(), "root".into());
        env.insert("LOG_LEVEL".into(), "debug".into());
        env.insert("UPDATE_INTERVAL".into(), "60".into());
        env.insert("RETRY_ATTEMPTS".into(), "1".into());
        env.insert("RETRY_BACKOFF".into(), "0.1".into());
        env.insert("HTTP_TIMEOUT".into(), "5".into());
        AgentCmd {
            env,
            args: Vec::new(),
            dir: dir.path().to_path_buf(),
            umask: None,
        }
    }

    /// A command with no variables at all but PATH (for CLI/config tests).
    pub fn bare(dir: &TestDir) -> AgentCmd {
        AgentCmd {
            env: BTreeMap::new(),
            args: Vec::new(),
            dir: dir.path().to_path_buf(),
            umask: None,
        }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> AgentCmd {
        self.env.insert(k.to_string(), v.as_ref().to_string());
        self
    }

    pub fn env_remove(mut self, k: &str) -> AgentCmd {
        self.env.remove(k);
        self
    }

    pub fn inventory(self, inv: &FakeInventory) -> AgentCmd {
        self.env("INVENTORY_URL", inv.url())
    }

    pub fn notify(self, n: &NotifySocket) -> AgentCmd {
        self.env("NOTIFY_SOCKET", n.path().display().to_string())
    }

    pub fn arg(mut self, a: &str) -> AgentCmd {
        self.args.push(a.to_string());
        self
    }

    pub fn umask(mut self, mask: u32) -> AgentCmd {
        self.umask = Some(mask);
        self
    }

    pub fn get_env(&self, k: &str) -> Option<&str> {
        self.env.get(k).map(|s| s.as_str())
    }

    /// The configured TARGETS_FILE.
    pub fn targets_file(&self) -> PathBuf {
        PathBuf::from(self.env.get("TARGETS_FILE").expect("TARGETS_FILE set"))
    }

    fn command(&self, stdout: &Path, stderr: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
        cmd.envs(&self.env);
        cmd.args(&self.args);
        cmd.current_dir(&self.dir);
        cmd.stdin(Stdio::null());
        cmd.stdout(fs::File::create(stdout).expect("stdout file"));
        cmd.stderr(fs::File::create(stderr).expect("stderr file"));
        if let Some(mask) = self.umask {
            // SAFETY: umask is async-signal-safe and touches no memory.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
                    Ok(())
                });
            }
        }
        cmd
    }

    fn out_paths(&self) -> (PathBuf, PathBuf) {
        let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
        (
            self.dir.join(format!("run{n}.stdout")),
            self.dir.join(format!("run{n}.stderr")),
        )
    }

    /// Starts the agent; it is SIGKILLed when the returned value is dropped.
    pub fn spawn(&self) -> Agent {
        let (out, err) = self.out_paths();
        let child = self.command(&out, &err).spawn().expect("spawn sd-updater");
        Agent {
            child,
            stdout: out,
            stderr: err,
            status: None,
            targets: self.env.get("TARGETS_FILE").map(PathBuf::from),
        }
    }

    /// Runs the agent to completion (killed and reported as a failure after
    /// `timeout`).
    pub fn run(&self, timeout: Duration) -> RunOutput {
        let mut agent = self.spawn();
        let status = agent.wait_exit(timeout);
        RunOutput {
            status,
            stdout: agent.stdout(),
            stderr: agent.stderr(),
        }
    }
}

/// Result of a one-shot run.
pub struct RunOutput {
    /// None when the process did not exit within the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    pub fn describe(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// A running agent. Killed with SIGKILL on drop if still alive.
pub struct Agent {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    targets: Option<PathBuf>,
}

impl Agent {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            kill(Pid::from_raw(self.pid()), sig).expect("send signal");
        }
    }

    /// True while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.status = Some(st);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits for the exit; None if still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if self.is_alive() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
        }
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        fs::read(&self.stderr).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr_bytes()).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Waits until stderr (from byte `from` on) satisfies `pred`.
    pub fn wait_for_log(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> bool {
        wait_for(timeout, || {
            let b = self.stderr_bytes();
            let s = String::from_utf8_lossy(b.get(from..).unwrap_or(&[]));
            pred(&s)
        })
    }

    /// Current length of the stderr log, to look only at what comes next.
    pub fn log_mark(&self) -> usize {
        self.stderr_bytes().len()
    }

    /// The stderr log from byte `from` on.
    pub fn log_since(&self, from: usize) -> String {
        let b = self.stderr_bytes();
        String::from_utf8_lossy(b.get(from..).unwrap_or(&[])).into_owned()
    }

    pub fn targets_file(&self) -> &Path {
        self.targets.as_deref().expect("TARGETS_FILE set")
    }

    /// Waits for the targets file to exist.
    pub fn wait_for_file(&self, timeout: Duration) -> bool {
        let p = self.targets_file().to_path_buf();
        wait_for(timeout, || p.exists())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------

/// The default labels after `__metrics_path__`.
pub const DEFAULT_LABELS: &[(&str, &str)] = &[("job", "sensors"), ("environment", "production")];

/// Renders the targets file exactly as agreed: pretty JSON, 2-space indent,
/// trailing newline, `__metrics_path__` first, then the labels in order.
pub fn render(targets: &[&str], metrics_path: &str, labels: &[(&str, &str)]) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut out = String::from("[\n  {\n");
    if targets.is_empty() {
        out.push_str("    \"targets\": [],\n");
    } else {
        out.push_str("    \"targets\": [\n");
        for (i, t) in targets.iter().enumerate() {
            out.push_str("      ");
            out.push_str(&q(t));
            if i + 1 < targets.len() {
                out.push(',');
            }
            out.push('\n');
        }
        out.push_str("    ],\n");
    }
    out.push_str("    \"labels\": {\n");
    out.push_str(&format!("      \"__metrics_path__\": {}", q(metrics_path)));
    for (k, v) in labels {
        out.push_str(&format!(",\n      {}: {}", q(k), q(v)));
    }
    out.push_str("\n    }\n  }\n]\n");
    out
}

/// Renders with the default METRICS_PATH and TARGET_LABELS.
pub fn render_default(targets: &[&str]) -> String {
    render(targets, "/metrics", DEFAULT_LABELS)
}

/// Parses a targets file and returns its target list (in file order).
pub fn parse_targets(content: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| format!("not JSON: {e}"))?;
    let groups = v.as_array().ok_or("top level is not an array")?;
    if groups.len() != 1 {
        return Err(format!("expected 1 target group, got {}", groups.len()));
    }
    let targets = groups[0]
        .get("targets")
        .and_then(|t| t.as_array())
        .ok_or("no targets array")?;
    targets
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_string)
                .ok_or_else(|| "target is not a string".to_string())
        })
        .collect()
}

/// Standard base64 with padding, to compute the `Basic` credential a test
/// expects to see (or not to see).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Inode and mtime (ns) of a file, to prove it was not touched.
pub fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = fs::metadata(p).expect("stat targets file");
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// Names in `dir` that look like the agent's temp files for `file_name`.
pub fn temp_files(dir: &Path, file_name: &str) -> Vec<String> {
    let prefix = format!(".{file_name}.tmp.");
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// A standard environment for daemon tests against `inv`, with a notify
/// socket.
pub fn daemon(dir: &TestDir, inv: &FakeInventory, notify: &NotifySocket) -> AgentCmd {
    AgentCmd::new(dir).inventory(inv).notify(notify)
}

pub const SEC: Duration = Duration::from_secs(1);

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
