//! Dropping root: the unit starts us as root only so that we can become
//! the unprivileged service user before touching the network or files.

use std::ffi::CString;
use std::fmt;

use nix::unistd::{self, Gid, Uid, User};

#[derive(Debug)]
pub enum DropError {
    /// The configured user does not exist: a configuration error.
    UnknownUser(String),
    /// A system call failed: a runtime error.
    Failed(String),
}

impl fmt::Display for DropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropError::UnknownUser(u) => write!(f, "RUN_AS_USER: user {u:?} does not exist"),
            DropError::Failed(m) => f.write_str(m),
        }
    }
}

/// What happened to our privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not started as root: nothing to drop.
    NotRoot,
    /// `RUN_AS_USER` names root: an explicit opt-out.
    StayedRoot,
    Dropped {
        user: String,
        uid: u32,
        gid: u32,
    },
}

/// Resolves `spec`, a user name or numeric UID.
pub fn lookup(spec: &str) -> Result<User, DropError> {
    let found = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        spec.parse::<u32>()
            .ok()
            .and_then(|uid| User::from_uid(Uid::from_raw(uid)).ok().flatten())
    } else {
        User::from_name(spec).ok().flatten()
    };
    found.ok_or_else(|| DropError::UnknownUser(spec.to_string()))
}

fn failed(what: &str, e: impl fmt::Display) -> DropError {
    DropError::Failed(format!("cannot drop privileges: {what}: {e}"))
}

/// When running as root: calls `prepare` with the user's uid and gid (to
/// create what the user needs while we still can), then switches groups,
/// gid and uid for good and sets no_new_privs.
pub fn drop_to(
    spec: &str,
    prepare: &mut dyn FnMut(Uid, Gid) -> Result<(), String>,
) -> Result<Outcome, DropError> {
    if !unistd::geteuid().is_root() {
        return Ok(Outcome::NotRoot);
    }
    let user = lookup(spec)?;
    if user.uid.is_root() {
        return Ok(Outcome::StayedRoot);
    }
    let (uid, gid) = (user.uid, user.gid);
    prepare(uid, gid).map_err(|e| DropError::Failed(format!("cannot drop privileges: {e}")))?;

    let name = CString::new(user.name.as_str()).map_err(|e| failed("user name", e))?;
    unistd::initgroups(&name, gid).map_err(|e| failed("initgroups", e))?;
    unistd::setresgid(gid, gid, gid).map_err(|e| failed("setresgid", e))?;
    unistd::setresuid(uid, uid, uid).map_err(|e| failed("setresuid", e))?;

    clear_capabilities()?;

    // Proof that there is no way back.
    if unistd::setuid(Uid::from_raw(0)).is_ok() || unistd::seteuid(Uid::from_raw(0)).is_ok() {
        return Err(failed("verify", "root could be regained"));
    }
    let r = unistd::getresuid().map_err(|e| failed("getresuid", e))?;
    let g = unistd::getresgid().map_err(|e| failed("getresgid", e))?;
    if [r.real, r.effective, r.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err(failed("verify", "ids did not all change"));
    }
    if unistd::getgroups()
        .map_err(|e| failed("getgroups", e))?
        .contains(&Gid::from_raw(0))
    {
        return Err(failed("verify", "still in the root group"));
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| failed("PR_SET_NO_NEW_PRIVS", e))?;
    Ok(Outcome::Dropped {
        user: user.name,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    })
}

/// Empties the inheritable and ambient capability sets. setresuid() clears
/// the permitted and effective sets but leaves the inheritable one, which
/// some supervisors (systemd 257) fill from the bounding set.
fn clear_capabilities() -> Result<(), DropError> {
    use nix::libc;

    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default, PartialEq, Eq)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;

    // SAFETY: plain prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(failed(
            "clear ambient capabilities",
            nix::errno::Errno::last(),
        ));
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let empty = [Data::default(); 2];
    let read = |header: &mut Header| -> Result<[Data; 2], DropError> {
        let mut now = [Data::default(); 2];
        // SAFETY: capget writes one header and two data structs for version 3.
        let r = unsafe { libc::syscall(libc::SYS_capget, header as *mut Header, now.as_mut_ptr()) };
        if r != 0 {
            return Err(failed("capget", nix::errno::Errno::last()));
        }
        Ok(now)
    };
    // Usually nothing is left, and capset need not be allowed at all.
    if read(&mut header)? == empty {
        return Ok(());
    }
    // SAFETY: capset reads one header and, for version 3, two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, empty.as_ptr()) };
    if r != 0 {
        return Err(failed("capset", nix::errno::Errno::last()));
    }
    if read(&mut header)? != empty {
        return Err(failed("verify", "capabilities remain after the drop"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_name_and_uid() {
        assert_eq!(lookup("root").unwrap().uid.as_raw(), 0);
        assert_eq!(lookup("0").unwrap().name, "root");
        assert!(matches!(
            lookup("no-such-user-sdu"),
            Err(DropError::UnknownUser(u)) if u == "no-such-user-sdu"
        ));
        assert!(lookup("4000000000").is_err());
    }
}
