//! Atomic replacement of the targets file: Prometheus must never read a
//! partial file, and an unchanged file is not touched at all.
//!
//! Directories are reached one component at a time from file descriptors,
//! and files through their directory's descriptor, so that a path someone
//! else changes halfway cannot redirect what root creates or hands over.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, Mode};
use nix::unistd::{unlinkat, Gid, Uid, UnlinkatFlags};

/// Readable by Prometheus, which runs as another user.
const FILE_MODE: u32 = 0o644;
const TEMP_MODE: u32 = 0o600;
/// Buffer for writing the temp file and for reading the old file back.
const BUFFER: usize = 64 * 1024;
/// A temp file untouched for this long belongs to no write in progress: a
/// write takes seconds at most, even for hundreds of thousands of targets.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

pub use crate::sys::paths::{create_dirs, open_dir, parent_dir, CreatedDir, Trust, WriteError};
use crate::sys::paths::{
    errno_error, file_name, open_existing, remove_created, step, sys, Existing,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    Unchanged,
}

/// Prefix of our temp files: a dotfile that never ends in `.json`, because
/// Prometheus's `*.json` glob matches dotfiles too.
fn temp_prefix(name: &OsStr) -> OsString {
    let mut p = OsString::from(".");
    p.push(name);
    p.push(".tmp.");
    p
}

/// `.<name>.tmp.<pid>.<16 hex digits>`: the PID tells the start-up clean-up
/// whose file it is, the random part keeps other users from guessing it.
fn temp_name(name: &OsStr) -> OsString {
    let mut t = temp_prefix(name);
    t.push(format!("{}.{:016x}", std::process::id(), random_u64()));
    t
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    // Without /dev/urandom: std's per-process random hash keys, a counter
    // and the time still make the name hard to guess.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// As root, before the privilege drop: creates the missing directories of
/// `dir` and hands only those to `uid`:`gid`, through their descriptors.
/// Existing directories keep whatever owner the operator gave them, and
/// must not let another user redirect us.
pub fn create_dirs_for(dir: &Path, uid: Uid, gid: Gid) -> Result<(), String> {
    let trust = Trust::Strict {
        service_uid: uid.as_raw(),
    };
    let (_, created) =
        create_dirs(dir, trust).map_err(|e| format!("output directory {}: {e}", dir.display()))?;
    for d in &created {
        if let Err(e) = nix::unistd::fchown(&d.fd, Some(uid), Some(gid)) {
            remove_created(&created);
            return Err(format!("chown {}: {e}", d.path.display()));
        }
    }
    Ok(())
}

/// Renders a document into a writer. It may be called more than once (to
/// compare with the current file, then to write), and must produce the same
/// bytes each time.
pub type Render<'a> = dyn FnMut(&mut dyn Write) -> io::Result<()> + 'a;

/// `target` opened for reading, reached as the writer reaches it (no
/// symbolic link, no FIFO or device); `None` when it does not exist.
/// Anything but a regular file is an error naming the path. The caller
/// reads it as a stream and learns its size and age from the descriptor.
pub fn open_existing_reader(target: &Path) -> Result<Option<File>, WriteError> {
    let name = file_name(target)?;
    let Some(dirfd) = open_dir(parent_dir(target), Trust::current())? else {
        return Ok(None);
    };
    match open_existing(&dirfd, name, target)? {
        Existing::Missing => Ok(None),
        Existing::Unreadable(source) => Err(WriteError {
            step: "open",
            path: target.to_path_buf(),
            source,
        }),
        Existing::File(f) => Ok(Some(f)),
    }
}

/// What `target` holds now, at most `limit` bytes of it; `None` when it does
/// not exist. Anything but a regular file is an error naming the path.
pub fn read_existing(target: &Path, limit: u64) -> Result<Option<Vec<u8>>, WriteError> {
    let Some(f) = open_existing_reader(target)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    step(f.take(limit).read_to_end(&mut buf), "read", target)?;
    Ok(Some(buf))
}

/// Writes what `render` produces to `target` unless it already holds exactly
/// that. First pass: the rendered bytes are compared with the file as they
/// come. Second pass, only if they differ: temp file (O_EXCL) in the same
/// directory, write, fsync, chmod 0644, rename over the target, fsync the
/// directory. Memory use does not grow with the document. On failure the
/// old file is untouched and the temp file is gone.
pub fn write_if_changed(target: &Path, render: &mut Render<'_>) -> Result<Outcome, WriteError> {
    let name = file_name(target)?;
    let dir = parent_dir(target);
    let trust = Trust::current();
    let dirfd = match open_dir(dir, trust)? {
        Some(dirfd) => {
            if let Existing::File(old) = open_existing(&dirfd, name, target)? {
                if same_content(old, target, render)? {
                    return Ok(Outcome::Unchanged);
                }
            }
            dirfd
        }
        // The directory may have been removed while we ran.
        None => create_dirs(dir, trust)?.0,
    };
    replace(&dirfd, dir, name, target, render)?;
    Ok(Outcome::Written)
}

/// A writer that fails once `stop` says so, so that a long render can be
/// abandoned (the old file then stays, and the temp file is removed).
pub struct Interruptible<'a> {
    inner: &'a mut dyn Write,
    stop: &'a dyn Fn() -> bool,
}

impl<'a> Interruptible<'a> {
    pub fn new(inner: &'a mut dyn Write, stop: &'a dyn Fn() -> bool) -> Self {
        Interruptible { inner, stop }
    }
}

impl Write for Interruptible<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if (self.stop)() {
            return Err(io::Error::other("abandoned: the agent is stopping"));
        }
        self.inner.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether `render` produces exactly what `old` holds.
fn same_content(old: File, target: &Path, render: &mut Render<'_>) -> Result<bool, WriteError> {
    let mut sink = Compare {
        old,
        buf: vec![0; BUFFER],
        pos: 0,
        end: 0,
        same: true,
    };
    let rendered = render(&mut sink);
    if !sink.same {
        // The sink stopped the render at the first difference.
        return Ok(false);
    }
    step(rendered, "render", target)?;
    Ok(sink.pos == sink.end && matches!(sink.refill(), Refill::Eof))
}

/// A writer that compares what it is given with a file read in chunks.
struct Compare {
    old: File,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    same: bool,
}

enum Refill {
    Data,
    Eof,
    Failed,
}

impl Compare {
    fn refill(&mut self) -> Refill {
        loop {
            match self.old.read(&mut self.buf) {
                Ok(0) => return Refill::Eof,
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Refill::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Refill::Failed,
            }
        }
    }
}

impl Write for Compare {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while self.same && !rest.is_empty() {
            if self.pos >= self.end && !matches!(self.refill(), Refill::Data) {
                // The old file is shorter, or unreadable: not the same.
                self.same = false;
                break;
            }
            let n = (self.end - self.pos).min(rest.len());
            let old = self.buf.get(self.pos..self.pos + n);
            if old.is_none() || old != rest.get(..n) {
                self.same = false;
                break;
            }
            self.pos += n;
            rest = rest.get(n..).unwrap_or_default();
        }
        if self.same {
            Ok(data.len())
        } else {
            // No need to render the rest: the file will be rewritten.
            Err(io::Error::other("differs from the existing file"))
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Keeps the error of the underlying writer, so that a failed write is
/// told apart from a failed render.
struct Tracked<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W> Tracked<W> {
    fn keep(&mut self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::Interrupted {
            return e;
        }
        let copy = match e.raw_os_error() {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::new(e.kind(), e.to_string()),
        };
        self.error = Some(e);
        copy
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.inner.write(data).map_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(|e| self.keep(e))
    }
}

/// Creates a temp file next to the target: O_EXCL, mode 0600, a fresh
/// random name, once more with another name if that one is taken.
fn create_temp(
    dirfd: &OwnedFd,
    dir: &Path,
    mut next_name: impl FnMut() -> OsString,
) -> Result<(File, OsString), WriteError> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut name = next_name();
    for attempt in 0..2 {
        match openat(
            dirfd,
            name.as_os_str(),
            flags,
            Mode::from_bits_truncate(TEMP_MODE),
        ) {
            Ok(fd) => return Ok((File::from(fd), name)),
            Err(Errno::EEXIST) if attempt == 0 => name = next_name(),
            Err(e) => return Err(errno_error("create temp file", &dir.join(&name), e)),
        }
    }
    Err(errno_error(
        "create temp file",
        &dir.join(&name),
        Errno::EEXIST,
    ))
}

/// The second pass: a new file in place of the old one.
fn replace(
    dirfd: &OwnedFd,
    dir: &Path,
    name: &OsStr,
    target: &Path,
    render: &mut Render<'_>,
) -> Result<(), WriteError> {
    let (file, temp_name) = create_temp(dirfd, dir, || temp_name(name))?;
    let temp = dir.join(&temp_name);
    let result = fill(file, &temp, target, render).and_then(|()| {
        sys(
            renameat(dirfd, temp_name.as_os_str(), dirfd, name),
            "rename temp file over",
            target,
        )
    });
    if let Err(e) = result {
        let _ = unlinkat(dirfd, temp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    // The rename is durable only once the directory entry is. The new file
    // is in place either way, so a failure here is only worth a warning.
    let synced = openat(
        dirfd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .and_then(nix::unistd::fsync);
    if let Err(e) = sys(synced, "fsync directory", dir) {
        log::warn!("{e}");
    }
    Ok(())
}

fn fill(file: File, temp: &Path, target: &Path, render: &mut Render<'_>) -> Result<(), WriteError> {
    let mut out = BufWriter::with_capacity(
        BUFFER,
        Tracked {
            inner: file,
            error: None,
        },
    );
    if let Err(e) = render(&mut out) {
        // Drop what is buffered: the file is about to be removed.
        let (mut tracked, _) = out.into_parts();
        return Err(match tracked.error.take() {
            Some(source) => WriteError {
                step: "write",
                path: temp.to_path_buf(),
                source,
            },
            None => WriteError {
                step: "render",
                path: target.to_path_buf(),
                source: e,
            },
        });
    }
    step(out.flush(), "write", temp)?;
    let (tracked, _) = out.into_parts();
    let file = tracked.inner;
    step(file.sync_all(), "fsync", temp)?;
    sys(
        fchmod(&file, Mode::from_bits_truncate(FILE_MODE)),
        "chmod",
        temp,
    )
}

/// What the start-up clean-up did.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub removed: Vec<PathBuf>,
    /// Temp files of a running process, possibly written right now.
    pub in_use: Vec<(PathBuf, u32)>,
    /// Files that could not be removed; the others still were.
    pub failed: Vec<WriteError>,
}

/// Removes temp files that a killed run left next to `target`: those whose
/// process is gone, and any older than [`STALE_AFTER`].
pub fn remove_stale_temp_files(target: &Path) -> Result<Cleanup, WriteError> {
    let mut report = Cleanup::default();
    let name = file_name(target)?;
    let dir = parent_dir(target);
    let Some(dirfd) = open_dir(dir, Trust::current())? else {
        return Ok(report);
    };
    let prefix = temp_prefix(name);
    // Listed and removed through the descriptor checked above, never by
    // the path, which someone may have changed meanwhile.
    let listing = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut entries = match Dir::openat(&dirfd, ".", listing, Mode::empty()) {
        Ok(d) => d,
        Err(e) => return sys(Err(e), "list", dir),
    };
    let me = std::process::id();
    let now = SystemTime::now();
    for entry in entries.iter() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report.failed.push(errno_error("list", dir, e));
                break;
            }
        };
        let file = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
        let Some(rest) = file
            .as_encoded_bytes()
            .strip_prefix(prefix.as_encoded_bytes())
        else {
            continue;
        };
        let path = dir.join(&file);
        if let Some(pid) = owner_pid(rest) {
            let fresh = age(&dirfd, &file, now).is_none_or(|a| a < STALE_AFTER);
            if pid != me && process_alive(pid) && fresh {
                report.in_use.push((path, pid));
                continue;
            }
        }
        match unlinkat(&dirfd, file.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => report.removed.push(path),
            Err(Errno::ENOENT) => {}
            Err(e) => report.failed.push(errno_error("remove", &path, e)),
        }
    }
    Ok(report)
}

/// The PID in a temp name, from what follows the prefix: `<pid>.<rest>`.
fn owner_pid(rest: &[u8]) -> Option<u32> {
    let digits = rest.split(|&b| b == b'.').next()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<u32>()
        .ok()
        .filter(|&p| p > 0 && i32::try_from(p).is_ok())
}

fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // EPERM: it exists, it is just not ours.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None),
        Err(Errno::ESRCH)
    )
}

/// Time since the entry was last modified; `None` if unknown.
fn age(dirfd: &OwnedFd, name: &OsStr, now: SystemTime) -> Option<Duration> {
    let st = fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let secs = u64::try_from(st.st_mtime).ok()?;
    let mtime = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
    Some(now.duration_since(mtime).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdu-writer-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
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
    fn comparison_sees_every_difference() {
        let d = tmpdir("compare");
        let t = d.join("targets.json");
        let big: Vec<u8> = (0..3 * BUFFER + 17).map(|i| (i % 251) as u8).collect();
        // Rendered in odd pieces that straddle the read chunks.
        let pieces = |data: Vec<u8>| {
            move |w: &mut dyn Write| {
                for c in data.chunks(1000) {
                    w.write_all(c)?;
                }
                Ok(())
            }
        };
        assert_eq!(
            write_if_changed(&t, &mut pieces(big.clone())).unwrap(),
            Outcome::Written
        );
        assert_eq!(
            write_if_changed(&t, &mut pieces(big.clone())).unwrap(),
            Outcome::Unchanged
        );
        let mut longer = big.clone();
        longer.push(b'x');
        let mut shorter = big.clone();
        shorter.pop();
        let mut flipped = big.clone();
        if let Some(b) = flipped.get_mut(2 * BUFFER + 5) {
            *b ^= 1;
        }
        for (what, variant) in [
            ("longer", longer),
            ("shorter", shorter),
            ("flipped", flipped),
        ] {
            fs::write(&t, &big).unwrap();
            assert_eq!(
                write_if_changed(&t, &mut pieces(variant.clone())).unwrap(),
                Outcome::Written,
                "{what}"
            );
            assert_eq!(fs::read(&t).unwrap(), variant, "{what}");
        }
        // Empty file, empty render.
        fs::write(&t, b"").unwrap();
        assert_eq!(
            write_if_changed(&t, &mut |_| Ok(())).unwrap(),
            Outcome::Unchanged
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn render_error_keeps_the_old_file_and_leaves_no_temp() {
        let d = tmpdir("render-err");
        let t = d.join("targets.json");
        fs::write(&t, b"old").unwrap();
        let before = fs::metadata(&t).unwrap().ino();
        // Fails in the second pass, after part of the document was written.
        let mut calls = 0;
        let e = write_if_changed(&t, &mut |w| {
            calls += 1;
            w.write_all(&[b'n'; 100_000])?;
            if calls == 2 {
                return Err(io::Error::other("renderer broke"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.step, "render", "{e}");
        assert!(e.to_string().contains("renderer broke"), "{e}");
        assert_eq!(fs::read(&t).unwrap(), b"old");
        assert_eq!(fs::metadata(&t).unwrap().ino(), before);
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_are_random_carry_the_pid_and_never_end_in_json() {
        let p = temp_prefix(OsStr::new("targets.json"));
        assert_eq!(p, ".targets.json.tmp.");
        let a = temp_name(OsStr::new("targets.json"));
        let b = temp_name(OsStr::new("targets.json"));
        assert_ne!(a, b);
        let a = a.to_string_lossy().into_owned();
        let rest = a.strip_prefix(".targets.json.tmp.").unwrap();
        let (pid, random) = rest.split_once('.').unwrap();
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(random.len(), 16, "{a}");
        assert!(random.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert!(!a.ends_with(".json"));
        assert_eq!(owner_pid(rest.as_bytes()), Some(std::process::id()));
    }

    #[test]
    fn a_taken_temp_name_is_retried_once_with_another() {
        let d = tmpdir("taken");
        let dirfd = open_dir(&d, Trust::current()).unwrap().unwrap();
        fs::write(d.join(".t.json.tmp.1.a"), b"planted").unwrap();
        fs::write(d.join(".t.json.tmp.1.b"), b"planted").unwrap();
        let mut names = [".t.json.tmp.1.a", ".t.json.tmp.1.c"].into_iter();
        let (_, name) = create_temp(&dirfd, &d, || names.next().unwrap().into()).unwrap();
        assert_eq!(name, ".t.json.tmp.1.c");
        assert_eq!(fs::read(d.join(".t.json.tmp.1.a")).unwrap(), b"planted");
        // Taken twice: an error naming the path, the planted files intact.
        let mut names = [".t.json.tmp.1.a", ".t.json.tmp.1.b"].into_iter();
        let e = create_temp(&dirfd, &d, || names.next().unwrap().into()).unwrap_err();
        assert!(e.to_string().contains("EEXIST"), "{e}");
        assert!(e.to_string().contains(".t.json.tmp.1.b"), "{e}");
        assert_eq!(fs::read(d.join(".t.json.tmp.1.b")).unwrap(), b"planted");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failure_keeps_the_old_file_and_leaves_no_temp() {
        let d = tmpdir("fail");
        let t = d.join("targets.json");
        fs::write(&t, b"old").unwrap();
        // A directory where the target is: refused, nothing written.
        let blocked = d.join("blocked.json");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("keep"), b"x").unwrap();
        let e = write_if_changed(&blocked, &mut |w| w.write_all(b"new")).unwrap_err();
        assert!(e.to_string().contains("blocked.json"), "{e}");
        assert!(e.to_string().contains("a directory"), "{e}");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        assert_eq!(fs::read(&t).unwrap(), b"old");
        assert_eq!(fs::read(blocked.join("keep")).unwrap(), b"x");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn special_files_are_refused_and_left_alone() {
        let d = tmpdir("special");
        let fifo = d.join("fifo.json");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        let link = d.join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for (t, what) in [(&fifo, "FIFO"), (&link, "symbolic link")] {
            // Neither blocks nor reads without end.
            let e = read_existing(t, 1 << 20).unwrap_err();
            assert!(
                e.to_string().contains(&*t.to_string_lossy()) && e.to_string().contains(what),
                "{e}"
            );
            let e = write_if_changed(t, &mut |w| w.write_all(b"[]\n")).unwrap_err();
            assert!(
                e.to_string().contains(&*t.to_string_lossy()) && e.to_string().contains(what),
                "{e}"
            );
        }
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        let t = d.join("targets.json");
        assert_eq!(read_existing(&t, 10).unwrap(), None);
        fs::write(&t, b"0123456789abc").unwrap();
        assert_eq!(read_existing(&t, 10).unwrap().unwrap(), b"0123456789");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temp_files_are_removed_live_ones_kept() {
        let d = tmpdir("stale");
        let t = d.join("targets.json");
        // A child that has exited: its PID is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let old_live = format!(".targets.json.tmp.1.{:016x}", 7);
        let files = [
            format!(".targets.json.tmp.{dead}.{:016x}", 1),
            ".targets.json.tmp.garbage".to_string(),
            old_live.clone(),
            ".targets.json.tmp.1.0".to_string(),
            format!(".targets.json.tmp.{me}.0"),
        ];
        for f in &files {
            fs::write(d.join(f), b"partial").unwrap();
        }
        // PID 1 is alive; one of its files is old, the other fresh.
        let hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        File::options()
            .write(true)
            .open(d.join(&old_live))
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
        fs::write(d.join(".other.json.tmp.1.0"), b"not ours").unwrap();
        fs::write(&t, b"keep").unwrap();
        let c = remove_stale_temp_files(&t).unwrap();
        let mut removed: Vec<_> = c
            .removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        let mut expected = vec![
            files[0].clone(),
            files[1].clone(),
            old_live,
            // Our own PID: nothing of ours is in flight at start-up.
            files[4].clone(),
        ];
        expected.sort();
        assert_eq!(removed, expected);
        assert_eq!(c.in_use.len(), 1, "{:?}", c.in_use);
        assert!(d.join(".targets.json.tmp.1.0").exists());
        assert!(d.join(".other.json.tmp.1.0").exists());
        assert!(c.failed.is_empty(), "{:?}", c.failed);
        assert_eq!(fs::read(&t).unwrap(), b"keep");
        assert!(remove_stale_temp_files(&d.join("missing/targets.json"))
            .unwrap()
            .removed
            .is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_walk_removes_what_it_created() {
        let d = tmpdir("walk-undo");
        // `new` is created, then the next name is too long for mkdir.
        let long = "a".repeat(300);
        let dir = d.join("new").join(&long).join("x");
        let e = create_dirs(&dir, Trust::Any).unwrap_err();
        assert!(e.to_string().contains("ENAMETOOLONG"), "{e}");
        assert!(!d.join("new").exists(), "a created directory was left");
        // Something put into a created directory meanwhile stays.
        let me = nix::unistd::geteuid().as_raw();
        let strict = Trust::Strict { service_uid: me };
        let (_, created) = create_dirs(&d.join("kept/a"), strict).unwrap();
        fs::write(d.join("kept/a/file"), b"x").unwrap();
        remove_created(&created);
        assert!(d.join("kept/a/file").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn as_root_a_dot_dot_component_is_refused_before_anything_is_made() {
        let d = tmpdir("walk-dotdot");
        let me = nix::unistd::geteuid().as_raw();
        let strict = Trust::Strict { service_uid: me };
        for dir in [d.join("new/../other"), d.join("new/a/../../t")] {
            let e = create_dirs(&dir, strict).unwrap_err();
            assert!(e.to_string().contains("`..`"), "{e}");
            assert!(open_dir(&dir, strict).is_err());
        }
        assert!(!d.join("new").exists() && !d.join("other").exists());
        // Without root the kernel's checks apply, and `..` is a name.
        assert!(create_dirs(&d.join("new/../other"), Trust::Any).is_ok());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlinked_parent_names_where_it_leads_without_following_it() {
        let d = tmpdir("walk-link");
        fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.join("rel")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("abs")).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let strict = Trust::Strict { service_uid: me };
        for link in ["rel", "abs"] {
            let e = create_dirs(&d.join(link).join("out"), strict).unwrap_err();
            let want = format!("leads to is {}", d.join("real/out").display());
            assert!(e.to_string().contains(&want), "{link}: {e}");
        }
        assert!(!d.join("real/out").exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn owner_pids() {
        assert_eq!(owner_pid(b"123.abc"), Some(123));
        assert_eq!(owner_pid(b"123"), Some(123));
        assert_eq!(owner_pid(b"0.1"), None);
        assert_eq!(owner_pid(b"-1.1"), None);
        assert_eq!(owner_pid(b"+5.1"), None);
        assert_eq!(owner_pid(b"4294967295.1"), None);
        assert_eq!(owner_pid(b".1"), None);
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
