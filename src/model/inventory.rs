//! The inventory document: a JSON array of sensor names, of names and entry
//! objects (`{"name", "port", "labels"}`), or of Prometheus target groups
//! (`{"targets", "labels"}`). Parsing is strict about the shape and lenient
//! about single bad entries, which are dropped.
//!
//! The body is read in one streaming pass: each element is validated as it
//! arrives and only valid targets are kept, compactly, so memory stays a
//! small multiple of the body whatever it holds.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::model::address;
use crate::model::labels::{self, MAX_LABELS};
use crate::model::names;
use crate::model::par::{self, Apart};
use crate::model::targets::{merge_labels, CapacityError, Entries, Labels};
use crate::model::text::{self, Class};

/// At most this many dropped entries are kept, to be logged one by one.
pub const MAX_EXAMPLES: usize = 100;

/// Why a response body is not an inventory. The cycle fails and the old
/// targets file stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entry that was dropped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry, already escaped and cut short for a log line.
    pub entry: String,
    pub reason: &'static str,
}

/// The validated inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validated {
    /// Every entry (a name, an entry object, or one target of a group),
    /// duplicates and invalid ones included.
    pub sensor_count: usize,
    pub invalid_count: usize,
    /// The first [`MAX_EXAMPLES`] invalid entries.
    pub rejected: Vec<Rejected>,
    /// Grouped by their labels (with the defaults the collector was given),
    /// each group sorted and unique.
    pub targets: Entries,
}

/// Why an entry is dropped when its address is already taken by an entry
/// with other labels.
pub const CONFLICT: &str = "conflicting duplicate: the same address with other labels came first";

/// Validates entries one at a time, keeping the good ones even when others
/// are bad.
pub struct Collector {
    default_port: u16,
    /// The labels of a plain name: `__metrics_path__` and the configured
    /// labels, which an entry's own labels override.
    defaults: Labels,
    /// The group of plain names, once there is one.
    plain: Option<usize>,
    /// The own labels of the last entry or group that had some, and its
    /// group: neighbours usually share labels, and skip the merge.
    last_own: Labels,
    last_group: Option<usize>,
    v: Validated,
    /// The previous entry, when a short plain name, and why it was refused
    /// (`None`: valid): a run of one entry is validated once.
    last: Vec<u8>,
    last_outcome: Option<Option<&'static str>>,
    /// As given to [`Entries::set_label_budget`], for a fresh start.
    label_budget: Option<usize>,
}

/// Longest entry remembered as the previous one; no valid entry is longer.
const MAX_REMEMBERED: usize = 300;

impl Collector {
    /// A collector without default labels: targets are grouped by their
    /// own labels only.
    pub fn new(default_port: u16) -> Collector {
        Collector::with_defaults(default_port, Vec::new())
    }

    /// A collector whose groups carry their final labels: `defaults`
    /// overridden by each entry's own. Entries whose labels only repeat a
    /// default are in the same group as plain names.
    pub fn with_defaults(default_port: u16, defaults: Labels) -> Collector {
        Collector {
            default_port,
            defaults,
            plain: None,
            last_own: Vec::new(),
            last_group: None,
            v: Validated::default(),
            last: Vec::with_capacity(MAX_REMEMBERED),
            last_outcome: None,
            label_budget: None,
        }
    }

    /// Caps what distinct label sets may cost: [`Entries::set_label_budget`].
    fn set_label_budget(&mut self, bytes: usize) {
        self.label_budget = Some(bytes);
        self.v.targets.set_label_budget(bytes);
    }

    /// Forgets every entry: a collector as it was made.
    fn restart(&mut self) {
        let defaults = std::mem::take(&mut self.defaults);
        let mut fresh = Collector::with_defaults(self.default_port, defaults);
        if let Some(bytes) = self.label_budget {
            fresh.set_label_budget(bytes);
        }
        *self = fresh;
    }

    /// A fresh collector as this one was made: to read a later part of
    /// the same body at the same time, and [`Collector::absorb`] after.
    fn sibling(&self) -> Collector {
        let mut c = Collector::with_defaults(self.default_port, self.defaults.clone());
        if let Some(bytes) = self.label_budget {
            c.set_label_budget(bytes);
        }
        c
    }

    /// Takes over what `later` collected of plain names from the part of
    /// the body after this one's, as if this one had read on.
    fn absorb(&mut self, later: Collector) -> Result<(), ShapeError> {
        let Validated {
            sensor_count,
            invalid_count,
            rejected,
            mut targets,
        } = later.v;
        self.v.sensor_count = self.v.sensor_count.saturating_add(sensor_count);
        self.v.invalid_count = self.v.invalid_count.saturating_add(invalid_count);
        let room = MAX_EXAMPLES.saturating_sub(self.v.rejected.len());
        self.v.rejected.extend(rejected.into_iter().take(room));
        if let Some(theirs) = later.plain {
            let list = targets.take_group(theirs);
            let mine = self.plain_group()?;
            self.v.targets.append_to(mine, list).map_err(keep_error)?;
        }
        Ok(())
    }

    /// Adds one plain name.
    pub fn add(&mut self, entry: &str) -> Result<(), ShapeError> {
        let repeat = self
            .last_outcome
            .filter(|_| entry.as_bytes() == self.last.as_slice());
        if self.add_name(entry, repeat)? {
            self.last.clear();
            if entry.len() <= MAX_REMEMBERED {
                self.last.extend_from_slice(entry.as_bytes());
            }
        }
        Ok(())
    }

    /// As [`Collector::add`], `prev` being the name added just before, if
    /// any: it stands in for the copy `add` keeps, so the two are not mixed
    /// on one collector.
    fn add_after(&mut self, entry: &str, prev: Option<&str>) -> Result<(), ShapeError> {
        let repeat = match prev {
            // Neighbours usually differ in their last byte: no full compare.
            Some(p)
                if p.len() == entry.len()
                    && p.as_bytes().last() == entry.as_bytes().last()
                    && p == entry =>
            {
                self.last_outcome
            }
            _ => None,
        };
        self.add_name(entry, repeat).map(|_| ())
    }

    /// Adds one plain name; `repeat`: why the same name just before was
    /// refused (`Some(None)`: it was valid). Whether the name was validated
    /// and should be remembered.
    #[inline]
    fn add_name(
        &mut self,
        entry: &str,
        repeat: Option<Option<&'static str>>,
    ) -> Result<bool, ShapeError> {
        self.v.sensor_count = self.v.sensor_count.saturating_add(1);
        if let Some(outcome) = repeat {
            // A valid repeat is already the last target added: only
            // counted, for conflicting duplicates.
            match outcome {
                Some(reason) => self.reject_with(reason, || escape(entry)),
                None => {
                    if let Some(g) = self.plain {
                        self.v.targets.repeat_last(g);
                    }
                }
            }
            return Ok(false);
        }
        let outcome = match address::parse(entry, self.default_port) {
            Ok(t) => {
                let g = self.plain_group()?;
                self.v
                    .targets
                    .push_target(g, &t, t.port())
                    .map_err(keep_error)?;
                None
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = outcome {
            self.reject_with(reason, || escape(entry));
        }
        self.last_outcome = (entry.len() <= MAX_REMEMBERED).then_some(outcome);
        Ok(true)
    }

    /// The group of entries without labels of their own.
    #[inline]
    fn plain_group(&mut self) -> Result<usize, ShapeError> {
        if let Some(g) = self.plain {
            return Ok(g);
        }
        let g = self.v.targets.group(&self.defaults).map_err(keep_error)?;
        self.plain = Some(g);
        Ok(g)
    }

    /// The group of an entry or target group with these own labels.
    fn group_of(&mut self, own: &Labels) -> Result<usize, ShapeError> {
        if own.is_empty() {
            return self.plain_group();
        }
        if let Some(g) = self.last_group.filter(|_| self.last_own == *own) {
            return Ok(g);
        }
        let labels = merge_labels(&self.defaults, own);
        let g = self.v.targets.group(&labels).map_err(keep_error)?;
        self.last_own.clone_from(own);
        self.last_group = Some(g);
        Ok(g)
    }

    /// Adds one entry object: `{"name": ..., "port": ..., "labels": {...}}`.
    fn add_entry(&mut self, o: &Object) -> Result<(), ShapeError> {
        self.v.sensor_count = self.v.sensor_count.saturating_add(1);
        self.last_outcome = None;
        let Some(name) = o.name.as_deref() else {
            let reason = o.name_error.unwrap_or("entry object without a \"name\"");
            self.reject_with(reason, || "(entry object)".into());
            return Ok(());
        };
        if let Some(reason) = o.problem() {
            self.reject_with(reason, || o.describe(name));
            return Ok(());
        }
        let t = match address::parse(name, 0) {
            Ok(t) => t,
            Err(reason) => {
                self.reject_with(reason, || escape(name));
                return Ok(());
            }
        };
        // Port 0: the name carries none.
        let port = match (t.port(), o.port) {
            (0, Some(Ok(p))) => p,
            (0, None) => self.default_port,
            (_, Some(Err(()))) => return self.refuse(name, BAD_PORT),
            (own, Some(Ok(p))) if own != p => {
                return self.refuse(name, "\"port\" differs from the port in \"name\"")
            }
            (own, _) => own,
        };
        let g = self.group_of(&o.labels)?;
        self.v.targets.push_target(g, &t, port).map_err(keep_error)
    }

    /// Adds one target group: `{"targets": [...], "labels": {...}}`. Each
    /// target is an entry; a bad label makes every target of the group
    /// invalid.
    fn add_group(&mut self, o: &Object) -> Result<(), ShapeError> {
        self.last_outcome = None;
        if o.targets_error.is_some() && o.target_count() == 0 {
            self.v.sensor_count = self.v.sensor_count.saturating_add(1);
            let reason = o.targets_error.unwrap_or(BAD_TARGETS);
            self.reject_with(reason, || "(target group)".into());
            return Ok(());
        }
        let problem = o.problem().or(o.targets_error);
        let group = match problem {
            Some(_) => None,
            None => Some(self.group_of(&o.labels)?),
        };
        for target in o.targets() {
            self.v.sensor_count = self.v.sensor_count.saturating_add(1);
            let (Some(g), Some(target)) = (group, target) else {
                let reason = problem.unwrap_or(BAD_TARGETS);
                self.reject_with(reason, || {
                    target.map_or_else(|| "(not a string)".into(), |t| o.describe(t))
                });
                continue;
            };
            match address::parse(target, self.default_port) {
                Ok(t) => self
                    .v
                    .targets
                    .push_target(g, &t, t.port())
                    .map_err(keep_error)?,
                Err(reason) => self.reject_with(reason, || escape(target)),
            }
        }
        Ok(())
    }

    fn refuse(&mut self, name: &str, reason: &'static str) -> Result<(), ShapeError> {
        self.reject_with(reason, || escape(name));
        Ok(())
    }

    /// Counts one invalid entry. `shown` gives it escaped for the log, and
    /// is called only while examples are still kept.
    fn reject_with(&mut self, reason: &'static str, shown: impl FnOnce() -> String) {
        self.v.invalid_count = self.v.invalid_count.saturating_add(1);
        if self.v.rejected.len() < MAX_EXAMPLES {
            self.v.rejected.push(Rejected {
                entry: shown(),
                reason,
            });
        }
    }

    /// Sorts and de-duplicates what was collected. Conflicting duplicates
    /// are found only here, after every entry: they are counted, and shown
    /// as their addresses after the other examples.
    pub fn finish(mut self) -> Validated {
        let conflicts = self.v.targets.finish();
        self.v.invalid_count = self.v.invalid_count.saturating_add(conflicts.count);
        for text in conflicts.examples {
            if self.v.rejected.len() >= MAX_EXAMPLES {
                break;
            }
            self.v.rejected.push(Rejected {
                entry: escape(&text),
                reason: CONFLICT,
            });
        }
        self.v
    }
}

const BAD_PORT: &str = "\"port\" is not a whole number 1-65535";
const BAD_TARGETS: &str = "\"targets\" is not an array of strings";

fn keep_error(e: CapacityError) -> ShapeError {
    ShapeError(format!("cannot keep the inventory: {e}"))
}

/// Validates a list of plain names, as [`parse`] does for a body.
pub fn validate<'a>(entries: impl IntoIterator<Item = &'a str>, default_port: u16) -> Validated {
    let mut c = Collector::new(default_port);
    for e in entries {
        // Only running out of memory stops a collector; a test list never does.
        if c.add(e).is_err() {
            break;
        }
    }
    c.finish()
}

/// Parses and validates a response body, grouping targets by their own
/// labels only.
pub fn parse(body: &[u8], default_port: u16) -> Result<Validated, ShapeError> {
    parse_with_defaults(body, default_port, Vec::new())
}

/// Parses and validates a response body. `defaults` are the labels of a
/// plain name (`__metrics_path__`, then the configured labels); an entry's
/// own labels override them, and targets are grouped by the result.
pub fn parse_with_defaults(
    body: &[u8],
    default_port: u16,
    defaults: Labels,
) -> Result<Validated, ShapeError> {
    parse_limited(body, default_port, defaults, usize::MAX)
}

/// As [`parse_with_defaults`], with what distinct label sets may cost
/// capped at about `label_budget` bytes: past it the body is refused.
pub fn parse_limited(
    body: &[u8],
    default_port: u16,
    defaults: Labels,
    label_budget: usize,
) -> Result<Validated, ShapeError> {
    collect_limited(body.to_vec(), default_port, defaults, label_budget).map(Collector::finish)
}

/// As [`parse_limited`], without the final sort ([`Collector::finish`]),
/// taking the body: a list of plain names keeps it as the text of its
/// targets (no copy of each host), anything else frees it before the
/// sort.
pub fn collect_limited(
    body: Vec<u8>,
    default_port: u16,
    defaults: Labels,
    label_budget: usize,
) -> Result<Collector, ShapeError> {
    let mut c = Collector::with_defaults(default_port, defaults);
    c.set_label_budget(label_budget);
    walk_owned(body, &mut c, Split::Guess)?;
    Ok(c)
}

/// As [`parse_limited`], with a body of plain names read in parts cut at
/// bytes `cuts` (counted after any byte-order mark), however long: what
/// cuts anywhere must agree with.
#[doc(hidden)]
pub fn parse_limited_split(
    body: &[u8],
    default_port: u16,
    defaults: Labels,
    label_budget: usize,
    cuts: &[usize],
) -> Result<Validated, ShapeError> {
    let mut c = Collector::with_defaults(default_port, defaults);
    c.set_label_budget(label_budget);
    walk_owned(body.to_vec(), &mut c, Split::At(cuts))?;
    Ok(c.finish())
}

/// As [`parse_limited`], always with the full JSON reader: what the quick
/// reader of plain name arrays must agree with.
#[doc(hidden)]
pub fn parse_limited_slow(
    body: &[u8],
    default_port: u16,
    defaults: Labels,
    label_budget: usize,
) -> Result<Validated, ShapeError> {
    let mut c = Collector::with_defaults(default_port, defaults);
    c.set_label_budget(label_budget);
    walk(body, &mut c)?;
    Ok(c.finish())
}

/// Which of the three shapes the document has, as its elements show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No element yet, or only ones that fit either shape.
    Open,
    /// Names and entry objects.
    Entries,
    /// Target groups.
    Groups,
}

/// Bodies at least this long are read in parts at once, when they are
/// arrays of plain names.
const SPLIT_FROM: usize = 1 << 20;

/// About how long each part is: short enough that the two threads, taking
/// the parts in turn, end close together whatever slows one of them.
const PART_BYTES: usize = 512 << 10;

/// At most this many parts, however long the body.
const MAX_PARTS: usize = 64;

/// Where the quick reader cuts a body into parts: where it guesses, or
/// (for tests) at given bytes.
#[derive(Debug, Clone, Copy)]
enum Split<'a> {
    Guess,
    At(&'a [usize]),
}

/// What the body starts with before its JSON: how many bytes of
/// byte-order mark. Refuses a body that cannot be an inventory at all.
fn preamble(body: &[u8]) -> Result<usize, ShapeError> {
    // Windows tools start UTF-8 files with a byte-order mark.
    let skip = if body.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let trimmed = body.get(skip..).unwrap_or_default().trim_ascii_start();
    if trimmed.is_empty() {
        return Err(ShapeError("empty response body".into()));
    }
    if trimmed.first() == Some(&b'<') {
        return Err(ShapeError(
            "got an HTML/XML page, not JSON (a login page or a proxy error?)".into(),
        ));
    }
    Ok(skip)
}

/// As [`walk`], trying the quick reader of plain name arrays first: its
/// hosts stay where they are in the body, which the targets then own.
fn walk_owned(body: Vec<u8>, c: &mut Collector, split: Split<'_>) -> Result<(), ShapeError> {
    let skip = preamble(&body)?;
    let body = Arc::new(body);
    c.v.targets.read_in_place(Arc::clone(&body));
    let text = body.get(skip..).unwrap_or_default();
    if read_plain(&body, text, c, split)? {
        return Ok(());
    }
    // Anything else: the full reader starts over afresh.
    c.restart();
    let body = Arc::try_unwrap(body).unwrap_or_else(|shared| shared.as_ref().clone());
    walk(&body, c)
}

/// Reads `text` (in `body`) as an array of plain names, a long one in
/// parts that two threads take in turn: whether it was one (see
/// [`names::for_each`]).
fn read_plain(
    body: &Arc<Vec<u8>>,
    text: &[u8],
    c: &mut Collector,
    split: Split<'_>,
) -> Result<bool, ShapeError> {
    // Guessed only for what starts as a list of names: target groups and
    // entry objects go to the full reader at once.
    let cuts = match split {
        Split::At(cuts) => cuts.to_vec(),
        Split::Guess if text.len() >= SPLIT_FROM && names::opens_with_string(text) => {
            guess_cuts(text)
        }
        Split::Guess => Vec::new(),
    };
    if cuts.is_empty() {
        return names::for_each(text, |name, prev| c.add_after(name, prev));
    }
    // Part k runs from cut k - 1 (the start, for the first) to cut k (the
    // end, for the last), into a collector of its own, merged in order
    // after. The threads write their collectors for every name: not on
    // one line.
    let start = |k: usize| k.checked_sub(1).and_then(|j| cuts.get(j)).copied();
    let parts: Vec<Apart<Mutex<Part>>> = (0..=cuts.len())
        .map(|k| {
            let mut collector = c.sibling();
            collector.v.targets.read_in_place(Arc::clone(body));
            // Room for names of eight bytes each, quotes and comma
            // included: most parts never grow.
            let until = cuts.get(k).copied().unwrap_or(text.len());
            let bytes = until.saturating_sub(start(k).unwrap_or(0));
            collector.v.targets.expect(bytes / 8);
            Apart(Mutex::new(Part {
                collector,
                read: None,
            }))
        })
        .collect();
    let next = AtomicUsize::new(0);
    // The first part that ended anywhere but at its cut: what the parts
    // after it read means nothing, so they stop early or do not start.
    let ended = AtomicUsize::new(usize::MAX);
    let read_parts = || loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(part) = parts.get(k) else { break };
        if k > ended.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut part) = part.0.lock() else { break };
        let Part { collector, read } = &mut *part;
        let mut n = 0u32;
        let got = names::for_each_between(text, start(k), cuts.get(k).copied(), |name, prev| {
            n = n.wrapping_add(1);
            if n % 4096 == 0 && ended.load(Ordering::Relaxed) < k {
                return Err(ShapeError("abandoned".into()));
            }
            collector.add_after(name, prev)
        });
        if !matches!(got, Ok(names::Reached::Boundary)) {
            ended.fetch_min(k, Ordering::Relaxed);
        }
        *read = Some(got);
    };
    // Without a second thread, this one reads every part.
    par::both("parse", read_parts, read_parts);
    // In order: a part counts only when every part before it reached its
    // cut, which is then a true element boundary.
    for (k, part) in parts.into_iter().enumerate() {
        let Ok(Part { collector, read }) = part.0.into_inner() else {
            return Ok(false);
        };
        // Not read: only after a part that ended, never reached here.
        let Some(read) = read else {
            return Ok(false);
        };
        let end = read?;
        if k == 0 {
            // The first part was read as this collector would have.
            *c = collector;
        } else if end != names::Reached::End(false) {
            c.absorb(collector)?;
        }
        match end {
            names::Reached::Boundary => {}
            names::Reached::End(all) => return Ok(all),
        }
    }
    Ok(false)
}

/// One part of a body read in parts: what it collected, and how reading
/// it ended, once it was read.
struct Part {
    collector: Collector,
    read: Option<Result<names::Reached, ShapeError>>,
}

/// Where to cut a long body into parts: element boundaries guessed about
/// [`PART_BYTES`] apart, in order.
fn guess_cuts(text: &[u8]) -> Vec<usize> {
    let parts = (text.len() / PART_BYTES).clamp(2, MAX_PARTS);
    let mut cuts: Vec<usize> = Vec::with_capacity(parts);
    for k in 1..parts {
        let at = (text.len() / parts).saturating_mul(k);
        let from = at.max(cuts.last().copied().unwrap_or(0));
        match names::boundary_near(text, from) {
            Some(cut) => cuts.push(cut),
            None => break,
        }
    }
    cuts
}

/// Checks that `body` is an inventory (a JSON array of names, entry
/// objects or target groups) and hands each element to `c`, in order, as
/// it is read, with the full JSON reader.
fn walk(body: &[u8], c: &mut Collector) -> Result<(), ShapeError> {
    let skip = preamble(body)?;
    let body = body.get(skip..).unwrap_or_default();
    let mut walk = Walk {
        c,
        object: Object::default(),
        shape: Shape::Open,
        index: 0,
        not_array: None,
        bad_element: None,
        stopped: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    // The whole body is read even after a bad element: a syntax error
    // anywhere is reported first, as the more basic fault.
    let read = Top(&mut walk).deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = walk.stopped {
        return Err(e);
    }
    if let Err(e) = read {
        let kind = if e.is_eof() {
            "truncated JSON"
        } else {
            "invalid JSON"
        };
        return Err(ShapeError(format!("{kind}: {e}")));
    }
    if let Some(kind) = walk.not_array {
        return Err(ShapeError(format!(
            "got a JSON {kind}, expected an array of sensor names, entries or target groups"
        )));
    }
    if let Some(e) = walk.bad_element {
        return Err(e);
    }
    Ok(())
}

/// What the single pass over a body has seen.
struct Walk<'a> {
    c: &'a mut Collector,
    /// The object element being read, reused from one to the next.
    object: Object,
    shape: Shape,
    index: usize,
    /// The kind of the top-level value, when it is not an array.
    not_array: Option<&'static str>,
    /// The first element that does not belong: why.
    bad_element: Option<ShapeError>,
    /// The collector failed: reading stopped.
    stopped: Option<ShapeError>,
}

impl Walk<'_> {
    fn refuse_element(&mut self, kind: &str) {
        if self.bad_element.is_none() {
            self.bad_element = Some(ShapeError(format!(
                "element {} is a JSON {kind}, expected a sensor name, an entry object or a target group",
                self.index
            )));
        }
    }

    /// Fixes the shape with this element, or refuses it when an earlier one
    /// fixed the other shape.
    fn settle(&mut self, shape: Shape) -> bool {
        if self.shape == Shape::Open || self.shape == shape {
            self.shape = shape;
            return true;
        }
        if self.bad_element.is_none() {
            let (this, other) = match shape {
                Shape::Groups => ("a target group", "names or entry objects"),
                _ => ("a name or entry object", "target groups"),
            };
            self.bad_element = Some(ShapeError(format!(
                "element {} is {this}, but the elements before it are {other}: one document holds one kind",
                self.index
            )));
        }
        false
    }
}

/// An object element as read: the keys that matter, each checked as it
/// comes, and nothing else.
#[derive(Default)]
struct Object {
    name: Option<String>,
    /// A spare buffer for the next name.
    name_buf: Option<String>,
    name_error: Option<&'static str>,
    port: Option<Result<u16, ()>>,
    /// As given; checked one by one.
    labels: Labels,
    /// The first bad label: its name (escaped) and why.
    label_error: Option<(String, &'static str)>,
    has_targets: bool,
    /// The target strings, one after the other, and where each ends;
    /// `usize::MAX` stands for an element that is not a string.
    target_text: String,
    target_ends: Vec<usize>,
    targets_error: Option<&'static str>,
    /// A key that came twice.
    repeated: Option<&'static str>,
    seen: [bool; 4],
}

impl Object {
    fn clear(&mut self) {
        if let Some(name) = self.name.take() {
            self.name_buf = Some(name);
        }
        self.name_error = None;
        self.port = None;
        self.labels.clear();
        self.label_error = None;
        self.has_targets = false;
        self.target_text.clear();
        self.target_ends.clear();
        self.targets_error = None;
        self.repeated = None;
        self.seen = [false; 4];
    }

    /// What makes the whole object invalid, apart from its name or targets.
    fn problem(&self) -> Option<&'static str> {
        if let Some(k) = self.repeated {
            return Some(k);
        }
        if let Some((_, reason)) = &self.label_error {
            return Some(reason);
        }
        if self.labels.len() > MAX_LABELS {
            return Some("more than 64 labels");
        }
        None
    }

    /// `text`, with the bad label named when there is one, escaped.
    fn describe(&self, text: &str) -> String {
        match &self.label_error {
            Some((label, _)) if !label.is_empty() => escape(&format!("{text} (label {label})")),
            _ => escape(text),
        }
    }

    fn target_count(&self) -> usize {
        self.target_ends.len()
    }

    /// Each target: its text, or `None` for one that is not a string.
    fn targets(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        let mut start = 0;
        self.target_ends.iter().map(move |&end| {
            if end == usize::MAX {
                return None;
            }
            let t = self.target_text.get(start..end);
            start = end;
            t
        })
    }
}

/// The top-level value.
struct Top<'w, 'a>(&'w mut Walk<'a>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of sensor names, entries or target groups")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Element(&mut *self.0))?.is_some() {
            self.0.index = self.0.index.saturating_add(1);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.not_array = Some("object");
        skip_map(map)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.not_array = Some("string");
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.not_array = Some("boolean");
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.not_array = Some("number");
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.not_array = Some("number");
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.not_array = Some("number");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.not_array = Some("null");
        Ok(())
    }
}

/// One element of the top-level array.
struct Element<'w, 'a>(&'w mut Walk<'a>);

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn stop<E: de::Error>(w: &mut Walk<'_>, e: ShapeError) -> E {
    w.stopped = Some(e);
    E::custom("stopped")
}

impl<'de> Visitor<'de> for Element<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sensor name, an entry object or a target group")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let w = self.0;
        // After a bad element the body is only checked, not collected.
        if w.bad_element.is_some() || !w.settle(Shape::Entries) {
            return Ok(());
        }
        w.c.add(s).map_err(|e| stop(w, e))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let w = self.0;
        if w.bad_element.is_some() {
            return skip_map(map);
        }
        let mut o = std::mem::take(&mut w.object);
        o.clear();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let slot = key as usize;
            if let Some(seen) = o.seen.get_mut(slot) {
                if *seen && o.repeated.is_none() {
                    o.repeated = Some("a key is given twice");
                }
                *seen = true;
            }
            match key {
                Key::Name => {
                    // The buffer of the previous element is reused.
                    let mut name = o.name_buf.take().unwrap_or_default();
                    name.clear();
                    match map.next_value_seed(StrInto(&mut name))? {
                        None => o.name = Some(name),
                        Some(_) => {
                            o.name_buf = Some(name);
                            o.name_error = Some("\"name\" is not a string");
                        }
                    }
                }
                Key::Port => o.port = map.next_value_seed(PortSeed)?,
                Key::Labels => map.next_value_seed(LabelsSeed(&mut o))?,
                Key::Targets => {
                    o.has_targets = true;
                    map.next_value_seed(TargetsSeed(&mut o))?;
                }
                Key::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        let shape = if o.has_targets {
            Shape::Groups
        } else {
            Shape::Entries
        };
        let result = if w.settle(shape) {
            match shape {
                Shape::Groups => w.c.add_group(&o),
                _ => w.c.add_entry(&o),
            }
        } else {
            Ok(())
        };
        w.object = o;
        result.map_err(|e| stop(w, e))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.refuse_element("array");
        skip_seq(seq)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.refuse_element("boolean");
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.refuse_element("number");
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.refuse_element("number");
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.refuse_element("number");
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.refuse_element("null");
        Ok(())
    }
}

/// The keys of an object element that mean something; the discriminant
/// indexes `Object::seen`.
#[derive(Clone, Copy)]
enum Key {
    Name = 0,
    Port = 1,
    Labels = 2,
    Targets = 3,
    Other = 4,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match s {
            "name" => Key::Name,
            "port" => Key::Port,
            "labels" => Key::Labels,
            "targets" => Key::Targets,
            _ => Key::Other,
        })
    }
}

/// A string into the given buffer; any other value is read, skipped and
/// named by its kind.
struct StrInto<'b>(&'b mut String);

impl<'de> DeserializeSeed<'de> for StrInto<'_> {
    type Value = Option<&'static str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrInto<'_> {
    type Value = Option<&'static str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        self.0.push_str(s);
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some("boolean"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Some("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some("number"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| Some("array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| Some("object"))
    }
}

/// `"port"`: a whole number 1-65535, `None` for `null`, or `Err` for
/// anything else.
struct PortSeed;

impl<'de> DeserializeSeed<'de> for PortSeed {
    type Value = Option<Result<u16, ()>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PortSeed {
    type Value = Option<Result<u16, ()>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number")
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Some(u16::try_from(n).ok().filter(|&p| p > 0).ok_or(())))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Some(Err(())))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Some(Err(())))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Some(Err(())))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Some(Err(())))
    }
    /// `null`, as Go writes an unset field: no port.
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq).map(|()| Some(Err(())))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map).map(|()| Some(Err(())))
    }
}

/// `"labels"`: an object of strings, each checked; the first bad one is
/// kept in `Object::label_error`.
struct LabelsSeed<'o>(&'o mut Object);

impl LabelsSeed<'_> {
    fn refuse(&mut self, label: &str, reason: &'static str) {
        if self.0.label_error.is_none() {
            self.0.label_error = Some((label.to_string(), reason));
        }
    }
}

impl<'de> DeserializeSeed<'de> for LabelsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of labels")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut name = String::new();
        // JSON keys are always strings.
        while map.next_key_seed(StrInto(&mut name))?.is_some() {
            let mut value = String::new();
            if map.next_value_seed(StrInto(&mut value))?.is_some() {
                self.refuse(&name, "label value is not a string");
            } else if let Err(reason) = labels::check(&name, &value) {
                self.refuse(&name, reason);
            } else if self.0.labels.iter().any(|(n, _)| *n == name) {
                self.refuse(&name, "label is given twice");
            } else if self.0.labels.len() <= MAX_LABELS {
                // One past the limit is kept, to be refused as too many.
                self.0.labels.push((std::mem::take(&mut name), value));
            }
            name.clear();
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    /// `null`, as Go writes an empty map: no labels.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.not_an_object();
        skip_seq(seq)
    }
}

impl LabelsSeed<'_> {
    fn not_an_object(mut self) {
        self.refuse("", "\"labels\" is not an object of strings");
    }
}

/// `"targets"`: an array of strings, kept one after the other.
struct TargetsSeed<'o>(&'o mut Object);

impl<'de> DeserializeSeed<'de> for TargetsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TargetsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of targets")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let o = self.0;
        o.target_text.clear();
        o.target_ends.clear();
        let mut tmp = String::new();
        while let Some(kind) = seq.next_element_seed(StrInto(&mut tmp))? {
            match kind {
                None => {
                    o.target_text.push_str(&tmp);
                    o.target_ends.push(o.target_text.len());
                }
                Some(_) => o.target_ends.push(usize::MAX),
            }
            tmp.clear();
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.0.targets_error = Some(BAD_TARGETS);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.targets_error = Some(BAD_TARGETS);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.0.targets_error = Some(BAD_TARGETS);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.0.targets_error = Some(BAD_TARGETS);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.0.targets_error = Some(BAD_TARGETS);
        Ok(())
    }
    /// `null`, as Go writes an empty list: no targets.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.targets_error = Some(BAD_TARGETS);
        skip_map(map)
    }
}

/// Any JSON value, read in full (numbers, strings and nesting checked as
/// strictly as a `serde_json::Value` would be) and thrown away.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
        skip_seq(seq).map(|()| Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
        skip_map(map).map(|()| Skip)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

/// An untrusted string made safe for one log line: ASCII only, control
/// characters and quotes escaped, and cut short when huge.
pub fn escape(s: &str) -> String {
    const MAX: usize = 200;
    let cut = s
        .char_indices()
        .nth(MAX)
        .map_or(s, |(i, _)| s.get(..i).unwrap_or(s));
    let mut out = text::escape_where(cut, |c| c != Class::Plain).into_owned();
    let n = s.chars().count();
    if n > MAX {
        out.push_str(&format!("...({} more characters)", n - MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(body: &[u8]) -> Result<Vec<String>, ShapeError> {
        parse(body, 9100).map(|v| v.targets.to_strings())
    }

    fn labels(v: &[(&str, &str)]) -> Labels {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn defaults() -> Labels {
        labels(&[("__metrics_path__", "/metrics"), ("job", "sensors")])
    }

    #[test]
    fn distinct_label_sets_are_capped_by_their_budget() {
        let body = |n: usize| {
            let items: Vec<String> = (0..n)
                .map(|i| format!("{{\"name\":\"h{i}\",\"labels\":{{\"a\":\"{i}\"}}}}"))
                .collect();
            format!("[{}]", items.join(","))
        };
        let small = body(10);
        let v = parse_limited(small.as_bytes(), 9100, defaults(), 64 * 1024).unwrap();
        assert_eq!(v.targets.len(), 10);
        let big = body(1000);
        let e = parse_limited(big.as_bytes(), 9100, defaults(), 64 * 1024).unwrap_err();
        assert!(e.0.contains("distinct label sets"), "{e}");
        // One label set for every entry costs nothing more.
        let same: Vec<String> = (0..1000)
            .map(|i| format!("{{\"name\":\"h{i}\",\"labels\":{{\"a\":\"x\"}}}}"))
            .collect();
        let same = format!("[{}]", same.join(","));
        let v = parse_limited(same.as_bytes(), 9100, defaults(), 64 * 1024).unwrap();
        assert_eq!(v.targets.len(), 1000);
    }

    /// Groups as (labels, targets), with the defaults applied.
    fn groups(body: &str) -> (Vec<(Labels, Vec<String>)>, Validated) {
        let v = parse_with_defaults(body.as_bytes(), 9100, defaults()).unwrap();
        let g = v
            .targets
            .clone()
            .into_groups(&defaults())
            .into_iter()
            .map(|g| (g.labels, g.targets.to_strings()))
            .collect();
        (g, v)
    }

    fn reasons(v: &Validated) -> Vec<(&str, &str)> {
        v.rejected
            .iter()
            .map(|r| (r.entry.as_str(), r.reason))
            .collect()
    }

    #[test]
    fn entry_objects_mix_with_names() {
        let (g, v) = groups(
            r#"["a", {"name": "b", "port": 9200, "labels": {"rack": "r1"}},
                {"name": "c:9200", "labels": {"rack": "r1"}, "other": [1, {"x": null}]},
                {"name": "d", "labels": {"job": "sensors"}}]"#,
        );
        assert_eq!((v.sensor_count, v.invalid_count), (4, 0));
        assert_eq!(
            g,
            [
                (defaults(), vec!["a:9100".into(), "d:9100".into()]),
                (
                    labels(&[
                        ("__metrics_path__", "/metrics"),
                        ("job", "sensors"),
                        ("rack", "r1")
                    ]),
                    vec!["b:9200".into(), "c:9200".into()]
                ),
            ]
        );
    }

    #[test]
    fn bad_entry_objects_are_dropped_with_a_reason() {
        let (g, v) = groups(
            r#"[{"name": "ok"}, {"port": 1}, {"name": 5}, {"name": "x", "port": 0},
                {"name": "x", "port": 65536}, {"name": "x", "port": "80"},
                {"name": "x:80", "port": 81}, {"name": "x:80", "port": 80, "labels": {"a": "b"}},
                {"name": "y", "labels": {"1a": "v"}}, {"name": "y", "labels": {"__x": "v"}},
                {"name": "y", "labels": {"__address__": "v"}}, {"name": "y", "labels": {"a": 1}},
                {"name": "y", "labels": ["a"]}, {"name": "y", "name": "z"},
                {"name": "bad name"}]"#,
        );
        assert_eq!(v.sensor_count, 15);
        assert_eq!(v.invalid_count, 13);
        assert_eq!(g.len(), 2);
        let r = reasons(&v);
        assert_eq!(r[0], ("(entry object)", "entry object without a \"name\""));
        assert_eq!(r[1], ("(entry object)", "\"name\" is not a string"));
        assert_eq!(r[2].1, BAD_PORT);
        assert_eq!(r[3].1, BAD_PORT);
        assert_eq!(r[4].1, BAD_PORT);
        assert_eq!(r[5], ("x:80", "\"port\" differs from the port in \"name\""));
        assert_eq!(r[6].0, "y (label 1a)");
        assert!(r[7].1.contains("reserved"));
        assert!(r[8].1.contains("__address__"));
        assert_eq!(r[9].1, "label value is not a string");
        assert!(r[10].1.contains("not an object"));
        assert!(r[11].1.contains("twice"));
        assert_eq!(r[12].0, "bad name");
    }

    #[test]
    fn too_many_or_too_long_labels() {
        let many: Vec<String> = (0..=MAX_LABELS)
            .map(|i| format!("\"l{i}\": \"v\""))
            .collect();
        let body = format!(
            r#"[{{"name": "a", "labels": {{{}}}}}, {{"name": "b", "labels": {{"v": "{}"}}}}, "c"]"#,
            many.join(","),
            "x".repeat(labels::MAX_LABEL_VALUE_BYTES + 1)
        );
        let (_, v) = groups(&body);
        assert_eq!(v.invalid_count, 2);
        assert_eq!(v.rejected[0].reason, "more than 64 labels");
        assert!(v.rejected[1].reason.contains("too long"));
    }

    #[test]
    fn conflicting_duplicates_keep_the_first() {
        let (g, v) = groups(
            r#"[{"name": "a", "labels": {"r": "1"}}, "A", "a", {"name": "a:9100", "labels": {"r": "1"}},
                "b", {"name": "b", "labels": {"r": "2"}}]"#,
        );
        assert_eq!(v.invalid_count, 3, "{:?}", v.rejected);
        assert!(v.rejected.iter().all(|r| r.reason == CONFLICT));
        assert_eq!(g[0].1, ["b:9100"]);
        assert_eq!(g[1].1, ["a:9100"]);
    }

    #[test]
    fn target_groups_are_read_as_prometheus_writes_them() {
        let (g, v) = groups(
            r#"[{"targets": ["h1:9200", "h2"], "labels": {"rack": "r1"}},
                {"targets": ["h3"]}, {"targets": [], "labels": {"x": "y"}},
                {"targets": ["h4", 7, "bad name"], "labels": {"__address__": "x"}},
                {"targets": ["h5", 7, "bad name"]}, {"targets": "h6"}]"#,
        );
        assert_eq!(v.sensor_count, 10);
        assert_eq!(v.invalid_count, 6, "{:?}", v.rejected);
        assert_eq!(g[0].1, ["h3:9100", "h5:9100"]);
        assert_eq!(g[1].1, ["h1:9200", "h2:9100"]);
        let r = reasons(&v);
        assert_eq!(r[0].0, "h4 (label __address__)");
        assert_eq!(r[1].0, "(not a string)");
        assert_eq!(r[3], ("(not a string)", BAD_TARGETS));
        assert_eq!(r[4].0, "bad name");
        assert_eq!(r[5], ("(target group)", BAD_TARGETS));
    }

    #[test]
    fn null_is_an_unset_optional_key_as_go_writes_it() {
        let (g, v) =
            groups(r#"[{"name": "a", "port": null, "labels": null}, {"name": null}, "b"]"#);
        assert_eq!(v.invalid_count, 1);
        assert_eq!(g, [(defaults(), vec!["a:9100".into(), "b:9100".into()])]);
        let (g, v) = groups(r#"[{"targets": null, "labels": null}, {"targets": ["c"]}]"#);
        assert_eq!((v.sensor_count, v.invalid_count), (1, 0));
        assert_eq!(g, [(defaults(), vec!["c:9100".into()])]);
    }

    #[test]
    fn one_document_holds_one_shape() {
        for (body, needle) in [
            (
                r#"[{"targets": []}, "a"]"#,
                "element 1 is a name or entry object",
            ),
            (r#"["a", {"targets": []}]"#, "element 1 is a target group"),
            (
                r#"[{"name": "a"}, {"targets": ["b"]}]"#,
                "element 1 is a target group",
            ),
        ] {
            let e = parse(body.as_bytes(), 9100).unwrap_err();
            assert!(e.0.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn accepts_an_array_of_strings() {
        assert_eq!(entries(br#"["a", "b"]"#).unwrap(), vec!["a:9100", "b:9100"]);
        assert_eq!(entries(b" \n[]\n").unwrap(), Vec::<String>::new());
        assert_eq!(entries(br#"["\u0061"]"#).unwrap(), vec!["a:9100"]);
        let v = parse(br#"["b", "a", "a:9100"]"#, 9100).unwrap();
        assert_eq!(v.targets.to_strings(), ["a:9100", "b:9100"]);
        assert_eq!((v.sensor_count, v.invalid_count), (3, 0));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let v = parse(b"\xEF\xBB\xBF[\"a\"]", 9100).unwrap();
        assert_eq!(v.targets.to_strings(), ["a:9100"]);
        let v = parse(b"\xEF\xBB\xBF \r\n[\"a\"]\r\n", 9100).unwrap();
        assert_eq!(v.targets.to_strings(), ["a:9100"]);
        let e = parse(b"\xEF\xBB\xBF<html>", 9100).unwrap_err();
        assert!(e.0.contains("HTML"), "{e}");
        let e = parse(b"\xEF\xBB\xBF", 9100).unwrap_err();
        assert!(e.0.contains("empty"), "{e}");
        // Only one, and only at the very start.
        for body in [
            &b"\xEF\xBB\xBF\xEF\xBB\xBF[]"[..],
            b" \xEF\xBB\xBF[]",
            b"\xEF\xBB[]",
        ] {
            let e = parse(body, 9100).unwrap_err();
            assert!(e.0.contains("invalid JSON"), "{body:?}: {e}");
        }
    }

    #[test]
    fn refuses_other_shapes() {
        for (body, needle) in [
            (&b""[..], "empty"),
            (b"  ", "empty"),
            (b"{\"sensors\": []}", "got a JSON object, expected an array"),
            (b"[1, 2]", "element 0 is a JSON number"),
            (b"[\"a\", null]", "element 1 is a JSON null"),
            (b"[\"a\", [\"b\"]]", "element 1 is a JSON array"),
            (b"[\"a\", \"b\", true, {}]", "element 2 is a JSON boolean"),
            (b"\"sensor\"", "got a JSON string"),
            (b"null", "got a JSON null"),
            (b"12", "got a JSON number"),
            (b"[\"a\", \"b\"", "truncated"),
            (b"[\"a\", null, \"b\"", "truncated"),
            (b"[\"a\",, ]", "invalid JSON"),
            (b"<html><body>Login</body></html>", "HTML"),
            (b"\xff\xfe", "invalid JSON"),
            (b"[\"a\"] trailing", "invalid JSON"),
            (b"[\"a\", null] trailing", "invalid JSON"),
            (b"{\"a\": 1} x", "invalid JSON"),
            (b"[1e400]", "invalid JSON"),
            (b"[[1e400]]", "invalid JSON"),
            (b"[\"\\ud800\"]", "invalid JSON"),
            (b"[[\"\\ud800\"]]", "invalid JSON"),
            (b"[\"\xff\"]", "invalid JSON"),
        ] {
            let e = parse(body, 9100).unwrap_err();
            assert!(e.0.contains(needle), "{body:?}: {e}");
        }
    }

    /// The messages are those of the former two-step parse, which read
    /// the body as a `serde_json::Value` once it failed.
    #[test]
    fn messages_match_a_value_parse() {
        for body in [
            &b"[\"a\", \"b\""[..],
            b"[\"a\",, ]",
            b"[\"a\"] trailing",
            b"[1, 2",
            b"[{\"a\": [1, 2}]",
            b"[1e400, \"a\"]",
            b"{\"a\": 1e400}",
            b"[\"a\" \"b\"]",
            b"[\"a\\x\"]",
            b"  [\n\"a\",\n nul]",
        ] {
            let want = match serde_json::from_slice::<serde_json::Value>(body) {
                Err(e) if e.is_eof() => format!("truncated JSON: {e}"),
                Err(e) => format!("invalid JSON: {e}"),
                Ok(v) => panic!("{body:?} parsed as {v}"),
            };
            assert_eq!(parse(body, 9100).unwrap_err().0, want);
        }
        let deep = format!("[{}{}]", "[".repeat(200), "]".repeat(200));
        let e = parse(deep.as_bytes(), 9100).unwrap_err();
        assert!(e.0.contains("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn validation_keeps_good_entries_sorted_and_unique() {
        let v = validate(["s2", "s1", "bad name", "s1", "s1:9100", "::1", ""], 9100);
        assert_eq!(v.sensor_count, 7);
        assert_eq!(v.targets.to_strings(), ["[::1]:9100", "s1:9100", "s2:9100"]);
        assert_eq!(v.invalid_count, 2);
        assert_eq!(v.rejected[0].entry, "bad name");
        assert_eq!(v.rejected[1].entry, "");
    }

    #[test]
    fn case_variants_count_as_duplicates() {
        let v = validate(["ok", "OK", "Ok:9100", "oK:1", "x"], 9100);
        assert_eq!(v.targets.to_strings(), ["OK:9100", "oK:1", "x:9100"]);
        assert_eq!((v.sensor_count, v.invalid_count), (5, 0));
    }

    #[test]
    fn invalid_entries_are_counted_and_only_the_first_kept() {
        let long = "\n".repeat(1000);
        let mut body = b"[".to_vec();
        for i in 0..1000 {
            body.extend_from_slice(if i == 500 { b"\"ok\"," } else { b"\"\\n\\n\"," });
        }
        body.extend_from_slice(format!("{:?}]", long).as_bytes());
        let v = parse(&body, 9100).unwrap();
        assert_eq!(v.sensor_count, 1001);
        assert_eq!(v.invalid_count, 1000);
        assert_eq!(v.rejected.len(), MAX_EXAMPLES);
        assert!(v.rejected.iter().all(|r| r.entry == "\\n\\n"));
        assert_eq!(v.targets.to_strings(), ["ok:9100"]);
    }

    #[test]
    fn escaping_is_single_line_ascii() {
        assert_eq!(
            escape("a\nb\u{1b}[31m\0\"é"),
            "a\\nb\\u{1b}[31m\\u{0}\\\"\\u{e9}"
        );
        let long = escape(&"x".repeat(1000));
        assert!(long.len() < 260 && long.ends_with("(800 more characters)"));
    }
}
