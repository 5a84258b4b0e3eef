//! Publishing a document at a path: written through the atomic writer
//! unless the file already holds it, and the outcome logged with the same
//! journald fields whether the daemon or `--once` publishes.

use std::path::Path;
use std::time::{Duration, SystemTime};

use log::Level;

use crate::model::targets::{TargetGroup, TargetSet};
use crate::model::text::count;
use crate::output::writer::{self, FileDigest, Interruptible, Outcome, Render, WriteError};
use crate::sys::clock;

/// A document to publish: where it goes and how it renders.
pub struct Document<'a> {
    pub path: &'a Path,
    /// Produces the content, once per write. An error leaves the old file
    /// as it is.
    pub render: &'a mut Render<'a>,
    /// What the file held when last read or written; the write updates it.
    pub known: &'a mut Option<FileDigest>,
    /// Whether `known` is wanted after the write (a daemon's next cycle);
    /// without it a new file's content is not hashed.
    pub keep: bool,
}

/// Writes `doc` unless its file already holds exactly that. Once `stop`
/// returns true, a write in progress is abandoned and the old file stays.
pub fn write(doc: Document<'_>, stop: &dyn Fn() -> bool) -> Result<Outcome, WriteError> {
    let render = doc.render;
    writer::write_with(
        doc.path,
        &mut |w| render(&mut Interruptible::new(w, stop)),
        doc.known,
        doc.keep,
    )
}

/// The fetch that produced a targets document.
#[derive(Debug, Clone, Copy)]
pub struct Fetched<'a> {
    pub sensor_count: usize,
    pub invalid_count: usize,
    pub attempt: u32,
    pub duration: Duration,
    /// Where from, password redacted: the INVENTORY_URL field.
    pub source: &'a str,
}

/// The `Successfully fetched` line.
pub fn log_fetched(f: &Fetched<'_>, level: Level) {
    log::log!(
        level,
        SENSOR_COUNT = f.sensor_count, DURATION_MS = millis(f.duration),
        ATTEMPT = f.attempt, INVENTORY_URL = f.source;
        "Successfully fetched {} in {}", count(f.sensor_count, "sensor", "sensors"), clock::human(f.duration)
    );
}

/// What a failure message adds after the error.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnFailure<'a> {
    /// What stays in place (`keeping 3 targets from 12:00:00 UTC`); empty
    /// for nothing to say.
    pub kept: &'a str,
    /// When the next try comes, if there is one.
    pub next_attempt: Option<SystemTime>,
}

#[derive(Debug)]
pub struct Published {
    pub changed: bool,
    /// Targets in the document.
    pub target_count: usize,
    pub added: usize,
    pub removed: usize,
    /// What the file holds now; `None` when the caller did not ask to keep
    /// it and the counts did not need it.
    pub targets: Option<TargetSet>,
}

#[derive(Debug)]
pub enum Failed {
    /// `stop` abandoned the write; the old file stays.
    Abandoned,
    /// The write failed; the old file stays. The reason, for STATUS=.
    Write(String),
}

/// Publishes a targets document rendered from `groups` and logs the
/// outcome. ADDED and REMOVED count against `previous`, the targets the
/// file held (`None`: unknown, so every target counts as added), which is
/// taken. The new set (one hash a target) is built only when `keep` asks
/// for it or the counts need it; an unchanged file keeps `previous`.
pub fn publish_targets(
    doc: Document<'_>,
    groups: &[TargetGroup],
    fetched: &Fetched<'_>,
    previous: &mut Option<TargetSet>,
    keep: bool,
    stop: &dyn Fn() -> bool,
    on_failure: &OnFailure<'_>,
) -> Result<Published, Failed> {
    let shown = doc.path.display().to_string();
    let outcome = write(doc, stop);
    let n = groups.iter().map(|g| g.targets.len()).sum();
    let (ms, attempt) = (millis(fetched.duration), fetched.attempt);
    let (sensors, invalid) = (fetched.sensor_count, fetched.invalid_count);
    let changed = matches!(outcome, Ok(Outcome::Written));
    // An unchanged cycle is one line at info; the fetch details are in it.
    log_fetched(
        fetched,
        if matches!(outcome, Ok(Outcome::Unchanged)) {
            Level::Debug
        } else {
            Level::Info
        },
    );
    match outcome {
        Ok(_) => {
            let (targets, added, removed) = match previous.take() {
                Some(old) if changed => {
                    let new = TargetSet::of(groups);
                    let (added, removed) = old.diff(&new);
                    (Some(new), added, removed)
                }
                // The file holds what it held: so do its targets.
                Some(old) => (Some(old), 0, 0),
                None => {
                    let new = keep.then(|| TargetSet::of(groups));
                    (new, if changed { n } else { 0 }, 0)
                }
            };
            if changed {
                log::info!(
                    TARGET_COUNT = n, SENSOR_COUNT = sensors, INVALID_COUNT = invalid,
                    ADDED = added, REMOVED = removed, CHANGED = true, ATTEMPT = attempt,
                    DURATION_MS = ms, TARGETS_FILE = shown.as_str();
                    "Successfully updated targets file: {shown} ({}, {added} added, {removed} removed)",
                    count(n, "target", "targets")
                );
            } else {
                log::info!(
                    TARGET_COUNT = n, SENSOR_COUNT = sensors, INVALID_COUNT = invalid,
                    ADDED = 0, REMOVED = 0, CHANGED = false, ATTEMPT = attempt,
                    DURATION_MS = ms, TARGETS_FILE = shown.as_str();
                    "Targets unchanged ({} from {} fetched in {}{}); {shown} left as it is",
                    count(n, "target", "targets"),
                    count(sensors, "sensor", "sensors"),
                    clock::human(fetched.duration),
                    if attempt > 1 { format!(" on attempt {attempt}") } else { String::new() }
                );
            }
            Ok(Published {
                changed,
                target_count: n,
                added,
                removed,
                targets,
            })
        }
        Err(e) if stop() => {
            log::info!(
                TARGETS_FILE = shown.as_str();
                "Stopping: write of {shown} abandoned ({e}){}", suffix(on_failure.kept)
            );
            Err(Failed::Abandoned)
        }
        Err(e) => {
            let reason = e.to_string();
            let next = on_failure
                .next_attempt
                .map(|t| format!("; next attempt at {} UTC", clock::time_of_day(t)))
                .unwrap_or_default();
            log::error!(
                ERROR = reason.as_str(), TARGETS_FILE = shown.as_str();
                "Failed to write targets file {shown}: {reason}{}{next}", suffix(on_failure.kept)
            );
            Err(Failed::Write(reason))
        }
    }
}

fn suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("; {text}")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::targets::{render_to, TargetGroup, TargetList};
    use std::cell::Cell;
    use std::fs;
    use std::io::{self, Write};
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdu-publish-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn list(n: usize, from: usize) -> TargetList {
        let mut l = TargetList::new();
        for i in from..from + n {
            l.push(&format!("sensor-{i:06}"), 9100).unwrap();
        }
        l.finish();
        l
    }

    fn group(targets: TargetList) -> TargetGroup {
        TargetGroup::new(targets, "/metrics", &[])
    }

    fn fetched() -> Fetched<'static> {
        Fetched {
            sensor_count: 3,
            invalid_count: 0,
            attempt: 1,
            duration: Duration::from_millis(5),
            source: "file:///inventory.json",
        }
    }

    /// A writer that fails once `left` bytes have gone through.
    struct FailAfter<'a> {
        inner: &'a mut dyn Write,
        left: usize,
    }

    impl Write for FailAfter<'_> {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("render broke"));
            }
            let n = data.len().min(self.left);
            self.left -= n;
            self.inner.write(data.get(..n).unwrap_or_default())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    /// A render that fails partway, or a stop partway through a write,
    /// never leaves an empty, partial or `[]` file: an old file stays as it
    /// was, and without one no file appears.
    #[test]
    fn a_failed_render_never_publishes_part_of_a_document() {
        let d = tmpdir("partial");
        let t = d.join("targets.json");
        let groups = [group(list(20_000, 0))];
        let full = crate::model::targets::render(&groups).unwrap();
        assert!(full.len() > 4 * 64 * 1024, "{}", full.len());
        for old in [None, Some(b"old content\n".to_vec())] {
            for cut in [0, 1, 100, 64 * 1024, full.len() / 2, full.len() - 1] {
                let _ = fs::remove_file(&t);
                if let Some(o) = &old {
                    fs::write(&t, o).unwrap();
                }
                let ino = old.as_ref().map(|_| fs::metadata(&t).unwrap().ino());
                let mut render = |w: &mut dyn Write| {
                    render_to(
                        &mut FailAfter {
                            inner: w,
                            left: cut,
                        },
                        &groups,
                    )
                };
                let doc = Document {
                    path: &t,
                    render: &mut render,
                    known: &mut None,
                    keep: true,
                };
                let e = write(doc, &|| false).unwrap_err();
                assert!(e.to_string().contains("render broke"), "{e}");
                match &old {
                    Some(o) => {
                        assert_eq!(&fs::read(&t).unwrap(), o, "cut at {cut}");
                        assert_eq!(Some(fs::metadata(&t).unwrap().ino()), ino);
                        assert_eq!(names(&d), ["targets.json"], "cut at {cut}");
                    }
                    None => assert!(names(&d).is_empty(), "cut at {cut}: {:?}", names(&d)),
                }
            }
            // A stop request after the first chunk abandons the write.
            let calls = Cell::new(0);
            let stop = || {
                calls.set(calls.get() + 1);
                calls.get() > 1
            };
            let _ = fs::remove_file(&t);
            if let Some(o) = &old {
                fs::write(&t, o).unwrap();
            }
            let mut render = |w: &mut dyn Write| render_to(w, &groups);
            let doc = Document {
                path: &t,
                render: &mut render,
                known: &mut None,
                keep: true,
            };
            let mut previous = None;
            let r = publish_targets(
                doc,
                &groups,
                &fetched(),
                &mut previous,
                true,
                &stop,
                &OnFailure::default(),
            );
            assert!(matches!(r, Err(Failed::Abandoned)), "{r:?}");
            match &old {
                Some(o) => assert_eq!(&fs::read(&t).unwrap(), o),
                None => assert!(names(&d).is_empty(), "{:?}", names(&d)),
            }
        }
        // Nothing stopping it, the whole document is written.
        let mut render = |w: &mut dyn Write| render_to(w, &groups);
        let doc = Document {
            path: &t,
            render: &mut render,
            known: &mut None,
            keep: true,
        };
        assert_eq!(write(doc, &|| false).unwrap(), Outcome::Written);
        assert_eq!(fs::read(&t).unwrap(), full);
        fs::remove_dir_all(&d).unwrap();
    }

    fn publish(t: &Path, targets: TargetList, previous: &mut Option<TargetSet>) -> Published {
        let groups = [group(targets)];
        let mut render = |w: &mut dyn Write| render_to(w, &groups);
        let doc = Document {
            path: t,
            render: &mut render,
            known: &mut None,
            keep: true,
        };
        publish_targets(
            doc,
            &groups,
            &fetched(),
            previous,
            true,
            &|| false,
            &OnFailure::default(),
        )
        .unwrap()
    }

    #[test]
    fn added_and_removed_count_against_the_previous_targets() {
        let d = tmpdir("diff");
        let t = d.join("targets.json");
        // Nothing known: everything written counts as added.
        let mut prev = None;
        let p = publish(&t, list(3, 0), &mut prev);
        assert_eq!((p.changed, p.added, p.removed), (true, 3, 0));
        assert_eq!(p.targets.as_ref().map(TargetSet::len), Some(3));
        // The same targets: unchanged, nothing added or removed.
        let mut prev = p.targets;
        let p = publish(&t, list(3, 0), &mut prev);
        assert_eq!((p.changed, p.added, p.removed), (false, 0, 0));
        // Two go, one stays, four come.
        let mut prev = p.targets;
        let p = publish(&t, list(5, 2), &mut prev);
        assert_eq!((p.changed, p.added, p.removed), (true, 4, 2));
        assert!(prev.is_none(), "the old set is taken");
        // Nothing known and nothing to keep: no set is built.
        let groups = [group(list(2, 0))];
        let mut render = |w: &mut dyn Write| render_to(w, &groups);
        let other = d.join("other.json");
        let doc = Document {
            path: &other,
            render: &mut render,
            known: &mut None,
            keep: true,
        };
        let mut none = None;
        let p = publish_targets(
            doc,
            &groups,
            &fetched(),
            &mut none,
            false,
            &|| false,
            &OnFailure::default(),
        )
        .unwrap();
        assert_eq!((p.changed, p.added, p.removed), (true, 2, 0));
        assert!(p.targets.is_none());
        // The file unchanged but its previous content unknown: nothing added.
        let mut prev = None;
        let p = publish(&t, list(5, 2), &mut prev);
        assert_eq!((p.changed, p.added, p.removed), (false, 0, 0));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_previous_targets() {
        let d = tmpdir("failed");
        let blocked = d.join("blocked.json");
        fs::create_dir(&blocked).unwrap();
        let groups = [group(list(2, 0))];
        let mut render = |w: &mut dyn Write| render_to(w, &groups);
        let doc = Document {
            path: &blocked,
            render: &mut render,
            known: &mut None,
            keep: true,
        };
        let mut prev = Some(TargetSet::of(&[group(list(1, 0))]));
        let r = publish_targets(
            doc,
            &groups,
            &fetched(),
            &mut prev,
            true,
            &|| false,
            &OnFailure::default(),
        );
        match r {
            Err(Failed::Write(reason)) => assert!(reason.contains("blocked.json"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(prev.map(|p| p.len()), Some(1));
        fs::remove_dir_all(&d).unwrap();
    }
}
