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
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, FileStat, Mode};
use nix::unistd::{unlinkat, Gid, Uid, UnlinkatFlags};

/// Readable by Prometheus, which runs as another user.
const FILE_MODE: u32 = 0o644;
const TEMP_MODE: u32 = 0o600;
/// Buffer for writing the temp file and for reading the old file back.
const BUFFER: usize = 64 * 1024;
/// A temp file untouched for this long belongs to no write in progress: a
/// write takes seconds at most, even for hundreds of thousands of targets.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

use crate::model::digest::KeyedHash;
pub use crate::sys::paths::{create_dirs, open_dir, parent_dir, CreatedDir, Trust, WriteError};
use crate::sys::paths::{
    errno_error, file_name, open_existing, remove_created, step, sys, Existing,
};
use crate::sys::writeback;

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
/// that, as [`write_known`] does with nothing known about the file.
pub fn write_if_changed(target: &Path, render: &mut Render<'_>) -> Result<Outcome, WriteError> {
    write_with(target, render, &mut None, false)
}

/// Writes what `render` produces to `target` unless it already holds exactly
/// that. One pass: the document is rendered straight into a temp file
/// (O_EXCL, same directory) through a buffered writer and a hasher. If its
/// hash and length are those of the current file, the temp file is removed
/// and the target is left untouched; otherwise the temp file is fsynced,
/// made mode 0644 and renamed over the target, and the directory fsynced.
///
/// `known` is what the file held when last read or written here: while the
/// file's identity (device, inode, size, mtime, ctime) is unchanged its
/// hash is taken from there, else the file is hashed as it is read once.
/// It is updated to what the file holds afterwards. Memory use does not
/// grow with the document. On failure the old file is untouched and the
/// temp file is gone.
pub fn write_known(
    target: &Path,
    render: &mut Render<'_>,
    known: &mut Option<FileDigest>,
) -> Result<Outcome, WriteError> {
    write_with(target, render, known, true)
}

/// As [`write_known`]; without `keep`, a written file's digest is not
/// wanted afterwards (`known` is then left `None`), so a render with no
/// current file to compare with is not hashed at all.
pub fn write_with(
    target: &Path,
    render: &mut Render<'_>,
    known: &mut Option<FileDigest>,
    keep: bool,
) -> Result<Outcome, WriteError> {
    let name = file_name(target)?;
    let dir = parent_dir(target);
    let trust = Trust::current();
    let (dirfd, current) = match open_dir(dir, trust)? {
        Some(dirfd) => {
            let current = match open_existing(&dirfd, name, target)? {
                Existing::File(old) => Some(Current::new(old, target, known.take())?),
                Existing::Missing | Existing::Unreadable(_) => None,
            };
            (dirfd, current)
        }
        // The directory may have been removed while we ran.
        None => (create_dirs(dir, trust)?.0, None),
    };
    let mut current = current;
    let result = replace(&dirfd, dir, name, target, render, current.as_mut(), keep);
    *known = match &result {
        _ if !keep => None,
        Ok((Outcome::Written, written)) => *written,
        _ => current.and_then(|c| c.known),
    };
    result.map(|(outcome, _)| outcome)
}

/// The file a write may replace, and its digest once known.
struct Current {
    file: File,
    identity: Identity,
    known: Option<FileDigest>,
}

impl Current {
    /// `known` is trusted while the file's identity is the one it describes.
    fn new(file: File, target: &Path, known: Option<FileDigest>) -> Result<Current, WriteError> {
        let identity = Identity::of(&sys(fstat(&file), "stat", target)?);
        Ok(Current {
            file,
            identity,
            known: known.filter(|k| k.identity == identity),
        })
    }

    /// Whether the file holds exactly what has the digest `new`. The file
    /// is read (and hashed) only when its length is the same.
    fn holds(&mut self, new: Digest) -> bool {
        if u64::try_from(self.identity.size).ok() != Some(new.len) {
            return false;
        }
        if self.known.is_none() {
            self.known = hash_file(&self.file, self.identity);
        }
        self.known.is_some_and(|k| k.digest == new)
    }
}

/// Reads `file` to its end and hashes it; `None` when it cannot be read or
/// changed meanwhile.
fn hash_file(file: &File, identity: Identity) -> Option<FileDigest> {
    let mut hasher = ContentHasher::default();
    let mut buf = vec![0; BUFFER];
    // Bounded: a file that grows meanwhile is not read without end.
    let size = u64::try_from(identity.size).unwrap_or(0);
    let mut reader = file.take(size.saturating_add(1));
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    FileDigest::of_read(file, &hasher).filter(|k| k.identity == identity)
}

/// What a file holds, as far as deciding "unchanged" goes: a keyed hash of
/// its bytes and their count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    hash: u64,
    len: u64,
}

/// A file's digest with the stat fields that change whenever the file is
/// replaced or written to, so that the digest is trusted only while they
/// stay the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    digest: Digest,
    identity: Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(st: &FileStat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

impl FileDigest {
    /// The digest of an open file read to its end through `hasher`; `None`
    /// when the file changed while it was read.
    pub fn of_read(file: &File, hasher: &ContentHasher) -> Option<FileDigest> {
        let st = fstat(file).ok()?;
        let digest = hasher.digest();
        (u64::try_from(st.st_size).ok() == Some(digest.len)).then_some(FileDigest {
            digest,
            identity: Identity::of(&st),
        })
    }
}

/// Hashes what is written to it, or read through it ([`KeyedHash`], with
/// keys random for each process, so that no inventory can be built to
/// collide with what the file holds; the result does not depend on how the
/// bytes are split into writes).
#[derive(Default)]
pub struct ContentHasher {
    state: KeyedHash,
    len: u64,
}

impl ContentHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.state.update(data);
        self.len = self.len.saturating_add(data.len() as u64);
    }

    fn digest(&self) -> Digest {
        Digest {
            hash: self.state.finish(),
            len: self.len,
        }
    }
}

impl Write for ContentHasher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.update(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<'h, R> {
    pub inner: R,
    pub hasher: &'h mut ContentHasher,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
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

/// Renders into a temp file next to the target, then either removes it
/// (it holds what `current` holds: [`Outcome::Unchanged`]) or renames it
/// over the target. Returns what the target holds when it was written.
fn replace(
    dirfd: &OwnedFd,
    dir: &Path,
    name: &OsStr,
    target: &Path,
    render: &mut Render<'_>,
    current: Option<&mut Current>,
    keep: bool,
) -> Result<(Outcome, Option<FileDigest>), WriteError> {
    let (file, temp_name) = match create_temp(dirfd, dir, || temp_name(name)) {
        Ok(created) => created,
        Err(e) => {
            // No temp file (a read-only directory, say): an unchanged
            // document still needs none.
            if let Some(c) = current {
                let mut hasher = ContentHasher::default();
                if render(&mut hasher).is_ok() && c.holds(hasher.digest()) {
                    return Ok((Outcome::Unchanged, None));
                }
            }
            return Err(e);
        }
    };
    let temp = dir.join(&temp_name);
    let remove = || {
        let _ = unlinkat(dirfd, temp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    };
    let file = match fill(file, &temp, target, render, current, keep) {
        Ok(Filled::Same) => {
            remove();
            return Ok((Outcome::Unchanged, None));
        }
        Ok(Filled::New(file)) => file,
        Err(e) => {
            remove();
            return Err(e);
        }
    };
    let renamed = sys(
        renameat(dirfd, temp_name.as_os_str(), dirfd, name),
        "rename temp file over",
        target,
    );
    if let Err(e) = renamed {
        remove();
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
    // Taken from the descriptor after the rename, which sets the ctime.
    let known = file.1.and_then(|digest| {
        fstat(&file.0).ok().map(|st| FileDigest {
            digest,
            identity: Identity::of(&st),
        })
    });
    Ok((Outcome::Written, known))
}

enum Filled {
    /// The render matched the current file; the temp file is to go.
    Same,
    /// Written, fsynced and mode 0644, with its digest when it was taken.
    New((File, Option<Digest>)),
}

/// Where a render goes: the temp file, through a buffer, and the hasher.
/// A failed write of the file is kept, not returned, while the render can
/// still turn out the same as the current file (then nothing needed
/// writing: a full disk does not fail an unchanged cycle).
struct Sink {
    out: BufWriter<File>,
    /// `None` when no digest is wanted: nothing to compare, nothing kept.
    hasher: Option<ContentHasher>,
    failed: Option<io::Error>,
    /// Bytes written, and how many of them write-back was started for.
    written: u64,
    flushed: u64,
    /// The current file's size, when there is one to compare with.
    current_len: Option<u64>,
}

/// Write-back of the temp file is started every this many bytes, so that
/// its `fsync` does not wait for the whole document.
const WRITEBACK_EVERY: u64 = 2 << 20;

/// How many bytes from `flushed` on to start writing back, once `written`
/// were rendered and `in_file` of them reached the file. Not while the
/// render is no longer than the current file (`current_len`): it may
/// still equal it, and then the temp file is removed without its pages
/// ever going to the disk.
fn writeback_due(
    written: u64,
    in_file: u64,
    flushed: u64,
    current_len: Option<u64>,
) -> Option<u64> {
    let pending = in_file.saturating_sub(flushed);
    let differs = current_len.is_none_or(|n| written > n);
    (differs && pending >= WRITEBACK_EVERY).then_some(pending)
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(h) = &mut self.hasher {
            h.update(data);
        }
        if self.failed.is_none() {
            if let Err(e) = self.out.write_all(data) {
                let copy = copy_error(&e);
                self.failed = Some(e);
                if self.current_len.is_none() {
                    return Err(copy);
                }
            } else {
                self.written = self.written.saturating_add(data.len() as u64);
                let in_file = self.written.saturating_sub(self.out.buffer().len() as u64);
                if let Some(len) =
                    writeback_due(self.written, in_file, self.flushed, self.current_len)
                {
                    writeback::start(self.out.get_ref().as_fd(), self.flushed, len);
                    self.flushed = in_file;
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The same error again, for the render's own error path.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn fill(
    file: File,
    temp: &Path,
    target: &Path,
    render: &mut Render<'_>,
    current: Option<&mut Current>,
    keep: bool,
) -> Result<Filled, WriteError> {
    let mut sink = Sink {
        out: BufWriter::with_capacity(BUFFER, file),
        hasher: (keep || current.is_some()).then(ContentHasher::default),
        failed: None,
        written: 0,
        flushed: 0,
        current_len: current
            .as_ref()
            .map(|c| u64::try_from(c.identity.size).unwrap_or(u64::MAX)),
    };
    let rendered = render(&mut sink);
    let write_failed = |source| WriteError {
        step: "write",
        path: temp.to_path_buf(),
        source,
    };
    if let Some(source) = sink.failed.take() {
        // A render that went on after the failed write and matched the
        // current file needed no write at all.
        let digest = sink.hasher.as_ref().map(ContentHasher::digest);
        if rendered.is_ok() && current.zip(digest).is_some_and(|(c, d)| c.holds(d)) {
            return Ok(Filled::Same);
        }
        return Err(write_failed(source));
    }
    step(rendered, "render", target)?;
    let digest = sink.hasher.as_ref().map(ContentHasher::digest);
    if current.zip(digest).is_some_and(|(c, d)| c.holds(d)) {
        return Ok(Filled::Same);
    }
    let file = match sink.out.into_inner() {
        Ok(f) => f,
        Err(e) => return Err(write_failed(e.into_error())),
    };
    step(file.sync_all(), "fsync", temp)?;
    sys(
        fchmod(&file, Mode::from_bits_truncate(FILE_MODE)),
        "chmod",
        temp,
    )?;
    Ok(Filled::New((file, digest)))
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
    fn the_content_hash_does_not_depend_on_how_bytes_are_split() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut whole = ContentHasher::default();
        whole.update(&data);
        for size in [1, 7, 8, 63, 4096] {
            let mut parts = ContentHasher::default();
            for c in data.chunks(size) {
                parts.update(c);
            }
            assert_eq!(parts.digest(), whole.digest(), "chunks of {size}");
        }
        let mut other = ContentHasher::default();
        other.update(&data[..data.len() - 1]);
        assert_ne!(other.digest(), whole.digest());
    }

    #[test]
    fn write_back_starts_only_once_the_render_cannot_be_unchanged() {
        const E: u64 = WRITEBACK_EVERY;
        // No current file: every full interval.
        assert_eq!(writeback_due(E, E, 0, None), Some(E));
        assert_eq!(writeback_due(E, E - 1, 0, None), None);
        assert_eq!(writeback_due(3 * E, 3 * E, E, None), Some(2 * E));
        // A current file of 3 intervals: nothing while the render may
        // still equal it, then all that is pending.
        assert_eq!(writeback_due(3 * E, 3 * E, 0, Some(3 * E)), None);
        assert_eq!(writeback_due(3 * E + 1, 3 * E, 0, Some(3 * E)), Some(3 * E));
    }

    /// Past the write-back interval (started early, in pieces), the file
    /// is still exactly the document, and still compared as one.
    #[test]
    fn documents_larger_than_the_writeback_interval_are_whole() {
        let d = tmpdir("writeback");
        let t = d.join("targets.json");
        let big: Vec<u8> = (0..(WRITEBACK_EVERY * 5 / 2) as usize)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let pieces = |data: Vec<u8>| {
            move |w: &mut dyn Write| {
                for c in data.chunks(100_003) {
                    w.write_all(c)?;
                }
                Ok(())
            }
        };
        let mut known = None;
        assert_eq!(
            write_known(&t, &mut pieces(big.clone()), &mut known).unwrap(),
            Outcome::Written
        );
        assert!(fs::read(&t).unwrap() == big);
        assert_eq!(
            write_known(&t, &mut pieces(big.clone()), &mut known).unwrap(),
            Outcome::Unchanged
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn without_keep_no_digest_is_left_but_unchanged_is_still_found() {
        let d = tmpdir("nokeep");
        let t = d.join("targets.json");
        let doc = |text: &'static [u8]| move |w: &mut dyn Write| w.write_all(text);
        let mut known = None;
        assert_eq!(
            write_with(&t, &mut doc(b"[1]\n"), &mut known, false).unwrap(),
            Outcome::Written
        );
        assert_eq!(known, None);
        assert_eq!(fs::read(&t).unwrap(), b"[1]\n");
        // With a current file the render is still compared with it.
        assert_eq!(
            write_with(&t, &mut doc(b"[1]\n"), &mut known, false).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(
            write_with(&t, &mut doc(b"[2]\n"), &mut known, false).unwrap(),
            Outcome::Written
        );
        assert_eq!(known, None);
        assert_eq!(fs::read(&t).unwrap(), b"[2]\n");
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_known_digest_decides_while_the_file_is_the_same_one() {
        let d = tmpdir("known");
        let t = d.join("targets.json");
        let mut known = None;
        let doc = |text: &'static [u8]| move |w: &mut dyn Write| w.write_all(text);
        assert_eq!(
            write_known(&t, &mut doc(b"[1]\n"), &mut known).unwrap(),
            Outcome::Written
        );
        let first = known.expect("known after a write");
        let ino = fs::metadata(&t).unwrap().ino();
        assert_eq!(
            write_known(&t, &mut doc(b"[1]\n"), &mut known).unwrap(),
            Outcome::Unchanged
        );
        assert_eq!(known, Some(first));
        assert_eq!(fs::metadata(&t).unwrap().ino(), ino);
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        // Changed behind our back, same length: hashed again, rewritten.
        std::thread::sleep(Duration::from_millis(5));
        fs::write(&t, b"[2]\n").unwrap();
        assert_eq!(
            write_known(&t, &mut doc(b"[1]\n"), &mut known).unwrap(),
            Outcome::Written
        );
        assert_eq!(fs::read(&t).unwrap(), b"[1]\n");
        // Removed: written again.
        fs::remove_file(&t).unwrap();
        assert_eq!(
            write_known(&t, &mut doc(b"[1]\n"), &mut known).unwrap(),
            Outcome::Written
        );
        // A digest from start-up, read through the hashing reader.
        let mut hasher = ContentHasher::default();
        let f = File::open(&t).unwrap();
        let mut r = HashingReader {
            inner: &f,
            hasher: &mut hasher,
        };
        io::copy(&mut r, &mut io::sink()).unwrap();
        let mut from_start = FileDigest::of_read(&f, &hasher);
        assert_eq!(from_start, known);
        assert_eq!(
            write_known(&t, &mut doc(b"[1]\n"), &mut from_start).unwrap(),
            Outcome::Unchanged
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn unchanged_needs_no_temp_file() {
        let d = tmpdir("ro");
        let t = d.join("targets.json");
        fs::write(&t, b"[1]\n").unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores the mode: then there is nothing to test.
        let writable = File::create(d.join("probe")).is_ok();
        let same = write_if_changed(&t, &mut |w| w.write_all(b"[1]\n"));
        let other = write_if_changed(&t, &mut |w| w.write_all(b"[2]\n"));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(same.unwrap(), Outcome::Unchanged);
        if !writable {
            assert!(other.unwrap_err().to_string().contains("EACCES"));
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn render_error_keeps_the_old_file_and_leaves_no_temp() {
        let d = tmpdir("render-err");
        let t = d.join("targets.json");
        fs::write(&t, b"old").unwrap();
        let before = fs::metadata(&t).unwrap().ino();
        // Fails after part of the document was written.
        let e = write_if_changed(&t, &mut |w| {
            w.write_all(&[b'n'; 100_000])?;
            Err(io::Error::other("renderer broke"))
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
