//! A scriptable HTTP/1.1 inventory on loopback, hostile replies included.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::wait_for;

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with `Content-Length` (gzip-encoded when asked).
    Ok { body: Arc<Vec<u8>>, gzip: bool },
    /// Any status with headers and a body, sent after `delay`.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Arc<Vec<u8>>,
        delay: Duration,
    },
    /// Bytes written as they are, then a graceful close.
    Raw(Arc<Vec<u8>>),
    /// Declares `declared` bytes, sends `body` (shorter), closes.
    Truncated { body: Arc<Vec<u8>>, declared: usize },
    /// Declares `declared` bytes, sends `body` (shorter), then a TCP RST.
    Reset { body: Arc<Vec<u8>>, declared: usize },
    /// 302 to the same path, forever.
    RedirectLoop,
    /// A redirect (`status`, e.g. 301, 302 or 307) to `location`, verbatim.
    Redirect { status: u16, location: String },
    /// 200 with a JSON array of names that never ends. `chunked` picks
    /// Transfer-Encoding: chunked, otherwise the body has no length.
    Endless { chunked: bool },
    /// Headers (with the right Content-Length), then one body byte every
    /// `every`.
    Drip { body: Arc<Vec<u8>>, every: Duration },
    /// The response head itself, one byte every `every`.
    DripHead { every: Duration },
    /// Reads the request, never answers (until the client gives up or the
    /// server stops).
    Hang,
    /// `Content-Encoding: gzip`, close-delimited, inflating without end.
    GzipBomb {
        head: Arc<Vec<u8>>,
        segment: Arc<Vec<u8>>,
    },
    /// A gzip body of known compressed bytes with Content-Length.
    GzipRaw(Arc<Vec<u8>>),
    /// One header line of `len` bytes, then a good small body.
    HugeHeader { len: usize },
    /// `count` small headers.
    ManyHeaders { count: usize },
    /// A header line that never ends.
    EndlessHeader,
}

/// The same type under the first harness's name.
pub type Behavior = Reply;

impl Reply {
    pub fn ok(body: &Arc<Vec<u8>>) -> Reply {
        Reply::Ok {
            body: body.clone(),
            gzip: false,
        }
    }

    /// 200 with a JSON body given verbatim.
    pub fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Ok {
            body: Arc::new(body.into()),
            gzip: false,
        }
    }

    /// 200 with a JSON array of the given names.
    pub fn list(names: &[&str]) -> Reply {
        Reply::json(serde_json::to_vec(names).unwrap())
    }

    /// 200 with a JSON array of the given names, after `delay`.
    pub fn slow_list(names: &[&str], delay: Duration) -> Reply {
        Reply::Respond {
            status: 200,
            headers: json_headers(),
            body: Arc::new(serde_json::to_vec(names).unwrap()),
            delay,
        }
    }

    pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
        Reply::Respond {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Arc::new(body.into()),
            delay: Duration::ZERO,
        }
    }

    /// A status with a small plain-text body.
    pub fn status(code: u16) -> Reply {
        Reply::status_with(code, &[("Content-Type", "text/plain")])
    }

    /// A status with these headers and a small plain-text body.
    pub fn status_with(code: u16, headers: &[(&str, &str)]) -> Reply {
        Reply::respond(code, headers, format!("status {code}\n"))
    }

    /// 200, `Content-Encoding: gzip`, body gzip-compressed.
    pub fn gzip_json(body: &[u8]) -> Reply {
        use flate2::write::GzEncoder;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(body).unwrap();
        let gz = enc.finish().unwrap();
        Reply::respond(
            200,
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            gz,
        )
    }

    /// 200 with an HTML login page, as a captive portal or SSO proxy would.
    pub fn html_login() -> Reply {
        Reply::respond(
            200,
            &[("Content-Type", "text/html; charset=utf-8")],
            "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body><form method=\"post\" \
             action=\"/login\"><input name=\"user\"><input type=\"password\" name=\"pass\">\
             </form></body></html>\n",
        )
    }

    /// 200 with a short HTML page.
    pub fn html() -> Reply {
        Reply::respond(
            200,
            &[("Content-Type", "text/html")],
            &b"<!DOCTYPE html>\n<html><body><form action=\"/login\">\
               <input name=\"user\"></form></body></html>\n"[..],
        )
    }

    pub fn drip(body: impl Into<Vec<u8>>, every: Duration) -> Reply {
        Reply::Drip {
            body: Arc::new(body.into()),
            every,
        }
    }

    pub fn truncated(body: impl Into<Vec<u8>>, declared: usize) -> Reply {
        Reply::Truncated {
            body: Arc::new(body.into()),
            declared,
        }
    }

    /// 302 to `location`.
    pub fn redirect(location: impl Into<String>) -> Reply {
        Reply::Redirect {
            status: 302,
            location: location.into(),
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Served {
    /// The cycle (as set with `begin`) it belonged to.
    pub cycle: u64,
    /// Its index in that cycle.
    pub step: usize,
    /// The label of the plan step (or one-shot reply) that answered it.
    pub label: &'static str,
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The same as `target`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
    /// The client's address, to tell the agent's requests from strays.
    pub peer: Option<SocketAddr>,
}

/// The same type under the first harness's name.
pub type Request = Served;

impl Served {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plan step: a reply and a label for the record.
#[derive(Clone)]
pub struct Step {
    pub label: &'static str,
    pub reply: Reply,
}

struct SrvState {
    cycle: u64,
    plan: Vec<Step>,
    /// Requests of this cycle answered from `plan`.
    plan_used: usize,
    /// One-shot replies, used before the plan.
    queue: VecDeque<Step>,
    served: Vec<Served>,
    total: u64,
    by_label: HashMap<&'static str, u64>,
}

struct SrvShared {
    st: Mutex<SrvState>,
    cv: Condvar,
    stop: AtomicBool,
    /// Connections whose handler has not finished.
    open: AtomicUsize,
    /// When the client closed a Hang/Drip connection: how long it was open.
    cut_after: Mutex<Vec<Duration>>,
}

/// An HTTP/1.1 server on 127.0.0.1, a thread per connection. A queued
/// one-shot reply answers first; otherwise request `k` of the current
/// cycle gets step `min(k, last)` of the plan. Every request is recorded.
pub struct Server {
    sh: Arc<SrvShared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

const TICK: Duration = Duration::from_millis(20);

impl Server {
    pub fn start(label: &'static str, reply: Reply) -> Server {
        Server::start_on("127.0.0.1:0", label, reply)
    }

    pub fn start_on(bind: &str, label: &'static str, reply: Reply) -> Server {
        let listener = TcpListener::bind(bind).expect("bind server");
        let addr = listener.local_addr().unwrap();
        let sh = Arc::new(SrvShared {
            st: Mutex::new(SrvState {
                cycle: 0,
                plan: vec![Step { label, reply }],
                plan_used: 0,
                queue: VecDeque::new(),
                served: Vec::new(),
                total: 0,
                by_label: HashMap::new(),
            }),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            cut_after: Mutex::new(Vec::new()),
        });
        let sh2 = sh.clone();
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if sh2.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let sh3 = sh2.clone();
                sh3.open.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    handle(stream, &sh3);
                    sh3.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            sh,
            addr,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/inventory`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/inventory", self.port())
    }

    /// Starts cycle `cycle` with `plan` (dropping queued one-shot replies);
    /// returns what the previous cycle served.
    pub fn begin(&self, cycle: u64, plan: Vec<Step>) -> Vec<Served> {
        assert!(!plan.is_empty());
        let mut st = self.sh.st.lock().unwrap();
        st.cycle = cycle;
        st.plan = plan;
        st.plan_used = 0;
        st.queue.clear();
        std::mem::take(&mut st.served)
    }

    /// Serves `reply` from now on (a one-step plan in a new cycle).
    pub fn set(&self, label: &'static str, reply: Reply) {
        let c = self.sh.st.lock().unwrap().cycle + 1;
        self.begin(c, vec![Step { label, reply }]);
    }

    /// Serves `reply` from now on, in the same cycle: the record is kept
    /// and queued one-shot replies are dropped.
    pub fn replace(&self, label: &'static str, reply: Reply) {
        let mut st = self.sh.st.lock().unwrap();
        st.plan = vec![Step { label, reply }];
        st.plan_used = 0;
        st.queue.clear();
    }

    /// Queues a reply used for exactly one upcoming request.
    pub fn push_once(&self, reply: Reply) {
        self.sh.st.lock().unwrap().queue.push_back(Step {
            label: "once",
            reply,
        });
    }

    /// What the current cycle served so far (every request, unless
    /// `begin` or `set` started a new cycle).
    pub fn served(&self) -> Vec<Served> {
        self.sh.st.lock().unwrap().served.clone()
    }

    /// The same as `served`.
    pub fn requests(&self) -> Vec<Served> {
        self.served()
    }

    pub fn served_count(&self) -> usize {
        self.sh.st.lock().unwrap().served.len()
    }

    /// Requests since the server started.
    pub fn total(&self) -> u64 {
        self.sh.st.lock().unwrap().total
    }

    /// Requests since the server started.
    pub fn request_count(&self) -> usize {
        self.total() as usize
    }

    pub fn by_label(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .sh
            .st
            .lock()
            .unwrap()
            .by_label
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        v.sort();
        v
    }

    /// Waits for `n` requests in the current cycle.
    pub fn wait_served(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.served.len() >= n)
    }

    /// Waits until at least `n` requests have arrived since the start.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.total >= n as u64)
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&SrvState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.sh.st.lock().unwrap();
        while !done(&st) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.sh.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }

    /// Waits until no request has arrived for `quiet` (at most `max`), and
    /// returns the request count then.
    pub fn wait_quiet(&self, quiet: Duration, max: Duration) -> usize {
        let deadline = Instant::now() + max;
        loop {
            let (count, last) = {
                let st = self.sh.st.lock().unwrap();
                (st.total as usize, st.served.last().map(|r| r.at))
            };
            let quiet_since = last.map(|t| t.elapsed()).unwrap_or(Duration::MAX);
            if quiet_since >= quiet || Instant::now() >= deadline {
                return count;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connections still being handled.
    pub fn open_connections(&self) -> usize {
        self.sh.open.load(Ordering::SeqCst)
    }

    /// For Hang/Drip replies: how long each connection stayed open before
    /// the client gave up.
    pub fn cut_after(&self) -> Vec<Duration> {
        self.sh.cut_after.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sh.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        wait_for(Duration::from_secs(3), || {
            self.sh.open.load(Ordering::SeqCst) == 0
        });
    }
}

/// The server driven the first harness's way: a default reply that `set`
/// replaces, one-shot replies queued with `push_once`, one record of every
/// request. Everything else is `Server`'s.
pub struct FakeInventory(Server);

impl FakeInventory {
    pub fn start(initial: Reply) -> FakeInventory {
        FakeInventory(Server::start("default", initial))
    }

    /// Replaces the default reply and drops queued one-shot replies.
    pub fn set(&self, reply: Reply) {
        self.0.replace("default", reply);
    }
}

impl Deref for FakeInventory {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.0
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads a request head (up to 1 MiB); None on EOF, error, stop or after
/// 30 s.
pub fn read_head(stream: &mut impl Read, stop: &AtomicBool) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(pos);
            return Some(buf);
        }
        if stop.load(Ordering::SeqCst)
            || buf.len() > 1 << 20
            || started.elapsed() > Duration::from_secs(30)
        {
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

/// Method, request target and headers of a request head.
pub fn parse_head(head: &[u8]) -> (String, String, Vec<(String, String)>) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let mut rl = lines.next().unwrap_or("").split_whitespace();
    let method = rl.next().unwrap_or("").to_string();
    let target = rl.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    (method, target, headers)
}

fn handle(mut stream: TcpStream, sh: &SrvShared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TICK));
    let _ = stream.set_write_timeout(Some(TICK));
    let Some(head) = read_head(&mut stream, &sh.stop) else {
        return;
    };
    let (method, target, headers) = parse_head(&head);
    let peer = stream.peer_addr().ok();
    let step = {
        let mut st = sh.st.lock().unwrap();
        let step = match st.queue.pop_front() {
            Some(s) => s,
            None => {
                let idx = st.plan_used.min(st.plan.len() - 1);
                st.plan_used += 1;
                st.plan[idx].clone()
            }
        };
        let served = Served {
            cycle: st.cycle,
            step: st.served.len(),
            label: step.label,
            method,
            target: target.clone(),
            path: target.clone(),
            headers,
            at: Instant::now(),
            peer,
        };
        st.served.push(served);
        st.total += 1;
        *st.by_label.entry(step.label).or_insert(0) += 1;
        sh.cv.notify_all();
        step
    };
    let opened = Instant::now();
    let cut = respond(&mut stream, sh, &step.reply, &target);
    if cut {
        sh.cut_after.lock().unwrap().push(opened.elapsed());
    }
}

/// Writes all of `data`, riding out the short write timeout; false when
/// the peer is gone or the server stops.
fn send(stream: &mut TcpStream, sh: &SrvShared, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        if sh.stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.write(data) {
            Ok(0) => return false,
            Ok(n) => data = &data[n..],
            Err(e) if is_timeout(&e) => continue,
            Err(_) => return false,
        }
    }
    true
}

/// Waits up to `d` watching for the peer to close; true if it did (or the
/// server stops).
fn peer_closed_within(stream: &mut TcpStream, sh: &SrvShared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut buf = [0u8; 512];
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ =
            stream.set_read_timeout(Some((deadline - now).clamp(Duration::from_millis(1), TICK)));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
}

/// Sleeps `d` in small steps; false if the server stopped meanwhile.
fn nap(sh: &SrvShared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(TICK));
    }
}

/// Half-closes and waits briefly for the client to close, so that the
/// client sees a clean EOF rather than a reset.
fn finish(stream: &mut TcpStream, sh: &SrvShared) {
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    peer_closed_within(stream, sh, Duration::from_secs(2));
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
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

fn head_bytes(code: u16, headers: &[(String, String)], len: Option<usize>) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = len {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("Connection: close\r\n\r\n");
    h.into_bytes()
}

fn json_headers() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

/// Sends a TCP RST instead of a FIN when the socket is closed.
pub fn set_linger_zero(stream: &TcpStream) {
    let l = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    unsafe {
        nix::libc::setsockopt(
            stream.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_LINGER,
            &l as *const nix::libc::linger as *const nix::libc::c_void,
            std::mem::size_of::<nix::libc::linger>() as nix::libc::socklen_t,
        );
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// The head of a gzip stream and one byte-aligned deflate segment that
/// decompresses to `chunk` bytes of spaces; the segment can be repeated
/// forever to make a bomb of any size (deflate tops out near 1:1000).
pub fn gzip_bomb_parts(chunk: usize) -> (Vec<u8>, Vec<u8>) {
    use flate2::{Compress, Compression, FlushCompress};
    let head = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut c = Compress::new(Compression::best(), false);
    let input = vec![b' '; chunk];
    // A full flush ends byte-aligned with an empty dictionary, so once the
    // encoder has settled the same bytes encode every further chunk.
    let segment = |c: &mut Compress| {
        let mut out = Vec::with_capacity(chunk / 100 + 1024);
        let before = c.total_in();
        c.compress_vec(&input, &mut out, FlushCompress::Full)
            .unwrap();
        assert_eq!(
            c.total_in() - before,
            chunk as u64,
            "output buffer too small"
        );
        out
    };
    let mut prev = segment(&mut c);
    let mut first = segment(&mut c);
    for _ in 0..4 {
        if prev == first {
            break;
        }
        prev = first;
        first = segment(&mut c);
    }
    assert_eq!(prev, first, "deflate segment is not repeatable");
    let mut head = head;
    // The body starts with '[' so it looks like a JSON list.
    let mut c2 = Compress::new(Compression::best(), false);
    let mut open = Vec::with_capacity(64);
    c2.compress_vec(b"[", &mut open, FlushCompress::Full)
        .unwrap();
    head.extend_from_slice(&open);
    (head, first)
}

/// Answers one request. True when the reply waited for the client to give
/// up (Hang, Drip) and it did.
fn respond(stream: &mut TcpStream, sh: &SrvShared, reply: &Reply, path: &str) -> bool {
    match reply {
        Reply::Ok { body, gzip: gz } => {
            let mut headers = json_headers();
            let data;
            let body: &[u8] = if *gz {
                headers.push(("Content-Encoding".into(), "gzip".into()));
                data = gzip(body);
                &data
            } else {
                body
            };
            let mut out = head_bytes(200, &headers, Some(body.len()));
            out.extend_from_slice(body);
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::Respond {
            status,
            headers,
            body,
            delay,
        } => {
            if !nap(sh, *delay) {
                return false;
            }
            let mut out = head_bytes(*status, headers, Some(body.len()));
            out.extend_from_slice(body);
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::Raw(bytes) => {
            if send(stream, sh, bytes) {
                finish(stream, sh);
            }
        }
        Reply::Truncated { body, declared } => {
            let mut out = head_bytes(200, &json_headers(), Some(*declared));
            out.extend_from_slice(body);
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::Reset { body, declared } => {
            let mut out = head_bytes(200, &json_headers(), Some(*declared));
            out.extend_from_slice(body);
            send(stream, sh, &out);
            let _ = stream.flush();
            set_linger_zero(stream);
        }
        Reply::RedirectLoop | Reply::Redirect { .. } => {
            let (status, loc) = match reply {
                Reply::Redirect { status, location } => (*status, location.clone()),
                _ => (302, path.to_string()),
            };
            let out = head_bytes(status, &[("Location".into(), loc)], Some(0));
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::Endless { chunked } => {
            let mut h = json_headers();
            if *chunked {
                h.push(("Transfer-Encoding".into(), "chunked".into()));
            }
            if !send(stream, sh, &head_bytes(200, &h, None)) {
                return false;
            }
            // A valid array that goes on: `["sensor_0","sensor_0",...` then
            // `,"sensor_1"` for ever.
            let mut first = b"[\"sensor_0\"".to_vec();
            while first.len() < 16 * 1024 {
                first.extend_from_slice(b",\"sensor_0\"");
            }
            let mut filler = Vec::with_capacity(16 * 1024 + 16);
            while filler.len() < 16 * 1024 {
                filler.extend_from_slice(b",\"sensor_1\"");
            }
            let frame = |data: &[u8]| {
                if *chunked {
                    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
                    c.extend_from_slice(data);
                    c.extend_from_slice(b"\r\n");
                    c
                } else {
                    data.to_vec()
                }
            };
            if !send(stream, sh, &frame(&first)) {
                return false;
            }
            let filler = frame(&filler);
            while send(stream, sh, &filler) {}
        }
        Reply::Drip { body, every } => {
            if !send(
                stream,
                sh,
                &head_bytes(200, &json_headers(), Some(body.len())),
            ) {
                return false;
            }
            for b in body.iter() {
                if peer_closed_within(stream, sh, *every) {
                    return true;
                }
                if !send(stream, sh, &[*b]) {
                    return true;
                }
            }
            finish(stream, sh);
        }
        Reply::DripHead { every } => {
            let head = head_bytes(200, &json_headers(), Some(7));
            for b in head.iter().chain(b"[\"a\"]\n\n".iter()) {
                if peer_closed_within(stream, sh, *every) {
                    return true;
                }
                if !send(stream, sh, &[*b]) {
                    return true;
                }
            }
            finish(stream, sh);
        }
        Reply::Hang => {
            // Until the client gives up (or the server stops).
            while !peer_closed_within(stream, sh, Duration::from_secs(3600)) {}
            return !sh.stop.load(Ordering::SeqCst);
        }
        Reply::GzipBomb { head, segment } => {
            let mut h = json_headers();
            h.push(("Content-Encoding".into(), "gzip".into()));
            let mut out = head_bytes(200, &h, None);
            out.extend_from_slice(head);
            if !send(stream, sh, &out) {
                return false;
            }
            let mut block = Vec::with_capacity(segment.len() * 64);
            for _ in 0..64 {
                block.extend_from_slice(segment);
            }
            while send(stream, sh, &block) {}
        }
        Reply::GzipRaw(gz) => {
            let mut h = json_headers();
            h.push(("Content-Encoding".into(), "gzip".into()));
            let mut out = head_bytes(200, &h, Some(gz.len()));
            out.extend_from_slice(gz);
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::HugeHeader { len } => {
            let body = b"[\"sensor_huge\"]";
            let h = vec![("X-Junk".to_string(), "a".repeat(*len))];
            let mut out = head_bytes(200, &h, Some(body.len()));
            out.extend_from_slice(body);
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::ManyHeaders { count } => {
            let body = b"[\"sensor_many\"]";
            let h: Vec<(String, String)> = (0..*count)
                .map(|i| (format!("X-H{i}"), "v".to_string()))
                .collect();
            let mut out = head_bytes(200, &h, Some(body.len()));
            out.extend_from_slice(body);
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::EndlessHeader => {
            if !send(stream, sh, b"HTTP/1.1 200 OK\r\nX-Endless: ") {
                return false;
            }
            let block = vec![b'a'; 16 * 1024];
            while send(stream, sh, &block) {}
        }
    }
    false
}
