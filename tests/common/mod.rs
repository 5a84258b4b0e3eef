//! The one harness of the integration tests: temp dirs, a scriptable HTTP
//! inventory on loopback (with hostile replies), a recording proxy, a fake
//! `NOTIFY_SOCKET`, a spawner for the built `sd-updater` that never leaks a
//! process, `/proc` probes, tmpfs mounts, and an independent reader and
//! renderer of the `file_sd` output.
//!
//! Some types answer to two names, so that tests written against either
//! of the two former harnesses keep compiling: `TmpDir` is `TestDir`,
//! `Notify` is `NotifySocket`, `Proc` is `Agent`, `Behavior` is `Reply`;
//! `FakeInventory` and `Spawn` are thin fronts on `Server` and `AgentCmd`.

#![allow(dead_code, unused_imports)]

mod agent;
mod dir;
mod notify;
mod output;
mod proxy;
mod server;
mod system;

pub use agent::*;
pub use dir::*;
pub use notify::*;
pub use output::*;
pub use proxy::*;
pub use server::*;
pub use system::*;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sd-updater");

pub const SEC: Duration = Duration::from_secs(1);

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
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

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Panics unless this process runs as root: for tests marked
/// `#[ignore = "needs root"]`, so that running them as a normal user with
/// `--include-ignored` fails loudly instead of passing without a check.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (run as root: cargo test -- --include-ignored)"
    );
}

/// Panics unless `tool` is on PATH (or is an existing path): CI installs
/// every tool the tests use, so a missing one is a failure, not a skip.
pub fn require_tool(tool: &str, package: &str) {
    let found = if tool.contains('/') {
        Path::new(tool).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    assert!(
        found,
        "{tool} is needed by this test and is missing (apt-get install {package})"
    );
}

/// An integer from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Prints `line` and appends it to `$SDU_REPORT_DIR/<name>` when that
/// variable is set, so that `tests/reliability.sh` can collect the figures.
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
