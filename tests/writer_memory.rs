//! A write's peak memory does not grow with the document: the comparison
//! with the old file and the write both stream. The only test in this
//! binary, so that nothing else moves the process's peak RSS.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use sd_updater::output::writer::{write_if_changed, Outcome};

/// Peak resident set (VmHWM) of this process, in KiB.
fn peak_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const SIZE: usize = 128 << 20;

/// `SIZE` bytes, generated piece by piece; `last` is the final byte.
fn document(last: u8) -> impl FnMut(&mut dyn Write) -> io::Result<()> {
    move |w: &mut dyn Write| {
        let piece: Vec<u8> = (0..4096u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut left = SIZE;
        while left > 0 {
            let n = left.min(piece.len());
            if left == n {
                w.write_all(&piece[..n - 1])?;
                w.write_all(&[last])?;
            } else {
                w.write_all(&piece[..n])?;
            }
            left -= n;
        }
        Ok(())
    }
}

#[test]
fn peak_memory_of_a_write_does_not_grow_with_the_document() {
    let dir: PathBuf = std::env::temp_dir().join(format!("sdu-mem-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.join("targets.json");
    // Warm up allocator and buffers with a small write.
    write_if_changed(&target, &mut |w| w.write_all(b"[]\n")).unwrap();
    let before = peak_kib();

    let steps: [(&str, u8, Outcome); 3] = [
        ("new", b'x', Outcome::Written),
        ("same", b'x', Outcome::Unchanged),
        ("last byte differs", b'y', Outcome::Written),
    ];
    for (what, last, expected) in steps {
        let got = write_if_changed(&target, &mut document(last)).unwrap();
        assert_eq!(got, expected, "{what}");
        let grown = peak_kib().saturating_sub(before);
        assert!(
            grown < 16 * 1024,
            "{what}: peak RSS grew by {grown} KiB for a {} MiB document",
            SIZE >> 20
        );
    }
    assert_eq!(fs::metadata(&target).unwrap().len(), SIZE as u64);
    fs::remove_dir_all(&dir).unwrap();
}
