//! Temp dirs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir (mode 0755), removed on drop
/// unless `SDU_KEEP_TMP` is set in the test's environment.
pub struct TestDir {
    path: PathBuf,
}

/// The same type under the reliability suites' name.
pub type TmpDir = TestDir;

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
        if std::env::var_os("SDU_KEEP_TMP").is_some() {
            return;
        }
        if fs::remove_dir_all(&self.path).is_err() {
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
