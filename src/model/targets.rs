//! The Prometheus `file_sd` document: target groups rendered to JSON, and
//! the compact forms targets are held in.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, OnceLock};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};

use crate::model::address::Target;
use crate::model::inventory::MAX_EXAMPLES;
use crate::model::sort::{self, has_upper, key_of, lower, Texts};

/// Longest `host:port` text: a host of at most 255 bytes (its length is
/// kept in one byte), `:` and five digits.
const MAX_TARGET_LEN: usize = 255 + 6;

const LEN_BITS: u32 = 8;
const PORT_BITS: u32 = 16;
const OFFSET_BITS: u32 = 64 - LEN_BITS - PORT_BITS;
/// The host length and port of a span.
const TAIL_MASK: u64 = (1 << (LEN_BITS + PORT_BITS)) - 1;

/// Why a target could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapacityError(pub String);

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `host:port` of one target, in a stack buffer.
pub struct TargetText {
    buf: [u8; MAX_TARGET_LEN],
    len: usize,
}

impl TargetText {
    pub fn new(host: &[u8], port: u16) -> TargetText {
        let mut t = TargetText {
            buf: [0; MAX_TARGET_LEN],
            len: 0,
        };
        t.push(host);
        t.push(b":");
        let mut digits = [0u8; 5];
        t.push(port_digits(port, &mut digits));
        t
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
            self.len = end;
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Display for TargetText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Digit `k` (from the left) of `port` in decimal, as ASCII.
fn port_digit(port: u16, k: usize) -> Option<u8> {
    let width = match port {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    };
    let shift = u32::try_from(width - 1 - k.min(width - 1)).unwrap_or(0);
    (k < width).then(|| b'0' + (port / 10u16.pow(shift) % 10) as u8)
}

/// The decimal digits of `port`, without leading zeros.
pub fn port_digits(port: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut n = port;
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

/// Up to the first 8 bytes of `bytes` as a little-endian word, zero past
/// its end.
fn head_word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    for (d, s) in w.iter_mut().zip(bytes) {
        *d = *s;
    }
    u64::from_le_bytes(w)
}

/// A mask of the low `n` bytes of a word (all of it from 8 on).
fn low_bytes(n: usize) -> u64 {
    match n {
        0 => 0,
        1..=7 => (1u64 << (8 * n)) - 1,
        _ => u64::MAX,
    }
}

/// Valid targets, held compactly: the host text of every target in one
/// buffer, and one packed `u64` per target (offset of its host in that
/// buffer, host length, port) instead of a `String` each. The buffer may
/// be the whole response body the hosts were read from, with the rest of
/// its text (punctuation, refused entries) between them. After
/// [`TargetList::finish`] they are unique and in byte order of `host:port`.
#[derive(Debug, Clone, Default)]
pub struct TargetList {
    hosts: Vec<u8>,
    spans: Vec<u64>,
    /// The spans of lists read from later parts of the same body, in
    /// order, after `spans`: kept apart until the sort, which spreads them
    /// to its pairs as they are instead of after a copy. Empty while
    /// targets are pushed, and after [`TargetList::finish`].
    later: Vec<Vec<u64>>,
    /// When hosts are read in place: the body they lie in, shared by the
    /// lists read from its parts. `hosts` then holds only the hosts found
    /// elsewhere, at offsets from `base` (the body's length) on.
    body: Option<Arc<Vec<u8>>>,
    base: usize,
    /// The text is (or was) a body read in place, which holds more than
    /// hosts: what the hosts hold is noted as they are pushed instead of
    /// looked for in the text.
    from_body: bool,
    /// Some host pushed has an upper-case letter; some needs escaping.
    /// Read only for a text read in place.
    seen_upper: bool,
    seen_escape: bool,
    /// The span of the first host pushed, which `shared` is counted from.
    first: Option<u64>,
    /// Capacity at which the spans are next de-duplicated before growing.
    compact_at: usize,
    /// How many bytes every host pushed starts with (those of the first):
    /// the sort need not look at them.
    shared: usize,
    /// The first host's first 8 bytes (little-endian, zero past its end),
    /// to check a short `shared` prefix with one compare.
    head: u64,
    /// Once tracked (there are other groups): per span, the document-order
    /// number of its first entry (high half) and how many more entries
    /// repeated it (low half). Empty otherwise, so one group pays nothing.
    meta: Vec<u64>,
    tracked: bool,
    /// Known since the last [`TargetList::finish`]: no host has a byte
    /// that a JSON string must escape, so a render can copy them as they are.
    plain: bool,
}

/// Meta of a span removed as a conflicting duplicate.
const REMOVED: u64 = u64::MAX;

fn meta_seq(meta: u64) -> u32 {
    (meta >> 32) as u32
}

fn meta_repeats(meta: u64) -> u32 {
    (meta & u64::from(u32::MAX)) as u32
}

/// Two entries of one address: the earlier number, and every repeat.
fn meta_merge(a: u64, b: u64) -> u64 {
    let seq = meta_seq(a).min(meta_seq(b));
    let repeats = meta_repeats(a)
        .saturating_add(meta_repeats(b))
        .saturating_add(1)
        .min(u32::MAX - 1);
    u64::from(seq) << 32 | u64::from(repeats)
}

impl TargetList {
    pub fn new() -> TargetList {
        TargetList::default()
    }

    /// A list whose hosts are taken in place wherever they lie in `body`
    /// (copied only when they do not).
    pub fn reading(body: Arc<Vec<u8>>) -> TargetList {
        TargetList {
            base: body.len(),
            body: Some(body),
            from_body: true,
            ..TargetList::default()
        }
    }

    /// Where `bytes` lies in the body read in place, if it does.
    fn in_body(&self, bytes: &[u8]) -> Option<usize> {
        let body = self.body.as_deref()?;
        let at = (bytes.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let found = body.get(at..at.checked_add(bytes.len())?)?;
        std::ptr::eq(found.as_ptr(), bytes.as_ptr()).then_some(at)
    }

    /// The text that holds the bytes at `offset`, and where they start in it.
    fn locate(&self, offset: usize) -> (&[u8], usize) {
        match offset.checked_sub(self.base) {
            Some(at) => (&self.hosts, at),
            None => (self.body.as_deref().map_or(&[][..], Vec::as_slice), offset),
        }
    }

    /// Ends reading in place: the body becomes the list's own text, with
    /// the hosts found elsewhere after it, where their offsets point. While
    /// another list still reads the body, or without memory for the move,
    /// the list goes on reading in place.
    fn own_text(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        match Arc::try_unwrap(body) {
            Ok(mut text) => {
                if text.len() != self.base || text.try_reserve_exact(self.hosts.len()).is_err() {
                    self.body = Some(Arc::new(text));
                    return;
                }
                text.extend_from_slice(&self.hosts);
                self.hosts = text;
                self.base = 0;
            }
            Err(shared) => self.body = Some(shared),
        }
    }

    /// Moves the targets of `other` after these: for lists read from parts
    /// of one body, at once (their spans kept apart until the sort, when
    /// every host lies in the body); otherwise one by one.
    pub fn append(&mut self, mut other: TargetList) -> Result<(), CapacityError> {
        let same_body = match (&self.body, &other.body) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same_body || self.tracked || other.tracked {
            self.settle()?;
            other.settle()?;
            for &span in &other.spans {
                self.push_bytes(other.host(span), span_port(span), 0)?;
            }
            return Ok(());
        }
        // Offsets into `other.hosts` move past these hosts.
        let shift = u64::try_from(self.hosts.len()).unwrap_or(u64::MAX);
        let base = u64::try_from(self.base).unwrap_or(u64::MAX);
        let moved = |span: u64| {
            let offset = span >> (LEN_BITS + PORT_BITS);
            if offset < base {
                return Some(span);
            }
            let offset = offset
                .checked_add(shift)
                .filter(|&o| o < 1 << OFFSET_BITS)?;
            Some(offset << (LEN_BITS + PORT_BITS) | span & TAIL_MASK)
        };
        let too_many = || CapacityError("too many targets to hold".into());
        let no_memory = || CapacityError("out of memory for targets".into());
        if other.hosts.is_empty() {
            // Every span points into the body, where it stays: they go to
            // the sort as they are.
            let spans = std::mem::take(&mut other.spans);
            self.later
                .try_reserve(1 + other.later.len())
                .map_err(|_| no_memory())?;
            if !spans.is_empty() {
                self.later.push(spans);
            }
            self.later.append(&mut other.later);
        } else {
            self.settle()?;
            other.settle()?;
            self.spans
                .try_reserve_exact(other.spans.len())
                .map_err(|_| no_memory())?;
            self.hosts
                .try_reserve_exact(other.hosts.len())
                .map_err(|_| no_memory())?;
            for &span in &other.spans {
                self.spans.push(moved(span).ok_or_else(too_many)?);
            }
            self.hosts.extend_from_slice(&other.hosts);
        }
        self.seen_upper |= other.seen_upper;
        self.seen_escape |= other.seen_escape;
        match (self.first, other.first) {
            (None, Some(first)) => {
                self.first = moved(first);
                self.shared = other.shared;
                self.head = other.head;
            }
            (Some(mine), Some(theirs)) => {
                let a = self.host(mine).get(..self.shared).unwrap_or_default();
                let b = other.host(theirs).get(..other.shared).unwrap_or_default();
                self.shared = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            }
            (_, None) => {}
        }
        self.plain = false;
        Ok(())
    }

    /// Moves the spans kept apart in `later` after the others.
    #[inline]
    fn settle(&mut self) -> Result<(), CapacityError> {
        if self.later.is_empty() {
            return Ok(());
        }
        self.settle_later()
    }

    /// [`TargetList::settle`] when there is something to move: never on
    /// the path of a push.
    #[cold]
    #[inline(never)]
    fn settle_later(&mut self) -> Result<(), CapacityError> {
        let more = self
            .later
            .iter()
            .map(Vec::len)
            .fold(0, usize::saturating_add);
        self.spans
            .try_reserve_exact(more)
            .map_err(|_| CapacityError("out of memory for targets".into()))?;
        for piece in std::mem::take(&mut self.later) {
            self.spans.extend_from_slice(&piece);
        }
        Ok(())
    }

    /// Adds one target. A repeat of the target added just before is skipped
    /// at once; other duplicates go in [`TargetList::finish`].
    pub fn push(&mut self, host: &str, port: u16) -> Result<(), CapacityError> {
        self.push_seq(host, port, 0)
    }

    /// Starts keeping, per target, the number of its first entry and its
    /// repeats. Targets already held get number 0: they came first.
    fn track(&mut self) -> Result<(), CapacityError> {
        if self.tracked {
            return Ok(());
        }
        self.settle()?;
        let mut meta = Vec::new();
        meta.try_reserve_exact(self.spans.capacity())
            .map_err(|_| CapacityError("out of memory for duplicate checks".into()))?;
        meta.resize(self.spans.len(), 0);
        self.meta = meta;
        self.tracked = true;
        Ok(())
    }

    /// Counts one more entry of the target added last, when tracked.
    fn repeat_last(&mut self) {
        if let Some(m) = self.meta.last_mut() {
            *m = meta_merge(*m, *m & !u64::from(u32::MAX));
        }
    }

    /// As [`TargetList::push`]; `seq` is the entry's number in document
    /// order, kept when tracked.
    fn push_seq(&mut self, host: &str, port: u16, seq: u32) -> Result<(), CapacityError> {
        self.push_bytes(host.as_bytes(), port, seq)
    }

    /// As [`TargetList::push_seq`], for a host's bytes (UTF-8).
    fn push_bytes(&mut self, bytes: &[u8], port: u16, seq: u32) -> Result<(), CapacityError> {
        let (mut upper, mut escape) = (false, false);
        if self.from_body {
            // No early exit: the (short) host is looked at whole.
            (upper, escape) = bytes.iter().fold((false, false), |(u, e), &b| {
                (
                    u | b.is_ascii_uppercase(),
                    e | (b < 0x20) | (b == b'"') | (b == b'\\'),
                )
            });
        }
        self.push_known(bytes, port, seq, upper, escape)
    }

    /// As [`TargetList::push_seq`], for a validated target: what its host
    /// holds is known without looking at it again.
    #[inline]
    fn push_valid(&mut self, t: &Target, port: u16, seq: u32) -> Result<(), CapacityError> {
        self.push_known(t.host().as_bytes(), port, seq, t.has_upper(), false)
    }

    /// Adds a host whose bytes have an upper-case letter (`upper`) or a
    /// byte that needs escaping (`escape`), as far as a list read in place
    /// needs to know.
    #[inline]
    fn push_known(
        &mut self,
        bytes: &[u8],
        port: u16,
        seq: u32,
        upper: bool,
        escape: bool,
    ) -> Result<(), CapacityError> {
        // Unknown again until the next finish.
        self.plain = false;
        self.settle()?;
        let len = u64::try_from(bytes.len())
            .ok()
            .filter(|&l| l < 1 << LEN_BITS)
            .ok_or_else(|| CapacityError(format!("host of {} bytes is too long", bytes.len())))?;
        let tail = len << PORT_BITS | u64::from(port);
        if self.repeats_last(bytes, tail) {
            self.repeat_last();
            return Ok(());
        }
        let in_body = self.in_body(bytes);
        let offset = in_body
            .unwrap_or_else(|| self.base.saturating_add(self.hosts.len()))
            .try_into()
            .ok()
            .filter(|&o: &u64| o < 1 << OFFSET_BITS)
            .ok_or_else(|| CapacityError("too many targets to hold".into()))?;
        let count = self.spans.len();
        let no_memory =
            |what: &str| CapacityError(format!("out of memory for {what} after {count} targets"));
        if in_body.is_none() {
            self.hosts
                .try_reserve(bytes.len())
                .map_err(|_| no_memory("host names"))?;
        }
        if self.spans.len() == self.spans.capacity() {
            self.make_room().map_err(|_| no_memory("targets"))?;
        }
        if self.tracked {
            self.meta
                .try_reserve(self.spans.capacity().saturating_sub(self.meta.len()))
                .map_err(|_| no_memory("duplicate checks"))?;
            self.meta.push(u64::from(seq) << 32);
        }
        let span = offset << (LEN_BITS + PORT_BITS) | tail;
        self.seen_upper |= upper;
        self.seen_escape |= escape;
        match self.first {
            None => {
                self.shared = bytes.len();
                self.first = Some(span);
                self.head = head_word(bytes);
            }
            Some(first) => {
                if !self.keeps_shared(bytes) {
                    let first = self.host(first).get(..self.shared).unwrap_or_default();
                    self.shared = first.iter().zip(bytes).take_while(|(a, b)| a == b).count();
                }
            }
        }
        if in_body.is_none() {
            self.hosts.extend_from_slice(bytes);
        }
        self.spans.push(span);
        Ok(())
    }

    /// [`TargetList::push_known`] of a host of the body read in place,
    /// without an upper-case letter or a byte to escape, when it needs
    /// nothing more than its span: not the last host again, the short
    /// prefix all share kept, room made and nothing tracked. False, having
    /// done nothing, otherwise.
    #[inline]
    fn push_plain(&mut self, bytes: &[u8], port: u16) -> bool {
        debug_assert!(!bytes
            .iter()
            .any(|&b| b.is_ascii_uppercase() || b < 0x20 || b == b'"' || b == b'\\'));
        if self.tracked
            || self.first.is_none()
            || !self.later.is_empty()
            || self.spans.len() == self.spans.capacity()
            || bytes.len() >= 1 << LEN_BITS
        {
            return false;
        }
        let Some(offset) = self
            .in_body(bytes)
            .map(|at| at as u64)
            .filter(|&at| at < 1 << OFFSET_BITS)
        else {
            return false;
        };
        let tail = (bytes.len() as u64) << PORT_BITS | u64::from(port);
        if self.repeats_last(bytes, tail) || !self.keeps_shared(bytes) {
            return false;
        }
        // Unknown again until the next finish.
        self.plain = false;
        self.spans.push(offset << (LEN_BITS + PORT_BITS) | tail);
        true
    }

    /// Whether `bytes` with the length and port of `tail` is the host
    /// added last: length and port first, then the last byte, where
    /// neighbours in an inventory mostly differ.
    #[inline]
    fn repeats_last(&self, bytes: &[u8], tail: u64) -> bool {
        self.spans.last().is_some_and(|&last| {
            last & TAIL_MASK == tail && {
                let prev = self.host(last);
                prev.last() == bytes.last() && prev == bytes
            }
        })
    }

    /// Whether `bytes` starts with the prefix all hosts share: one word
    /// compared when that is at most eight bytes and `bytes` has eight.
    #[inline]
    fn keeps_shared(&self, bytes: &[u8]) -> bool {
        let same_head =
            |h: &[u8; 8]| (u64::from_le_bytes(*h) ^ self.head) & low_bytes(self.shared) == 0;
        if self.shared <= 8 && bytes.first_chunk().is_some_and(same_head) {
            return true;
        }
        let first = self.first.map(|f| self.host(f)).unwrap_or_default();
        first
            .get(..self.shared)
            .is_some_and(|shared| bytes.starts_with(shared))
    }

    /// Makes room for one more span. Duplicates are dropped first, and the
    /// list grows (doubling) only when that freed less than half of it: a
    /// body of repeats keeps it small. When de-duplicating finds little,
    /// it waits for the list to grow eightfold, so that distinct targets
    /// are not sorted over and over.
    fn make_room(&mut self) -> Result<(), std::collections::TryReserveError> {
        const COMPACT_FROM: usize = 4096;
        let cap = self.spans.capacity();
        if cap >= COMPACT_FROM.max(self.compact_at) {
            // When even the distinct hashes leave less than an eighth to
            // free, de-duplicating would end as below: skip its sort.
            let len = self.spans.len();
            if len.saturating_sub(self.distinct_at_least()) < cap / 8 {
                self.compact_at = cap.saturating_mul(8);
                return self.spans.try_reserve(cap.max(16));
            }
            self.compact();
            let freed = cap - self.spans.len();
            if freed >= cap / 2 {
                // Room made ahead (see `Entries::expect`) that repeats
                // would not fill is given back, and the next fill is
                // de-duplicated again before the list grows.
                let keep = self.spans.len().saturating_mul(2).max(COMPACT_FROM);
                if keep <= cap / 2 {
                    self.spans.shrink_to(keep);
                    self.meta.shrink_to(keep);
                    self.compact_at = 0;
                }
                return Ok(());
            }
            self.compact_at = if freed >= cap / 8 {
                cap.saturating_mul(2)
            } else {
                cap.saturating_mul(8)
            };
        }
        self.spans.try_reserve(cap.max(16))
    }

    /// Sorts and de-duplicates. Names that differ only in letter case are
    /// one host: the first of them in byte order stays, as written.
    pub fn finish(&mut self) {
        self.plain = self.needs_no_escape();
        self.own_text();
        if self.has_upper_case() {
            self.sort_dedup(true);
        }
        self.sort_dedup(false);
        self.spans.shrink_to_fit();
        self.meta = Vec::new();
        self.tracked = false;
    }

    /// Whether no host has a control character, `"` or `\\` (looked for
    /// in blocks without an early exit, so that they vectorise), or as
    /// noted while pushing, for a text that holds more than hosts.
    fn needs_no_escape(&self) -> bool {
        if self.from_body {
            return !self.seen_escape;
        }
        !any_block(&self.hosts, |block| {
            block
                .iter()
                .fold(false, |a, &b| a | (b < 0x20) | (b == b'"') | (b == b'\\'))
        })
    }

    /// Whether every host can go into a JSON string as it is: known only
    /// after [`TargetList::finish`] (false before).
    pub fn plain_text(&self) -> bool {
        self.plain
    }

    /// Whether some host has upper-case letters, so that case variants
    /// may exist. Every host pushed is in `hosts`, or was noted while
    /// pushing, for a text that holds more than hosts.
    fn has_upper_case(&self) -> bool {
        if self.from_body {
            return self.seen_upper;
        }
        // Blocks without an early exit in them, so that they vectorise.
        any_block(&self.hosts, |block| {
            let mut words = block.chunks_exact(8);
            let upper = (&mut words).fold(false, |a, w| {
                a | <[u8; 8]>::try_from(w).is_ok_and(|w| has_upper(u64::from_ne_bytes(w)))
            });
            upper || words.remainder().iter().any(u8::is_ascii_uppercase)
        })
    }

    /// Sorts and de-duplicates the spans (and their meta, merged), with a
    /// key of eight bytes per span to spare (see [`sort::sort_dedup`]), or
    /// beside spans kept apart, in a buffer of their own.
    fn sort_dedup(&mut self, fold: bool) {
        let mut spans = std::mem::take(&mut self.spans);
        let mut meta = std::mem::take(&mut self.meta);
        let mut later = std::mem::take(&mut self.later);
        if !meta.is_empty() {
            // Tracking joins up the spans first, so this never runs; if it
            // did, the spans kept apart would count as entries numbered 0.
            for piece in later.drain(..) {
                spans.extend_from_slice(&piece);
            }
            meta.resize(spans.len(), 0);
        }
        let texts = ByText { list: self, fold };
        if later.is_empty() {
            sort::sort_dedup(&texts, &mut spans, &mut meta, self.shared, meta_merge);
        } else {
            later.insert(0, spans);
            spans = sort::sort_dedup_pieces(&texts, later, self.shared);
        }
        self.spans = spans;
        self.meta = meta;
    }

    /// As [`TargetList::sort_dedup`] without folding, in place with a byte
    /// per span to spare: for compacting while the body is still held.
    fn compact(&mut self) {
        let mut spans = std::mem::take(&mut self.spans);
        let mut meta = std::mem::take(&mut self.meta);
        self.sort_in_place(&mut spans, &mut meta);
        dedup_sorted(&mut spans, &mut meta, |p, s| self.same(p, s, false));
        self.spans = spans;
        self.meta = meta;
    }

    /// A lower bound on how many distinct targets the spans hold: how many
    /// bits of a map (two bytes per span) their hashes set. 0 without
    /// memory.
    fn distinct_at_least(&self) -> usize {
        let words = (self.spans.len() / 4).max(1);
        let mut map: Vec<u64> = Vec::new();
        if map.try_reserve_exact(words).is_err() {
            return 0;
        }
        map.resize(words, 0);
        let bits = words as u128 * 64;
        let mut set = 0;
        for &s in &self.spans {
            let h = self.span_hash(s);
            let i = ((u128::from(h) * bits) >> 64) as usize;
            if let Some(w) = map.get_mut(i / 64) {
                let bit = 1 << (i % 64);
                set += usize::from(*w & bit == 0);
                *w |= bit;
            }
        }
        set
    }

    /// [`text_hash`] of a span's text. A short host is read as two words
    /// straight from the text when it has the bytes, its own masked off.
    fn span_hash(&self, span: u64) -> u64 {
        let (text, at, len) = self.place(span);
        match text.get(at..at.saturating_add(16)) {
            Some(words) if len <= 16 => short_hash(words, len, span_port(span)),
            _ => text_hash(self.host(span), span_port(span)),
        }
    }

    /// Drops the spans marked [`REMOVED`].
    fn drop_removed(&mut self) {
        let mut w = 0;
        for r in 0..self.spans.len() {
            let (Some(&s), Some(&m)) = (self.spans.get(r), self.meta.get(r)) else {
                break;
            };
            if m == REMOVED {
                continue;
            }
            if let (Some(ws), Some(wm)) = (self.spans.get_mut(w), self.meta.get_mut(w)) {
                *ws = s;
                *wm = m;
            }
            w += 1;
        }
        self.spans.truncate(w);
        self.meta.truncate(w);
    }

    /// Sorts `part` (and `meta` along, when it is as long) by `cmp`:
    /// insertion sort, for the few spans the radix passes leave.
    fn small_sort(part: &mut [u64], meta: &mut [u64], cmp: impl Fn(u64, u64) -> Ordering) {
        if meta.len() != part.len() {
            part.sort_unstable_by(|&a, &b| cmp(a, b));
            return;
        }
        for i in 1..part.len() {
            let mut j = i;
            while j > 0 {
                let (Some(&a), Some(&b)) = (part.get(j - 1), part.get(j)) else {
                    break;
                };
                if cmp(a, b) != Ordering::Greater {
                    break;
                }
                part.swap(j - 1, j);
                meta.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    /// Sorts spans by their text with a byte per span to spare. An in-place
    /// MSD radix sort: long common prefixes cost one cheap pass each instead
    /// of making every comparison slow. Each pass reads every host once
    /// (they are scattered, so that read is what costs) and keeps its byte
    /// in `digits`, one byte a span.
    fn sort_in_place(&self, spans: &mut [u64], meta: &mut [u64]) {
        // Meta moves with its span when there is one per span.
        let with_meta = meta.len() == spans.len();
        const SMALL: usize = 16;
        const BUCKETS: usize = 257;
        // A byte of UTF-8 text is never 0xFF, so byte + 1 fits in a u8.
        let mut digits: Vec<u8> = vec![0; spans.len()];
        let mut work: Vec<(usize, usize, usize)> = vec![(0, spans.len(), 0)];
        let mut count = [0usize; BUCKETS];
        let mut start = [0usize; BUCKETS];
        let mut next = [0usize; BUCKETS];
        while let Some((lo, hi, depth)) = work.pop() {
            let (Some(part), Some(keys)) = (spans.get_mut(lo..hi), digits.get_mut(lo..hi)) else {
                continue;
            };
            let mut no_meta: [u64; 0] = [];
            let part_meta = match meta.get_mut(lo..hi) {
                Some(m) if with_meta => m,
                _ => &mut no_meta[..],
            };
            if part.len() <= SMALL {
                // Their first `depth` bytes are equal.
                TargetList::small_sort(part, part_meta, |a, b| {
                    self.compare_from(a, b, false, depth)
                });
                continue;
            }
            // Bytes every text here shares need no pass of their own.
            let depth = depth + self.common_prefix(part, depth, false);
            let (mut first, mut last) = (BUCKETS, 0);
            for (&s, k) in part.iter().zip(keys.iter_mut()) {
                let d = self.digit(s, depth, false);
                *k = u8::try_from(d).unwrap_or(u8::MAX);
                if let Some(c) = count.get_mut(usize::from(*k)) {
                    *c += 1;
                }
                first = first.min(usize::from(*k));
                last = last.max(usize::from(*k));
            }
            let used = first..last.saturating_add(1);
            let mut sum = 0usize;
            for b in used.clone() {
                let (Some(st), Some(nx), Some(&c)) =
                    (start.get_mut(b), next.get_mut(b), count.get(b))
                else {
                    continue;
                };
                *st = sum;
                *nx = sum;
                sum += c;
            }
            // American flag sort: every swap puts one span in its bucket.
            for b in used.clone() {
                let (Some(&st), Some(&c)) = (start.get(b), count.get(b)) else {
                    continue;
                };
                let end = st + c;
                loop {
                    let i = next.get(b).copied().unwrap_or(end);
                    if i >= end {
                        break;
                    }
                    let k = keys.get(i).map_or(b, |&k| usize::from(k));
                    if k == b {
                        if let Some(n) = next.get_mut(b) {
                            *n += 1;
                        }
                    } else if let Some(n) = next.get_mut(k) {
                        if *n < part.len() {
                            part.swap(i, *n);
                            keys.swap(i, *n);
                            if *n < part_meta.len() {
                                part_meta.swap(i, *n);
                            }
                        }
                        *n += 1;
                    } else {
                        break;
                    }
                }
            }
            for b in used {
                let (Some(&st), Some(c)) = (start.get(b), count.get_mut(b)) else {
                    continue;
                };
                if b > 0 && *c > 1 {
                    work.push((lo + st, lo + st + *c, depth + 1));
                }
                *c = 0;
            }
        }
    }

    /// How many host bytes from `depth` on all of `part` shares (folded
    /// when `fold`). Stops at the first span that shares none.
    fn common_prefix(&self, part: &[u64], depth: usize, fold: bool) -> usize {
        let Some((&head, rest)) = part.split_first() else {
            return 0;
        };
        let first = self.host(head).get(depth..).unwrap_or_default();
        let mut lcp = first.len();
        for &s in rest {
            if lcp == 0 {
                break;
            }
            let other = self.host(s).get(depth..).unwrap_or_default();
            let (a, b) = (first.get(..lcp).unwrap_or(first), other);
            if let Some(head) = b.get(..lcp) {
                if if fold {
                    a.eq_ignore_ascii_case(head)
                } else {
                    a == head
                } {
                    continue;
                }
            }
            lcp = a
                .iter()
                .zip(b)
                .take_while(|(x, y)| {
                    if fold {
                        x.eq_ignore_ascii_case(y)
                    } else {
                        x == y
                    }
                })
                .count();
        }
        lcp
    }

    /// Whether two targets have the same text (folded when `fold`): the
    /// same host and port, as a host never ends in `:` and digits.
    fn same(&self, a: u64, b: u64, fold: bool) -> bool {
        span_port(a) == span_port(b)
            && if fold {
                self.host(a).eq_ignore_ascii_case(self.host(b))
            } else {
                self.host(a) == self.host(b)
            }
    }

    /// Byte `depth` of a target's text as a bucket: 0 past the end, else
    /// 1 + the byte (folded to lower case when `fold`).
    fn digit(&self, span: u64, depth: usize, fold: bool) -> usize {
        let host = self.host(span);
        let byte = match depth.checked_sub(host.len()) {
            None => host.get(depth).copied(),
            Some(0) => Some(b':'),
            Some(k) => port_digit(span_port(span), k - 1),
        };
        match byte {
            Some(b) if fold => 1 + usize::from(b.to_ascii_lowercase()),
            Some(b) => 1 + usize::from(b),
            None => 0,
        }
    }

    pub fn len(&self) -> usize {
        self.later
            .iter()
            .map(Vec::len)
            .fold(self.spans.len(), usize::saturating_add)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The targets as `host:port` text, in their current order.
    pub fn iter(&self) -> impl Iterator<Item = TargetText> + '_ {
        self.all_spans()
            .map(|s| TargetText::new(self.host(s), span_port(s)))
    }

    /// The targets as (host, port), in their current order: no text built.
    pub fn parts(&self) -> impl Iterator<Item = (&[u8], u16)> + '_ {
        self.all_spans().map(|s| (self.host(s), span_port(s)))
    }

    /// Every span, those kept apart included.
    fn all_spans(&self) -> impl Iterator<Item = u64> + '_ {
        self.spans
            .iter()
            .chain(self.later.iter().flatten())
            .copied()
    }

    /// As [`TargetList::parts`] for the targets `range`, each host with the
    /// bytes that follow it in the list's text, `W` in all (`None` near the
    /// text's end): a render can copy a fixed `W` bytes and keep the host's
    /// length.
    pub fn parts_padded<const W: usize>(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (&[u8], Option<&[u8; W]>, u16)> + '_ {
        // Only after the sort, which leaves no spans kept apart.
        debug_assert!(self.later.is_empty());
        let spans = self.spans.get(range).unwrap_or_default();
        spans.iter().map(|&s| {
            let (text, at, len) = self.place(s);
            let host = text.get(at..at.saturating_add(len)).unwrap_or_default();
            let padded = text
                .get(at..at.saturating_add(W))
                .and_then(|w| <&[u8; W]>::try_from(w).ok());
            (host, padded, span_port(s))
        })
    }

    /// One target's `host:port`.
    fn text(&self, span: u64) -> String {
        TargetText::new(self.host(span), span_port(span))
            .as_str()
            .to_string()
    }

    /// One target's `host:port` folded to lower case, in `buf`.
    fn folded(&self, span: u64, mut buf: Vec<u8>) -> Vec<u8> {
        buf.clear();
        buf.extend_from_slice(TargetText::new(self.host(span), span_port(span)).as_bytes());
        buf.make_ascii_lowercase();
        buf
    }

    /// The targets as strings, for tests and diagnostics.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(|t| t.as_str().to_string()).collect()
    }

    /// The text that holds a span's host, where the host starts in it, and
    /// its length.
    fn place(&self, span: u64) -> (&[u8], usize, usize) {
        let offset = usize::try_from(span >> (LEN_BITS + PORT_BITS)).unwrap_or(usize::MAX);
        let len = ((span >> PORT_BITS) & ((1 << LEN_BITS) - 1)) as usize;
        let (text, at) = self.locate(offset);
        (text, at, len)
    }

    fn host(&self, span: u64) -> &[u8] {
        let (text, at, len) = self.place(span);
        text.get(at..at.saturating_add(len)).unwrap_or_default()
    }

    /// Bytes `depth..depth + 8` of a span's text, big-endian from the top
    /// byte and zero past the text's end, and how many there are.
    /// `tail` is [`port_word`] of the span's port.
    fn window(&self, span: u64, depth: usize, tail: (u64, usize)) -> (u64, usize) {
        let (text, at, len) = self.place(span);
        let (port, port_len) = tail;
        let Some(rest) = len.checked_sub(depth).filter(|&r| r > 0) else {
            // In the `:port` part.
            let k = depth - len;
            return match port_len.checked_sub(k) {
                Some(n) if n > 0 => (port << (8 * k), n),
                _ => (0, 0),
            };
        };
        let start = at.saturating_add(depth);
        // Eight bytes from `start`, past the host when the buffer has them.
        let word = match text.get(start..start.saturating_add(8)) {
            Some(w) => <[u8; 8]>::try_from(w).map_or(0, u64::from_be_bytes),
            None => {
                let mut buf = [0u8; 8];
                let host = text.get(start..).unwrap_or_default();
                for (d, &b) in buf.iter_mut().zip(host) {
                    *d = b;
                }
                u64::from_be_bytes(buf)
            }
        };
        if rest >= 8 {
            return (word, 8);
        }
        let shift = 8 * rest as u32;
        let word = word & !(u64::MAX >> shift) | port >> shift;
        (word, (rest + port_len).min(8))
    }

    /// Compares two targets as their `host:port` texts would compare, with
    /// letters folded to lower case when `fold` is set.
    fn compare(&self, a: u64, b: u64, fold: bool) -> Ordering {
        self.compare_from(a, b, fold, 0)
    }

    /// As [`TargetList::compare`], for texts known to be equal (folded when
    /// `fold`) in their first `from` bytes: short tails compare inline.
    fn compare_from(&self, a: u64, b: u64, fold: bool, from: usize) -> Ordering {
        let (ha, hb) = (self.host(a), self.host(b));
        let n = ha.len().min(hb.len());
        let skip = from.min(n);
        let (ha_head, hb_head) = (
            ha.get(skip..n).unwrap_or_default(),
            hb.get(skip..n).unwrap_or_default(),
        );
        let head = if fold {
            cmp_folded(ha_head, hb_head)
        } else if skip == 0 {
            ha_head.cmp(hb_head)
        } else {
            ha_head
                .iter()
                .zip(hb_head)
                .find(|(x, y)| x != y)
                .map_or(Ordering::Equal, |(x, y)| x.cmp(y))
        };
        if head != Ordering::Equal {
            return head;
        }
        // Equal so far: the rest is a few bytes (host end, ':', port).
        for depth in n.. {
            let (x, y) = (self.digit(a, depth, fold), self.digit(b, depth, fold));
            if x != y || x == 0 {
                return x.cmp(&y);
            }
        }
        Ordering::Equal
    }
}

/// The same targets in the same order, however they are stored.
impl PartialEq for TargetList {
    fn eq(&self, other: &TargetList) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a.as_bytes() == b.as_bytes())
    }
}

impl Eq for TargetList {}

fn span_port(span: u64) -> u16 {
    (span & ((1 << PORT_BITS) - 1)) as u16
}

/// Drops every span that is `same` as the one kept before it, merging
/// their meta when there is one per span.
fn dedup_sorted(spans: &mut Vec<u64>, meta: &mut Vec<u64>, same: impl Fn(u64, u64) -> bool) {
    let with_meta = meta.len() == spans.len();
    let mut w = 0;
    for r in 0..spans.len() {
        let Some(&s) = spans.get(r) else {
            break;
        };
        let m = meta.get(r).copied().filter(|_| with_meta);
        if w > 0 && spans.get(w - 1).is_some_and(|&p| same(p, s)) {
            if let (Some(m), Some(pm)) = (m, meta.get_mut(w - 1)) {
                *pm = meta_merge(*pm, m);
            }
            continue;
        }
        if let Some(ws) = spans.get_mut(w) {
            *ws = s;
        }
        if let (Some(m), Some(wm)) = (m, meta.get_mut(w)) {
            *wm = m;
        }
        w += 1;
    }
    spans.truncate(w);
    if with_meta {
        meta.truncate(w);
    }
}

/// The spans' `host:port` texts as [`sort::sort_dedup`] orders them: folded to
/// lower case when `fold`, and then in byte order among equals.
struct ByText<'a> {
    list: &'a TargetList,
    fold: bool,
}

impl Texts for ByText<'_> {
    fn keys(&self, pairs: &mut [u64], depth: usize) {
        // Ports repeat: their text is made once per run of one port.
        let mut port = None;
        let mut tail = (0, 0);
        for pair in pairs.chunks_exact_mut(2) {
            let [key, s] = pair else {
                continue;
            };
            let s = *s;
            if port != Some(span_port(s)) {
                port = Some(span_port(s));
                tail = port_word(span_port(s));
            }
            let (word, n) = self.list.window(s, depth, tail);
            *key = key_of(if self.fold { lower(word) } else { word }, n);
        }
    }

    fn compare_from(&self, a: u64, b: u64, depth: usize) -> Ordering {
        match self.list.compare_from(a, b, self.fold, depth) {
            Ordering::Equal if self.fold => self.list.compare(a, b, false),
            o => o,
        }
    }

    fn same(&self, a: u64, b: u64) -> bool {
        self.list.same(a, b, self.fold)
    }

    fn ties_ordered(&self) -> bool {
        self.fold
    }
}

/// `:` and the port's digits, big-endian from the top byte, and how many.
fn port_word(port: u16) -> (u64, usize) {
    let mut digits = [0u8; 5];
    let digits = port_digits(port, &mut digits);
    let mut buf = [0u8; 8];
    for (d, &b) in buf.iter_mut().zip([b':'].iter().chain(digits)) {
        *d = b;
    }
    (u64::from_be_bytes(buf), 1 + digits.len())
}

/// Whether `test` holds for some block of 4096 bytes of `text` (the last
/// one shorter): a long text is looked at in two halves at once.
fn any_block(text: &[u8], test: impl Fn(&[u8]) -> bool + Sync) -> bool {
    const HALVES_FROM: usize = 1 << 20;
    let blocks = |part: &[u8]| part.chunks(4096).any(&test);
    if text.len() < HALVES_FROM {
        return blocks(text);
    }
    let (low, high) = text.split_at(text.len() / 2 / 4096 * 4096);
    let (mut a, mut b) = (false, false);
    crate::model::par::both("scan", || a = blocks(low), || b = blocks(high));
    a || b
}

/// [`text_hash`] of a host of `len` bytes (at most 16) that starts
/// `words`, which has 16 bytes: those past `len` are masked off.
fn short_hash(words: &[u8], len: usize, port: u16) -> u64 {
    let word = |i: usize| {
        let bytes = words.get(8 * i..8 * i + 8).unwrap_or_default();
        let w = <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes);
        let keep = len.saturating_sub(8 * i).min(8);
        w & u64::MAX.checked_shr(64 - 8 * keep as u32).unwrap_or(0)
    };
    mix(
        (len as u64) << PORT_BITS | u64::from(port),
        word(0),
        word(1),
    )
}

/// A hash of a target's text, for counting distinct targets: hosts of at
/// most 16 bytes as [`short_hash`].
fn text_hash(host: &[u8], port: u16) -> u64 {
    if host.len() <= 16 {
        let mut buf = [0u8; 16];
        for (d, &b) in buf.iter_mut().zip(host) {
            *d = b;
        }
        return short_hash(&buf, host.len(), port);
    }
    long_hash(host, port)
}

/// Two words into a seed, finished as splitmix64 does: every input bit
/// moves the top bits.
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (seed ^ a).wrapping_mul(K).rotate_left(31);
    h = (h ^ b).wrapping_mul(K);
    h = (h ^ h >> 30).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ h >> 27).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ h >> 31
}

/// [`text_hash`] of a longer host.
fn long_hash(host: &[u8], port: u16) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (host.len() as u64) << PORT_BITS | u64::from(port);
    let mut words = host.chunks_exact(8);
    for w in &mut words {
        let w = <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes);
        h = (h ^ w).wrapping_mul(K).rotate_left(31);
    }
    let rest = words
        .remainder()
        .iter()
        .rev()
        .fold(0, |a, &b| a << 8 | u64::from(b));
    // The finaliser of splitmix64: every input bit moves the top bits.
    h = (h ^ rest).wrapping_mul(K);
    h = (h ^ h >> 30).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ h >> 27).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ h >> 31
}

fn cmp_folded(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            let (x, y) = (x.to_ascii_lowercase(), y.to_ascii_lowercase());
            if x != y {
                return x.cmp(&y);
            }
        }
    }
    a.len().cmp(&b.len())
}

/// One `file_sd` target group. Several groups with their own labels are how
/// per-target labels or more inventory sources will be expressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    pub targets: TargetList,
    /// In output order; names are unique.
    pub labels: Vec<(String, String)>,
}

impl TargetGroup {
    /// One group: every target with `__metrics_path__` first, then the
    /// other labels in the order given.
    pub fn new(
        targets: TargetList,
        metrics_path: &str,
        labels: &[(String, String)],
    ) -> TargetGroup {
        let mut all = Vec::with_capacity(labels.len() + 1);
        all.push(("__metrics_path__".to_string(), metrics_path.to_string()));
        all.extend(labels.iter().cloned());
        TargetGroup {
            targets,
            labels: all,
        }
    }
}

/// The labels of one inventory entry, in a fixed order; empty for a plain
/// name, which gets only the configured labels.
pub type Labels = Vec<(String, String)>;

/// Valid inventory entries, grouped by their labels: one compact target
/// list per distinct label set, each of which renders as one target group.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    groups: Vec<(Labels, TargetList)>,
    /// The group of each label set, while collecting.
    index: HashMap<Labels, usize>,
    /// Once there are two groups: the number of the next entry in
    /// document order, kept per target to find conflicting duplicates at
    /// [`Entries::finish`]. A single label set never pays for it.
    seq: u32,
    /// Cap on what the label sets may cost, in bytes; `None`: no cap.
    label_budget: Option<usize>,
    /// What the label sets cost so far, as [`label_set_cost`] counts it.
    label_cost: usize,
    /// Hosts are read in place from this body: see [`TargetList::reading`].
    body: Option<Arc<Vec<u8>>>,
    /// Room for this many targets is made at once in the first group.
    expected: usize,
}

/// Bytes one label set is counted as: it is held twice while collecting
/// (in its group and in the index), each pair as two strings, and its
/// group has a target list. Measured, rounded up.
fn label_set_cost(labels: &[(String, String)]) -> usize {
    const GROUP: usize = 512;
    const PAIR: usize = 160;
    labels.iter().fold(GROUP, |sum, (n, v)| {
        sum.saturating_add(PAIR)
            .saturating_add(n.len().saturating_add(v.len()).saturating_mul(2))
    })
}

/// Entries dropped as conflicting duplicates: the same address as an
/// earlier entry with other labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conflicts {
    pub count: usize,
    /// The first [`MAX_EXAMPLES`] of them in document order, as
    /// `host:port` (repeats of one address in one group shown once).
    pub examples: Vec<String>,
}

/// The same groups with the same targets, however they were collected.
impl PartialEq for Entries {
    fn eq(&self, other: &Entries) -> bool {
        self.groups == other.groups
    }
}

impl Eq for Entries {}

impl Entries {
    pub fn new() -> Entries {
        Entries::default()
    }

    /// Caps what distinct label sets may cost, about `bytes` in all: one
    /// label set per entry costs far more than the entry's text.
    pub fn set_label_budget(&mut self, bytes: usize) {
        self.label_budget = Some(bytes);
    }

    /// Takes the hosts of the first group in place from `body`: see
    /// [`TargetList::reading`].
    pub fn read_in_place(&mut self, body: Arc<Vec<u8>>) {
        self.body = Some(body);
    }

    /// Makes room for about `n` targets at once in the first group,
    /// rather than growing to them by doubling.
    pub fn expect(&mut self, n: usize) {
        self.expected = n;
    }

    /// Adds one entry: its address and its labels. The same address in
    /// other groups is resolved at [`Entries::finish`].
    pub fn push(
        &mut self,
        host: &str,
        port: u16,
        labels: &[(String, String)],
    ) -> Result<(), CapacityError> {
        let g = self.group(labels)?;
        self.push_to(g, host, port)
    }

    /// The group of `labels`, created when new.
    pub fn group(&mut self, labels: &[(String, String)]) -> Result<usize, CapacityError> {
        if let Some(&i) = self.index.get(labels) {
            return Ok(i);
        }
        let i = self.groups.len();
        let cost = self.label_cost.saturating_add(label_set_cost(labels));
        if let Some(budget) = self.label_budget.filter(|&b| cost > b) {
            return Err(CapacityError(format!(
                "{i} distinct label sets take the {budget} bytes allowed for them \
                 (twice MAX_RESPONSE_BYTES)"
            )));
        }
        self.label_cost = cost;
        // Only the first group reads in place: one body, one owner.
        let mut list = match &self.body {
            Some(body) if i == 0 => TargetList::reading(Arc::clone(body)),
            _ => TargetList::new(),
        };
        if i == 0 {
            // Only a hint: without the memory, the list grows as it must.
            let _ = list.spans.try_reserve_exact(self.expected);
        }
        if i >= 1 {
            // A second label set: from now on every entry is numbered.
            if let Some((_, first)) = self.groups.first_mut() {
                first.track()?;
            }
            list.track()?;
            self.seq = self.seq.max(1);
        }
        self.groups.push((labels.to_vec(), list));
        self.index.insert(labels.to_vec(), i);
        Ok(i)
    }

    /// Adds one address to group `g` (from [`Entries::group`]); as
    /// [`Entries::push`].
    pub fn push_to(&mut self, g: usize, host: &str, port: u16) -> Result<(), CapacityError> {
        let (list, seq) = self.next_entry(g)?;
        list.push_seq(host, port, seq)
    }

    /// As [`Entries::push_to`], for a validated target at `port`.
    #[inline]
    pub fn push_target(&mut self, g: usize, t: &Target, port: u16) -> Result<(), CapacityError> {
        if self.seq == 0 && !t.has_upper() {
            // One label set: the entries need no numbers.
            if let Some((_, list)) = self.groups.get_mut(g) {
                if list.push_plain(t.host().as_bytes(), port) {
                    return Ok(());
                }
            }
        }
        let (list, seq) = self.next_entry(g)?;
        list.push_valid(t, port, seq)
    }

    /// Group `g`'s list, and the number of the entry about to be added.
    fn next_entry(&mut self, g: usize) -> Result<(&mut TargetList, u32), CapacityError> {
        let seq = self.seq;
        if seq > 0 {
            self.seq = seq
                .checked_add(1)
                .ok_or_else(|| CapacityError("too many entries to number".into()))?;
        }
        match self.groups.get_mut(g) {
            Some((_, list)) => Ok((list, seq)),
            None => Err(CapacityError("lost a target group".into())),
        }
    }

    /// Moves the targets of `list` after those of group `g`: a list read
    /// from a later part of the same body, see [`TargetList::append`].
    pub fn append_to(&mut self, g: usize, list: TargetList) -> Result<(), CapacityError> {
        match self.groups.get_mut(g) {
            Some((_, mine)) => mine.append(list),
            None => Err(CapacityError("lost a target group".into())),
        }
    }

    /// The targets of group `g`, taken out of it.
    pub fn take_group(&mut self, g: usize) -> TargetList {
        self.groups
            .get_mut(g)
            .map(|(_, list)| std::mem::take(list))
            .unwrap_or_default()
    }

    /// Counts one more entry of the address added last to group `g`.
    pub fn repeat_last(&mut self, g: usize) {
        if let Some((_, list)) = self.groups.get_mut(g) {
            list.repeat_last();
        }
    }

    /// Sorts and de-duplicates every group, and orders the groups by their
    /// label sets, so that the same inventory in any order renders the same.
    /// An address in several groups stays only in the group of its first
    /// entry; the others' entries are returned as conflicting duplicates.
    pub fn finish(&mut self) -> Conflicts {
        // The lists take the body over as their own text.
        self.body = None;
        let conflicts = if self.seq > 0 {
            self.resolve_conflicts()
        } else {
            Conflicts::default()
        };
        for (_, list) in &mut self.groups {
            list.finish();
        }
        self.groups.retain(|(_, list)| !list.is_empty());
        sort_by_label_set(&mut self.groups);
        self.index = HashMap::new();
        self.seq = 0;
        conflicts
    }

    /// Merges the groups' addresses in case-folded order: an address held
    /// by several groups is kept where its first entry is, and removed from
    /// the others.
    fn resolve_conflicts(&mut self) -> Conflicts {
        let mut out = Conflicts::default();
        for (_, list) in &mut self.groups {
            list.sort_dedup(true);
        }
        let mut pos = vec![0usize; self.groups.len()];
        let mut heap: BinaryHeap<Reverse<(Vec<u8>, usize)>> = BinaryHeap::new();
        for (g, (_, list)) in self.groups.iter().enumerate() {
            if let Some(&span) = list.spans.first() {
                heap.push(Reverse((list.folded(span, Vec::new()), g)));
            }
        }
        let mut same: Vec<(Vec<u8>, usize)> = Vec::new();
        let mut examples: Vec<(u32, String)> = Vec::new();
        while let Some(Reverse(head)) = heap.pop() {
            same.clear();
            same.push(head);
            while let Some(Reverse((key, _))) = heap.peek() {
                if same.first().is_none_or(|(k, _)| k != key) {
                    break;
                }
                if let Some(Reverse(next)) = heap.pop() {
                    same.push(next);
                }
            }
            if same.len() > 1 {
                let seq_of = |g: usize| {
                    let list = self.groups.get(g).map(|(_, l)| l);
                    let m = list.and_then(|l| pos.get(g).and_then(|&p| l.meta.get(p)));
                    m.map_or(u32::MAX, |&m| meta_seq(m))
                };
                let first = same.iter().map(|&(_, g)| g).min_by_key(|&g| seq_of(g));
                for &(_, g) in &same {
                    let (Some(p), Some((_, list))) = (pos.get(g), self.groups.get_mut(g)) else {
                        continue;
                    };
                    if Some(g) == first {
                        continue;
                    }
                    let (Some(&m), Some(&span)) = (list.meta.get(*p), list.spans.get(*p)) else {
                        continue;
                    };
                    let entries = usize::try_from(meta_repeats(m)).unwrap_or(usize::MAX);
                    out.count = out.count.saturating_add(entries).saturating_add(1);
                    examples.push((meta_seq(m), list.text(span)));
                    if let Some(m) = list.meta.get_mut(*p) {
                        *m = REMOVED;
                    }
                    if examples.len() >= 2 * MAX_EXAMPLES {
                        examples.sort_unstable();
                        examples.truncate(MAX_EXAMPLES);
                    }
                }
            }
            for (key, g) in same.drain(..) {
                let (Some(p), Some((_, list))) = (pos.get_mut(g), self.groups.get(g)) else {
                    continue;
                };
                *p += 1;
                if let Some(&span) = list.spans.get(*p) {
                    heap.push(Reverse((list.folded(span, key), g)));
                }
            }
        }
        examples.sort_unstable();
        out.examples = examples
            .into_iter()
            .take(MAX_EXAMPLES)
            .map(|(_, t)| t)
            .collect();
        for (_, list) in &mut self.groups {
            list.drop_removed();
        }
        out
    }

    /// Targets in all groups.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|(_, l)| l.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|(_, l)| l.is_empty())
    }

    /// Every target as `host:port`, group after group, for tests and
    /// diagnostics.
    pub fn to_strings(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|(_, l)| l.to_strings())
            .collect()
    }

    /// The target groups to render. `defaults` (`__metrics_path__` first,
    /// then the configured labels) apply to every group; an entry's own
    /// label of the same name overrides the default, and its other labels
    /// follow. Groups are ordered by their final label sets. An empty
    /// inventory is one group without targets, so that the document keeps
    /// its labels.
    pub fn into_groups(self, defaults: &[(String, String)]) -> Vec<TargetGroup> {
        if self.groups.is_empty() {
            return vec![TargetGroup {
                targets: TargetList::new(),
                labels: defaults.to_vec(),
            }];
        }
        let mut merged: Vec<(Labels, TargetList)> = self
            .groups
            .into_iter()
            .map(|(own, targets)| (merge_labels(defaults, &own), targets))
            .collect();
        sort_by_label_set(&mut merged);
        merged
            .into_iter()
            .map(|(labels, targets)| TargetGroup { targets, labels })
            .collect()
    }
}

/// `defaults` in their order with `own` values in place of theirs, then
/// the other `own` labels by name: the same set always gives the same list.
pub fn merge_labels(defaults: &[(String, String)], own: &[(String, String)]) -> Labels {
    let mut labels = defaults.to_vec();
    let mut extra: Vec<&(String, String)> = Vec::new();
    for pair in own {
        match labels.iter_mut().find(|(n, _)| *n == pair.0) {
            Some(slot) => slot.1.clone_from(&pair.1),
            None => extra.push(pair),
        }
    }
    extra.sort();
    labels.extend(extra.into_iter().cloned());
    labels
}

/// Orders groups by their label sets: the (name, value) pairs sorted by
/// name, compared as lists.
fn sort_by_label_set(groups: &mut Vec<(Labels, TargetList)>) {
    if groups.len() < 2 {
        return;
    }
    let keys: Vec<Vec<&(String, String)>> = groups
        .iter()
        .map(|(l, _)| {
            let mut k: Vec<&(String, String)> = l.iter().collect();
            k.sort();
            k
        })
        .collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| keys.get(a).cmp(&keys.get(b)));
    drop(keys);
    let mut slots: Vec<Option<(Labels, TargetList)>> = groups.drain(..).map(Some).collect();
    groups.extend(
        order
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take)),
    );
}

/// Labels as a JSON object that keeps their order (serde_json's own map
/// would sort them).
struct OrderedLabels<'a>(&'a [(String, String)]);

impl Serialize for OrderedLabels<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The targets as a JSON array of strings, produced one at a time.
struct TargetsOut<'a>(&'a TargetList);

impl Serialize for TargetsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for span in self.0.all_spans() {
            seq.serialize_element(&TargetOut(self.0, span))?;
        }
        seq.end()
    }
}

/// One target as a JSON string, written piece by piece.
struct TargetOut<'a>(&'a TargetList, u64);

impl fmt::Display for TargetOut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = std::str::from_utf8(self.0.host(self.1)).map_err(|_| fmt::Error)?;
        write!(f, "{host}:{}", span_port(self.1))
    }
}

impl Serialize for TargetOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Serialize)]
struct GroupOut<'a> {
    targets: TargetsOut<'a>,
    labels: OrderedLabels<'a>,
}

/// Writes groups as pretty JSON (two-space indent, with a trailing
/// newline), straight into `w`: the document is never held whole. An error
/// means `w` got part of a document, which the caller must not publish.
pub fn render_to(w: &mut dyn Write, groups: &[TargetGroup]) -> io::Result<()> {
    let out: Vec<GroupOut> = groups
        .iter()
        .map(|g| GroupOut {
            targets: TargetsOut(&g.targets),
            labels: OrderedLabels(&g.labels),
        })
        .collect();
    // serde_json writes a token at a time; batch them into large writes.
    let mut buf = BufWriter::with_capacity(64 * 1024, w);
    serde_json::to_writer_pretty(&mut buf, &out).map_err(io::Error::from)?;
    buf.write_all(b"\n")?;
    buf.flush()
}

/// The rendered document in memory, for tests and small documents. A
/// failed render is an error, never a stand-in document such as `[]`.
pub fn render(groups: &[TargetGroup]) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    render_to(&mut buf, groups)?;
    Ok(buf)
}

/// Reads back the target addresses of a `file_sd` document, sorted and
/// unique.
pub fn parse_targets(content: &[u8]) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct GroupIn {
        targets: Vec<String>,
    }
    let groups: Vec<GroupIn> = serde_json::from_slice(content).ok()?;
    let mut all: Vec<String> = groups.into_iter().flat_map(|g| g.targets).collect();
    all.sort_unstable();
    all.dedup();
    Some(all)
}

/// The hash a target is known by between cycles. The keys are random per
/// process, so no inventory can be built to make its targets collide.
fn target_hash(text: &[u8]) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(text)
}

/// The set of targets the file holds, as a sorted list of 64-bit hashes of
/// their `host:port` text: 8 bytes a target, enough to count what a change
/// added and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSet {
    hashes: Vec<u64>,
}

impl TargetSet {
    pub fn of(groups: &[TargetGroup]) -> TargetSet {
        let n = groups.iter().map(|g| g.targets.len()).sum();
        let mut hashes = Vec::with_capacity(n);
        for g in groups {
            hashes.extend(g.targets.iter().map(|t| target_hash(t.as_bytes())));
        }
        TargetSet::from_hashes(hashes)
    }

    /// The set of the given `host:port` strings.
    pub fn from_strings<'a>(targets: impl IntoIterator<Item = &'a str>) -> TargetSet {
        TargetSet::from_hashes(
            targets
                .into_iter()
                .map(|t| target_hash(t.as_bytes()))
                .collect(),
        )
    }

    fn from_hashes(mut hashes: Vec<u64>) -> TargetSet {
        hashes.sort_unstable();
        hashes.dedup();
        hashes.shrink_to_fit();
        TargetSet { hashes }
    }

    /// The targets of a `file_sd` document, read without keeping a string
    /// per target; `None` when it is not one.
    pub fn from_document(content: &[u8]) -> Option<TargetSet> {
        TargetSet::from_groups(serde_json::from_slice(content).ok()?)
    }

    /// As [`TargetSet::from_document`], from a stream: the document is
    /// never held whole.
    pub fn from_reader(reader: impl io::Read) -> Option<TargetSet> {
        TargetSet::from_groups(serde_json::from_reader(reader).ok()?)
    }

    /// As [`TargetSet::from_reader`] for a document whose strings are all
    /// plain (no escapes), such as this agent writes, read a block at a
    /// time without serde: `None` for anything else, which the full reader
    /// must then decide. It reads to the end of the stream.
    pub fn from_plain_reader(mut reader: impl io::Read) -> Option<TargetSet> {
        /// The longest string it reads; a longer one is left to serde.
        const MAX_STRING: usize = 1 << 20;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut start, mut end, mut eof) = (0, 0, false);
        let mut doc = PlainDoc::default();
        let mut hashes = Vec::new();
        loop {
            let rest = buf.get(start..end).unwrap_or_default();
            match plain_token(rest, eof) {
                Token::More => {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                    if end == buf.len() {
                        if buf.len() >= MAX_STRING {
                            return None;
                        }
                        buf.resize(buf.len() * 2, 0);
                    }
                    let n = loop {
                        match reader.read(buf.get_mut(end..).unwrap_or_default()) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            r => break r.ok()?,
                        }
                    };
                    eof = n == 0;
                    end += n;
                }
                Token::End => {
                    return (doc.state == Doc::End).then(|| TargetSet::from_hashes(hashes))
                }
                Token::Bad => return None,
                Token::Mark(len, c) => {
                    doc.step(Some(c), None, &mut hashes)?;
                    start += len;
                }
                Token::Text(len, text) => {
                    doc.step(None, Some(rest.get(text)?), &mut hashes)?;
                    start += len;
                }
            }
        }
    }

    fn from_groups(groups: Vec<GroupIn>) -> Option<TargetSet> {
        let mut all = Vec::new();
        for g in groups {
            all.extend_from_slice(&g.targets.0);
        }
        Some(TargetSet::from_hashes(all))
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// How many targets of `new` are not in this set, and how many of this
    /// set are not in `new`.
    pub fn diff(&self, new: &TargetSet) -> (usize, usize) {
        // Both sorted and unique: one merge-like sweep, not a binary search
        // (a cache miss per step) for each hash.
        let (mut a, mut b) = (self.hashes.iter().peekable(), new.hashes.iter().peekable());
        let mut common = 0usize;
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            match x.cmp(&y) {
                Ordering::Less => {
                    a.next();
                }
                Ordering::Greater => {
                    b.next();
                }
                Ordering::Equal => {
                    common += 1;
                    a.next();
                    b.next();
                }
            }
        }
        (
            new.len().saturating_sub(common),
            self.hashes.len().saturating_sub(common),
        )
    }
}

/// One token of a plain document, after the whitespace before it, with
/// how many bytes both take.
enum Token {
    /// Needs more bytes to tell.
    More,
    /// The end of the stream.
    End,
    /// Not a plain document.
    Bad,
    /// One of `[ ] { } , :`.
    Mark(usize, u8),
    /// A plain string: where its text is.
    Text(usize, std::ops::Range<usize>),
}

/// The next token of `b`; `eof`: nothing follows `b`.
fn plain_token(b: &[u8], eof: bool) -> Token {
    let ws = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(b.len());
    let Some(&c) = b.get(ws) else {
        return if eof { Token::End } else { Token::More };
    };
    match c {
        b'[' | b']' | b'{' | b'}' | b',' | b':' => Token::Mark(ws + 1, c),
        b'"' => {
            let from = ws + 1;
            let rest = b.get(from..).unwrap_or_default();
            let stop = |c: &u8| *c == b'"' || *c == b'\\' || !(0x20..0x7f).contains(c);
            match rest.iter().position(stop) {
                Some(i) if rest.get(i) == Some(&b'"') => Token::Text(from + i + 1, from..from + i),
                Some(_) => Token::Bad,
                None if eof => Token::Bad,
                None => Token::More,
            }
        }
        _ => Token::Bad,
    }
}

/// Where a plain document's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Doc {
    #[default]
    Start,
    /// After `[`: a group or `]`.
    First,
    /// After a group's `,`: `{`.
    Group,
    /// After `{` or a member's `,`: a key.
    Key,
    /// After a key: `:`, then its value.
    Colon(bool),
    Value(bool),
    /// In `"targets": [`: a string or (first) `]`.
    Target(bool),
    /// After a target: `,` or `]`.
    AfterTarget,
    /// In `"labels": {`, at a name (or, first, `}`), its `:`, its value.
    Label(bool),
    LabelColon,
    LabelValue,
    AfterLabel,
    /// After a member: `,` or `}`.
    AfterMember,
    /// After a group: `,` or `]`.
    AfterGroup,
    End,
}

/// The reading of a plain document: groups of `"targets"` and
/// `"labels"`, each once, targets in every group.
#[derive(Default)]
struct PlainDoc {
    state: Doc,
    targets: bool,
    labels: bool,
}

impl PlainDoc {
    /// Takes a mark or a string; `None` when the document is not plain.
    fn step(&mut self, mark: Option<u8>, text: Option<&[u8]>, hashes: &mut Vec<u64>) -> Option<()> {
        use Doc::*;
        self.state = match (self.state, mark, text) {
            (Start, Some(b'['), _) => First,
            (First, Some(b']'), _) | (AfterGroup, Some(b']'), _) => End,
            (First | Group, Some(b'{'), _) => {
                (self.targets, self.labels) = (false, false);
                Key
            }
            (AfterGroup, Some(b','), _) => Group,
            (Key, _, Some(b"targets")) if !self.targets => {
                self.targets = true;
                Colon(true)
            }
            (Key, _, Some(b"labels")) if !self.labels => {
                self.labels = true;
                Colon(false)
            }
            (Colon(t), Some(b':'), _) => Value(t),
            (Value(true), Some(b'['), _) => Target(true),
            (Value(false), Some(b'{'), _) => Label(true),
            (Target(_), _, Some(t)) => {
                hashes.push(target_hash(t));
                AfterTarget
            }
            (Target(true), Some(b']'), _) | (AfterTarget, Some(b']'), _) => AfterMember,
            (AfterTarget, Some(b','), _) => Target(false),
            (Label(_), _, Some(_)) => LabelColon,
            (LabelColon, Some(b':'), _) => LabelValue,
            (LabelValue, _, Some(_)) => AfterLabel,
            (Label(true), Some(b'}'), _) | (AfterLabel, Some(b'}'), _) => AfterMember,
            (AfterLabel, Some(b','), _) => Label(false),
            (AfterMember, Some(b','), _) => Key,
            (AfterMember, Some(b'}'), _) if self.targets => AfterGroup,
            _ => return None,
        };
        Some(())
    }
}

/// A target group as read back: only its targets matter.
#[derive(serde::Deserialize)]
struct GroupIn {
    targets: Hashes,
}

/// A JSON array of strings, read as their hashes.
struct Hashes(Vec<u64>);

impl<'de> Deserialize<'de> for Hashes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hashes, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Hashes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of target strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Hashes, A::Error> {
                let mut out = Vec::new();
                while let Some(h) = seq.next_element::<OneHash>()? {
                    out.push(h.0);
                }
                Ok(Hashes(out))
            }
        }
        d.deserialize_seq(Each)
    }
}

/// One JSON string, read as its hash.
struct OneHash(u64);

impl<'de> Deserialize<'de> for OneHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneHash, D::Error> {
        struct Str;
        impl Visitor<'_> for Str {
            type Value = OneHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a target string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<OneHash, E> {
                Ok(OneHash(target_hash(s.as_bytes())))
            }
        }
        d.deserialize_str(Str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(targets: &[(&str, u16)]) -> TargetList {
        let mut l = TargetList::new();
        for (h, p) in targets {
            l.push(h, *p).unwrap();
        }
        l.finish();
        l
    }

    fn group(targets: &[(&str, u16)]) -> TargetGroup {
        TargetGroup {
            targets: list(targets),
            labels: vec![
                ("__metrics_path__".into(), "/metrics".into()),
                ("job".into(), "sensors".into()),
                ("environment".into(), "production".into()),
            ],
        }
    }

    /// The slice of `body` that holds `text`.
    fn within<'a>(body: &'a [u8], text: &str) -> &'a str {
        let at = body
            .windows(text.len())
            .position(|w| w == text.as_bytes())
            .unwrap();
        std::str::from_utf8(&body[at..at + text.len()]).unwrap()
    }

    #[test]
    fn shared_prefix_is_that_of_every_host() {
        // Hosts of two letters around the 8-byte word the check reads.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut hosts = Vec::new();
            for _ in 0..(state % 5 + 1) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let len = (state % 12) as usize + 1;
                let h: String = (0..len)
                    .map(|i| if state >> (20 + i) & 1 == 1 { 'b' } else { 'a' })
                    .collect();
                hosts.push(h);
            }
            let mut l = TargetList::new();
            for h in &hosts {
                l.push(h, 9100).unwrap();
            }
            let lcp = hosts.iter().fold(hosts[0].len(), |n, h| {
                hosts[0]
                    .bytes()
                    .zip(h.bytes())
                    .take(n)
                    .take_while(|(a, b)| a == b)
                    .count()
            });
            assert_eq!(l.shared, lcp, "{hosts:?}");
        }
    }

    #[test]
    fn hosts_read_in_place_stay_in_the_body() {
        let body = Arc::new(br#"["web-b", "N/A", "web-a", "web-a"]"#.to_vec());
        let mut l = TargetList::reading(Arc::clone(&body));
        for h in ["web-b", "web-a"] {
            l.push(within(&body, h), 9100).unwrap();
        }
        // Not in the body: copied.
        l.push("[::1]", 80).unwrap();
        l.push("web-ab", 1).unwrap();
        assert_eq!(l.hosts, b"[::1]web-ab");
        assert_eq!(l.shared, 0);
        // Only the hosts count: the body's other text has upper case.
        assert!(!l.has_upper_case() && l.needs_no_escape());
        drop(body);
        l.finish();
        assert!(l.body.is_none() && l.plain_text());
        l.finish();
        assert!(l.plain_text() && !l.has_upper_case());
        assert_eq!(
            l.to_strings(),
            ["[::1]:80", "web-a:9100", "web-ab:1", "web-b:9100"]
        );
    }

    /// Pushes `bytes` by [`TargetList::push_plain`] where it takes it, by
    /// [`TargetList::push_known`] otherwise: whether the quick push took it.
    fn push_either(l: &mut TargetList, bytes: &[u8], port: u16) -> bool {
        let upper = bytes.iter().any(u8::is_ascii_uppercase);
        if !upper && l.push_plain(bytes, port) {
            return true;
        }
        l.push_known(bytes, port, 0, upper, false).unwrap();
        false
    }

    fn same_lists(a: &TargetList, b: &TargetList, what: &str) {
        assert_eq!(
            (&a.spans, &a.later, &a.meta, &a.hosts),
            (&b.spans, &b.later, &b.meta, &b.hosts),
            "{what}"
        );
        assert_eq!(
            (a.shared, a.head, a.first, a.plain),
            (b.shared, b.head, b.first, b.plain),
            "{what}"
        );
        assert_eq!(
            (a.seen_upper, a.seen_escape),
            (b.seen_upper, b.seen_escape),
            "{what}"
        );
    }

    /// A push by [`TargetList::push_plain`], where it takes one, leaves
    /// the list as [`TargetList::push_known`] would: repeats, prefixes
    /// that shrink, hosts outside the body, upper case, a full list, a
    /// tracked one, a finished one and one with a list appended.
    #[test]
    fn plain_pushes_leave_the_list_as_full_pushes_do() {
        let hosts = [
            "sensor-1",
            "sensor-2",
            "sensor-2",
            "sensor-10",
            "sensor-1",
            "sensor",
            "Sensor-3",
            "sensor-3",
            "sensor-3",
            "s",
            "sensorsensor-1",
            "db.example",
            "sensor-4",
            "sensor-5",
            "sensor-6",
            "sensor-7",
        ];
        let text = format!("[\"{}\"]", hosts.join("\", \""));
        let body = Arc::new(text.into_bytes());
        let elsewhere = "sensor-8".to_string();
        for (capacity, tracked) in [(0, false), (3, false), (100, false), (100, true)] {
            let (mut quick, mut full) = (
                TargetList::reading(Arc::clone(&body)),
                TargetList::reading(Arc::clone(&body)),
            );
            quick.spans.reserve_exact(capacity);
            full.spans.reserve_exact(capacity);
            if tracked {
                quick.track().unwrap();
                full.track().unwrap();
            }
            let (mut taken, mut from) = (0, 0);
            for (i, h) in hosts.iter().enumerate() {
                let at = from + within(&body[from..], h).as_ptr() as usize
                    - body[from..].as_ptr() as usize;
                from = at + h.len();
                let bytes = if i == 12 {
                    elsewhere.as_bytes()
                } else {
                    &body[at..from]
                };
                let port = if i == 10 { 80 } else { 9100 };
                taken += usize::from(push_either(&mut quick, bytes, port));
                full.push_known(
                    bytes,
                    port,
                    0,
                    bytes.iter().any(u8::is_ascii_uppercase),
                    false,
                )
                .unwrap();
                same_lists(&quick, &full, &format!("{capacity} {tracked}: after {h}"));
                if i == 6 {
                    // Nothing tracked is taken. Finished (which ends the
                    // tracking), but still read in place: the body is shared.
                    assert_eq!(taken == 0, tracked, "{capacity}");
                    quick.finish();
                    full.finish();
                    assert!(quick.plain && quick.body.is_some());
                    quick.spans.reserve_exact(capacity);
                    full.spans.reserve_exact(capacity);
                }
                if i == 13 {
                    for l in [&mut quick, &mut full] {
                        let mut later = TargetList::reading(Arc::clone(&body));
                        later.push(within(&body, "sensor-2"), 1).unwrap();
                        l.append(later).unwrap();
                    }
                    assert!(!quick.later.is_empty() || tracked);
                }
            }
            assert!(taken > 3, "{capacity} {tracked}: {taken}");
            quick.finish();
            full.finish();
            assert_eq!(quick.to_strings(), full.to_strings());
        }
    }

    #[test]
    fn the_first_group_makes_room_for_the_targets_expected() {
        let mut e = Entries::new();
        e.expect(1000);
        let first = e.group(&[]).unwrap();
        let other = e.group(&labels(&[("a", "b")])).unwrap();
        assert!(e.groups[first].1.spans.capacity() >= 1000);
        assert!(e.groups[other].1.spans.capacity() < 1000);
    }

    /// Room made ahead for a part that turns out to be repeats is given
    /// back once they are de-duplicated, not kept for the rest.
    #[test]
    fn room_made_ahead_for_repeats_is_given_back() {
        let body = Arc::new(b"[\"h-a\", \"h-b\"]".to_vec());
        let (a, b) = (within(&body, "h-a"), within(&body, "h-b"));
        let mut e = Entries::new();
        e.read_in_place(Arc::clone(&body));
        e.expect(1 << 16);
        let g = e.group(&[]).unwrap();
        for i in 0..(1 << 16) + 10 {
            let host = if i % 2 == 0 { a } else { b };
            let t = crate::model::address::parse(host, 9100).unwrap();
            e.push_target(g, &t, 9100).unwrap();
        }
        let list = &e.groups[g].1;
        assert!(list.spans.capacity() < 1 << 13, "{}", list.spans.capacity());
        assert!(list.spans.len() < 20, "{}", list.spans.len());
        // Tracked, the numbers beside the spans are given back too; and a
        // list that found little to drop before keeps no higher mark.
        let mut l = TargetList::reading(Arc::clone(&body));
        l.track().unwrap();
        l.spans.reserve_exact(1 << 16);
        l.meta.reserve_exact(1 << 16);
        l.compact_at = 1 << 16;
        for i in 0..(1 << 16) + 10 {
            let host = if i % 2 == 0 { a } else { b };
            l.push_seq(host, 9100, i).unwrap();
        }
        assert!(l.spans.capacity() < 1 << 13, "{}", l.spans.capacity());
        assert!(l.meta.capacity() < 1 << 13, "{}", l.meta.capacity());
        assert_eq!(l.compact_at, 0);
    }

    /// A full list of repeats is de-duplicated before it grows, pushed
    /// either way.
    #[test]
    fn plain_pushes_make_room_as_full_pushes_do() {
        let text = "[\"h-a\", \"h-b\"]";
        let body = Arc::new(text.as_bytes().to_vec());
        let (a, b) = (within(&body, "h-a"), within(&body, "h-b"));
        let (mut quick, mut full) = (
            TargetList::reading(Arc::clone(&body)),
            TargetList::reading(Arc::clone(&body)),
        );
        for i in 0..10_000 {
            let h = if i % 2 == 0 { a } else { b };
            push_either(&mut quick, h.as_bytes(), 9100);
            full.push(h, 9100).unwrap();
        }
        assert!(full.spans.len() < 5000, "{}", full.spans.len());
        assert_eq!(quick.spans, full.spans);
    }

    #[test]
    fn lists_read_from_parts_of_one_body_append_as_one() {
        let text = br#"["web-b", "web-a", "web-c", "db-a"]"#;
        let body = Arc::new(text.to_vec());
        let (mut a, mut b) = (
            TargetList::reading(Arc::clone(&body)),
            TargetList::reading(Arc::clone(&body)),
        );
        a.push(within(&body, "web-b"), 1).unwrap();
        a.push("web-x", 2).unwrap();
        b.push("web-y", 3).unwrap();
        b.push(within(&body, "web-c"), 4).unwrap();
        b.push(within(&body, "web-a"), 5).unwrap();
        a.append(b).unwrap();
        assert_eq!(a.shared, 4);
        assert_eq!(a.hosts, b"web-xweb-y");
        let mut c = TargetList::reading(Arc::clone(&body));
        c.push(within(&body, "db-a"), 6).unwrap();
        a.append(c).unwrap();
        assert_eq!(a.shared, 0);
        // A list of its own text takes the others one by one.
        let mut own = TargetList::new();
        own.push("web-z", 7).unwrap();
        own.append(a.clone()).unwrap();
        drop(body);
        a.finish();
        own.finish();
        let want = [
            "db-a:6", "web-a:5", "web-b:1", "web-c:4", "web-x:2", "web-y:3",
        ];
        assert_eq!(a.to_strings(), want);
        assert_eq!(own.to_strings()[..6], want);
        assert_eq!(own.len(), 7);
    }

    /// Lists whose hosts all lie in the body are kept apart until the
    /// sort (or a push, which joins them up first): the same targets.
    #[test]
    fn lists_kept_apart_until_the_sort_are_whole() {
        let text = br#"["web-b", "WEB-A", "web-c", "db-a", "web-a", "db-a"]"#;
        let body = Arc::new(text.to_vec());
        let part = |names: &[&str]| {
            let mut l = TargetList::reading(Arc::clone(&body));
            for (i, n) in names.iter().enumerate() {
                l.push(within(&body, n), 1 + i as u16).unwrap();
            }
            l
        };
        let (mut a, mut b) = (part(&["web-b"]), part(&["web-c", "db-a"]));
        b.append(part(&["WEB-A"])).unwrap();
        a.append(part(&[])).unwrap();
        a.append(b).unwrap();
        a.append(part(&["web-a"])).unwrap();
        assert_eq!(a.later.len(), 3, "kept apart, chains included");
        assert_eq!(a.len(), 5);
        let all = ["web-b:1", "web-c:1", "db-a:2", "WEB-A:1", "web-a:1"];
        assert_eq!(a.to_strings(), all);
        // A push joins them up.
        let mut pushed = a.clone();
        pushed.push(within(&body, "web-a"), 1).unwrap();
        assert!(pushed.later.is_empty());
        assert_eq!(pushed.len(), 5, "web-a:1 repeats the last target");
        pushed.push(within(&body, "db-a"), 7).unwrap();
        assert_eq!(pushed.to_strings()[..5], all);
        drop(body);
        // Case variants: the fold pass, then the plain one.
        a.finish();
        assert!(a.later.is_empty());
        assert_eq!(a.to_strings(), ["WEB-A:1", "db-a:2", "web-b:1", "web-c:1"]);
        pushed.finish();
        let want = ["WEB-A:1", "db-a:2", "db-a:7", "web-b:1", "web-c:1"];
        assert_eq!(pushed.to_strings(), want);
    }

    #[test]
    fn renders_the_file_sd_format_exactly() {
        let out = render(&[group(&[("sensor_1", 9100), ("sensor_0", 9100)])]).unwrap();
        let expected = r#"[
  {
    "targets": [
      "sensor_0:9100",
      "sensor_1:9100"
    ],
    "labels": {
      "__metrics_path__": "/metrics",
      "job": "sensors",
      "environment": "production"
    }
  }
]
"#;
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn empty_group_and_escaping() {
        let mut g = group(&[]);
        g.labels
            .push(("note".into(), "a \"quoted\" \\ value".into()));
        let out = render(&[g]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["targets"], serde_json::json!([]));
        assert_eq!(v[0]["labels"]["note"], "a \"quoted\" \\ value");
        assert_eq!(parse_targets(&out), Some(vec![]));
        assert_eq!(render(&[]).unwrap(), b"[]\n");
    }

    #[test]
    fn renders_like_serde_json_of_strings() {
        let g = group(&[("b", 1), ("[::1]", 65535), ("a", 80), ("a-b", 1)]);
        #[derive(Serialize)]
        struct Plain<'a> {
            targets: Vec<String>,
            labels: OrderedLabels<'a>,
        }
        let two = [g.clone(), g.clone()];
        let plain: Vec<Plain> = two
            .iter()
            .map(|g| Plain {
                targets: g.targets.to_strings(),
                labels: OrderedLabels(&g.labels),
            })
            .collect();
        let mut want = serde_json::to_vec_pretty(&plain).unwrap();
        want.push(b'\n');
        assert_eq!(render(&two).unwrap(), want);
    }

    /// Hands out at most `step` bytes a read.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_quick_reader_of_a_written_file_agrees_with_serde() {
        // A string longer than the first buffer.
        let long = format!("[{{\"targets\": [\"{}:1\", \"a:1\"]}}]", "h".repeat(70_000));
        let mut two = vec![
            group(&[("b", 1), ("a", 1), ("h".repeat(255).as_str(), 9)]),
            group(&[]),
            group(&[("c", 2)]),
        ];
        two[2].labels.clear();
        let written = render(&two).unwrap();
        let docs: Vec<&[u8]> = vec![
            &written,
            long.as_bytes(),
            b"[]",
            b" [ ] ",
            b"[{\"targets\": []}]",
            b"[{\"labels\": {}, \"targets\": [\"a:1\"]}, {\"targets\": [\"a:1\"]}]",
            b"[{\"targets\": [\"a\\u0031:1\"]}]",
            b"[{\"targets\": [\"\xc3\xa9:1\"]}]",
            b"[{\"targets\": [\"a:1\"], \"other\": 1}]",
            b"[{\"targets\": [\"a:1\"], \"labels\": {\"a\": 1}}]",
            b"[{\"targets\": [\"a:1\"], \"targets\": []}]",
            b"[{\"labels\": {}}]",
            b"[{}]",
            b"[{\"targets\": [\"a:1\",]}]",
            b"[{\"targets\": [\"a:1\"]},]",
            b"[{\"targets\": [\"a:1\"]}] x",
            b"[{\"targets\": [\"a:1\"]}][]",
            b"{\"targets\": []}",
            b"[{\"targets\": [\"a:1\" \"b:1\"]}]",
            b"[{\"targets\" [\"a:1\"]}]",
        ];
        for doc in docs {
            for cut in (0..=doc.len())
                .rev()
                .step_by(if doc.len() > 1000 { 997 } else { 1 })
            {
                let doc = &doc[..cut];
                let want = TargetSet::from_reader(doc);
                // Tiny reads of a long document would take long.
                let steps: &[usize] = if doc.len() > 1000 {
                    &[4096]
                } else {
                    &[1, 2, 7, 4096]
                };
                for &step in steps {
                    let got = TargetSet::from_plain_reader(Dribble { data: doc, step });
                    if got.is_some() {
                        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(doc));
                    }
                }
            }
        }
        // What this agent writes is always read the quick way.
        let got = TargetSet::from_plain_reader(Dribble {
            data: &written,
            step: 1000,
        });
        assert_eq!(got.as_ref().map(TargetSet::len), Some(4));
        assert_eq!(got, TargetSet::from_reader(&written[..]));
        assert!(TargetSet::from_plain_reader(&b"[]"[..]).is_some());
        // Escapes and other keys are left to serde.
        assert!(TargetSet::from_plain_reader(&b"[{\"targets\": [\"a\\u0031:1\"]}]"[..]).is_none());
        assert!(TargetSet::from_plain_reader(&b"[{\"targets\": [], \"x\": 1}]"[..]).is_none());
    }

    #[test]
    fn reads_back_what_it_writes() {
        let out = render(&[group(&[("b", 1), ("a", 1)])]).unwrap();
        assert_eq!(parse_targets(&out), Some(vec!["a:1".into(), "b:1".into()]));
        assert_eq!(parse_targets(b"{}"), None);
        assert_eq!(parse_targets(b"[{\"targets\": [\"x"), None);
        let set = TargetSet::from_document(&out).unwrap();
        assert_eq!(set, TargetSet::from_strings(["b:1", "a:1", "a:1"]));
        assert_eq!(set.len(), 2);
        assert_eq!(TargetSet::from_document(b"{}"), None);
        assert_eq!(TargetSet::from_document(b"[{\"targets\": [1]}]"), None);
        assert_eq!(TargetSet::from_document(b"[{\"targets\": [\"x"), None);
        assert_eq!(TargetSet::from_document(b"[]"), Some(TargetSet::default()));
        assert_eq!(TargetSet::from_reader(&out[..]), Some(set.clone()));
        assert_eq!(TargetSet::from_reader(&b"[{\"targets\": [\"x"[..]), None);
    }

    #[test]
    fn sorted_in_byte_order_of_the_text() {
        let l = list(&[
            ("sensor_2", 9100),
            ("sensor_10", 9100),
            ("a", 9),
            ("a", 10),
            ("a-b", 1),
            ("a", 1),
            ("[::1]", 1),
            ("B", 1),
            ("a", 9),
        ]);
        let mut want = l.to_strings();
        want.sort();
        want.dedup();
        assert_eq!(l.to_strings(), want);
        assert_eq!(
            l.to_strings(),
            [
                "B:1",
                "[::1]:1",
                "a-b:1",
                "a:1",
                "a:10",
                "a:9",
                "sensor_10:9100",
                "sensor_2:9100"
            ]
        );
    }

    #[test]
    fn case_variants_are_one_target() {
        let l = list(&[
            ("ok", 1),
            ("OK", 1),
            ("Ok", 1),
            ("ok", 2),
            ("Sensor.Example", 1),
            ("sensor.example", 1),
            ("b", 1),
            ("B", 2),
        ]);
        assert_eq!(
            l.to_strings(),
            ["B:2", "OK:1", "Sensor.Example:1", "b:1", "ok:2"]
        );
    }

    /// Many targets, so that the radix passes run, against a plain model:
    /// strings grouped by their lower-case form, the least of each group
    /// kept, in byte order.
    #[test]
    fn large_lists_match_a_simple_model() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = b"aAbBzZ09_-.";
        let mut l = TargetList::new();
        let mut model: Vec<String> = Vec::new();
        for _ in 0..20_000 {
            let prefix = ["", "sensor-", "sensor-00", "s"][next(4) as usize];
            let len = 1 + next(6) as usize;
            let tail: String = (0..len)
                .map(|_| alphabet[next(alphabet.len() as u64) as usize] as char)
                .collect();
            let host = format!("{prefix}{tail}");
            let port = [1, 9, 10, 80, 9100, 65535][next(6) as usize];
            l.push(&host, port).unwrap();
            model.push(format!("{host}:{port}"));
        }
        l.finish();
        model.sort();
        let mut want: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for t in model {
            if seen.insert(t.to_ascii_lowercase()) {
                want.push(t);
            }
        }
        assert!(want.len() > 5_000, "{}", want.len());
        assert_eq!(l.to_strings(), want);
    }

    proptest::proptest! {
        /// Shared prefixes (skipped by the radix passes), case variants and
        /// repeats sort as the plain model does.
        #[test]
        fn shared_prefixes_sort_as_the_model(
            entries in proptest::collection::vec(
                ("(sensor-00|sensor-0|SENSOR-00|sensor|s)?[aAbB0_-]{0,3}", 0usize..3),
                0..400,
            )
        ) {
            let mut l = TargetList::new();
            let mut model: Vec<String> = Vec::new();
            for (host, p) in &entries {
                let host = if host.is_empty() { "x" } else { host.as_str() };
                let port = [1u16, 10, 9100][*p];
                l.push(host, port).unwrap();
                model.push(format!("{host}:{port}"));
            }
            l.finish();
            model.sort();
            let mut seen = std::collections::HashSet::new();
            model.retain(|t| seen.insert(t.to_ascii_lowercase()));
            proptest::prop_assert_eq!(l.to_strings(), model);
        }
    }

    #[test]
    fn diff_counts() {
        let s = |v: &[&str]| TargetSet::from_strings(v.iter().copied());
        let l = |v: &[(&str, u16)]| {
            TargetSet::of(&[TargetGroup {
                targets: list(v),
                labels: vec![],
            }])
        };
        assert_eq!(s(&[]).diff(&l(&[("a", 1)])), (1, 0));
        assert_eq!(
            s(&["a:1", "b:1", "c:1"]).diff(&l(&[("b", 1), ("d", 1)])),
            (1, 2)
        );
        assert_eq!(s(&["a:1"]).diff(&l(&[("a", 1)])), (0, 0));
        assert_eq!(s(&["a:1", "b:1"]).diff(&l(&[])), (0, 2));
        assert_eq!(l(&[("b", 1), ("a", 1)]), s(&["a:1", "b:1"]));
        // Large sets, overlapping in part, against a plain count.
        let old: Vec<String> = (0..30_000).map(|i| format!("s{i}:1")).collect();
        let new: Vec<String> = (20_000..60_000).map(|i| format!("s{i}:1")).collect();
        let (a, b) = (
            TargetSet::from_strings(old.iter().map(String::as_str)),
            TargetSet::from_strings(new.iter().map(String::as_str)),
        );
        assert_eq!(a.diff(&b), (30_000, 20_000));
        assert_eq!(b.diff(&a), (20_000, 30_000));
    }

    #[test]
    fn ports_and_long_hosts_survive_packing() {
        let long = "h".repeat(255);
        let l = list(&[(&long, 65535), ("x", 1)]);
        assert_eq!(l.to_strings(), [format!("{long}:65535"), "x:1".to_string()]);
        let mut l = TargetList::new();
        assert!(l.push(&"h".repeat(256), 1).is_err());
        let mut d = [0u8; 5];
        for p in [1u16, 9, 10, 99, 100, 9100, 10000, 65535, 0] {
            let text = p.to_string();
            assert_eq!(port_digits(p, &mut d), text.as_bytes());
            for k in 0..6 {
                assert_eq!(port_digit(p, k), text.as_bytes().get(k).copied(), "{p} {k}");
            }
        }
    }

    type Label = (String, String);

    fn labels(v: &[(&str, &str)]) -> Labels {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn plain_entries_are_one_group_with_the_defaults() {
        let defaults = labels(&[("__metrics_path__", "/metrics"), ("job", "sensors")]);
        let mut e = Entries::new();
        for (h, p) in [("b", 9100), ("a", 9100), ("b", 9100)] {
            e.push(h, p, &[]).unwrap();
        }
        e.finish();
        assert_eq!(e.len(), 2);
        let groups = e.into_groups(&defaults);
        assert_eq!(
            render(&groups).unwrap(),
            render(&[TargetGroup {
                targets: list(&[("a", 9100), ("b", 9100)]),
                labels: defaults.clone(),
            }])
            .unwrap()
        );
        // No entries at all: still one group, so the labels stay.
        let groups = Entries::new().into_groups(&defaults);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].targets.is_empty());
        assert_eq!(groups[0].labels, defaults);
    }

    #[test]
    fn entries_group_by_their_own_labels_which_override_the_defaults() {
        let defaults = labels(&[("__metrics_path__", "/metrics"), ("job", "sensors")]);
        let edge = labels(&[("job", "edge"), ("rack", "r1")]);
        let build = |order: &[usize]| {
            let all: [(&str, u16, &[Label]); 4] = [
                ("s2", 9100, &[]),
                ("e1", 9200, edge.as_slice()),
                ("s1", 9100, &[]),
                ("e0", 9200, edge.as_slice()),
            ];
            let mut e = Entries::new();
            for &i in order {
                let (h, p, l) = all[i];
                e.push(h, p, l).unwrap();
            }
            e.finish();
            e.into_groups(&defaults)
        };
        let groups = build(&[0, 1, 2, 3]);
        assert_eq!(groups.len(), 2);
        // Ordered by label set: job=edge before job=sensors.
        assert_eq!(groups[1].targets.to_strings(), ["s1:9100", "s2:9100"]);
        assert_eq!(groups[1].labels, defaults);
        assert_eq!(groups[0].targets.to_strings(), ["e0:9200", "e1:9200"]);
        assert_eq!(
            groups[0].labels,
            labels(&[
                ("__metrics_path__", "/metrics"),
                ("job", "edge"),
                ("rack", "r1")
            ])
        );
        // Any order of the inventory renders the same bytes.
        let want = render(&groups).unwrap();
        assert_eq!(render(&build(&[3, 2, 1, 0])).unwrap(), want);
        assert_eq!(render(&build(&[1, 3, 0, 2])).unwrap(), want);
    }

    #[test]
    fn a_second_label_set_finds_conflicting_duplicates() {
        let one = labels(&[("r", "1")]);
        let mut e = Entries::new();
        e.push("a", 1, &[]).unwrap();
        e.push("b", 1, &[]).unwrap();
        // A case variant is the same address; another port is not.
        e.push("A", 1, &one).unwrap();
        e.push("a", 2, &one).unwrap();
        e.push("c", 1, &one).unwrap();
        e.push("c", 1, &[]).unwrap();
        // A plain repeat.
        e.push("c", 1, &one).unwrap();
        let c = e.finish();
        assert_eq!(e.to_strings(), ["a:1", "b:1", "a:2", "c:1"]);
        assert_eq!(c.count, 2);
        assert_eq!(c.examples, ["A:1", "c:1"]);
    }

    fn set(name: &str) -> Labels {
        labels(&[("set", name)])
    }

    /// Every group's targets, by label set.
    fn by_set(e: &Entries) -> Vec<(Labels, Vec<String>)> {
        e.groups
            .iter()
            .map(|(l, t)| (l.clone(), t.to_strings()))
            .collect()
    }

    #[test]
    fn conflicts_across_groups_keep_the_first_entry_whatever_the_group_order() {
        for order in [["m", "a", "z"], ["z", "m", "a"], ["a", "z", "m"]] {
            let mut e = Entries::new();
            for (i, name) in order.iter().enumerate() {
                e.push("x", 1, &set(name)).unwrap();
                e.push(&format!("only{i}"), 1, &set(name)).unwrap();
                e.push("x", 1, &set(name)).unwrap();
            }
            // Back in the first group: the same labels, no conflict.
            e.push("x", 1, &set(order[0])).unwrap();
            let c = e.finish();
            assert_eq!(c.count, 4, "{order:?}");
            assert_eq!(c.examples, ["x:1", "x:1"]);
            for (l, t) in by_set(&e) {
                let i = order.iter().position(|n| l == set(n)).unwrap();
                let mut want = vec![format!("only{i}:1")];
                if i == 0 {
                    want.push("x:1".into());
                }
                assert_eq!(t, want, "{order:?}");
            }
        }
    }

    #[test]
    fn conflicts_ignore_letter_case() {
        let mut e = Entries::new();
        e.push("Host", 1, &set("b")).unwrap();
        e.push("hOST", 1, &set("a")).unwrap();
        e.push("host", 1, &set("a")).unwrap();
        e.push("HOST", 1, &set("b")).unwrap();
        let c = e.finish();
        assert_eq!(c.count, 2);
        assert_eq!(c.examples, ["hOST:1"]);
        assert_eq!(by_set(&e), [(set("b"), vec!["HOST:1".to_string()])]);
    }

    #[test]
    fn the_same_address_with_the_same_labels_is_no_conflict() {
        let mut e = Entries::new();
        for _ in 0..3 {
            e.push("a", 1, &set("x")).unwrap();
            e.push("b", 1, &set("y")).unwrap();
            e.push("A", 1, &set("x")).unwrap();
        }
        let c = e.finish();
        assert_eq!(c, Conflicts::default());
        assert_eq!(e.to_strings(), ["A:1", "b:1"]);
    }

    /// One entry of a model inventory: host, port, label set.
    type Entry = (String, u16, u8);

    /// What [`Entries`] must give, kept simply: the first entry of each
    /// case-folded address names its group; each entry of another group is
    /// a conflict, its group's entries of that address shown once, at the
    /// first, as the least of their spellings.
    fn model(entries: &[Entry]) -> (Vec<(Labels, Vec<String>)>, Conflicts) {
        use std::collections::{BTreeMap, BTreeSet};
        let fold = |h: &str, p: u16| format!("{}:{p}", h.to_ascii_lowercase());
        let mut owner: HashMap<String, u8> = HashMap::new();
        for (h, p, g) in entries {
            owner.entry(fold(h, *p)).or_insert(*g);
        }
        // Per (group, folded address): first position and least spelling.
        let mut seen: BTreeMap<(u8, String), (usize, String)> = BTreeMap::new();
        let mut count = 0;
        for (i, (h, p, g)) in entries.iter().enumerate() {
            let key = fold(h, *p);
            if owner.get(&key) != Some(g) {
                count += 1;
            }
            let text = format!("{h}:{p}");
            let slot = seen.entry((*g, key)).or_insert((i, text.clone()));
            if text < slot.1 {
                slot.1 = text;
            }
        }
        let mut groups: BTreeMap<u8, BTreeSet<String>> = BTreeMap::new();
        let mut examples = Vec::new();
        for ((g, key), (i, text)) in seen {
            if owner.get(&key) == Some(&g) {
                groups.entry(g).or_default().insert(text);
            } else {
                examples.push((i, text));
            }
        }
        examples.sort();
        examples.truncate(MAX_EXAMPLES);
        let mut groups: Vec<(Labels, Vec<String>)> = groups
            .into_iter()
            .map(|(g, t)| (model_labels(g), t.into_iter().collect()))
            .collect();
        groups.sort();
        let examples = examples.into_iter().map(|(_, t)| t).collect();
        (groups, Conflicts { count, examples })
    }

    fn model_labels(g: u8) -> Labels {
        if g == 0 {
            Vec::new()
        } else {
            set(&g.to_string())
        }
    }

    fn collect(entries: &[Entry]) -> (Vec<(Labels, Vec<String>)>, Conflicts) {
        let mut e = Entries::new();
        for (h, p, g) in entries {
            e.push(h, *p, &model_labels(*g)).unwrap();
        }
        let c = e.finish();
        (by_set(&e), c)
    }

    proptest::proptest! {
        #[test]
        fn conflicts_match_a_simple_model(
            entries in proptest::collection::vec(
                ("[aAbB]{1,2}", 1u16..3, 0u8..4),
                0..40,
            )
        ) {
            proptest::prop_assert_eq!(collect(&entries), model(&entries));
        }
    }

    /// Enough entries that the radix passes and de-duplication while
    /// collecting run with the numbers along.
    #[test]
    fn large_conflicting_inventories_match_the_model() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = b"aAbBcC09-";
        let entries: Vec<Entry> = (0..60_000)
            .map(|_| {
                let len = 1 + next(5) as usize;
                let host: String = (0..len)
                    .map(|_| alphabet[next(alphabet.len() as u64) as usize] as char)
                    .collect();
                (host, 1 + next(3) as u16, next(4) as u8)
            })
            .collect();
        let (got, want) = (collect(&entries), model(&entries));
        assert!(want.1.count > 1_000, "{}", want.1.count);
        assert_eq!(got, want);
        // Plain names first: the rest is numbered from the second set on.
        let mut plain_first: Vec<Entry> =
            entries.iter().map(|(h, p, _)| (h.clone(), *p, 0)).collect();
        plain_first.truncate(30_000);
        plain_first.extend_from_slice(&entries[30_000..]);
        assert_eq!(collect(&plain_first), model(&plain_first));
    }

    /// Hosts made to be hard on the keyed sort: shared prefixes longer
    /// than one and two keys (8 and 16 bytes), hosts that are prefixes of
    /// others, case variants, and few letters, so that repeats abound.
    fn hard_host() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        (
            proptest::sample::select(vec![
                "",
                "s",
                "sensor",
                "sensor-0",
                "Sensor-0",
                "sensor-rack",
                "sensor-rack-0000",
                "SENSOR-RACK-0000",
                "sensor-rack-0000-row-000",
                "sensor-rack-0000-row-000-shelf-0000000",
            ]),
            "[aAbB0_.-]{0,3}",
            proptest::sample::select(vec!["", "", "", "a", "0", "-x", ".example.com"]),
        )
            .prop_map(|(p, m, t)| {
                let h = format!("{p}{m}{t}");
                if h.is_empty() {
                    "x".to_string()
                } else {
                    h
                }
            })
    }

    /// Ports whose texts order otherwise than their numbers.
    const HARD_PORTS: [u16; 9] = [0, 1, 9, 10, 99, 100, 9100, 10000, 65535];

    /// What [`TargetList::finish`] must give: texts sorted, and of those
    /// equal once folded to lower case only the least.
    fn list_model(targets: &[(String, u16)]) -> Vec<String> {
        let mut model: Vec<String> = targets.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        model.sort();
        let mut seen = std::collections::HashSet::new();
        model.retain(|t| seen.insert(t.to_ascii_lowercase()));
        model
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Lists of every size around the radix and compaction thresholds
        /// (small ranges, 4096 spans) sort and de-duplicate as the model.
        #[test]
        fn hard_lists_sort_as_the_model(
            targets in proptest::collection::vec(
                (hard_host(), proptest::sample::select(HARD_PORTS.to_vec())),
                0..6000,
            ),
            repeat in 0usize..3,
        ) {
            let mut l = TargetList::new();
            for _ in 0..=repeat {
                for (h, p) in &targets {
                    l.push(h, *p).unwrap();
                }
            }
            l.finish();
            proptest::prop_assert_eq!(l.to_strings(), list_model(&targets));
        }

        /// The same with numbers along (several label sets): conflicts,
        /// merged repeats and first entries as the model has them.
        #[test]
        fn hard_conflicts_match_the_model(
            entries in proptest::collection::vec(
                (hard_host(), proptest::sample::select(vec![1u16, 9, 10]), 0u8..3),
                0..3000,
            )
        ) {
            proptest::prop_assert_eq!(collect(&entries), model(&entries));
        }
    }

    /// Distinct targets past the compaction threshold, then each again
    /// in another order: the sort skipped while collecting must still
    /// leave one of each, and repeats must still keep the list small.
    #[test]
    fn plain_text_is_known_only_after_finish() {
        let mut l = TargetList::new();
        l.push("sensor-1.example", 9100).unwrap();
        assert!(!l.plain_text());
        l.finish();
        assert!(l.plain_text());
        l.push("a\"b", 1).unwrap();
        assert!(!l.plain_text());
        l.finish();
        assert!(!l.plain_text());
        let mut c = TargetList::new();
        c.push("x\u{1}", 1).unwrap();
        c.finish();
        assert!(!c.plain_text());
    }

    #[test]
    fn compaction_skips_distinct_lists_and_still_shrinks_repeats() {
        let names: Vec<String> = (0..50_000)
            .map(|i| format!("n{}", i * 7919 % 50_000))
            .collect();
        let mut l = TargetList::new();
        for n in &names {
            l.push(n, 9100).unwrap();
        }
        let distinct = l.distinct_at_least();
        assert!(distinct <= 50_000 && distinct > 45_000, "{distinct}");
        for n in names.iter().rev() {
            l.push(n, 9100).unwrap();
        }
        l.finish();
        let want: Vec<(String, u16)> = names.iter().map(|n| (n.clone(), 9100)).collect();
        assert_eq!(l.to_strings(), list_model(&want));
        // Two names over and over: never more than the first threshold.
        let mut l = TargetList::new();
        for i in 0..200_000 {
            l.push(["a", "B"][i % 2], 1).unwrap();
        }
        assert!(l.spans.capacity() <= 4096, "{}", l.spans.capacity());
        l.finish();
        assert_eq!(l.to_strings(), ["B:1", "a:1"]);
    }

    /// The hash count never passes the true number of distinct targets.
    #[test]
    fn a_span_hashes_as_its_text_wherever_it_lies() {
        let mut l = TargetList::new();
        let hosts: Vec<String> = (0..40)
            .map(|n| "abcdefghij".repeat(4)[..n].to_string())
            .collect();
        for (i, h) in hosts.iter().enumerate().rev() {
            l.push(h, i as u16).unwrap();
        }
        // The last host pushed ends the text: no bytes follow it.
        for &s in &l.spans {
            assert_eq!(l.span_hash(s), text_hash(l.host(s), span_port(s)));
        }
        let hashes: std::collections::HashSet<u64> =
            hosts.iter().map(|h| text_hash(h.as_bytes(), 1)).collect();
        assert_eq!(hashes.len(), hosts.len());
        assert_ne!(text_hash(b"a", 1), text_hash(b"a", 2));
        assert_ne!(text_hash(b"a\0", 1), text_hash(b"a", 1));
    }

    #[test]
    fn distinct_at_least_is_a_lower_bound() {
        for (n, k) in [
            (0, 1),
            (1, 1),
            (100, 7),
            (5000, 4999),
            (5000, 5000),
            (20_000, 300),
        ] {
            let mut l = TargetList::new();
            for i in 0..k {
                l.push(&format!("h{i}"), 1).unwrap();
            }
            let one_each = l.spans.clone();
            l.spans = (0..n).map(|i| one_each[i % k]).collect();
            let d = l.distinct_at_least();
            assert!(d <= n.min(k), "{n} {k}: {d}");
            assert!(d * 10 >= n.min(k) * 9, "{n} {k}: {d}");
        }
    }

    #[test]
    fn merged_labels_depend_on_the_set_only() {
        let defaults = labels(&[("__metrics_path__", "/m"), ("job", "s")]);
        let a = merge_labels(&defaults, &labels(&[("z", "1"), ("job", "x"), ("a", "2")]));
        let b = merge_labels(&defaults, &labels(&[("a", "2"), ("z", "1"), ("job", "x")]));
        assert_eq!(a, b);
        assert_eq!(
            a,
            labels(&[
                ("__metrics_path__", "/m"),
                ("job", "x"),
                ("a", "2"),
                ("z", "1")
            ])
        );
    }
}
