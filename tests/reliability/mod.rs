//! Shared helpers for the reliability suite (issue 5): a scriptable HTTP
//! server on loopback that records what it served, a daemon spawner with an
//! incremental log reader, a notify socket, `/proc` probes, an independent
//! oracle for good inventories, a recording proxy and a tmpfs mount guard.
//!
//! Self-contained on purpose: it does not depend on `tests/common`, which
//! another suite owns and may change.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sd-updater");

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An integer from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Appends a line to `$SDU_REPORT_DIR/<name>` when that variable is set, so
/// that `tests/reliability.sh` can collect the figures of a run.
pub fn report(name: &str, line: &str) {
    println!("{line}");
    if let Some(dir) = std::env::var_os("SDU_REPORT_DIR") {
        let _ = fs::create_dir_all(&dir);
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join(name))
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// xorshift64*: deterministic for a printed seed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `SDU_SEED`, or the clock; the seed is printed.
    pub fn from_env(what: &str) -> Rng {
        let s = std::env::var("SDU_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{what}: SDU_SEED={s}");
        Rng(s | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir (mode 0755), removed on drop
/// unless `SDU_KEEP_TMP` is set.
pub struct TmpDir {
    path: PathBuf,
}

impl TmpDir {
    pub fn new(tag: &str) -> TmpDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Short: the notify socket lives here and sun_path is 108 bytes.
        let tag: String = tag.chars().take(16).collect();
        let path =
            std::env::temp_dir().join(format!("sdr-{tag}-{}-{n}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&path).expect("create test dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod test dir");
        TmpDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if std::env::var_os("SDU_KEEP_TMP").is_none() {
            // A test may have left a read-only directory behind.
            let _ = Command::new("chmod")
                .args(["-R", "u+rwx"])
                .arg(&self.path)
                .stderr(Stdio::null())
                .status();
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Notify socket
// ---------------------------------------------------------------------------

/// A fake `NOTIFY_SOCKET` that hands out datagrams in arrival order and
/// keeps only the last few for error messages.
pub struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
    recent: Mutex<Vec<String>>,
    pub received: AtomicU64,
}

impl Notify {
    pub fn new(dir: &TmpDir) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        // An agent that dropped privileges must still reach it.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        Notify {
            sock,
            path,
            recent: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 8192];
        let n = self.sock.recv(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.received.fetch_add(1, Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap();
        if r.len() >= 20 {
            r.remove(0);
        }
        r.push(m.clone());
        Some(m)
    }

    /// Skips datagrams until one has the exact line `kv`; returns it.
    pub fn wait_for(&self, kv: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if let Some(m) = self.recv(deadline - now) {
                if m.split('\n').any(|l| l == kv) {
                    return Some(m);
                }
            }
        }
    }

    /// Drops whatever is queued.
    pub fn drain(&self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }

    pub fn recent(&self) -> String {
        self.recent.lock().unwrap().join(" | ").replace('\n', " ")
    }
}

/// The value of `KEY=` in a notify datagram.
pub fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.split('\n')
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

// ---------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A command line for the agent with a clean environment (PATH only, plus
/// what the test sets).
#[derive(Clone)]
pub struct Spawn {
    pub env: BTreeMap<String, String>,
    pub args: Vec<String>,
    pub dir: PathBuf,
}

impl Spawn {
    /// Daemon defaults for these tests: the output in `<dir>/out`, cycles
    /// only at start-up and on SIGHUP, one try per cycle, info logging, and
    /// `RUN_AS_USER=root` (the documented opt-out) when running as root.
    pub fn new(dir: &TmpDir, url: &str) -> Spawn {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| env.insert(k.to_string(), v);
        set("INVENTORY_URL", url.to_string());
        set(
            "TARGETS_FILE",
            dir.join("out/targets.json").display().to_string(),
        );
        set("UPDATE_INTERVAL", "1h".into());
        set("HTTP_TIMEOUT", "5".into());
        set("RETRY_ATTEMPTS", "0".into());
        set("RETRY_BACKOFF", "0.01".into());
        set("LOG_LEVEL", "info".into());
        if is_root() {
            set("RUN_AS_USER", "root".into());
        }
        Spawn {
            env,
            args: Vec::new(),
            dir: dir.path().to_path_buf(),
        }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Spawn {
        self.env.insert(k.to_string(), v.as_ref().to_string());
        self
    }

    pub fn env_remove(mut self, k: &str) -> Spawn {
        self.env.remove(k);
        self
    }

    pub fn notify(self, n: &Notify) -> Spawn {
        let p = n.path().display().to_string();
        self.env("NOTIFY_SOCKET", p)
    }

    pub fn arg(mut self, a: &str) -> Spawn {
        self.args.push(a.to_string());
        self
    }

    pub fn targets_file(&self) -> PathBuf {
        PathBuf::from(&self.env["TARGETS_FILE"])
    }

    pub fn out_dir(&self) -> PathBuf {
        self.targets_file().parent().unwrap().to_path_buf()
    }

    pub fn spawn(&self) -> Proc {
        let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
        let stderr = self.dir.join(format!("agent{n}.stderr"));
        let stdout = self.dir.join(format!("agent{n}.stdout"));
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .envs(&self.env)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn sd-updater");
        let tail = File::open(&stderr).unwrap();
        Proc {
            child,
            stderr,
            stdout,
            tail,
            status: None,
        }
    }

    /// Runs to completion (SIGKILLed after `timeout`, then `None`).
    pub fn run(&self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let mut p = self.spawn();
        let st = p.wait_exit(timeout);
        (st, p.log())
    }
}

/// A running agent; SIGKILLed on drop.
pub struct Proc {
    child: Child,
    stderr: PathBuf,
    stdout: PathBuf,
    tail: File,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(Pid::from_raw(self.pid()), sig);
        }
    }

    pub fn alive(&mut self) -> bool {
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

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.alive() {
            if Instant::now() >= deadline {
                self.kill9();
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
        self.status
    }

    pub fn kill9(&mut self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
            if let Ok(st) = self.child.wait() {
                self.status = Some(st);
            }
        }
    }

    /// The whole stderr log.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    pub fn log_bytes(&self) -> Vec<u8> {
        fs::read(&self.stderr).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// Log written since the previous call (cheap: reads only new bytes).
    pub fn log_new(&mut self) -> String {
        let mut s = Vec::new();
        let _ = self.tail.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    }

    /// Skips to the end of the log.
    pub fn log_skip(&mut self) {
        let _ = self.tail.seek(SeekFrom::End(0));
    }

    /// Waits until the log (from the last `log_new`/`log_skip` on) has a
    /// line containing `needle`; returns everything read meanwhile.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut acc = String::new();
        loop {
            acc.push_str(&self.log_new());
            if acc.contains(needle) {
                return Some(acc);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`, ...).
    pub fn status_kb(&self, key: &str) -> Option<u64> {
        proc_status_kb(self.pid(), key)
    }

    pub fn fd_count(&self) -> usize {
        fd_count(self.pid())
    }

    pub fn fds(&self) -> Vec<String> {
        fd_targets(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn proc_status_kb(pid: i32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What each open descriptor points at, for failure messages.
pub fn fd_targets(pid: i32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let t = fs::read_link(e.path())
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    format!("{}->{t}", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names in `dir` that look like the agent's temp files for `file_name`
/// (or any `*.tmp.*` file at all, to be strict).
pub fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Good inventories with an independent oracle
// ---------------------------------------------------------------------------

pub const LABELS: &[(&str, &str)] = &[("job", "sensors"), ("environment", "production")];

/// The agreed rendering: pretty JSON, 2-space indent, trailing newline,
/// `__metrics_path__` first, then the labels in the given order.
pub fn render(targets: &[String], metrics_path: &str, labels: &[(&str, &str)]) -> Vec<u8> {
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut out = String::with_capacity(targets.iter().map(|t| t.len() + 10).sum::<usize>() + 200);
    out.push_str("[\n  {\n");
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
    out.into_bytes()
}

pub fn render_default(targets: &[String]) -> Vec<u8> {
    render(targets, "/metrics", LABELS)
}

/// Parses a `file_sd` document strictly: a list of groups, each with a
/// `targets` list of strings and a `labels` map whose names are valid
/// Prometheus label names. Returns all targets.
pub fn parse_file_sd(content: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(content).map_err(|e| format!("not JSON: {e}"))?;
    let groups = v.as_array().ok_or("top level is not a list")?;
    let mut all = Vec::new();
    for g in groups {
        let g = g.as_object().ok_or("group is not an object")?;
        if g.keys().any(|k| k != "targets" && k != "labels") {
            return Err(format!("unexpected key in group: {:?}", g.keys()));
        }
        for t in g
            .get("targets")
            .and_then(|t| t.as_array())
            .ok_or("no targets list")?
        {
            all.push(t.as_str().ok_or("target is not a string")?.to_string());
        }
        if let Some(labels) = g.get("labels") {
            for (k, v) in labels.as_object().ok_or("labels is not an object")? {
                if !valid_label_name(k) {
                    return Err(format!("invalid label name {k:?}"));
                }
                v.as_str().ok_or("label value is not a string")?;
            }
        }
    }
    Ok(all)
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn valid_label_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Entries the agent must drop.
pub const INVALID: &[&str] = &[
    "",
    " ",
    "bad name",
    "a/b",
    "http://x",
    "\"q\"",
    "sénsor",
    "-lead",
    "trail-",
    "a..b",
    "x:0",
    "x:65536",
    "256.1.1.1",
    "fe80::1%eth0",
    "evil\n2025-01-01 00:00:00 - sd-updater - ERROR - forged",
    "\u{1b}[31mred",
    "nul\u{0}byte",
];

/// An inventory whose correct rendering is known by construction, not by
/// asking the code under test.
pub struct GoodList {
    /// The JSON body served.
    pub body: Arc<Vec<u8>>,
    /// Sorted, unique targets the agent must write.
    pub targets: Vec<String>,
    /// The exact file content expected.
    pub rendered: Arc<Vec<u8>>,
}

/// One valid entry and the target it must become (port 9100 default).
fn valid_entry(rng: &mut Rng) -> (String, String) {
    let port = rng.range(1, 65535);
    match rng.below(8) {
        0..=2 => {
            let n = rng.below(30_000);
            (format!("sensor_{n}"), format!("sensor_{n}:9100"))
        }
        3 => {
            let n = rng.below(5_000);
            let h = format!("Host-{n}.site{}.example", n % 7);
            (h.clone(), format!("{h}:9100"))
        }
        4 => {
            let ip = format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.below(256)
            );
            if rng.chance(50) {
                (format!("{ip}:{port}"), format!("{ip}:{port}"))
            } else {
                (ip.clone(), format!("{ip}:9100"))
            }
        }
        5 => {
            let x = rng.range(1, 0xffff);
            (
                format!("2001:db8::{x:x}"),
                format!("[2001:db8::{x:x}]:9100"),
            )
        }
        6 => {
            let x = rng.range(1, 0xffff);
            (
                format!("[2001:db8::{x:x}]:{port}"),
                format!("[2001:db8::{x:x}]:{port}"),
            )
        }
        _ => {
            let n = rng.below(30_000);
            (format!("sensor_{n}:{port}"), format!("sensor_{n}:{port}"))
        }
    }
}

impl GoodList {
    /// About `n` distinct valid entries (at least one), some duplicated,
    /// a few invalid ones, shuffled.
    pub fn random(rng: &mut Rng, n: usize, invalid: usize) -> GoodList {
        let mut entries = Vec::with_capacity(n + n / 10 + invalid);
        let mut targets = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let (e, t) = valid_entry(rng);
            entries.push(e);
            targets.push(t);
        }
        for _ in 0..(n / 20) {
            let i = rng.below(entries.len() as u64) as usize;
            entries.push(entries[i].clone());
        }
        for _ in 0..invalid {
            entries.push(INVALID[rng.below(INVALID.len() as u64) as usize].to_string());
        }
        rng.shuffle(&mut entries);
        GoodList::from_parts(&entries, targets)
    }

    /// Sensors `sensor_<prefix>_<i>` for i in 0..n.
    pub fn numbered(prefix: &str, n: usize) -> GoodList {
        let entries: Vec<String> = (0..n).map(|i| format!("sensor_{prefix}_{i:07}")).collect();
        let targets = entries.iter().map(|e| format!("{e}:9100")).collect();
        GoodList::from_parts(&entries, targets)
    }

    pub fn from_parts(entries: &[String], mut targets: Vec<String>) -> GoodList {
        targets.sort();
        targets.dedup();
        let rendered = render_default(&targets);
        GoodList {
            body: Arc::new(serde_json::to_vec(entries).unwrap()),
            targets,
            rendered: Arc::new(rendered),
        }
    }

    /// The same set, served in another order with other duplicates.
    pub fn reshuffled(&self, rng: &mut Rng) -> GoodList {
        let mut entries: Vec<String> = serde_json::from_slice(&self.body).unwrap();
        let extra = rng.below(entries.len() as u64 / 10 + 2) as usize;
        for _ in 0..extra {
            let i = rng.below(entries.len() as u64) as usize;
            entries.push(entries[i].clone());
        }
        rng.shuffle(&mut entries);
        GoodList {
            body: Arc::new(serde_json::to_vec(&entries).unwrap()),
            targets: self.targets.clone(),
            rendered: self.rendered.clone(),
        }
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

// ---------------------------------------------------------------------------
// Scriptable HTTP server
// ---------------------------------------------------------------------------

/// What the server does with one request.
#[derive(Clone)]
pub enum Reply {
    /// 200 with `Content-Length` (gzip-encoded when asked).
    Ok { body: Arc<Vec<u8>>, gzip: bool },
    /// Any status with headers and a body.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: Arc<Vec<u8>>,
    },
    /// Bytes written as they are, then a graceful close.
    Raw(Arc<Vec<u8>>),
    /// Declares `declared` bytes, sends `body` (shorter), closes.
    Truncated { body: Arc<Vec<u8>>, declared: usize },
    /// Declares `declared` bytes, sends `body` (shorter), then a TCP RST.
    Reset { body: Arc<Vec<u8>>, declared: usize },
    /// 302 to the same path, forever.
    RedirectLoop,
    /// 302 to `location`.
    Redirect(String),
    /// A chunked body that never ends.
    Endless,
    /// Headers, then one body byte every `every`.
    Drip { body: Arc<Vec<u8>>, every: Duration },
    /// The response head itself, one byte every `every`.
    DripHead { every: Duration },
    /// Reads the request, never answers.
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

impl Reply {
    pub fn ok(body: &Arc<Vec<u8>>) -> Reply {
        Reply::Ok {
            body: body.clone(),
            gzip: false,
        }
    }

    pub fn json(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Ok {
            body: Arc::new(body.into()),
            gzip: false,
        }
    }

    pub fn status(code: u16) -> Reply {
        Reply::Status {
            code,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: Arc::new(format!("status {code}\n").into_bytes()),
        }
    }

    pub fn status_with(code: u16, headers: &[(&str, &str)]) -> Reply {
        Reply::Status {
            code,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Arc::new(format!("status {code}\n").into_bytes()),
        }
    }

    pub fn html() -> Reply {
        Reply::Status {
            code: 200,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: Arc::new(
                b"<!DOCTYPE html>\n<html><body><form action=\"/login\">\
                  <input name=\"user\"></form></body></html>\n"
                    .to_vec(),
            ),
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Served {
    /// The cycle (as set with `begin`) it belonged to.
    pub cycle: u64,
    /// Which step of that cycle's plan answered it.
    pub step: usize,
    pub label: &'static str,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
    /// The client's address, to tell the agent's requests from strays.
    pub peer: Option<SocketAddr>,
}

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

/// An HTTP/1.1 server on 127.0.0.1, a thread per connection. Request `k`
/// of the current cycle gets step `min(k, last)` of the plan, and every
/// answer is recorded in order.
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/inventory", self.port())
    }

    /// Starts cycle `cycle` with `plan`; returns what the previous cycle
    /// served.
    pub fn begin(&self, cycle: u64, plan: Vec<Step>) -> Vec<Served> {
        assert!(!plan.is_empty());
        let mut st = self.sh.st.lock().unwrap();
        st.cycle = cycle;
        st.plan = plan;
        std::mem::take(&mut st.served)
    }

    /// Serves `reply` from now on (a one-step plan in a new cycle).
    pub fn set(&self, label: &'static str, reply: Reply) {
        let c = self.sh.st.lock().unwrap().cycle + 1;
        self.begin(c, vec![Step { label, reply }]);
    }

    /// What the current cycle served so far.
    pub fn served(&self) -> Vec<Served> {
        self.sh.st.lock().unwrap().served.clone()
    }

    pub fn served_count(&self) -> usize {
        self.sh.st.lock().unwrap().served.len()
    }

    pub fn total(&self) -> u64 {
        self.sh.st.lock().unwrap().total
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
        let deadline = Instant::now() + timeout;
        let mut st = self.sh.st.lock().unwrap();
        while st.served.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.sh.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Reads a request head (up to 1 MiB); None on EOF, error or stop.
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
        let idx = st.served.len().min(st.plan.len() - 1);
        let step = st.plan[idx].clone();
        let served = Served {
            cycle: st.cycle,
            step: st.served.len(),
            label: step.label,
            method,
            target: target.clone(),
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
        302 => "Found",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
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
        Reply::Status {
            code,
            headers,
            body,
        } => {
            let mut out = head_bytes(*code, headers, Some(body.len()));
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
        Reply::RedirectLoop | Reply::Redirect(_) => {
            let loc = match reply {
                Reply::Redirect(l) => l.clone(),
                _ => path.to_string(),
            };
            let out = head_bytes(302, &[("Location".into(), loc)], Some(0));
            if send(stream, sh, &out) {
                finish(stream, sh);
            }
        }
        Reply::Endless => {
            let mut h = json_headers();
            h.push(("Transfer-Encoding".into(), "chunked".into()));
            if !send(stream, sh, &head_bytes(200, &h, None)) {
                return false;
            }
            let mut piece = b"[\"sensor_0\"".to_vec();
            while piece.len() < 16 * 1024 {
                piece.extend_from_slice(b",\"sensor_1\"");
            }
            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
            chunk.extend_from_slice(&piece);
            chunk.extend_from_slice(b"\r\n");
            while send(stream, sh, &chunk) {}
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

// ---------------------------------------------------------------------------
// Recording proxy
// ---------------------------------------------------------------------------

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct ProxyReq {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

/// A small forward proxy on 127.0.0.1 that records every request and sends
/// it to `upstream`, whatever host the request names (so a request for a
/// host that is not listening can only succeed through the proxy). Plain
/// requests in absolute form are rewritten to origin form; `CONNECT` is
/// tunnelled.
pub struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<ProxyReq>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let (seen3, stop3) = (seen2.clone(), stop2.clone());
                thread::spawn(move || proxy_conn(client, upstream, &seen3, &stop3));
            }
        });
        Proxy {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<ProxyReq> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn proxy_conn(
    mut client: TcpStream,
    upstream: SocketAddr,
    seen: &Mutex<Vec<ProxyReq>>,
    stop: &AtomicBool,
) {
    let _ = client.set_read_timeout(Some(TICK));
    let Some(head) = read_head(&mut client, stop) else {
        return;
    };
    let (method, target, headers) = parse_head(&head);
    seen.lock().unwrap().push(ProxyReq {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
    });
    let _ = client.set_read_timeout(None);
    let Ok(mut up) = TcpStream::connect(upstream) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .is_err()
        {
            return;
        }
    } else {
        // http://host:port/path -> /path
        let path = target
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
            .unwrap_or_else(|| target.clone());
        let mut out = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("proxy-connection") && !k.eq_ignore_ascii_case("connection")
            {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        out.push_str("Via: 1.1 sdr-proxy\r\nConnection: close\r\n\r\n");
        if up.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
    let (c2, u2) = (client.try_clone().unwrap(), up.try_clone().unwrap());
    let t = thread::spawn(move || pump(c2, u2));
    pump(up, client);
    let _ = t.join();
}

// ---------------------------------------------------------------------------
// tmpfs
// ---------------------------------------------------------------------------

/// A tmpfs mounted at a directory for the length of a test (root only).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "sdr-test"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs -o {options} failed: {st}");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Whether `path` is a mount point now.
    pub fn is_mounted(path: &Path) -> bool {
        let p = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&*p.to_string_lossy()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.path)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok || !Tmpfs::is_mounted(&self.path) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

// ---------------------------------------------------------------------------
// A daemon under test, driven one SIGHUP cycle at a time
// ---------------------------------------------------------------------------

/// A daemon that has written a first good list, with its server and
/// notify socket.
pub struct Daemon {
    pub dir: TmpDir,
    pub notify: Notify,
    pub server: Server,
    pub agent: Proc,
    pub file: PathBuf,
}

pub const DAEMON_T: Duration = Duration::from_secs(30);

impl Daemon {
    /// Starts the agent in `dir` (TARGETS_FILE in `<dir>/out` unless `env`
    /// says otherwise) and waits for `first` to be written.
    pub fn start(dir: TmpDir, first: &GoodList, env: &[(&str, &str)]) -> Daemon {
        let notify = Notify::new(&dir);
        let server = Server::start("first", Reply::ok(&first.body));
        let mut spawn = Spawn::new(&dir, &server.url()).notify(&notify);
        for (k, v) in env {
            spawn = spawn.env(k, v);
        }
        let file = spawn.targets_file();
        let mut agent = spawn.spawn();
        assert!(
            notify.wait_for("READY=1", DAEMON_T).is_some(),
            "no READY=1\n{}",
            agent.log()
        );
        let ok = wait_for(DAEMON_T, || {
            fs::read(&file).ok().as_deref() == Some(&first.rendered[..])
        });
        assert!(ok, "first list not written\n{}", agent.log());
        // The first cycle's STATUS= follows the write.
        assert!(notify.recv(DAEMON_T).is_some());
        agent.log_new();
        Daemon {
            dir,
            notify,
            server,
            agent,
            file,
        }
    }

    /// Serves `reply`, forces a cycle with SIGHUP, waits for READY=1 and
    /// returns the cycle's log. The agent must still be alive.
    pub fn cycle(&mut self, label: &'static str, reply: Reply) -> String {
        self.cycle_within(label, reply, DAEMON_T)
    }

    pub fn cycle_within(&mut self, label: &'static str, reply: Reply, t: Duration) -> String {
        self.server.set(label, reply);
        self.agent.signal(Signal::SIGHUP);
        let ready = self.notify.wait_for("READY=1", t);
        let log = self.agent.log_new();
        assert!(
            ready.is_some(),
            "no READY=1 within {t:?} after SIGHUP ({label}); alive: {}\n{log}",
            self.agent.alive()
        );
        assert!(
            self.agent.alive(),
            "agent died ({label}): {:?}\n{log}",
            self.agent.exit_status()
        );
        log
    }

    pub fn out_dir(&self) -> &Path {
        self.file.parent().unwrap()
    }
}

/// The line of `log` that reports a failed cycle (not a retry warning).
pub fn fetch_failure(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("Failed to fetch inventory: "))
}
