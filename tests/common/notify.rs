//! A fake `NOTIFY_SOCKET`.

use std::fs;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TestDir;

/// One datagram received on the notify socket; derefs to its text.
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

impl Default for Msg {
    fn default() -> Msg {
        Msg {
            raw: String::new(),
            at: Instant::now(),
        }
    }
}

impl Deref for Msg {
    type Target = str;

    fn deref(&self) -> &str {
        &self.raw
    }
}

/// The value of `KEY=` in a notify datagram.
pub fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.split('\n')
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Keeps every datagram in arrival order, with a cursor: `recv`,
/// `wait_for` and `recv_until` hand out messages past the cursor and move
/// it, so successive calls check ordering.
pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    inner: Mutex<(Vec<Msg>, usize)>,
}

/// The same type under the reliability suites' name.
pub type Notify = NotifySocket;

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

    /// Pulls in everything already queued on the socket, without waiting
    /// (the cursor stays where it is).
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

    /// Returns the first message past the cursor that satisfies `pred`,
    /// receiving more as needed for up to `timeout`, and moves the cursor
    /// past it (past everything seen when none matches).
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

    /// The next message past the cursor, waiting at most `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.recv_until(timeout, |_| true).map(|m| m.raw)
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

    /// The last 20 messages on one line, for assertion messages.
    pub fn recent(&self) -> String {
        let g = self.inner.lock().unwrap();
        let from = g.0.len().saturating_sub(20);
        g.0[from..]
            .iter()
            .map(|m| m.raw.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
            .replace('\n', " ")
    }
}
