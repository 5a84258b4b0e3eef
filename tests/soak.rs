//! Soak: the running daemon is driven through many
//! SIGHUP-forced cycles, each answered by a random inventory response:
//! good lists of changing size (up to 10,000 targets), every bad-response
//! kind of bad answer, hangs and resets mid-body. After every cycle:
//!
//! - the targets file parses and is byte-for-byte the rendering of the last
//!   good list the agent consumed (known from the server's record of what
//!   it served in that cycle, and computed by an independent oracle);
//! - no temp file is left, the fd count is the one after start-up, and the
//!   agent is alive;
//! - a concurrent reader never sees anything but a complete good list.
//!
//! At the end, RSS has grown by less than 1 MiB since cycle 500. The
//! assertion is on the anonymous part (`RssAnon`: heap, stacks), which is
//! what a leak grows; `VmRSS` also counts the binary's own code pages
//! (`RssFile`), which the kernel maps in the first time a rare code path
//! runs and which are bounded by the size of the executable. Both are
//! reported. Both measurements follow the same probe cycle (one fixed
//! list), so the agent holds the same live data at both points.
//!
//! `SDU_SOAK_CYCLES` sets the number of cycles (5,000 by default, 50,000
//! for the full run), `SDU_SOAK_HTTP_TIMEOUT` the agent's HTTP_TIMEOUT for
//! the hang and drip cases, `SDU_SEED` the random seed, `SDU_SOAK_ONLY`
//! (labels such as `good,redirect-loop`) restricts the answers after the
//! warm-up to those kinds, to find where a problem comes from.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Where RSS is first measured: the "after the first 500 cycles".
const RSS_BASELINE_CYCLE: u64 = 500;
const RSS_GROWTH_LIMIT_KB: u64 = 1024;
const MAX_BYTES: usize = 1 << 20;

/// One step of a cycle's plan, with the good list it carries (if any).
struct Planned {
    step: Step,
    good: Option<Arc<GoodList>>,
}

fn bad(label: &'static str, reply: Reply) -> Planned {
    Planned {
        step: Step { label, reply },
        good: None,
    }
}

fn good(label: &'static str, list: GoodList, gzip: bool) -> Planned {
    let list = Arc::new(list);
    Planned {
        step: Step {
            label,
            reply: Reply::Ok {
                body: list.body.clone(),
                gzip,
            },
        },
        good: Some(list),
    }
}

/// Sizes: mostly small, some large, a few near the 10,000 cap.
fn list_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=39 => rng.range(1, 100) as usize,
        40..=69 => rng.range(100, 1_000) as usize,
        70..=89 => rng.range(1_000, 5_000) as usize,
        _ => rng.range(5_000, 10_000) as usize,
    }
}

fn random_good(rng: &mut Rng) -> Planned {
    let n = list_size(rng);
    // Duplicates can only shrink the target count, so n stays the cap.
    let invalid = rng.below(3) as usize;
    let list = GoodList::random(rng, n, invalid);
    let gz = rng.chance(10);
    good(if gz { "good-gzip" } else { "good" }, list, gz)
}

/// A short body for the bad replies that need one.
fn some_body(rng: &mut Rng) -> Arc<Vec<u8>> {
    let n = rng.range(5, 200) as usize;
    GoodList::random(rng, n, 0).body
}

/// Every kind of bad response, plus resets mid-body. Hangs and
/// drips are drawn separately (they cost a whole HTTP_TIMEOUT each).
fn random_bad(rng: &mut Rng) -> Planned {
    match rng.below(13) {
        0 => bad("500", Reply::status(500)),
        1 => bad("404", Reply::status(404)),
        2 => bad("429", Reply::status_with(429, &[("Retry-After", "0")])),
        3 => bad("invalid-json", Reply::json(&b"[\"sensor_1\",, \"x\"]"[..])),
        4 => {
            let body = some_body(rng);
            let cut = rng.range(1, body.len() as u64 - 1) as usize;
            bad(
                "truncated",
                Reply::Truncated {
                    body: Arc::new(body[..cut].to_vec()),
                    declared: body.len(),
                },
            )
        }
        5 => bad("object", Reply::json(&b"{\"sensors\": [\"sensor_1\"]}"[..])),
        6 => bad("numbers", Reply::json(&b"[1, 2, 3]"[..])),
        7 => bad("html", Reply::html()),
        8 => bad("redirect-loop", Reply::RedirectLoop),
        9 => bad("endless", Reply::Endless { chunked: true }),
        10 => bad("empty-list", Reply::json(&b"[]"[..])),
        11 => {
            let body = some_body(rng);
            let cut = rng.range(1, body.len() as u64 - 1) as usize;
            bad(
                "reset-mid-body",
                Reply::Reset {
                    body: Arc::new(body[..cut].to_vec()),
                    declared: body.len(),
                },
            )
        }
        _ => bad(
            "only-invalid",
            Reply::json(serde_json::to_vec(&INVALID).unwrap()),
        ),
    }
}

/// A transient failure that a retry may recover from.
fn random_transient(rng: &mut Rng) -> Planned {
    match rng.below(4) {
        0 => bad("500", Reply::status(500)),
        1 => bad("429", Reply::status_with(429, &[("Retry-After", "0")])),
        2 => {
            let body = some_body(rng);
            bad(
                "reset-mid-body",
                Reply::Reset {
                    body: Arc::new(body[..body.len() / 2].to_vec()),
                    declared: body.len(),
                },
            )
        }
        _ => {
            let body = some_body(rng);
            bad(
                "truncated",
                Reply::Truncated {
                    body: Arc::new(body[..body.len() / 2].to_vec()),
                    declared: body.len(),
                },
            )
        }
    }
}

/// The heaviest cycles, run first so that the memory high-water mark is
/// reached before the RSS baseline at cycle 500: a list at the 10,000
/// cap plain, gzipped, repeated with duplicates, after a retry; a body
/// that runs into MAX_RESPONSE_BYTES.
fn warm_up(rng: &mut Rng, cycle: u64, last_good: &GoodList) -> Option<Vec<Planned>> {
    let max = |rng: &mut Rng| GoodList::random(rng, 10_000, 2);
    Some(match cycle % 50 {
        _ if cycle > 200 => return None,
        1 => vec![good("good", max(rng), false)],
        2 => vec![good("good-same-set", last_good.reshuffled(rng), false)],
        3 => vec![good("good-gzip", max(rng), true)],
        4 => vec![bad("endless", Reply::Endless { chunked: true })],
        5 => vec![random_transient(rng), good("good", max(rng), false)],
        6 => vec![good("good-gzip", last_good.reshuffled(rng), true)],
        _ => return None,
    })
}

fn plan(rng: &mut Rng, cycle: u64, last_good: &GoodList, probe: Option<&GoodList>) -> Vec<Planned> {
    if let Some(p) = probe {
        return vec![good("good-probe", p.reshuffled(rng), false)];
    }
    if let Some(p) = warm_up(rng, cycle, last_good) {
        return p;
    }
    let r = rng.below(1000);
    match r {
        // A good list, new.
        0..=339 => vec![random_good(rng)],
        // The same set again, reshuffled with other duplicates: no write.
        340..=419 => vec![good("good-same-set", last_good.reshuffled(rng), false)],
        // A transient failure, then a good list on the retry.
        420..=479 => vec![random_transient(rng), random_good(rng)],
        // A hang: on the retry a good list, or a quick 404.
        480..=484 => {
            let second = if rng.chance(50) {
                random_good(rng)
            } else {
                bad("404", Reply::status(404))
            };
            vec![bad("hang", Reply::Hang), second]
        }
        // A body that would be good but drips past HTTP_TIMEOUT.
        485..=489 => {
            let list = GoodList::random(rng, 3, 0);
            vec![
                bad(
                    "drip",
                    Reply::Drip {
                        body: list.body.clone(),
                        every: Duration::from_millis(100),
                    },
                ),
                bad("404", Reply::status(404)),
            ]
        }
        _ => vec![random_bad(rng)],
    }
}

/// Contents a concurrent reader may legitimately see: the last good list
/// and the good lists offered in recent cycles.
#[derive(Default)]
struct Allowed {
    last_good: Option<Arc<Vec<u8>>>,
    recent: VecDeque<Arc<Vec<u8>>>,
}

impl Allowed {
    fn contains(&self, content: &[u8]) -> bool {
        self.last_good.as_deref().map(Vec::as_slice) == Some(content)
            || self.recent.iter().any(|r| r.as_slice() == content)
    }
}

struct Reader {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Reader {
    /// A Prometheus stand-in: reads the file every few ms and checks each
    /// read against the contents allowed before and after it.
    fn start(file: PathBuf, allowed: Arc<Mutex<Allowed>>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (st, rd, er) = (stop.clone(), reads.clone(), errors.clone());
        let handle = thread::spawn(move || {
            let dir = file.parent().unwrap().to_path_buf();
            while !st.load(Ordering::SeqCst) {
                let before = {
                    let a = allowed.lock().unwrap();
                    (a.last_good.clone(), a.recent.clone())
                };
                if let Ok(content) = fs::read(&file) {
                    rd.fetch_add(1, Ordering::Relaxed);
                    let ok_before = before.0.as_deref().map(Vec::as_slice)
                        == Some(content.as_slice())
                        || before.1.iter().any(|r| r.as_slice() == content.as_slice());
                    if !ok_before && !allowed.lock().unwrap().contains(&content) {
                        er.lock().unwrap().push(format!(
                            "concurrent reader saw {} bytes that are no good list: {:?}",
                            content.len(),
                            String::from_utf8_lossy(&content[content.len().saturating_sub(60)..])
                        ));
                    }
                }
                if let Ok(entries) = fs::read_dir(&dir) {
                    for e in entries.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if n != "targets.json" && n.ends_with(".json") {
                            er.lock()
                                .unwrap()
                                .push(format!("{n:?} matches Prometheus' *.json glob"));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(15));
            }
        });
        Reader {
            stop,
            reads,
            errors,
            handle: Some(handle),
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[test]
fn soak_sighup_cycles_with_random_responses() {
    let cycles = env_u64("SDU_SOAK_CYCLES", 5_000);
    let timeout = std::env::var("SDU_SOAK_HTTP_TIMEOUT").unwrap_or_else(|_| "0.5".into());
    let mut rng = Rng::from_env("soak");
    let dir = TestDir::new("soak");
    let notify = NotifySocket::new(&dir);

    let mut last_good = Arc::new(GoodList::random(&mut rng, 500, 0));
    let server = Server::start("good", Reply::ok(&last_good.body));
    let spawn = AgentCmd::for_url(&dir, &server.url())
        .notify(&notify)
        .env("HTTP_TIMEOUT", &timeout)
        .env("RETRY_ATTEMPTS", "1")
        .env("RETRY_BACKOFF", "0.01")
        .env("MAX_RESPONSE_BYTES", MAX_BYTES.to_string())
        // A list of one good name may come with two bad ones.
        .env("MAX_INVALID_PERCENT", "100");
    let file = spawn.targets_file();
    let out_dir = spawn.out_dir();
    let mut agent = spawn.spawn();
    let t = Duration::from_secs(30);

    // Start-up: READY=1, then the first cycle's STATUS=.
    assert!(
        notify.wait_for("READY=1", t).is_some(),
        "no READY=1\n{}",
        agent.log()
    );
    let first = notify.recv(t).unwrap_or_default();
    assert!(
        field(&first, "STATUS")
            .is_some_and(|s| s.contains(&format!("{} targets", last_good.targets.len()))),
        "first cycle: {first:?}\n{}",
        agent.log()
    );
    assert_eq!(
        fs::read(&file).unwrap(),
        *last_good.rendered,
        "first good list"
    );
    agent.log_new();
    // The notify socket of the last message may still be closing.
    thread::sleep(Duration::from_millis(200));
    let fd_base = agent.fd_count();
    let fd_base_list = agent.fds();

    let allowed = Arc::new(Mutex::new(Allowed {
        last_good: Some(last_good.rendered.clone()),
        recent: VecDeque::new(),
    }));
    let reader = Reader::start(file.clone(), allowed.clone());

    let probe = Arc::new(GoodList::random(&mut rng, 5_000, 0));
    let only: Vec<String> = std::env::var("SDU_SOAK_ONLY")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let started = Instant::now();
    let baseline_at = RSS_BASELINE_CYCLE.min(cycles / 2).max(1);
    let mut rss_base = None;
    let mut rss_samples: Vec<(u64, u64, u64)> = Vec::new();
    let mut rss_max = 0;
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    let mut spurious_timeouts = 0u64;
    let mut max_cycle = Duration::ZERO;
    let mut timing: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    let mut prev_served = server.served_count();
    let mut prev_ready = Instant::now();

    for cycle in 1..=cycles {
        // RSS is compared after the same cycle at both ends: the probe
        // list, so that the agent holds the same live data each time.
        let measure = cycle == baseline_at || cycle == cycles;
        let mut planned = plan(&mut rng, cycle, &last_good, measure.then_some(&*probe));
        // SDU_SOAK_ONLY=label,label: only those answers (after the warm-up),
        // to find which kind of cycle a problem comes from.
        while !measure
            && cycle > 200
            && !only.is_empty()
            && !only.iter().any(|o| o == planned[0].step.label)
        {
            planned = plan(&mut rng, cycle, &last_good, None);
        }
        {
            let mut a = allowed.lock().unwrap();
            for p in &planned {
                if let Some(g) = &p.good {
                    a.recent.push_back(g.rendered.clone());
                }
            }
            while a.recent.len() > 16 {
                a.recent.pop_front();
            }
        }
        let late = server.begin(cycle, planned.iter().map(|p| p.step.clone()).collect());
        if late.len() != prev_served {
            let extra: Vec<String> = late[prev_served.min(late.len())..]
                .iter()
                .map(|s| {
                    format!(
                        "{} {} from {:?} (User-Agent {:?}) {:?} after READY=1",
                        s.method,
                        s.target,
                        s.peer,
                        s.header("User-Agent"),
                        s.at.saturating_duration_since(prev_ready)
                    )
                })
                .collect();
            panic!(
                "cycle {}: {} requests at READY=1, {} in all ({:?}); late: {extra:?}\nlog since:\n{}",
                cycle - 1,
                prev_served,
                late.len(),
                late.iter().map(|s| s.label).collect::<Vec<_>>(),
                agent.log_new()
            );
        }
        let before = stamp(&file);
        let t0 = Instant::now();
        agent.signal(Signal::SIGHUP);
        let ctx = |agent: &mut Agent| {
            format!(
                "cycle {cycle} (plan {:?}); recent notify: {}\nlog tail:\n{}",
                planned.iter().map(|p| p.step.label).collect::<Vec<_>>(),
                notify.recent(),
                agent.log_new()
            )
        };
        if notify.wait_for("RELOADING=1", t).is_none() {
            panic!("no RELOADING=1: {}", ctx(&mut agent));
        }
        if notify.wait_for("READY=1", t).is_none() {
            let alive = agent.alive();
            panic!(
                "no READY=1 (agent alive: {alive}, exit {:?}): {}",
                agent.exit_status(),
                ctx(&mut agent)
            );
        }
        let took = t0.elapsed();
        prev_ready = Instant::now();
        max_cycle = max_cycle.max(took);
        let served = server.served();
        prev_served = served.len();
        let log = agent.log_new();
        let Some(last) = served.last() else {
            panic!("cycle {cycle}: no request reached the server\n{log}");
        };
        let consumed = &planned[last.step.min(planned.len() - 1)];
        let succeeded =
            log.contains("Successfully updated targets file") || log.contains("Targets unchanged");
        let failed =
            log.contains("Failed to fetch inventory: ") || log.contains("Failed to write targets");
        let outcome = match &consumed.good {
            Some(g) if succeeded => {
                assert!(!failed, "cycle {cycle}: both success and failure\n{log}");
                let same = g.rendered == last_good.rendered;
                last_good = g.clone();
                allowed.lock().unwrap().last_good = Some(last_good.rendered.clone());
                if same {
                    assert_eq!(
                        stamp(&file),
                        before,
                        "cycle {cycle}: the same targets rewrote the file\n{log}"
                    );
                    "good (unchanged)"
                } else {
                    "good (written)"
                }
            }
            Some(_) if failed && final_failure_timed_out(&log) => {
                // The machine was too slow for a good answer within
                // HTTP_TIMEOUT; the agent rightly keeps the old file.
                spurious_timeouts += 1;
                "good answer timed out"
            }
            Some(_) => panic!(
                "cycle {cycle}: the server's last answer was good ({}) but the agent \
                 did not apply it\n{log}",
                consumed.step.label
            ),
            None => {
                assert!(
                    failed && !succeeded,
                    "cycle {cycle}: the last answer ({}) was bad but the agent did not \
                     report a failed cycle\n{log}",
                    consumed.step.label
                );
                "failed (file kept)"
            }
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
        let e = timing
            .entry(planned[0].step.label)
            .or_insert((0, Duration::ZERO));
        e.0 += 1;
        e.1 += took;

        // The file: complete, and exactly the last good list.
        let content = fs::read(&file).expect("targets file gone");
        if content != *last_good.rendered {
            let parsed = parse_file_sd(&content).map(|t| t.len());
            panic!(
                "cycle {cycle}: the file is not the last good list ({} targets); \
                 it has {} bytes, parses as {parsed:?}\n{log}",
                last_good.targets.len(),
                content.len()
            );
        }
        let temps = any_temp_files(&out_dir);
        assert!(
            temps.is_empty(),
            "cycle {cycle}: temp files left: {temps:?}"
        );
        assert!(
            agent.alive(),
            "cycle {cycle}: the agent died: {:?}\n{log}",
            agent.exit_status()
        );
        if agent.fd_count() != fd_base
            && !wait_for(Duration::from_secs(2), || agent.fd_count() == fd_base)
        {
            panic!(
                "cycle {cycle}: open fds changed from {fd_base} to {}\nbefore: {fd_base_list:?}\nnow: {:?}",
                agent.fd_count(),
                agent.fds()
            );
        }
        let errors = reader.errors();
        assert!(errors.is_empty(), "cycle {cycle}: {}", errors.join("\n"));

        let rss = agent.status_kb("RssAnon").expect("RssAnon");
        let vm_rss = agent.status_kb("VmRSS").expect("VmRSS");
        rss_max = rss_max.max(rss);
        if cycle == baseline_at {
            rss_base = Some((rss, vm_rss));
        }
        if cycle % 500 == 0 || cycle == cycles {
            rss_samples.push((cycle, rss, vm_rss));
            println!(
                "soak: {cycle}/{cycles} cycles in {:.0?}, RssAnon {rss} kB, VmRSS {vm_rss} kB",
                started.elapsed()
            );
        }
    }
    let elapsed = started.elapsed();
    let reads = reader.reads.load(Ordering::Relaxed);
    drop(reader);

    let rss_end = agent.status_kb("RssAnon").unwrap();
    let vm_rss_end = agent.status_kb("VmRSS").unwrap();
    let (rss_base, vm_rss_base) = rss_base.unwrap();
    let hwm = agent.status_kb("VmHWM").unwrap_or(0);
    let fd_end = agent.fd_count();
    let cpu = cpu_seconds(agent.pid());

    // A clean stop to finish.
    agent.signal(Signal::SIGTERM);
    let st = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(st.and_then(|s| s.code()), Some(0), "exit after the soak");
    assert!(any_temp_files(&out_dir).is_empty());

    let mean_ms: Vec<String> = timing
        .iter()
        .map(|(l, (n, d))| format!("{l}={:.1}", d.as_secs_f64() * 1000.0 / *n as f64))
        .collect();
    let served: Vec<String> = server
        .by_label()
        .iter()
        .map(|(l, n)| format!("{l}={n}"))
        .collect();
    report(
        "soak.txt",
        &format!(
            "soak: {cycles} cycles in {:.1}s (seed above), {} requests served [{}]; outcomes {:?}; \
             spurious timeouts of good answers {spurious_timeouts}; longest cycle {:.0?}; \
             RssAnon at cycle {baseline_at} {rss_base} kB, at the end {rss_end} kB (growth {} kB), \
             max {rss_max} kB; VmRSS {vm_rss_base} -> {vm_rss_end} kB; VmHWM {hwm} kB; agent CPU {cpu:.1}s; fds {fd_base} -> {fd_end}; concurrent reads {reads}; \
             samples (cycle, RssAnon, VmRSS) {:?}; mean cycle ms by first answer [{}]",
            elapsed.as_secs_f64(),
            server.total(),
            served.join(" "),
            outcomes,
            max_cycle,
            rss_end as i64 - rss_base as i64,
            rss_samples,
            mean_ms.join(" ")
        ),
    );
    assert!(
        spurious_timeouts * 100 <= cycles.max(100),
        "{spurious_timeouts} good answers timed out: the machine is too slow for HTTP_TIMEOUT={timeout}"
    );
    assert!(
        rss_end < rss_base + RSS_GROWTH_LIMIT_KB,
        "RssAnon grew from {rss_base} kB (cycle {baseline_at}) to {rss_end} kB: samples {rss_samples:?}"
    );
    assert_eq!(fd_end, fd_base, "fd count changed");
}

/// Whether the cycle's final failure (not a retry warning) was a timeout.
fn final_failure_timed_out(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains("Failed to fetch inventory: ") && l.contains("timed out"))
}

/// User plus system CPU time of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks = f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
    ticks as f64 / 100.0
}
