//! Fixtures that reach into the system: a tmpfs mount, and a daemon under
//! test driven one SIGHUP cycle at a time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{wait_for, Agent, AgentCmd, GoodList, NotifySocket, Reply, Server, TestDir};

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
    pub dir: TestDir,
    pub notify: NotifySocket,
    pub server: Server,
    pub agent: Agent,
    pub file: PathBuf,
}

pub const DAEMON_T: Duration = Duration::from_secs(30);

impl Daemon {
    /// Starts the agent in `dir` (TARGETS_FILE in `<dir>/out` unless `env`
    /// says otherwise) and waits for `first` to be written.
    pub fn start(dir: TestDir, first: &GoodList, env: &[(&str, &str)]) -> Daemon {
        let notify = NotifySocket::new(&dir);
        let server = Server::start("first", Reply::ok(&first.body));
        let mut spawn = AgentCmd::for_url(&dir, &server.url()).notify(&notify);
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
