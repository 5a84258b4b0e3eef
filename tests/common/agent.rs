//! The agent under test: a command line with a clean environment, and a
//! running process that is SIGKILLed when dropped.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{is_root, wait_for, NotifySocket, Server, TestDir, BIN};

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A command line for the agent with a clean environment (PATH only, plus
/// what the test sets).
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
        AgentCmd::bare(dir)
            .env(
                "TARGETS_FILE",
                dir.join("out/targets.json").display().to_string(),
            )
            .env("RUN_AS_USER", "root")
            .env("LOG_LEVEL", "debug")
            .env("UPDATE_INTERVAL", "60")
            .env("RETRY_ATTEMPTS", "1")
            .env("RETRY_BACKOFF", "0.1")
            .env("HTTP_TIMEOUT", "5")
    }

    /// The reliability suites' defaults, against `url`: the output in
    /// `<dir>/out`, cycles only at start-up and on SIGHUP, one try per
    /// cycle, info logging, and `RUN_AS_USER=root` when running as root.
    pub fn for_url(dir: &TestDir, url: &str) -> AgentCmd {
        let cmd = AgentCmd::bare(dir)
            .env("INVENTORY_URL", url)
            .env(
                "TARGETS_FILE",
                dir.join("out/targets.json").display().to_string(),
            )
            .env("UPDATE_INTERVAL", "1h")
            .env("HTTP_TIMEOUT", "5")
            .env("RETRY_ATTEMPTS", "0")
            .env("RETRY_BACKOFF", "0.01")
            .env("LOG_LEVEL", "info");
        if is_root() {
            cmd.env("RUN_AS_USER", "root")
        } else {
            cmd
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

    pub fn inventory(self, inv: &Server) -> AgentCmd {
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

    /// The directory of TARGETS_FILE.
    pub fn out_dir(&self) -> PathBuf {
        self.targets_file().parent().unwrap().to_path_buf()
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
        cmd.stdout(File::create(stdout).expect("stdout file"));
        cmd.stderr(File::create(stderr).expect("stderr file"));
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
        let tail = File::open(&err).expect("open stderr file");
        Agent {
            child,
            stdout: out,
            stderr: err,
            tail,
            status: None,
            targets: self.env.get("TARGETS_FILE").map(PathBuf::from),
        }
    }

    /// Runs the agent to completion (killed and reported as a failure after
    /// `timeout`).
    pub fn run(&self, timeout: Duration) -> RunOutput {
        let mut agent = self.spawn();
        let status = agent.wait_exit(timeout);
        agent.kill9();
        RunOutput {
            status,
            stdout: agent.stdout(),
            stderr: agent.stderr(),
        }
    }
}

/// `AgentCmd` as the reliability suites built it: `Spawn::new(dir, url)`,
/// and `run` giving (status, stderr).
#[derive(Clone)]
pub struct Spawn(pub AgentCmd);

impl Spawn {
    pub fn new(dir: &TestDir, url: &str) -> Spawn {
        Spawn(AgentCmd::for_url(dir, url))
    }

    pub fn env(self, k: &str, v: impl AsRef<str>) -> Spawn {
        Spawn(self.0.env(k, v))
    }

    pub fn env_remove(self, k: &str) -> Spawn {
        Spawn(self.0.env_remove(k))
    }

    pub fn notify(self, n: &NotifySocket) -> Spawn {
        Spawn(self.0.notify(n))
    }

    pub fn arg(self, a: &str) -> Spawn {
        Spawn(self.0.arg(a))
    }

    pub fn targets_file(&self) -> PathBuf {
        self.0.targets_file()
    }

    pub fn out_dir(&self) -> PathBuf {
        self.0.out_dir()
    }

    pub fn spawn(&self) -> Agent {
        self.0.spawn()
    }

    pub fn run(&self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let out = self.0.run(timeout);
        (out.status, out.stderr)
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
    /// Read position for `log_new`.
    tail: File,
    status: Option<ExitStatus>,
    targets: Option<PathBuf>,
}

/// The same type under the reliability suites' name.
pub type Proc = Agent;

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

    /// The same as `is_alive`.
    pub fn alive(&mut self) -> bool {
        self.is_alive()
    }

    /// The exit status, once `is_alive` or `wait_exit` has seen it.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Waits for the exit; None if still running after `timeout` (the
    /// process is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
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

    /// The same as `stderr_bytes`.
    pub fn log_bytes(&self) -> Vec<u8> {
        self.stderr_bytes()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr_bytes()).into_owned()
    }

    /// The whole stderr log (the same as `stderr`).
    pub fn log(&self) -> String {
        self.stderr()
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

    /// Log written since the previous call (cheap: reads only new bytes).
    pub fn log_new(&mut self) -> String {
        let mut s = Vec::new();
        let _ = self.tail.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    }

    /// Skips to the end of the log for `log_new` and `wait_log`.
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

    pub fn targets_file(&self) -> &Path {
        self.targets.as_deref().expect("TARGETS_FILE set")
    }

    /// Waits for the targets file to exist.
    pub fn wait_for_file(&self, timeout: Duration) -> bool {
        let p = self.targets_file().to_path_buf();
        wait_for(timeout, || p.exists())
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

impl Drop for Agent {
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

/// A standard environment for daemon tests against `inv`, with a notify
/// socket.
pub fn daemon(dir: &TestDir, inv: &Server, notify: &NotifySocket) -> AgentCmd {
    AgentCmd::new(dir).inventory(inv).notify(notify)
}
