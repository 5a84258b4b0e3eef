//! Peak memory of the agent against large inventories. GNU time wraps the
//! real binary (`/usr/bin/time -f %M`, the child's maximum RSS) while the
//! fake inventory serves the body on loopback. Each case must stay within
//! 4 × the decoded body plus a fixed overhead, and produce the right output.
//!
//! The fixed overhead (24 MiB) covers what does not grow with the body: the
//! debug binary's touched pages and the allocator (about 6 MiB for a tiny
//! inventory), ureq's read buffer and gzip state, thread stacks, the
//! configuration and the 100 logged examples, and pages the allocator has
//! not yet returned.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const MIB: u64 = 1024 * 1024;
const OVERHEAD: u64 = 24 * MIB;
const LIMIT: Duration = Duration::from_secs(120);

/// One run of the agent under GNU time.
struct Measured {
    code: Option<i32>,
    peak: u64,
    stdout: Vec<u8>,
    stderr: String,
    file: Option<Vec<u8>>,
    took: Duration,
}

impl Measured {
    fn describe(&self) -> String {
        let err: String = self.stderr.lines().take(40).collect::<Vec<_>>().join("\n");
        format!("exit {:?}, peak {} KiB\n{err}", self.code, self.peak / 1024)
    }
}

/// `sd-updater <args>` under `/usr/bin/time -f %M`, in its own process
/// group so that a timeout kills GNU time and the agent both.
struct Timed {
    child: Child,
    dir: PathBuf,
    target: PathBuf,
    start: Instant,
}

impl Timed {
    fn spawn(dir: &TestDir, inv: &FakeInventory, args: &[&str], env: &[(&str, &str)]) -> Timed {
        let target = dir.join("out/targets.json");
        require_tool("/usr/bin/time", "time");
        let mut cmd = Command::new("/usr/bin/time");
        cmd.args(["-f", "%M", "-o"])
            .arg(dir.join("peak.txt"))
            .arg(BIN)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("INVENTORY_URL", inv.url())
            .env("TARGETS_FILE", &target)
            .env("RUN_AS_USER", "root")
            .env("RETRY_ATTEMPTS", "0")
            .env("HTTP_TIMEOUT", "100")
            .env("UPDATE_INTERVAL", "3600")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("stdout")).unwrap())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .process_group(0);
        Timed {
            child: cmd.spawn().expect("spawn /usr/bin/time"),
            dir: dir.path().to_path_buf(),
            target,
            start: Instant::now(),
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// The agent: the one child of GNU time.
    fn agent(&self) -> Pid {
        let pid = self.child.id();
        let path = format!("/proc/{pid}/task/{pid}/children");
        let mut found = None;
        wait_for(Duration::from_secs(10), || {
            found = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok());
            found.is_some()
        });
        Pid::from_raw(found.expect("the agent under GNU time"))
    }

    /// Waits until `needle` has been logged `n` times.
    fn wait_log(&self, needle: &str, n: usize) {
        let ok = wait_for(LIMIT, || self.stderr().matches(needle).count() >= n);
        assert!(ok, "no {n} x {needle:?} in the log\n{}", self.stderr());
    }

    fn finish(mut self) -> Measured {
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if self.start.elapsed() > LIMIT {
                let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let peak_text = fs::read_to_string(self.dir.join("peak.txt")).unwrap_or_default();
        // GNU time prints "Command exited with non-zero status N" before %M.
        let peak_kib: u64 = peak_text
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no %M from GNU time: {peak_text:?}"));
        Measured {
            code: status.and_then(|s| s.code()),
            peak: peak_kib * 1024,
            stdout: fs::read(self.dir.join("stdout")).unwrap_or_default(),
            stderr: self.stderr(),
            file: fs::read(&self.target).ok(),
            took: self.start.elapsed(),
        }
    }
}

/// Runs `sd-updater <mode>` to its end under GNU time.
fn measure(dir: &TestDir, inv: &FakeInventory, mode: &str, env: &[(&str, &str)]) -> Measured {
    Timed::spawn(dir, inv, &[mode], env).finish()
}

fn check_bound(what: &str, body_len: usize, m: &Measured) {
    let bound = 4 * body_len as u64 + OVERHEAD;
    eprintln!(
        "{what}: body {:.1} MiB, peak RSS {:.1} MiB (bound {:.1} MiB), {:.1?}",
        body_len as f64 / MIB as f64,
        m.peak as f64 / MIB as f64,
        bound as f64 / MIB as f64,
        m.took
    );
    assert!(
        m.peak <= bound,
        "{what}: peak RSS {} MiB over 4 x {} MiB + 24 MiB\n{}",
        m.peak / MIB,
        body_len as u64 / MIB,
        m.describe()
    );
}

/// A gzip stream of `prefix`, `chunk` × `times`, `suffix`, built from one
/// compressed copy of `chunk`: each segment ends in a full flush (byte
/// aligned, empty dictionary), so the same bytes decode to every copy.
fn gzip_repeat(prefix: &[u8], chunk: &[u8], times: usize, suffix: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let seg = |c: &mut Compress, data: &[u8], flush: FlushCompress| {
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        let before = c.total_in();
        c.compress_vec(data, &mut out, flush).unwrap();
        assert_eq!(c.total_in() - before, data.len() as u64);
        out
    };
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend(seg(&mut c, prefix, FlushCompress::Full));
    // The encoder settles after a copy or two; use a segment it repeats.
    let mut prev = seg(&mut c, chunk, FlushCompress::Full);
    let mut segment = seg(&mut c, chunk, FlushCompress::Full);
    for _ in 0..4 {
        if prev == segment {
            break;
        }
        prev = segment;
        segment = seg(&mut c, chunk, FlushCompress::Full);
    }
    assert_eq!(prev, segment, "deflate segment is not repeatable");
    for _ in 0..times {
        gz.extend_from_slice(&segment);
    }
    let mut end = Vec::with_capacity(1024);
    c.compress_vec(suffix, &mut end, FlushCompress::Finish)
        .unwrap();
    gz.extend(end);
    let mut crc = Crc::new();
    crc.update(prefix);
    for _ in 0..times {
        crc.update(chunk);
    }
    crc.update(suffix);
    let len = prefix.len() + chunk.len() * times + suffix.len();
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&(len as u32).to_le_bytes());
    gz
}

fn gzip_behavior(gz: Vec<u8>) -> Behavior {
    Behavior::respond(
        200,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        gz,
    )
}

/// `[` + `item,` × n + `last]`
fn repeated(item: &[u8], n: usize, last: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + (item.len() + 1) * n + last.len());
    body.push(b'[');
    for _ in 0..n {
        body.extend_from_slice(item);
        body.push(b',');
    }
    body.extend_from_slice(last);
    body.push(b']');
    body
}

/// A gzip body of 65 KiB that inflates to 64 MiB of `"",` with one good
/// name at the end: 22 million invalid entries, counted, not stored.
#[test]
fn gzip_of_64_mib_of_empty_names() {
    let dir = TestDir::new("mem-gz");
    let chunk = b"\"\",".repeat(MIB as usize / 3);
    let times = 63;
    let gz = gzip_repeat(b"[", &chunk, times, b"\"ok\"]");
    let decoded = 1 + chunk.len() * times + 5;
    assert!(gz.len() < 100 * 1024, "{} bytes of gzip", gz.len());
    let inv = FakeInventory::start(gzip_behavior(gz));
    // All but one invalid on purpose: past the default MAX_INVALID_PERCENT.
    let m = measure(&dir, &inv, "--once", &[("MAX_INVALID_PERCENT", "100")]);
    check_bound("gzip, 64 MiB of \"\",", decoded, &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    assert_eq!(
        m.file.as_deref(),
        Some(render_default(&["ok:9100"]).as_bytes())
    );
    let invalid = times * chunk.len() / 3;
    assert!(
        m.stderr.contains(&format!(
            "... and {} more invalid entries not listed",
            invalid - 100
        )),
        "{}",
        m.describe()
    );
}

/// 64 MiB of `"a",`: 16.7 million copies of one valid name.
#[test]
fn plain_64_mib_of_one_short_name() {
    let dir = TestDir::new("mem-a");
    let n = (64 * MIB as usize - 16) / 4;
    let body = repeated(b"\"a\"", n, b"\"a\"");
    let len = body.len();
    let inv = FakeInventory::start(Behavior::json(body));
    let m = measure(&dir, &inv, "--once", &[]);
    check_bound("plain, 64 MiB of \"a\",", len, &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    assert_eq!(
        m.file.as_deref(),
        Some(render_default(&["a:9100"]).as_bytes())
    );
    assert!(
        m.stderr
            .contains(&format!("Successfully fetched {} sensors", n + 1)),
        "{}",
        m.describe()
    );
}

/// 8 MiB of `"a","B",` alternating: every entry repeats the one two back
/// (no run of one entry), the costliest duplicates per byte of body.
#[test]
fn alternating_duplicates_8_mib() {
    let dir = TestDir::new("mem-ab");
    let n = (8 * MIB as usize - 16) / 8;
    let body = repeated(b"\"a\",\"B\"", n, b"\"a\"");
    let len = body.len();
    let inv = FakeInventory::start(Behavior::json(body));
    let m = measure(&dir, &inv, "--once", &[]);
    check_bound("plain, 8 MiB of \"a\",\"B\",", len, &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    assert_eq!(
        m.file.as_deref(),
        Some(render_default(&["B:9100", "a:9100"]).as_bytes())
    );
}

/// `n` distinct names of about 40 characters, like a real inventory,
/// numbered from `from`, in a scrambled order.
fn realistic_names(from: u64, bytes: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut len = 1;
    let mut i = from;
    while len < bytes {
        let name = format!("sensor-{i:07}.rack-{:03}.dc-{}.example.net", i % 997, i % 7);
        len += name.len() + 3;
        names.push(name);
        i += 1;
    }
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ from;
    for k in (1..names.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        names.swap(k, (s % (k as u64 + 1)) as usize);
    }
    names
}

/// The file the agent must write for `names` (default port and labels).
fn expected_file(names: &[String]) -> String {
    let mut want: Vec<String> = names.iter().map(|n| format!("{n}:9100")).collect();
    want.sort();
    want.dedup();
    let refs: Vec<&str> = want.iter().map(String::as_str).collect();
    render_default(&refs)
}

/// A realistic 16 MiB inventory: 390,000 distinct names of about 40
/// characters, shuffled.
#[test]
fn realistic_16_mib_of_distinct_names() {
    let dir = TestDir::new("mem-real");
    let names = realistic_names(0, 16 * MIB as usize);
    let body = serde_json::to_vec(&names).unwrap();
    let expected = expected_file(&names);
    let inv = FakeInventory::start(Behavior::json(body.clone()));
    let m = measure(&dir, &inv, "--once", &[]);
    check_bound("realistic 16 MiB, --once", body.len(), &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    assert!(
        m.file.as_deref() == Some(expected.as_bytes()),
        "file differs"
    );
}

/// Every distinct 4-character name (about 1.96 million; `"abcd",` is 7
/// bytes of body each) in a scrambled order, then repeats of them up to
/// 16 MiB: about the most targets a 16 MiB body can hold. `--print`.
#[test]
fn sixteen_mib_of_distinct_four_character_names() {
    let dir = TestDir::new("mem-four");
    let first: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz0123456789_".to_vec();
    let mid: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz0123456789_-".to_vec();
    let mut names: Vec<[u8; 4]> = Vec::new();
    for &a in &first {
        for &b in &mid {
            for &c in &mid {
                for &d in &first {
                    let n = [a, b, c, d];
                    // All digits, or 0x and hex: an IPv4 address to the C
                    // resolver, not a host name.
                    if n.iter().all(u8::is_ascii_digit) || n.starts_with(b"0x") {
                        continue;
                    }
                    names.push(n);
                }
            }
        }
    }
    let distinct = names.len();
    // Scramble with a stride coprime to the count, repeat with another.
    let (s1, s2) = (1_000_003 % distinct, 7_919);
    assert!(gcd(s1, distinct) == 1 && gcd(s2, distinct) == 1);
    let mut body = Vec::with_capacity(16 * MIB as usize);
    body.push(b'[');
    let mut k = 0;
    while body.len() + 8 < 16 * MIB as usize {
        let n = if k < distinct {
            names[(k * s1) % distinct]
        } else {
            names[(k * s2) % distinct]
        };
        if k > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(&n);
        body.push(b'"');
        k += 1;
    }
    body.push(b']');
    assert!(k > distinct);
    let strings: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect();
    let expected = expected_file(&strings);
    let inv = FakeInventory::start(Behavior::json(body.clone()));
    let m = measure(&dir, &inv, "--print", &[]);
    check_bound("16 MiB of 4-character names, --print", body.len(), &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    assert!(
        m.stdout == expected.as_bytes(),
        "stdout differs: {} bytes, want {} ({distinct} distinct names, {k} entries)",
        m.stdout.len(),
        expected.len(),
    );
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The daemon over two cycles of a realistic 16 MiB inventory: the second
/// one replaces a quarter of the names, so the old targets are held (as
/// hashes) while the new body is parsed, and ADDED/REMOVED are counted.
#[test]
fn daemon_two_cycles_of_16_mib() {
    let dir = TestDir::new("mem-daemon");
    let first = realistic_names(0, 16 * MIB as usize);
    let n = first.len() as u64;
    let second = realistic_names(n / 4, 16 * MIB as usize);
    let (b1, b2) = (
        serde_json::to_vec(&first).unwrap(),
        serde_json::to_vec(&second).unwrap(),
    );
    let inv = FakeInventory::start(Behavior::json(b1.clone()));
    let run = Timed::spawn(&dir, &inv, &[], &[]);
    let agent = run.agent();
    let done = "Successfully updated targets file";
    run.wait_log(done, 1);
    inv.set(Behavior::json(b2.clone()));
    kill(agent, Signal::SIGHUP).unwrap();
    run.wait_log(done, 2);
    kill(agent, Signal::SIGTERM).unwrap();
    let m = run.finish();
    check_bound("daemon, 2 cycles of 16 MiB", b1.len().max(b2.len()), &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    let expected = expected_file(&second);
    assert!(
        m.file.as_deref() == Some(expected.as_bytes()),
        "file differs"
    );
    let (added, removed) = (second.len() - (first.len() - (n / 4) as usize), n / 4);
    let line = format!(
        "({} targets, {added} added, {removed} removed)",
        second.len()
    );
    assert!(m.stderr.contains(&line), "no {line:?}\n{}", m.describe());
}

/// What does not grow with the body stays well inside the overhead.
#[test]
fn tiny_inventory_baseline() {
    let dir = TestDir::new("mem-tiny");
    let inv = FakeInventory::start(Behavior::list(&["a", "b"]));
    let m = measure(&dir, &inv, "--once", &[]);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    eprintln!(
        "tiny inventory: peak RSS {:.1} MiB",
        m.peak as f64 / MIB as f64
    );
    assert!(m.peak < OVERHEAD / 2, "{}", m.describe());
}

/// Every entry with a label set of its own: each set costs far more than
/// its bytes in the body, so their memory is capped (2 × MAX_RESPONSE_BYTES)
/// and a body past the cap is refused, within 4 × MAX_RESPONSE_BYTES +
/// 24 MiB.
#[test]
fn distinct_label_sets_stay_within_the_bound() {
    let dir = TestDir::new("mem-labels");
    let n = 200_000;
    let mut body = Vec::with_capacity(n * 48);
    body.push(b'[');
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!("{{\"name\":\"h{i}\",\"labels\":{{\"a\":\"{i}\"}}}}").as_bytes(),
        );
    }
    body.push(b']');
    let len = body.len();
    let limit = len.to_string();
    let inv = FakeInventory::start(Behavior::json(body));
    let m = measure(
        &dir,
        &inv,
        "--once",
        &[("MAX_RESPONSE_BYTES", limit.as_str())],
    );
    check_bound("entries, a distinct label set each", len, &m);
    assert_ne!(m.code, Some(0), "{}", m.describe());
    assert!(m.stderr.contains("label sets"), "{}", m.describe());
    assert!(m.file.is_none());
}

/// 2.4 million distinct 5-character names (`"abcde",`, 8 bytes each) with
/// one labelled entry in front: a second label set turns on the check for
/// conflicting duplicates, which must stay within the bound too.
#[test]
fn distinct_names_behind_one_labelled_entry() {
    let dir = TestDir::new("mem-one-label");
    let alphabet = b"abcdefghijklmnopqrstuvwxyz";
    let n = 2_400_000;
    let mut body = Vec::with_capacity(n * 8 + 64);
    body.extend_from_slice(br#"[{"name":"zz","labels":{"a":"b"}}"#);
    for i in 0..n {
        let mut k = i;
        let mut name = [0u8; 5];
        for c in name.iter_mut().rev() {
            *c = alphabet[k % alphabet.len()];
            k /= alphabet.len();
        }
        body.extend_from_slice(b",\"");
        body.extend_from_slice(&name);
        body.push(b'"');
    }
    body.push(b']');
    let len = body.len();
    let inv = FakeInventory::start(Behavior::json(body));
    let m = measure(&dir, &inv, "--once", &[]);
    check_bound("2.4M distinct names behind one labelled entry", len, &m);
    assert_eq!(m.code, Some(0), "{}", m.describe());
    assert!(
        m.stderr
            .contains(&format!("Successfully fetched {} sensors", n + 1)),
        "{}",
        m.describe()
    );
}
