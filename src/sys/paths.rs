//! Paths reached without trusting them: directories one component at a
//! time from file descriptors, files through their directory's descriptor,
//! no symbolic link followed where root could be redirected, and nothing
//! but regular files opened. The targets writer and the secret files share
//! it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, Uid, UnlinkatFlags, User};

/// Mode of the directories created on the way.
const DIR_MODE: u32 = 0o755;

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
            .map(|n| format!("{:?}: ", Errno::from_raw(n)))
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

pub(crate) fn step<T>(r: io::Result<T>, step: &'static str, path: &Path) -> Result<T, WriteError> {
    r.map_err(|source| WriteError {
        step,
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn sys<T>(r: nix::Result<T>, what: &'static str, path: &Path) -> Result<T, WriteError> {
    step(r.map_err(io::Error::from), what, path)
}

/// A refusal that is not an errno: the message says why.
pub(crate) fn refused(what: &'static str, path: &Path, why: String) -> WriteError {
    WriteError {
        step: what,
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::PermissionDenied, why),
    }
}

/// The directory that holds `target` (`.` for a bare file name).
pub fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn file_name(target: &Path) -> Result<&OsStr, WriteError> {
    target.file_name().ok_or_else(|| WriteError {
        step: "use",
        path: target.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })
}

/// How far the directories on the way to the target are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Not root: the kernel's permission checks already bound what a
    /// changed path can make us do.
    Any,
    /// Root: no symbolic link anywhere, and every directory owned by root
    /// or `service_uid` and not writable by others unless it is sticky
    /// (the path-transition rule of systemd-tmpfiles).
    Strict { service_uid: u32 },
}

impl Trust {
    /// `Strict` for root (which then is its own service user), else `Any`.
    pub fn current() -> Trust {
        if nix::unistd::geteuid().is_root() {
            Trust::Strict { service_uid: 0 }
        } else {
            Trust::Any
        }
    }

    /// O_PATH needs only search permission, as a path lookup does.
    fn dir_flags(self) -> OFlag {
        self.with_nofollow(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
    }

    /// A directory we created is opened for real: fchown and fchmod do not
    /// work through O_PATH.
    fn created_dir_flags(self) -> OFlag {
        self.with_nofollow(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
    }

    fn with_nofollow(self, flags: OFlag) -> OFlag {
        match self {
            Trust::Any => flags,
            Trust::Strict { .. } => flags | OFlag::O_NOFOLLOW,
        }
    }
}

/// A directory this run created, held open so that it can be handed over
/// through its descriptor rather than by name.
#[derive(Debug)]
pub struct CreatedDir {
    pub path: PathBuf,
    pub fd: OwnedFd,
    /// Its parent and name, to remove it again if the walk fails.
    parent: OwnedFd,
    name: OsString,
}

/// Removes directories this run created, innermost first; only empty ones
/// go (`rmdir`), so nothing anyone put there meanwhile is lost.
pub(crate) fn remove_created(created: &[CreatedDir]) {
    for d in created.iter().rev() {
        if let Err(e) = unlinkat(&d.parent, d.name.as_os_str(), UnlinkatFlags::RemoveDir) {
            log::warn!(
                "Cannot remove directory {} created by this run: {e}",
                d.path.display()
            );
        }
    }
}

/// Opens `dir`, creating what is missing with mode 0755. Returns its
/// descriptor and the directories created, outermost first.
pub fn create_dirs(dir: &Path, trust: Trust) -> Result<(OwnedFd, Vec<CreatedDir>), WriteError> {
    let mut created = Vec::new();
    match walk(dir, trust, Some(&mut created))? {
        Some(fd) => Ok((fd, created)),
        None => Err(WriteError {
            step: "create directory",
            path: dir.to_path_buf(),
            source: io::Error::from(io::ErrorKind::NotFound),
        }),
    }
}

/// Opens `dir` without creating anything; `None` when part of it is missing.
pub fn open_dir(dir: &Path, trust: Trust) -> Result<Option<OwnedFd>, WriteError> {
    walk(dir, trust, None)
}

/// Walks `dir` from `/` (or from the working directory for a relative
/// path) one component at a time, checking each directory on the way. On
/// failure, the directories this walk created are removed again.
pub(crate) fn walk(
    dir: &Path,
    trust: Trust,
    created: Option<&mut Vec<CreatedDir>>,
) -> Result<Option<OwnedFd>, WriteError> {
    // As root, `..` would step back out of a checked directory into one
    // the walk never meant to use.
    if matches!(trust, Trust::Strict { .. }) && dir.components().any(|c| c == Component::ParentDir)
    {
        return Err(refused(
            "use directory",
            dir,
            "it holds a `..` component, which as root the agent does not follow: \
             give the real path"
                .into(),
        ));
    }
    match created {
        Some(list) => {
            let before = list.len();
            let result = walk_steps(dir, trust, Some(list));
            if result.is_err() {
                if let Some(ours) = list.get(before..) {
                    remove_created(ours);
                }
                list.truncate(before);
            }
            result
        }
        None => walk_steps(dir, trust, None),
    }
}

pub(crate) fn walk_steps(
    dir: &Path,
    trust: Trust,
    mut created: Option<&mut Vec<CreatedDir>>,
) -> Result<Option<OwnedFd>, WriteError> {
    let (start, mut shown) = if dir.has_root() {
        (Path::new("/"), PathBuf::from("/"))
    } else {
        (Path::new("."), PathBuf::new())
    };
    let mut fd = sys(
        openat(AT_FDCWD, start, trust.dir_flags(), Mode::empty()),
        "open directory",
        start,
    )?;
    check_dir(&fd, start, trust)?;
    for component in dir.components() {
        let name = match component {
            Component::Normal(n) => n,
            Component::ParentDir => OsStr::new(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        };
        shown.push(name);
        fd = match openat(&fd, name, trust.dir_flags(), Mode::empty()) {
            Ok(next) => {
                check_dir(&next, &shown, trust)?;
                next
            }
            Err(Errno::ENOENT) => match created.as_deref_mut() {
                Some(list) => make_dir(&fd, name, &shown, dir, trust, list)?,
                None => return Ok(None),
            },
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                return Err(not_a_dir(&fd, name, &shown, dir, trust, e))
            }
            Err(e) => return Err(errno_error("open directory", &shown, e)),
        };
    }
    Ok(Some(fd))
}

/// Creates `name` in `parent` and opens it; it is ours only if the
/// directory we then hold is owned by us.
pub(crate) fn make_dir(
    parent: &OwnedFd,
    name: &OsStr,
    shown: &Path,
    dir: &Path,
    trust: Trust,
    created: &mut Vec<CreatedDir>,
) -> Result<OwnedFd, WriteError> {
    let made = match mkdirat(parent, name, Mode::from_bits_truncate(DIR_MODE)) {
        Ok(()) => true,
        // Someone else created it meanwhile: check it like any other.
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(errno_error("create directory", shown, e)),
    };
    let flags = if made {
        trust.created_dir_flags()
    } else {
        trust.dir_flags()
    };
    let fd = match openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
            return Err(not_a_dir(parent, name, shown, dir, trust, e))
        }
        Err(e) => return Err(errno_error("open directory", shown, e)),
    };
    if !made {
        check_dir(&fd, shown, trust)?;
        return Ok(fd);
    }
    let st = sys(fstat(&fd), "stat directory", shown)?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(refused(
            "create directory",
            shown,
            "it was replaced by another directory while it was being created".into(),
        ));
    }
    // The umask must not narrow the mode Prometheus needs.
    sys(
        fchmod(&fd, Mode::from_bits_truncate(DIR_MODE)),
        "chmod directory",
        shown,
    )?;
    let held = step(fd.try_clone(), "duplicate the descriptor of", shown)?;
    let parent = step(parent.try_clone(), "duplicate the descriptor of", shown)?;
    created.push(CreatedDir {
        path: shown.to_path_buf(),
        fd: held,
        parent,
        name: name.to_os_string(),
    });
    Ok(fd)
}

pub(crate) fn errno_error(what: &'static str, path: &Path, e: Errno) -> WriteError {
    WriteError {
        step: what,
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

/// Why `name` in `parent` could not be opened as a directory: a symbolic
/// link (refused as root) or something else.
pub(crate) fn not_a_dir(
    parent: &OwnedFd,
    name: &OsStr,
    shown: &Path,
    dir: &Path,
    trust: Trust,
    e: Errno,
) -> WriteError {
    let is_link = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map(|st| kind(&st) == SFlag::S_IFLNK)
        .unwrap_or(false);
    if !(is_link && matches!(trust, Trust::Strict { .. })) {
        return errno_error("open directory", shown, e);
    }
    // Only to point the operator at the right value: the one link is
    // read, nothing is followed or opened.
    let real = readlinkat(parent, name).ok().map(|to| {
        let to = Path::new(&to);
        let base = if to.is_absolute() {
            to.to_path_buf()
        } else {
            parent_dir(shown).join(to)
        };
        base.join(dir.strip_prefix(shown).unwrap_or(Path::new("")))
    });
    let hint = match real {
        Some(r) => format!("; the directory it leads to is {}", r.display()),
        None => String::new(),
    };
    refused(
        "use directory",
        shown,
        format!(
            "it is a symbolic link, and as root the agent follows none on the way to \
             a file it reads or writes: give the real path{hint}"
        ),
    )
}

/// As root: the directory must be owned by root or the service user, and
/// writable by nobody else unless the sticky bit is set.
pub(crate) fn check_dir(fd: &OwnedFd, shown: &Path, trust: Trust) -> Result<(), WriteError> {
    let Trust::Strict { service_uid } = trust else {
        return Ok(());
    };
    let shown = if shown.as_os_str().is_empty() {
        Path::new(".")
    } else {
        shown
    };
    let st = sys(fstat(fd), "stat directory", shown)?;
    if st.st_uid != 0 && st.st_uid != service_uid {
        return Err(refused(
            "use directory",
            shown,
            format!(
                "it is owned by {}, neither root nor the service user, who could swap what \
                 is in it while root works there (a path transition systemd-tmpfiles refuses too)",
                user_name(st.st_uid)
            ),
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & Mode::S_ISVTX.bits() == 0 {
        return Err(refused(
            "use directory",
            shown,
            format!(
                "it is writable by group or others (mode {mode:04o}) without the sticky bit, \
                 so another user could swap what is in it (a path transition systemd-tmpfiles refuses too)"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub(crate) fn kind_name(k: SFlag) -> &'static str {
    match k {
        SFlag::S_IFIFO => "a FIFO (named pipe)",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFSOCK => "a socket",
        _ => "something else",
    }
}

pub(crate) fn not_regular(target: &Path, what: &str) -> WriteError {
    WriteError {
        step: "use",
        path: target.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file, and is left alone"),
        ),
    }
}

pub(crate) fn require_regular(st: &FileStat, target: &Path) -> Result<(), WriteError> {
    match kind(st) {
        SFlag::S_IFREG => Ok(()),
        k => Err(not_regular(target, kind_name(k))),
    }
}

/// What is at the target's name now.
pub(crate) enum Existing {
    Missing,
    File(File),
    /// There, but not readable by us: writing a new one may still work.
    Unreadable(io::Error),
}

/// Opens the existing target without following a symbolic link or
/// blocking on a FIFO; anything but a regular file is an error.
pub(crate) fn open_existing(
    dirfd: &OwnedFd,
    name: &OsStr,
    target: &Path,
) -> Result<Existing, WriteError> {
    // Look first: merely opening some devices has effects.
    match fstatat(dirfd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => require_regular(&st, target)?,
        Err(Errno::ENOENT) => return Ok(Existing::Missing),
        Err(e) => return Ok(Existing::Unreadable(e.into())),
    }
    let flags = OFlag::O_RDONLY
        | OFlag::O_NONBLOCK
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(dirfd, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Existing::Missing),
        Err(Errno::ELOOP) => return Err(not_regular(target, kind_name(SFlag::S_IFLNK))),
        Err(Errno::ENXIO) => return Err(not_regular(target, kind_name(SFlag::S_IFSOCK))),
        Err(e) => return Ok(Existing::Unreadable(e.into())),
    };
    // Swapped between the look and the open: the descriptor decides.
    require_regular(&sys(fstat(&fd), "stat", target)?, target)?;
    Ok(Existing::File(File::from(fd)))
}

/// Reads the regular file `path`, at most `limit` bytes (more is an
/// error): its directories are walked as `trust` allows, the file itself
/// is opened without following a symbolic link and without blocking on a
/// FIFO, and anything but a regular file is refused.
pub fn read_regular(path: &Path, trust: Trust, limit: u64) -> Result<Vec<u8>, WriteError> {
    let name = file_name(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let missing = || errno_error("open", path, Errno::ENOENT);
    let Some(dirfd) = walk(dir, trust, None)? else {
        return Err(missing());
    };
    let file = match open_existing(&dirfd, name, path)? {
        Existing::Missing => return Err(missing()),
        Existing::Unreadable(source) => {
            return Err(WriteError {
                step: "open",
                path: path.to_path_buf(),
                source,
            })
        }
        Existing::File(f) => f,
    };
    let mut buf = Vec::new();
    step(
        file.take(limit.saturating_add(1)).read_to_end(&mut buf),
        "read",
        path,
    )?;
    if buf.len() as u64 > limit {
        return Err(refused(
            "read",
            path,
            format!("it is larger than {limit} bytes"),
        ));
    }
    Ok(buf)
}
