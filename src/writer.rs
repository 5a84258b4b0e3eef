//! Atomic replacement of the targets file: Prometheus must never read a
//! partial file, and an unchanged file is not touched at all.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Readable by Prometheus, which runs as another user.
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// A failed step of a write: what was being done, to which path, and why.
#[derive(Debug)]
pub struct WriteError {
    pub step: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errno = self
            .source
            .raw_os_error()
            .map(|n| format!("{:?}: ", nix::errno::Errno::from_raw(n)))
            .unwrap_or_default();
        write!(
            f,
            "cannot {} {}: {errno}{}",
            self.step,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for WriteError {}

fn step<T>(r: io::Result<T>, step: &'static str, path: &Path) -> Result<T, WriteError> {
    r.map_err(|source| WriteError {
        step,
        path: path.to_path_buf(),
        source,
    })
}

/// The directory that holds `target` (`.` for a bare file name).
pub fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Prefix of our temp files: a dotfile that never ends in `.json`, because
/// Prometheus's `*.json` glob matches dotfiles too.
fn temp_prefix(target: &Path) -> OsString {
    let mut p = OsString::from(".");
    p.push(target.file_name().unwrap_or_default());
    p.push(".tmp.");
    p
}

/// Creates missing directories with mode 0755 and returns the ones created,
/// outermost first.
pub fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    missing.reverse();
    for d in &missing {
        match DirBuilder::new().mode(DIR_MODE).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(DIR_MODE))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

/// Renders a document into a writer. It may be called more than once (to
/// compare with the current file, then to write), and must produce the same
/// bytes each time.
pub type Render<'a> = dyn FnMut(&mut dyn Write) -> io::Result<()> + 'a;

/// What `target` holds now, at most `limit` bytes of it; `None` when it does
/// not exist.
pub fn read_existing(target: &Path, limit: u64) -> Result<Option<Vec<u8>>, WriteError> {
    use std::io::Read;
    match File::open(target) {
        Ok(f) => {
            let mut buf = Vec::new();
            step(f.take(limit).read_to_end(&mut buf), "read", target)?;
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WriteError {
            step: "open",
            path: target.to_path_buf(),
            source: e,
        }),
    }
}

/// Writes what `render` produces to `target` unless it already holds exactly
/// that: temp file (O_EXCL) in the same directory, write, fsync, chmod 0644,
/// rename over the target, fsync the directory. On failure the old file
/// is untouched and the temp file is gone.
pub fn write_if_changed(target: &Path, render: &mut Render<'_>) -> Result<Outcome, WriteError> {
    let mut content = Vec::new();
    step(render(&mut content), "render", target)?;
    let content = content.as_slice();
    match fs::read(target) {
        Ok(old) if old == content => return Ok(Outcome::Unchanged),
        _ => {}
    }
    let dir = parent_dir(target);
    // The directory may have been removed while we ran.
    step(create_dirs(dir), "create directory", dir)?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut name = temp_prefix(target);
    name.push(format!(
        "{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(name);
    let file = step(
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(&temp),
        "create temp file",
        &temp,
    )?;
    let result = fill(file, &temp, content)
        .and_then(|()| step(fs::rename(&temp, target), "rename temp file over", target));
    if let Err(e) = result {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is. The new file
    // is in place either way, so a failure here is only worth a warning.
    if let Err(e) = step(
        File::open(dir).and_then(|d| d.sync_all()),
        "fsync directory",
        dir,
    ) {
        log::warn!("{e}");
    }
    Ok(Outcome::Written)
}

fn fill(mut file: File, temp: &Path, content: &[u8]) -> Result<(), WriteError> {
    step(file.write_all(content), "write", temp)?;
    step(file.sync_all(), "fsync", temp)?;
    step(
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE)),
        "chmod",
        temp,
    )
}

/// Removes temp files that a killed run left next to `target`.
pub fn remove_stale_temp_files(target: &Path) -> io::Result<Vec<PathBuf>> {
    let prefix = temp_prefix(target);
    let prefix = prefix.as_encoded_bytes();
    let mut removed = Vec::new();
    let entries = match fs::read_dir(parent_dir(target)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(prefix) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdu-writer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect()
    }

    #[test]
    fn writes_with_mode_0644_and_skips_unchanged() {
        let d = tmpdir("basic");
        let t = d.join("sub/dir/targets.json");
        assert_eq!(
            write_if_changed(&t, &mut |w| w.write_all(b"[1]\n")).unwrap(),
            Outcome::Written
        );
        let m1 = fs::metadata(&t).unwrap();
        assert_eq!(m1.mode() & 0o777, 0o644);
        assert_eq!(fs::metadata(d.join("sub")).unwrap().mode() & 0o777, 0o755);
        assert_eq!(
            write_if_changed(&t, &mut |w| w.write_all(b"[1]\n")).unwrap(),
            Outcome::Unchanged
        );
        let m2 = fs::metadata(&t).unwrap();
        assert_eq!((m1.ino(), m1.mtime_nsec()), (m2.ino(), m2.mtime_nsec()));
        assert_eq!(
            write_if_changed(&t, &mut |w| w.write_all(b"[2]\n")).unwrap(),
            Outcome::Written
        );
        assert_ne!(fs::metadata(&t).unwrap().ino(), m1.ino());
        assert_eq!(fs::read(&t).unwrap(), b"[2]\n");
        assert!(leftovers(t.parent().unwrap()).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_do_not_match_the_json_glob() {
        let p = temp_prefix(Path::new("/x/targets.json"));
        assert_eq!(p, ".targets.json.tmp.");
        // pid.counter follows, so the name can never end in ".json".
    }

    #[test]
    fn failure_keeps_the_old_file_and_leaves_no_temp() {
        let d = tmpdir("fail");
        let t = d.join("targets.json");
        fs::write(&t, b"old").unwrap();
        // A directory where the temp file's rename target is makes rename fail.
        let blocked = d.join("blocked.json");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("keep"), b"x").unwrap();
        let e = write_if_changed(&blocked, &mut |w| w.write_all(b"new")).unwrap_err();
        assert!(e.to_string().contains("blocked.json"), "{e}");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        assert_eq!(fs::read(&t).unwrap(), b"old");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let d = tmpdir("stale");
        let t = d.join("targets.json");
        fs::write(d.join(".targets.json.tmp.123.0"), b"partial").unwrap();
        fs::write(d.join(".other.json.tmp.1.0"), b"not ours").unwrap();
        fs::write(&t, b"keep").unwrap();
        let removed = remove_stale_temp_files(&t).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(d.join(".other.json.tmp.1.0").exists());
        assert_eq!(fs::read(&t).unwrap(), b"keep");
        assert!(remove_stale_temp_files(&d.join("missing/targets.json"))
            .unwrap()
            .is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn errors_name_errno_and_path() {
        let e = WriteError {
            step: "write",
            path: PathBuf::from("/full/.targets.json.tmp.1.0"),
            source: io::Error::from_raw_os_error(28),
        };
        let s = e.to_string();
        assert!(
            s.contains("ENOSPC") && s.contains("/full/.targets.json.tmp.1.0"),
            "{s}"
        );
    }
}
