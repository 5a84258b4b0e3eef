//! The `file_sd` document written straight into a writer: byte for byte
//! what serde_json's pretty printer makes of the groups
//! ([`crate::model::targets::render_to`]), without its call per token and
//! its formatting of each target, which cost most of a large render.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::{Condvar, Mutex};

use crate::model::targets::{self, TargetGroup, TargetList};

/// Writes `groups` as pretty JSON (two-space indent, trailing newline) into
/// `w`, in chunks of at least 64 KiB (a long list in pieces of 8,192
/// targets). An error means `w` got part of a document, which the caller
/// must not publish.
pub fn render_to(w: &mut dyn Write, groups: &[TargetGroup]) -> io::Result<()> {
    let mut out = Chunks {
        w,
        buf: Vec::with_capacity(CHUNK + 1024),
    };
    if groups.is_empty() {
        out.put(b"[]\n");
        return out.finish();
    }
    out.put(b"[\n");
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.put(b",\n");
        }
        out.put(b"  {\n    \"targets\": ");
        if g.targets.is_empty() {
            out.put(b"[]");
        } else {
            out.put(b"[");
            if g.targets.plain_text() {
                out.plain_targets(&g.targets)?;
            } else {
                // The `:port"` end is made once, not per target: most
                // targets share one port.
                let mut sep: &[u8] = b"\n      ";
                let mut tail = PortTail::default();
                for (host, port) in g.targets.parts() {
                    out.put(sep);
                    sep = b",\n      ";
                    out.target(host, port, &mut tail)?;
                    out.ship()?;
                }
            }
            out.put(b"\n    ]");
        }
        out.put(b",\n    \"labels\": ");
        if g.labels.is_empty() {
            out.put(b"{}");
        } else {
            out.put(b"{");
            let mut sep: &[u8] = b"\n      ";
            for (name, value) in &g.labels {
                out.put(sep);
                out.string(name.as_bytes())?;
                out.put(b": ");
                out.string(value.as_bytes())?;
                out.ship()?;
                sep = b",\n      ";
            }
            out.put(b"\n    }");
        }
        out.put(b"\n  }");
    }
    out.put(b"\n]\n");
    out.finish()
}

/// `:port"` for the last port asked for (in eight bytes, the rest zero).
#[derive(Default)]
struct PortTail {
    port: Option<u16>,
    text: [u8; 8],
    len: usize,
}

impl PortTail {
    fn of(&mut self, port: u16) -> &[u8] {
        let (text, len) = self.padded(port);
        text.get(..len).unwrap_or_default()
    }

    /// As [`PortTail::of`], padded to eight bytes, and its length.
    fn padded(&mut self, port: u16) -> (&[u8; 8], usize) {
        if self.port != Some(port) {
            let mut digits = [0u8; 5];
            let digits = targets::port_digits(port, &mut digits);
            let mut text = [0u8; 8];
            let mut len = 0;
            for &b in [b':'].iter().chain(digits).chain([b'"'].iter()) {
                if let Some(t) = text.get_mut(len) {
                    *t = b;
                    len += 1;
                }
            }
            *self = PortTail {
                port: Some(port),
                text,
                len,
            };
        }
        (&self.text, self.len)
    }
}

/// Writes the targets `range` of a list that needs no escaping into
/// `buf`, each as `"host:port"` after its separator (the list's first
/// without a comma). Every piece is copied as a fixed number of bytes and
/// cut back to its length: short copies of a known size need no call to
/// `memcpy`.
fn plain_range(buf: &mut Vec<u8>, list: &TargetList, range: Range<usize>, tail: &mut PortTail) {
    const SEP: &[u8; 9] = b",\n      \"";
    let range = range.start..range.end.min(list.len());
    buf.reserve(range.len().saturating_mul(2 * PAD));
    // Each target is put together at a fixed width, then copied whole.
    let mut piece = [0u8; SEP.len() + PAD + 8];
    if let Some(sep) = piece.get_mut(..SEP.len()) {
        sep.copy_from_slice(SEP);
    }
    for (i, (host, padded, port)) in (range.start..).zip(list.parts_padded::<PAD>(range)) {
        let (text, len) = tail.padded(port);
        match padded {
            Some(window) if i > 0 && host.len() <= PAD => {
                let end = SEP.len() + host.len();
                if let Some(h) = piece.get_mut(SEP.len()..SEP.len() + PAD) {
                    h.copy_from_slice(window);
                }
                if let Some(t) = piece.get_mut(end..end + 8) {
                    t.copy_from_slice(text);
                }
                let at = buf.len();
                buf.extend_from_slice(&piece);
                buf.truncate(at + end + len);
            }
            _ => {
                let sep = if i == 0 { &SEP[1..] } else { &SEP[..] };
                buf.extend_from_slice(sep);
                buf.extend_from_slice(host);
                buf.extend_from_slice(text.get(..len).unwrap_or_default());
            }
        }
    }
}

/// Targets in one piece of a long list's render.
const PIECE: usize = 8 * 1024;

/// Pieces rendered but not yet written, at most: what bounds the memory.
const AHEAD: usize = 4;

/// Where the pieces of a render on two threads stand.
struct Board {
    /// The next piece nobody has taken to render.
    next: usize,
    /// The next piece to write.
    written: usize,
    /// Rendered pieces, waiting for their turn.
    ready: Vec<Option<Vec<u8>>>,
    /// Written buffers, to render into again.
    spare: Vec<Vec<u8>>,
    /// The writer stopped (an error): nothing more is rendered.
    stop: bool,
    /// The helper stopped without rendering a piece it took.
    lost: bool,
}

/// Renders the targets of a long plain list in pieces, this thread and a
/// helper each taking the next piece, and writes them to `w` in order.
/// This thread only waits for a piece the helper is still rendering; if
/// no helper can start, this thread renders them all.
fn pieces(w: &mut dyn Write, list: &TargetList) -> io::Result<()> {
    let count = list.len().div_ceil(PIECE);
    let board = Mutex::new(Board {
        next: 0,
        written: 0,
        ready: vec![None; count],
        spare: Vec::new(),
        stop: false,
        lost: false,
    });
    let turn = Condvar::new();
    let render = |k: usize, mut buf: Vec<u8>| {
        buf.clear();
        plain_range(
            &mut buf,
            list,
            k * PIECE..(k + 1) * PIECE,
            &mut PortTail::default(),
        );
        buf
    };
    let mut result = Ok(());
    crate::model::par::both(
        "render",
        || result = write_pieces(w, &board, &turn, count, render),
        || help_render(&board, &turn, count, render),
    );
    result
}

/// What the writing thread does next.
enum Next {
    Write(usize, Vec<u8>),
    Render(usize, Vec<u8>),
    Done,
}

/// The writing thread: writes each piece in its turn, rendering pieces
/// itself while the next to write is not ready.
fn write_pieces(
    w: &mut dyn Write,
    board: &Mutex<Board>,
    turn: &Condvar,
    count: usize,
    render: impl Fn(usize, Vec<u8>) -> Vec<u8>,
) -> io::Result<()> {
    /// Stops the helper however this thread ends, a panic included: the
    /// scope waits for the helper before the panic goes on.
    struct Stop<'a>(&'a Mutex<Board>, &'a Condvar);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            if let Ok(mut b) = self.0.lock() {
                b.stop = true;
            }
            self.1.notify_all();
        }
    }
    let _stop = Stop(board, turn);
    let lost = || io::Error::other("the render's helper thread stopped");
    loop {
        let next = {
            let mut b = board.lock().map_err(|_| lost())?;
            loop {
                if b.written >= count {
                    break Next::Done;
                }
                let k = b.written;
                if let Some(buf) = b.ready.get_mut(k).and_then(Option::take) {
                    break Next::Write(k, buf);
                }
                if b.next < count && b.next < b.written + AHEAD {
                    let k = b.next;
                    b.next += 1;
                    let buf = b.spare.pop().unwrap_or_default();
                    break Next::Render(k, buf);
                }
                if b.lost {
                    return Err(lost());
                }
                b = turn.wait(b).map_err(|_| lost())?;
            }
        };
        match next {
            Next::Done => return Ok(()),
            Next::Render(k, buf) => {
                let buf = render(k, buf);
                let mut b = board.lock().map_err(|_| lost())?;
                if let Some(slot) = b.ready.get_mut(k) {
                    *slot = Some(buf);
                }
            }
            Next::Write(k, buf) => {
                let written = w.write_all(&buf);
                let mut b = board.lock().map_err(|_| lost())?;
                b.spare.push(buf);
                b.written = k + 1;
                if written.is_err() {
                    b.stop = true;
                }
                turn.notify_all();
                written?;
            }
        }
    }
}

/// The helper: renders the next piece while the writer is not too far
/// behind, until none is left or the writer stopped.
fn help_render(
    board: &Mutex<Board>,
    turn: &Condvar,
    count: usize,
    render: impl Fn(usize, Vec<u8>) -> Vec<u8>,
) {
    /// Tells the writer when this thread ends without the piece it took.
    struct Taken<'a>(&'a Mutex<Board>, &'a Condvar, bool);
    impl Drop for Taken<'_> {
        fn drop(&mut self) {
            if self.2 {
                if let Ok(mut b) = self.0.lock() {
                    b.lost = true;
                }
                self.1.notify_all();
            }
        }
    }
    loop {
        let Ok(mut b) = board.lock() else {
            return;
        };
        while !b.stop && b.next < count && b.next >= b.written + AHEAD {
            let Ok(again) = turn.wait(b) else {
                return;
            };
            b = again;
        }
        if b.stop || b.next >= count {
            return;
        }
        let k = b.next;
        b.next += 1;
        let buf = b.spare.pop().unwrap_or_default();
        drop(b);
        let mut taken = Taken(board, turn, true);
        let buf = render(k, buf);
        let Ok(mut b) = board.lock() else {
            return;
        };
        if let Some(slot) = b.ready.get_mut(k) {
            *slot = Some(buf);
        }
        taken.2 = false;
        drop(b);
        turn.notify_all();
    }
}

/// Host bytes copied at once when a host is no longer than this.
const PAD: usize = 32;

/// Size of the pieces handed to the writer.
const CHUNK: usize = 64 * 1024;

/// The document collected in one buffer and handed on in large pieces:
/// appending to a Vec is cheaper than a buffered writer's checks per call.
struct Chunks<'w> {
    w: &'w mut dyn Write,
    buf: Vec<u8>,
}

impl Chunks<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A JSON string: as it is when nothing in it needs escaping (the usual
    /// host name), else escaped by serde_json itself.
    fn string(&mut self, text: &[u8]) -> io::Result<()> {
        if text.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.buf.push(b'"');
            self.buf.extend_from_slice(text);
            self.buf.push(b'"');
            return Ok(());
        }
        let text = std::str::from_utf8(text).map_err(io::Error::other)?;
        serde_json::to_writer(&mut self.buf, text).map_err(io::Error::from)
    }

    /// The targets of a list known to need no escaping, each as
    /// `"host:port"` after its separator; a long list on two threads.
    fn plain_targets(&mut self, list: &TargetList) -> io::Result<()> {
        if list.len() >= 2 * PIECE {
            // Pieces go to the writer whole, after what is buffered.
            self.w.write_all(&self.buf)?;
            self.buf.clear();
            return pieces(self.w, list);
        }
        let mut tail = PortTail::default();
        for start in (0..list.len()).step_by(PIECE) {
            plain_range(&mut self.buf, list, start..start + PIECE, &mut tail);
            self.ship()?;
        }
        Ok(())
    }

    /// `"host:port"`, without building the text first.
    fn target(&mut self, host: &[u8], port: u16, tail: &mut PortTail) -> io::Result<()> {
        // No early exit: the check runs over the whole (short) host at once.
        let plain = host
            .iter()
            .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
        if !plain {
            return self.string(targets::TargetText::new(host, port).as_bytes());
        }
        self.buf.reserve(host.len() + 8);
        self.buf.push(b'"');
        self.buf.extend_from_slice(host);
        self.buf.extend_from_slice(tail.of(port));
        Ok(())
    }

    /// Hands the buffer on once it holds a chunk.
    fn ship(&mut self) -> io::Result<()> {
        if self.buf.len() >= CHUNK {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(self) -> io::Result<()> {
        self.w.write_all(&self.buf)?;
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::targets::{self, TargetList};

    fn render(groups: &[TargetGroup]) -> Vec<u8> {
        let mut out = Vec::new();
        render_to(&mut out, groups).unwrap();
        out
    }

    fn group(hosts: &[(&str, u16)], labels: &[(&str, &str)]) -> TargetGroup {
        let mut l = TargetList::new();
        for (h, p) in hosts {
            l.push(h, *p).unwrap();
        }
        l.finish();
        TargetGroup {
            targets: l,
            labels: labels
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_same_bytes_as_the_serde_json_render() {
        let labels = [
            ("__metrics_path__", "/metrics"),
            ("job", "sensors"),
            ("environment", "production"),
        ];
        let odd = [
            ("note", "a \"quoted\" \\ value\n\t\u{1}\u{7f}é日"),
            ("", ""),
            ("ünï", "/"),
        ];
        let cases: Vec<Vec<TargetGroup>> = vec![
            vec![],
            vec![group(&[], &[])],
            vec![group(&[], &labels)],
            vec![group(&[("sensor_1", 9100), ("sensor_0", 9100)], &labels)],
            vec![group(&[("a", 1)], &[])],
            // Hosts that need escaping: the list is not plain text.
            vec![group(&[("a\"b", 1), ("t\tab\\", 2), ("c", 3)], &labels)],
            vec![
                group(&[("[::1]", 65535), ("b", 1), ("a-b.c", 80)], &odd),
                group(&[], &labels),
                group(&[("x", 1)], &labels),
            ],
        ];
        for groups in &cases {
            assert_eq!(
                String::from_utf8(render(groups)).unwrap(),
                String::from_utf8(targets::render(groups).unwrap()).unwrap()
            );
        }
        // Many targets, to cross the buffer's size.
        let hosts: Vec<(String, u16)> = (0..20_000)
            .map(|i| (format!("sensor-{i:05}.example"), 9100 + (i % 7) as u16))
            .collect();
        let refs: Vec<(&str, u16)> = hosts.iter().map(|(h, p)| (h.as_str(), *p)).collect();
        let big = [group(&refs, &labels), group(&refs[..10], &odd)];
        assert_eq!(render(&big), targets::render(&big).unwrap());
    }

    /// Takes `left` bytes, then fails.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if data.len() > self.left {
                return Err(io::Error::other("disk full"));
            }
            self.left -= data.len();
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_long_list_renders_in_pieces_on_two_threads_in_order() {
        let hosts: Vec<(String, u16)> = (0..5 * PIECE + 7)
            .map(|i| (format!("h{i}"), if i % 3 == 0 { 80 } else { 9100 }))
            .collect();
        let refs: Vec<(&str, u16)> = hosts.iter().map(|(h, p)| (h.as_str(), *p)).collect();
        let groups = [group(&refs, &[("job", "j")]), group(&refs[..3], &[])];
        assert!(groups[0].targets.plain_text());
        let out = render(&groups);
        assert_eq!(out, targets::render(&groups).unwrap());
        // A writer that fails part way: the error comes back, no hang.
        for left in [0, 10, PIECE, 3 * PIECE * 8, out.len() - 1] {
            let e = render_to(&mut Failing { left }, &groups).unwrap_err();
            assert_eq!(e.to_string(), "disk full");
        }
        render_to(&mut Failing { left: out.len() }, &groups).unwrap();
        // A writer that panics once the helper is ahead: the panic comes
        // back, the helper does not wait for ever.
        struct Panicking(usize);
        impl Write for Panicking {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0 += 1;
                assert!(self.0 < 3, "writer gave up");
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                render_to(&mut Panicking(0), &groups)
            }));
            let _ = tx.send(r.is_err());
        });
        let panicked = rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(panicked, Ok(true));
    }

    #[test]
    fn hosts_of_every_length_render_whole() {
        // Around the fixed copy's width, and the last host at the very end
        // of the list's text, where fewer bytes follow it.
        let hosts: Vec<(String, u16)> = (1..=3 * PAD)
            .map(|n| ("h".repeat(n), [1, 80, 9100, 65535][n % 4]))
            .collect();
        for n in [1, 2, PAD, hosts.len()] {
            let refs: Vec<(&str, u16)> = hosts[..n].iter().map(|(h, p)| (h.as_str(), *p)).collect();
            let groups = [group(&refs, &[("job", "j")])];
            assert!(groups[0].targets.plain_text());
            assert_eq!(
                String::from_utf8(render(&groups)).unwrap(),
                String::from_utf8(targets::render(&groups).unwrap()).unwrap()
            );
        }
    }
}
