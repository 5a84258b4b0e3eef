//! Sorting items by a text of theirs with fixed-width keys: eight bytes of
//! the text per item, computed once and held beside the item, so that the
//! radix passes read keys in order instead of the scattered texts. Only
//! items whose keys tie get keys for their next eight bytes.

use std::cmp::Ordering;
use std::sync::atomic::{self, AtomicUsize};
use std::sync::Mutex;

/// One in every byte of a `u64`.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Ranges this short are sorted by insertion.
const SMALL: usize = 24;

/// What the sort needs of the texts it orders. Items are opaque `u64`s.
pub trait Texts {
    /// Sets the key of each (key, item) pair in `pairs` (flat: key, item,
    /// key, item...) from its item, from text byte `depth` on: see
    /// [`key_of`].
    fn keys(&self, pairs: &mut [u64], depth: usize);
    /// The full order of two items whose texts are equal in their first
    /// `depth` bytes (the texts' own order, then any tie-break).
    fn compare_from(&self, a: u64, b: u64, depth: usize) -> Ordering;
    /// Whether two items have equal texts.
    fn same(&self, a: u64, b: u64) -> bool;
    /// Whether equal texts still have an order among them, so that the
    /// least must come first in its run.
    fn ties_ordered(&self) -> bool;
}

/// The key of `n` text bytes (at most 8) given big-endian in `word`
/// (the rest zero): each byte plus one, zero past the end of the text. A
/// byte of UTF-8 is never 0xFF, so the sum never carries, keys order as
/// the texts do, and a text that ends sorts before its extensions.
pub fn key_of(word: u64, n: usize) -> u64 {
    word + (ONES & !u64::MAX.checked_shr(8 * n as u32).unwrap_or(0))
}

/// Whether the text ended within this key: keys that are equal and ended
/// belong to equal texts.
pub fn ended(key: u64) -> bool {
    key & 0xFF == 0
}

/// ASCII upper-case letters of `word` in lower case, eight at a time.
pub fn lower(word: u64) -> u64 {
    let ascii = !word & HIGH;
    let low7 = word & !HIGH;
    // High bit set where the low seven bits are >= 'A', and > 'Z'.
    let ge_a = low7 + ONES * u64::from(0x80 - b'A');
    let gt_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = ge_a & !gt_z & ascii;
    word | (upper >> 2)
}

/// Whether `word` holds an ASCII upper-case letter.
pub fn has_upper(word: u64) -> bool {
    lower(word) != word
}

/// Sorts `items` by their texts, which are all equal in their first
/// `depth` bytes, and drops each item whose text equals the one kept
/// before it (the least first, when [`Texts::ties_ordered`]). When `meta`
/// is as long as `items`, it moves along, and `merge` folds a dropped
/// item's meta into the kept one's.
///
/// While it sorts, `items` holds a key beside each item: eight more bytes
/// an item, and one cache line for both wherever a pass moves them.
pub fn sort_dedup<T: Texts + Sync>(
    texts: &T,
    items: &mut Vec<u64>,
    meta: &mut Vec<u64>,
    depth: usize,
    merge: impl Fn(u64, u64) -> u64 + Sync,
) {
    let n = items.len();
    items.resize(n.saturating_mul(2), 0);
    let survey = spread(texts, items, n, depth);
    let start = (&survey, depth);
    let kept = if meta.len() == n {
        run_split(texts, Rows::<true> { pairs: items, meta }, start, &merge)
    } else {
        let rows = Rows::<false> {
            pairs: items,
            meta: &mut [],
        };
        run_split(texts, rows, start, &merge)
    };
    items.truncate(kept);
    if meta.len() == n {
        meta.truncate(kept);
    }
}

/// As [`sort_dedup`] without meta, for items given in pieces, in order:
/// they are spread to pairs in a buffer of their own, the pieces taken in
/// turn by two threads, and each piece is freed once spread. Returns the
/// items kept.
pub fn sort_dedup_pieces<T: Texts + Sync>(
    texts: &T,
    pieces: Vec<Vec<u64>>,
    depth: usize,
) -> Vec<u64> {
    let n = pieces.iter().map(Vec::len).fold(0, usize::saturating_add);
    // Zeroed pages are mapped as the spread writes them, on its threads.
    let mut pairs = vec![0u64; n.saturating_mul(2)];
    // Each piece with the pairs it goes to.
    let mut slots = Vec::with_capacity(pieces.len());
    let mut rest = &mut pairs[..];
    for piece in pieces {
        let Some((to, tail)) = rest.split_at_mut_checked(piece.len().saturating_mul(2)) else {
            break;
        };
        rest = tail;
        slots.push(Mutex::new(Some((piece, to))));
    }
    let next = AtomicUsize::new(0);
    let spread_some = |survey: &mut Survey| loop {
        let k = next.fetch_add(1, atomic::Ordering::Relaxed);
        let Some(slot) = slots.get(k) else { break };
        let taken = slot.lock().ok().and_then(|mut s| s.take());
        if let Some((piece, to)) = taken {
            spread_part(texts, &piece, to, depth, survey);
        }
    };
    let (mut survey, mut other) = (Survey::new(n), Survey::new(n));
    if n < PARALLEL_SPREAD {
        spread_some(&mut survey);
    } else {
        crate::model::par::both(
            "sort",
            || spread_some(&mut survey),
            || spread_some(&mut other),
        );
    }
    drop(slots);
    survey.merge(&other);
    let rows = Rows::<false> {
        pairs: &mut pairs,
        meta: &mut [],
    };
    let kept = run_split(texts, rows, (&survey, depth), &|a, _| a);
    pairs.truncate(kept);
    pairs
}

/// How many keys hold each value of their top byte (the first text byte
/// past the bytes all texts share, which nearly always differs): counted
/// only for a list that [`first_pass`] will sort.
struct Survey {
    counts: Option<Box<[usize; 256]>>,
}

impl Survey {
    fn new(n: usize) -> Survey {
        Survey {
            counts: (n >= PARALLEL_LIST).then(|| Box::new([0; 256])),
        }
    }

    /// Counts the keys of the flat pairs `pairs`.
    fn add(&mut self, pairs: &[u64]) {
        if let Some(counts) = &mut self.counts {
            for &k in pairs.iter().step_by(2) {
                counts[usize::from((k >> 56) as u8)] += 1;
            }
        }
    }

    fn merge(&mut self, other: &Survey) {
        if let (Some(mine), Some(theirs)) = (&mut self.counts, &other.counts) {
            for (a, b) in mine.iter_mut().zip(theirs.iter()) {
                *a += b;
            }
        }
    }
}

/// Items spread on two threads while at least this many are left.
const PARALLEL_SPREAD: usize = if cfg!(test) { 64 } else { 1 << 15 };

/// Spreads items `0..n` of `buf` (twice as long) to pairs, item `i` at
/// `2i + 1`, and sets the key of each (from text byte `depth` on). Items
/// go from the top down: the upper half of those left lands past every
/// item still unread, so each such half goes on two threads at once.
fn spread<T: Texts + Sync>(texts: &T, buf: &mut [u64], n: usize, depth: usize) -> Survey {
    let (mut survey, mut other) = (Survey::new(n), Survey::new(n));
    let mut end = n;
    while end >= PARALLEL_SPREAD {
        let start = end.div_ceil(2);
        let (low, high) = buf.split_at_mut(2 * start);
        let (Some(from), Some(to)) = (low.get(start..end), high.get_mut(..2 * (end - start)))
        else {
            break;
        };
        let (from_a, from_b) = from.split_at(from.len() / 2);
        let (to_a, to_b) = to.split_at_mut(2 * from_a.len());
        crate::model::par::both(
            "sort",
            || spread_part(texts, from_a, to_a, depth, &mut survey),
            || spread_part(texts, from_b, to_b, depth, &mut other),
        );
        end = start;
    }
    survey.merge(&other);
    // The last few here, from the back, so that no item is overwritten unread.
    for i in (0..end).rev() {
        let item = buf.get(i).copied().unwrap_or(0);
        if let Some(slot) = buf.get_mut(2 * i + 1) {
            *slot = item;
        }
    }
    let rest = buf.get_mut(..2 * end).unwrap_or_default();
    texts.keys(rest, depth);
    survey.add(rest);
    survey
}

/// Spreads `from` to the pairs of `to` and keys them, a block at a time
/// (the keys read the block while it is in cache).
fn spread_part<T: Texts>(
    texts: &T,
    from: &[u64],
    to: &mut [u64],
    depth: usize,
    survey: &mut Survey,
) {
    const BLOCK: usize = 2048;
    for (f, t) in from.chunks(BLOCK).zip(to.chunks_mut(2 * BLOCK)) {
        for (&item, pair) in f.iter().zip(t.chunks_exact_mut(2)) {
            if let Some(slot) = pair.get_mut(1) {
                *slot = item;
            }
        }
        texts.keys(t, depth);
        survey.add(t);
    }
}

/// Keeps the first row of each run of equal texts in `rows` (sorted),
/// folding the others' meta into its own with `merge`: the items (and
/// meta) kept go to the front of `rows.pairs` (and `rows.meta`), in
/// order, never past the row being read. How many were kept.
fn dedup<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    merge: &impl Fn(u64, u64) -> u64,
) -> usize {
    let (mut w, mut last) = (0, [0u64; 2]);
    for r in 0..rows.len() {
        let Some(([key, item], m)) = rows.get(r) else {
            break;
        };
        if w > 0 && key == last[0] && (ended(key) || texts.same(last[1], item)) {
            if let Some(kept) = rows.meta.get_mut(w - 1).filter(|_| META) {
                *kept = merge(*kept, m);
            }
            continue;
        }
        if let Some(slot) = rows.pairs.get_mut(w) {
            *slot = item;
        }
        if let Some(slot) = rows.meta.get_mut(w).filter(|_| META) {
            *slot = m;
        }
        last = [key, item];
        w += 1;
    }
    w
}

/// Joins the items two halves kept (see [`dedup`]): `low` of them at the
/// front of `rows`, and `high` at the front of the half from row `mid`
/// on, which move down after the low ones. Their texts are in order;
/// should the first high one equal the last low one, it goes as a repeat.
/// How many are kept in all.
fn join_halves<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    (mid, low, mut high): (usize, usize, usize),
    merge: &impl Fn(u64, u64) -> u64,
) -> usize {
    let (mut from, mut from_meta) = (2 * mid, mid);
    let (last, first) = (low.checked_sub(1), rows.pairs.get(from).copied());
    if let (Some(last), Some(first), true) = (last, first, high > 0) {
        if rows.pairs.get(last).is_some_and(|&a| texts.same(a, first)) {
            let m = rows.meta.get(from_meta).copied().filter(|_| META);
            if let (Some(m), Some(kept)) = (m, rows.meta.get_mut(last)) {
                *kept = merge(*kept, m);
            }
            (from, from_meta, high) = (from + 1, from_meta + 1, high - 1);
        }
    }
    if from + high <= rows.pairs.len() {
        rows.pairs.copy_within(from..from + high, low);
    }
    if META && from_meta + high <= rows.meta.len() {
        rows.meta.copy_within(from_meta..from_meta + high, low);
    }
    low + high
}

/// The rows that move together: (key, item) pairs, flat, and (when
/// `META`) meta.
struct Rows<'a, const META: bool> {
    pairs: &'a mut [u64],
    meta: &'a mut [u64],
}

type Row = ([u64; 2], u64);

impl<const META: bool> Rows<'_, META> {
    fn len(&self) -> usize {
        self.pairs.len() / 2
    }

    /// The flat pairs of rows `lo..hi`.
    fn part(&mut self, lo: usize, hi: usize) -> Option<&mut [u64]> {
        self.pairs.get_mut(2 * lo..2 * hi)
    }

    fn get(&self, i: usize) -> Option<Row> {
        let p = self.pairs.get(2 * i..2 * i + 2)?;
        let p = <[u64; 2]>::try_from(p).ok()?;
        let m = if META { *self.meta.get(i)? } else { 0 };
        Some((p, m))
    }

    fn set(&mut self, i: usize, (p, m): Row) {
        if let Some(x) = self.pairs.get_mut(2 * i..2 * i + 2) {
            x.copy_from_slice(&p);
        }
        if META {
            if let Some(x) = self.meta.get_mut(i) {
                *x = m;
            }
        }
    }

    /// Puts `row` at `i` and returns what was there.
    fn replace(&mut self, i: usize, row: Row) -> Row {
        let old = self.get(i).unwrap_or(row);
        self.set(i, row);
        old
    }

    fn swap(&mut self, i: usize, j: usize) {
        if let (Some(a), Some(b)) = (self.get(i), self.get(j)) {
            self.set(i, b);
            self.set(j, a);
        }
    }
}

enum Job {
    /// Sort `lo..hi`, whose texts share their first `depth` bytes and whose
    /// keys start at `depth`.
    Sort(usize, usize, usize),
    /// Put back the keys of `lo..hi`, which were all this one before they
    /// were replaced by the next eight bytes.
    Restore(usize, usize, u64),
}

/// Ranges at least this long, in lists at least [`WIDE_LIST`] long, may
/// take two bytes of key per pass (in practice those past [`LSD_MAX`]).
/// Tests lower them, so that small lists take the wide passes too.
const WIDE_RANGE: usize = if cfg!(test) { 64 } else { 2048 };
const WIDE_LIST: usize = if cfg!(test) { 256 } else { 1 << 17 };

/// MSD radix sort over the keys (American flag: each bucket filled in
/// place), one byte of key per pass (two in large ranges, when the values
/// they take are few enough), skipping the bytes a range shares; ranges
/// of [`LSD_MIN`] to [`LSD_MAX`] rows are sorted by [`lsd_sort`].
fn run<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    mut jobs: Vec<Job>,
    list_len: usize,
) {
    let mut scratch = Scratch::for_list(list_len);
    while let Some(job) = jobs.pop() {
        step(texts, rows, job, &mut jobs, &mut scratch);
    }
}

/// The bucket counters of the radix passes and the rows of the LSD
/// passes, made once per thread.
struct Scratch {
    count: Vec<usize>,
    next: Vec<usize>,
    wide_count: Vec<usize>,
    wide_next: Vec<usize>,
    /// Two-byte passes are allowed: judged by the whole list's length,
    /// also in a thread that sorts half of it (but never in the passes
    /// before a long list is split between two threads).
    wide_list: bool,
    lsd: Lsd,
}

/// What the LSD passes of [`lsd_sort`] need, made on first use: rows to
/// copy into, and a count of each value of each key byte.
#[derive(Default)]
struct Lsd {
    pairs: Vec<u64>,
    meta: Vec<u64>,
    counts: Vec<[u32; 256]>,
}

impl Lsd {
    /// Makes room for `len` rows; false without the memory.
    fn room(&mut self, len: usize, meta: bool) -> bool {
        if self.counts.is_empty() {
            self.counts = vec![[0; 256]; 8];
        }
        at_least(&mut self.pairs, len.saturating_mul(2)) && (!meta || at_least(&mut self.meta, len))
    }
}

/// Makes `v` at least `n` long (its values do not matter); false without
/// the memory.
fn at_least(v: &mut Vec<u64>, n: usize) -> bool {
    if v.len() < n {
        v.clear();
        if v.try_reserve_exact(n).is_err() {
            return false;
        }
        v.resize(n, 0);
    }
    true
}

impl Scratch {
    fn for_list(len: usize) -> Scratch {
        Scratch {
            count: vec![0; 256],
            next: vec![0; 256],
            wide_count: Vec::new(),
            wide_next: Vec::new(),
            wide_list: len >= WIDE_LIST,
            lsd: Lsd::default(),
        }
    }
}

/// Lists at least this long are sorted by two threads once the first
/// passes have split them into buckets: the two halves share no row.
const PARALLEL_LIST: usize = if cfg!(test) { 512 } else { 1 << 16 };

/// Sorts all rows and drops repeats (see [`dedup`]): as [`run`], on two
/// threads for a long list. If no second thread can be had, this one
/// does all the work. How many rows are kept.
fn run_split<T: Texts + Sync, const META: bool>(
    texts: &T,
    mut rows: Rows<'_, META>,
    (survey, depth): (&Survey, usize),
    merge: &(impl Fn(u64, u64) -> u64 + Sync),
) -> usize {
    let n = rows.len();
    let mut jobs = vec![Job::Sort(0, n, depth)];
    if n >= PARALLEL_LIST {
        // One byte per pass here: this thread works alone until the split,
        // and a pass of few buckets moves the rows faster than one of many.
        let mut scratch = Scratch {
            wide_list: false,
            ..Scratch::for_list(n)
        };
        // A few passes over the job that holds the middle row, until the
        // jobs left fall on both sides of a row near it: the closer, the
        // less one thread waits for the other at the end.
        for pass in 1..=SPLIT_PASSES {
            let middle = jobs
                .iter()
                .rposition(|j| matches!(*j, Job::Sort(lo, hi, _) if lo < n / 2 && n / 2 < hi));
            let Some(job) = middle.map(|i| jobs.remove(i)) else {
                break;
            };
            // The first pass needs no counting: the spread counted.
            if pass > 1 || !first_pass(texts, &mut rows, (survey, depth), &mut jobs, &mut scratch) {
                step(texts, &mut rows, job, &mut jobs, &mut scratch);
            }
            match split_point(&jobs, n) {
                Some(mid) if pass == SPLIT_PASSES || mid.abs_diff(n / 2) <= n / 64 => {
                    drop(scratch);
                    return run_halves(texts, rows, jobs, mid, merge);
                }
                _ => {}
            }
        }
        drop(scratch);
        if let Some(mid) = split_point(&jobs, n) {
            return run_halves(texts, rows, jobs, mid, merge);
        }
    }
    // No split: the rest here, two bytes a pass where that pays.
    run(texts, &mut rows, jobs, n);
    dedup(texts, &mut rows, merge)
}

/// Passes that may go into finding where to split a list.
const SPLIT_PASSES: usize = 4;

/// The row boundary nearest the middle that no sort job crosses, with at
/// least an eighth of the rows on each side.
fn split_point(jobs: &[Job], n: usize) -> Option<usize> {
    let crosses = |b: usize| {
        jobs.iter()
            .any(|j| matches!(*j, Job::Sort(lo, hi, _) if lo < b && b < hi))
    };
    let half = n / 2;
    jobs.iter()
        .filter_map(|j| match *j {
            Job::Sort(lo, hi, _) => Some([lo, hi]),
            Job::Restore(..) => None,
        })
        .flatten()
        .filter(|&b| b >= n / 8 && b <= n - n / 8 && !crosses(b))
        .min_by_key(|&b| b.abs_diff(half))
}

/// Runs the jobs below `mid` here and those above it on a second thread,
/// each half dropping its own repeats; then joins what they kept.
fn run_halves<T: Texts + Sync, const META: bool>(
    texts: &T,
    mut rows: Rows<'_, META>,
    jobs: Vec<Job>,
    mid: usize,
    merge: &(impl Fn(u64, u64) -> u64 + Sync),
) -> usize {
    let n = rows.len();
    let (mut low, mut high) = (Vec::new(), Vec::new());
    for job in jobs {
        match job {
            Job::Sort(lo, hi, d) if hi <= mid => low.push(Job::Sort(lo, hi, d)),
            Job::Sort(lo, hi, d) => high.push(Job::Sort(lo - mid, hi - mid, d)),
            // Keys put back over both halves: each puts back its own.
            Job::Restore(lo, hi, k) => {
                if lo < mid {
                    low.push(Job::Restore(lo, hi.min(mid), k));
                }
                if hi > mid {
                    high.push(Job::Restore(lo.max(mid) - mid, hi - mid, k));
                }
            }
        }
    }
    let (mut kept_low, mut kept_high) = (0, 0);
    {
        let Rows { pairs, meta } = &mut rows;
        let (low_pairs, high_pairs) = pairs.split_at_mut((2 * mid).min(pairs.len()));
        let (low_meta, high_meta) = if META {
            meta.split_at_mut(mid.min(meta.len()))
        } else {
            (&mut [][..], &mut [][..])
        };
        let mut low_rows = Rows::<META> {
            pairs: low_pairs,
            meta: low_meta,
        };
        let high_rows = Rows::<META> {
            pairs: high_pairs,
            meta: high_meta,
        };
        crate::model::par::both(
            "sort",
            || {
                run(texts, &mut low_rows, low, n);
                kept_low = dedup(texts, &mut low_rows, merge);
            },
            || {
                let mut high_rows = high_rows;
                run(texts, &mut high_rows, high, n);
                kept_high = dedup(texts, &mut high_rows, merge);
            },
        );
    }
    join_halves(texts, &mut rows, (mid, kept_low, kept_high), merge)
}

/// Runs one job: a radix pass over its range (pushing a job for each
/// bucket still to sort), an LSD sort of a mid-sized range, an insertion
/// sort of a short range, or keys put back.
fn step<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    job: Job,
    jobs: &mut Vec<Job>,
    scratch: &mut Scratch,
) {
    let Scratch {
        count,
        next,
        wide_count,
        wide_next,
        wide_list,
        lsd,
    } = scratch;
    let (lo, hi, depth) = match job {
        Job::Restore(lo, hi, key) => {
            for p in rows.part(lo, hi).unwrap_or_default().chunks_exact_mut(2) {
                if let Some(k) = p.first_mut() {
                    *k = key;
                }
            }
            return;
        }
        Job::Sort(lo, hi, depth) => (lo, hi, depth),
    };
    if hi.saturating_sub(lo) <= SMALL {
        insertion_sort(texts, rows, lo, hi, depth);
        return;
    }
    let Some(part) = rows.part(lo, hi) else {
        return;
    };
    // Every key lies between the least and the greatest, so those two
    // tell the bytes all share and the values the next ones take.
    let (min, max) = part
        .iter()
        .step_by(2)
        .fold((u64::MAX, 0), |(a, b), &k| (a.min(k), b.max(k)));
    if min == max {
        if ended(min) {
            least_first(texts, rows, lo, hi, depth);
        } else {
            // Tied for eight bytes: on to the next eight.
            jobs.push(Job::Restore(lo, hi, min));
            let deeper = depth.saturating_add(8);
            texts.keys(part, deeper);
            jobs.push(Job::Sort(lo, hi, deeper));
        }
        return;
    }
    let shared = (min ^ max).leading_zeros() & !7;
    // The low bytes of the keys, below those all share.
    let low = 8 - shared as usize / 8;
    if (LSD_MIN..=LSD_MAX).contains(&(hi - lo))
        && lsd_sort(texts, rows, (lo, hi, depth), low, jobs, lsd)
    {
        return;
    }
    let wide_shift = 48u32.checked_sub(shared);
    let wide_used = wide_shift.map(|s| (min >> s & 0xFFFF, max >> s & 0xFFFF));
    let (shift, mask, count, next) = match (wide_shift, wide_used) {
        (Some(s), Some((a, b)))
            if hi - lo >= WIDE_RANGE
                && *wide_list
                && usize::try_from(b - a).is_ok_and(|span| span < hi - lo) =>
        {
            if wide_count.is_empty() {
                *wide_count = vec![0usize; 1 << 16];
                *wide_next = vec![0usize; 1 << 16];
            }
            (s, 0xFFFF, &mut wide_count[..], &mut wide_next[..])
        }
        _ => (56 - shared, 0xFF, &mut count[..], &mut next[..]),
    };
    let digit = |k: u64| (k >> shift & mask) as usize;
    let used = digit(min)..digit(max) + 1;
    distribute(rows, lo, hi, digit, used.clone(), count, next);
    push_buckets(texts, rows, (lo, depth), used, count, jobs);
}

/// After a pass from row `lo`: a job for each bucket of `used` (counted
/// in `count`, which is left zero) with more than one row in it.
fn push_buckets<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    (lo, depth): (usize, usize),
    used: std::ops::Range<usize>,
    count: &mut [usize],
    jobs: &mut Vec<Job>,
) {
    let mut start = lo;
    for b in used {
        let Some(c) = count.get_mut(b) else {
            continue;
        };
        let stop = start + *c;
        if *c > 1 {
            if b & 0xFF == 0 {
                // Texts that ended within these bytes: all equal.
                least_first(texts, rows, start, stop, depth);
            } else {
                jobs.push(Job::Sort(start, stop, depth));
            }
        }
        start = stop;
        *c = 0;
    }
}

/// The first pass over all `n` rows, on the top byte of their keys, which
/// `survey` has counted: no pass to count them. False, having done
/// nothing, when the keys share that byte (or were not counted).
fn first_pass<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    (survey, depth): (&Survey, usize),
    jobs: &mut Vec<Job>,
    scratch: &mut Scratch,
) -> bool {
    let n = rows.len();
    let Some(counts) = survey
        .counts
        .as_deref()
        .filter(|c| !c.contains(&n) && c.iter().sum::<usize>() == n)
    else {
        return false;
    };
    let (Some(first), Some(last)) = (
        counts.iter().position(|&k| k > 0),
        counts.iter().rposition(|&k| k > 0),
    ) else {
        return false;
    };
    let Scratch { count, next, .. } = scratch;
    for (c, &k) in count.iter_mut().zip(counts) {
        *c = k;
    }
    let digit = |k: u64| (k >> 56) as usize;
    place(rows, 0, digit, first..last + 1, count, next);
    push_buckets(texts, rows, (0, depth), first..last + 1, count, jobs);
    true
}

/// One radix pass over `lo..hi`: counts the rows of each bucket of `used`
/// into `count`, then moves each row straight to its bucket, carrying the
/// one it displaces on until a row for this bucket turns up.
fn distribute<const META: bool>(
    rows: &mut Rows<'_, META>,
    lo: usize,
    hi: usize,
    digit: impl Fn(u64) -> usize,
    used: std::ops::Range<usize>,
    count: &mut [usize],
    next: &mut [usize],
) {
    let part = rows.pairs.get(2 * lo..2 * hi).unwrap_or_default();
    for &k in part.iter().step_by(2) {
        if let Some(c) = count.get_mut(digit(k)) {
            *c += 1;
        }
    }
    place(rows, lo, digit, used, count, next);
}

/// The moves of [`distribute`], with `count` already counted.
fn place<const META: bool>(
    rows: &mut Rows<'_, META>,
    lo: usize,
    digit: impl Fn(u64) -> usize,
    used: std::ops::Range<usize>,
    count: &[usize],
    next: &mut [usize],
) {
    let mut sum = lo;
    for b in used.clone() {
        if let (Some(c), Some(n)) = (count.get(b), next.get_mut(b)) {
            *n = sum;
            sum += c;
        }
    }
    let mut stop = lo;
    for b in used {
        stop += count.get(b).copied().unwrap_or(0);
        loop {
            let i = next.get(b).copied().unwrap_or(stop);
            if i >= stop {
                break;
            }
            let Some(mut row) = rows.get(i) else {
                break;
            };
            let mut d = digit(row.0[0]);
            while d != b {
                // Only a count that disagrees with the digits could lead
                // out of the range: then rows end out of order, but the
                // pass ends.
                let Some(slot) = next.get_mut(d).filter(|s| (lo..sum).contains(*s)) else {
                    break;
                };
                let j = *slot;
                *slot += 1;
                row = rows.replace(j, row);
                d = digit(row.0[0]);
            }
            rows.set(i, row);
            if let Some(n) = next.get_mut(b) {
                *n = i + 1;
            }
        }
    }
}

/// Ranges of this many rows are sorted by [`lsd_sort`]: few enough that
/// the rows it copies into stay in cache (256 KiB a thread, 384 KiB with
/// meta: peak memory hardly moves), enough to pay for its counts. Tests lower
/// them, so that both sorts meet in small lists.
const LSD_MIN: usize = if cfg!(test) { 40 } else { 256 };
const LSD_MAX: usize = if cfg!(test) { 300 } else { 1 << 14 };

/// Sorts `lo..hi`, whose keys are not all equal, by whole keys: one LSD
/// pass for each key byte whose values differ (of the `low` bytes below
/// those all share), each streaming the rows into `lsd`'s and back,
/// which costs far less a row than the swaps of an in-place pass. Rows
/// whose keys tie go on as jobs. False, having done nothing, without
/// memory for the rows to copy into.
fn lsd_sort<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    (lo, hi, depth): (usize, usize, usize),
    low: usize,
    jobs: &mut Vec<Job>,
    lsd: &mut Lsd,
) -> bool {
    let len = hi - lo;
    if !lsd.room(len, META) {
        return false;
    }
    let Lsd {
        pairs: spare,
        meta: spare_meta,
        counts,
    } = lsd;
    let (Some(part), Some(spare)) = (rows.pairs.get_mut(2 * lo..2 * hi), spare.get_mut(..2 * len))
    else {
        return false;
    };
    let no_meta = (&mut [][..], &mut [][..]);
    let (part_meta, spare_meta) = if META {
        match (rows.meta.get_mut(lo..hi), spare_meta.get_mut(..len)) {
            (Some(a), Some(b)) => (a, b),
            _ => return false,
        }
    } else {
        no_meta
    };
    for c in counts.iter_mut() {
        *c = [0; 256];
    }
    for &k in part.iter().step_by(2) {
        for (b, c) in counts.iter_mut().enumerate().take(low) {
            c[usize::from((k >> (8 * b)) as u8)] += 1;
        }
    }
    let mut in_spare = false;
    for (b, c) in counts.iter().enumerate().take(low) {
        // A byte that all keys share needs no pass.
        if c.iter().any(|&n| n as usize == len) {
            continue;
        }
        let mut next = [0u32; 256];
        let mut sum = 0;
        for (n, &k) in next.iter_mut().zip(c) {
            *n = sum;
            sum += k;
        }
        let shift = 8 * b as u32;
        if in_spare {
            scatter::<META>((spare, spare_meta), (part, part_meta), shift, &mut next);
        } else {
            scatter::<META>((part, part_meta), (spare, spare_meta), shift, &mut next);
        }
        in_spare = !in_spare;
    }
    if in_spare {
        part.copy_from_slice(spare);
        part_meta.copy_from_slice(spare_meta);
    }
    // Runs of one key: equal texts, or texts to tell apart further on.
    let mut start = lo;
    while start < hi {
        let key = |i: usize| rows.pairs.get(2 * i).copied();
        let k = key(start);
        let end = (start + 1..hi).find(|&i| key(i) != k).unwrap_or(hi);
        if end - start > 1 {
            match k {
                Some(k) if ended(k) => least_first(texts, rows, start, end, depth),
                _ => jobs.push(Job::Sort(start, end, depth)),
            }
        }
        start = end;
    }
    true
}

/// One LSD pass: each row of `from` to the place `next` gives the value
/// of its key's byte at `shift`, in order (a stable pass).
fn scatter<const META: bool>(
    (from, from_meta): (&[u64], &[u64]),
    (to, to_meta): (&mut [u64], &mut [u64]),
    shift: u32,
    next: &mut [u32; 256],
) {
    for (i, p) in from.chunks_exact(2).enumerate() {
        let Some(&k) = p.first() else {
            continue;
        };
        let slot = &mut next[usize::from((k >> shift) as u8)];
        let j = *slot as usize;
        *slot += 1;
        if let Some(t) = to.get_mut(2 * j..2 * j + 2) {
            t.copy_from_slice(p);
        }
        if META {
            if let (Some(&m), Some(t)) = (from_meta.get(i), to_meta.get_mut(j)) {
                *t = m;
            }
        }
    }
}

/// Sorts a short range by key, then by text for equal keys.
fn insertion_sort<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    lo: usize,
    hi: usize,
    depth: usize,
) {
    let deeper = depth.saturating_add(8);
    let greater = |(a, _): Row, (b, _): Row| match a[0].cmp(&b[0]) {
        Ordering::Equal => texts.compare_from(a[1], b[1], deeper) == Ordering::Greater,
        o => o == Ordering::Greater,
    };
    for i in lo.saturating_add(1)..hi {
        let Some(row) = rows.get(i) else {
            break;
        };
        let mut j = i;
        while j > lo {
            match rows.get(j - 1) {
                Some(prev) if greater(prev, row) => {
                    rows.set(j, prev);
                    j -= 1;
                }
                _ => break,
            }
        }
        if j != i {
            rows.set(j, row);
        }
    }
}

/// Moves the least of a range of equal texts to its front, when their
/// order matters: de-duplication keeps the first.
fn least_first<T: Texts, const META: bool>(
    texts: &T,
    rows: &mut Rows<'_, META>,
    lo: usize,
    hi: usize,
    depth: usize,
) {
    if !texts.ties_ordered() {
        return;
    }
    let item = |i: usize| rows.pairs.get(2 * i + 1).copied();
    let least = (lo..hi).fold(lo, |m, i| match (item(i), item(m)) {
        (Some(x), Some(y)) if texts.compare_from(x, y, depth) == Ordering::Less => i,
        _ => m,
    });
    rows.swap(lo, least);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts for the tests: item `i` is `texts[i]`.
    struct Strs(Vec<Vec<u8>>);

    impl Strs {
        fn text(&self, item: u64) -> &[u8] {
            &self.0[item as usize]
        }
    }

    impl Texts for Strs {
        fn keys(&self, pairs: &mut [u64], depth: usize) {
            for p in pairs.chunks_exact_mut(2) {
                let t = self.text(p[1]).get(depth..).unwrap_or_default();
                let n = t.len().min(8);
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&t[..n]);
                p[0] = key_of(u64::from_be_bytes(b), n);
            }
        }

        fn compare_from(&self, a: u64, b: u64, depth: usize) -> Ordering {
            let from = |t: &[u8]| t.get(depth..).unwrap_or_default().to_vec();
            from(self.text(a)).cmp(&from(self.text(b)))
        }

        fn same(&self, a: u64, b: u64) -> bool {
            self.text(a) == self.text(b)
        }

        fn ties_ordered(&self) -> bool {
            false
        }
    }

    /// Sorts texts (items numbered in order, meta their numbers, merged
    /// to the least) and checks texts and meta against a plain model.
    fn check_sort(texts: Vec<Vec<u8>>) {
        let mut model: Vec<(Vec<u8>, u64)> = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            match model.iter_mut().find(|(m, _)| m == t) {
                Some(_) => {}
                None => model.push((t.clone(), i as u64)),
            }
        }
        model.sort();
        let depth = texts
            .iter()
            .map(|t| t.iter().zip(&texts[0]).take_while(|(a, b)| a == b).count())
            .min()
            .unwrap_or(0);
        let texts = Strs(texts);
        let mut items: Vec<u64> = (0..texts.0.len() as u64).collect();
        let mut meta = items.clone();
        sort_dedup(&texts, &mut items, &mut meta, depth, u64::min);
        let got: Vec<(Vec<u8>, u64)> = items
            .iter()
            .zip(&meta)
            .map(|(&i, &m)| (texts.text(i).to_vec(), m))
            .collect();
        assert_eq!(got, model);
        // The same items in pieces of several sizes, empty ones among them.
        let want: Vec<Vec<u8>> = model.into_iter().map(|(t, _)| t).collect();
        let ids: Vec<u64> = (0..texts.0.len() as u64).collect();
        for size in [1, 7, 100, 1000] {
            let mut pieces: Vec<Vec<u64>> = Vec::new();
            for (k, c) in ids.chunks(size).enumerate() {
                if k % 3 == 1 {
                    pieces.push(Vec::new());
                }
                pieces.push(c.to_vec());
            }
            let kept = sort_dedup_pieces(&texts, pieces, depth);
            let got: Vec<Vec<u8>> = kept.iter().map(|&i| texts.text(i).to_vec()).collect();
            assert_eq!(got, want, "pieces of {size}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Lists on both sides of every threshold (LSD ranges, the split
        /// between two threads, the spread on two threads), with repeats
        /// and texts that tie for eight bytes and more.
        #[test]
        fn sorts_and_drops_repeats_as_the_model(
            texts in proptest::collection::vec(
                "(rack-0000-row-|rack-|r)?[0-9a:]{0,10}",
                0..3000,
            )
        ) {
            check_sort(texts.into_iter().map(String::into_bytes).collect());
        }
    }

    #[test]
    fn long_lists_of_numbered_names_sort() {
        let texts = (0..20_000u32)
            .map(|i| format!("sensor_{}:9100", i * 7919 % 15_000).into_bytes())
            .collect();
        check_sort(texts);
    }

    /// The job over the middle row ties for eight bytes before the split,
    /// so keys put back after its deeper passes span both halves; and
    /// `bbbbbbbbc` (deeper key `c`, ended) sits beside `c` (key `c`,
    /// ended), which only keys put back tell apart.
    #[test]
    fn keys_put_back_across_the_split_keep_texts_apart() {
        let mut texts: Vec<String> = (0..60).map(|i| format!("a{i}")).collect();
        texts.extend((0..480).map(|i| format!("bbbbbbbbbb{:03}", i % 200)));
        texts.extend(["bbbbbbbbc", "c", "c"].map(String::from));
        texts.extend((0..60).map(|i| format!("d{i}")));
        check_sort(texts.into_iter().map(String::into_bytes).collect());
    }

    #[test]
    fn joined_halves_drop_a_repeat_across_the_middle() {
        let texts = Strs(vec![
            b"a".to_vec(),
            b"b".to_vec(),
            b"b".to_vec(),
            b"c".to_vec(),
        ]);
        // Low half kept items 0, 1; high half (from row 2) kept 2, 3.
        let mut pairs = vec![0, 1, 9, 9, 2, 3, 9, 9];
        let mut meta = vec![10, 11, 9, 9];
        let mut rows = Rows::<true> {
            pairs: &mut pairs,
            meta: &mut meta,
        };
        let kept = join_halves(&texts, &mut rows, (2, 2, 2), &|a: u64, b: u64| a + b);
        assert_eq!(kept, 3);
        assert_eq!(pairs[..3], [0, 1, 3]);
        assert_eq!(meta[..3], [10, 11 + 9, 9]);
        // Nothing in common, and nothing kept on one side.
        let mut pairs = vec![0, 1, 9, 9, 3, 9, 9, 9];
        let mut rows = Rows::<false> {
            pairs: &mut pairs,
            meta: &mut [],
        };
        assert_eq!(join_halves(&texts, &mut rows, (2, 2, 1), &u64::min), 3);
        assert_eq!(pairs[..3], [0, 1, 3]);
        let mut pairs = vec![9, 9, 9, 9, 3, 9, 9, 9];
        let mut rows = Rows::<false> {
            pairs: &mut pairs,
            meta: &mut [],
        };
        assert_eq!(join_halves(&texts, &mut rows, (2, 0, 1), &u64::min), 1);
        assert_eq!(pairs[0], 3);
    }

    #[test]
    fn the_split_crosses_no_sort_job_and_leaves_work_on_both_sides() {
        let n = 1000;
        // Buckets 0..100, 100..480, 480..520 (tied: keys to put back
        // after), 520..1000; a Restore spanning all of them.
        let jobs = vec![
            Job::Restore(0, n, 7),
            Job::Sort(0, 100, 0),
            Job::Sort(100, 480, 0),
            Job::Restore(480, 520, 3),
            Job::Sort(480, 520, 8),
            Job::Sort(520, n, 0),
        ];
        assert_eq!(split_point(&jobs, n), Some(480));
        // One job over nearly everything: no useful split.
        let jobs = vec![Job::Sort(0, 950, 0), Job::Sort(950, n, 0)];
        assert_eq!(split_point(&jobs, n), None);
        assert_eq!(split_point(&[Job::Sort(0, n, 0)], n), None);
        assert_eq!(split_point(&[], n), None);
    }

    #[test]
    fn lower_and_upper_agree_with_std_on_every_byte() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let word = u64::from(b) << (8 * pos) | 0x6100_0000_0000_0041 & !(0xFF << (8 * pos));
                let want = u64::from_le_bytes(word.to_le_bytes().map(|x| x.to_ascii_lowercase()));
                assert_eq!(lower(word), want, "{b:#x} at {pos}");
                let any = word.to_le_bytes().iter().any(u8::is_ascii_uppercase);
                assert_eq!(has_upper(word), any, "{b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn keys_order_as_texts() {
        let k = |s: &[u8]| {
            let mut b = [0u8; 8];
            b[..s.len()].copy_from_slice(s);
            key_of(u64::from_be_bytes(b), s.len())
        };
        assert!(k(b"a:10") < k(b"a:9"));
        assert!(k(b"a") < k(b"a\0"));
        assert!(k(b"") < k(b"\0"));
        assert!(k(b"ab") < k(b"b"));
        assert_eq!(k(b""), 0);
        assert!(ended(k(b"abcdefg")) && !ended(k(b"abcdefgh")));
        assert_eq!(
            k(b"\xf4\xf4\xf4\xf4\xf4\xf4\xf4\xf4"),
            0xF5F5_F5F5_F5F5_F5F5
        );
    }
}
