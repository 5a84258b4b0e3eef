//! Signals at bad moments: SIGHUP storms and SIGTERM sent
//! at random points during large writes, many times over. The targets
//! file is never partial (a concurrent reader checks every read, and every
//! check after a signal), no temp file is ever left, and SIGTERM always
//! exits 0.
//!
//! `SDU_SIGNAL_ROUNDS` (SIGTERMs, default 8), `SDU_SIGNAL_STORMS` (SIGHUP
//! storms per round, default 2) and `SDU_SIGNAL_SENSORS` (list size,
//! default 50,000) tune it.

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(60);

/// Which of the two lists `content` is, or why it is neither.
fn which(lists: &[Arc<GoodList>; 2], content: &[u8]) -> Result<usize, String> {
    for (i, l) in lists.iter().enumerate() {
        if content == l.rendered.as_slice() {
            return Ok(i);
        }
    }
    Err(format!(
        "{} bytes, neither list (parses: {:?}), ends {:?}",
        content.len(),
        parse_file_sd(content).map(|t| t.len()),
        String::from_utf8_lossy(&content[content.len().saturating_sub(60)..])
    ))
}

struct Reader {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Reader {
    fn start(file: PathBuf, lists: [Arc<GoodList>; 2]) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (st, rd, er) = (stop.clone(), reads.clone(), errors.clone());
        let handle = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                if let Ok(c) = fs::read(&file) {
                    rd.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = which(&lists, &c) {
                        er.lock().unwrap().push(format!("concurrent reader: {e}"));
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
        });
        Reader {
            stop,
            reads,
            errors,
            handle: Some(handle),
        }
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

/// Waits until the reload burst is over: READY=1 with no RELOADING=1 after
/// it for a while.
fn settle(notify: &NotifySocket, agent: &mut Agent) {
    let deadline = Instant::now() + T;
    loop {
        assert!(
            Instant::now() < deadline,
            "no READY=1 after the storm\n{}",
            agent.log_new()
        );
        let Some(m) = notify.recv(Duration::from_millis(400)) else {
            continue;
        };
        if m.split('\n').any(|l| l == "READY=1") {
            // Anything else queued (a SIGHUP handled just after) restarts
            // the wait.
            match notify.recv(Duration::from_millis(300)) {
                None => return,
                Some(n) if n.contains("RELOADING=1") => continue,
                Some(_) => continue,
            }
        }
    }
}

/// Sleeps a random time in `0..max`, or until a temp file shows up (a
/// write under way) when `at_write`.
fn bad_moment(rng: &mut Rng, out: &std::path::Path, max: Duration, at_write: bool) -> bool {
    if at_write {
        let seen = wait_for(max * 3, || !any_temp_files(out).is_empty());
        thread::sleep(Duration::from_micros(rng.below(3_000)));
        seen
    } else {
        thread::sleep(Duration::from_micros(rng.below(max.as_micros() as u64 + 1)));
        false
    }
}

#[test]
fn signals_during_large_writes_never_leave_a_partial_or_temp_file() {
    let rounds = env_u64("SDU_SIGNAL_ROUNDS", 8);
    let storms = env_u64("SDU_SIGNAL_STORMS", 2);
    let sensors = env_u64("SDU_SIGNAL_SENSORS", 50_000) as usize;
    let mut rng = Rng::from_env("signals");
    let lists = [
        Arc::new(GoodList::numbered("a", sensors)),
        Arc::new(GoodList::numbered("b", sensors)),
    ];
    let dir = TestDir::new("signals");
    let notify = NotifySocket::new(&dir);
    let server = Server::start("a", Reply::ok(&lists[0].body));
    let spawn = AgentCmd::for_url(&dir, &server.url())
        .notify(&notify)
        .env("HTTP_TIMEOUT", "30");
    let file = spawn.targets_file();
    let out = spawn.out_dir();
    let mut current = 0;

    // Measure one full cycle, to aim the random signals.
    let t0 = Instant::now();
    let mut agent = spawn.spawn();
    assert!(notify.wait_for("READY=1", T).is_some(), "{}", agent.log());
    assert!(
        wait_for(T, || fs::read(&file).ok().as_deref()
            == Some(&lists[0].rendered[..])),
        "{}",
        agent.log()
    );
    let cycle = t0.elapsed();
    notify.skip_pending();
    let reader = Reader::start(file.clone(), lists.clone());

    let (mut hups, mut terms, mut at_write, mut changes) = (0u64, 0u64, 0u64, 0u64);
    let mut exit_times = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            agent = spawn.spawn();
            assert!(notify.wait_for("READY=1", T).is_some(), "{}", agent.log());
            // The first cycle fetches the list being served.
            assert!(
                wait_for(T, || fs::read(&file).ok().as_deref()
                    == Some(&lists[current].rendered[..])),
                "round {round}: start-up cycle\n{}",
                agent.log()
            );
            settle_first(&notify);
        }
        // SIGHUP storms at random moments of a cycle that writes.
        for storm in 0..storms {
            current = 1 - current;
            server.set(
                if current == 0 { "a" } else { "b" },
                Reply::ok(&lists[current].body),
            );
            agent.signal(Signal::SIGHUP);
            hups += 1;
            for _ in 0..rng.range(1, 4) {
                let aim = rng.chance(50);
                at_write += bad_moment(&mut rng, &out, cycle, aim) as u64;
                agent.signal(Signal::SIGHUP);
                hups += 1;
            }
            settle(&notify, &mut agent);
            let c = fs::read(&file).unwrap();
            let w =
                which(&lists, &c).unwrap_or_else(|e| panic!("round {round} storm {storm}: {e}"));
            assert_eq!(
                w, current,
                "round {round} storm {storm}: not the served list"
            );
            changes += 1;
            let t = any_temp_files(&out);
            assert!(
                t.is_empty(),
                "round {round} storm {storm}: temp files {t:?}"
            );
            assert!(agent.alive(), "round {round} storm {storm}: agent died");
        }
        // SIGTERM (or SIGINT) at a random moment of a writing cycle,
        // sometimes right after one more SIGHUP.
        current = 1 - current;
        server.set(
            if current == 0 { "a" } else { "b" },
            Reply::ok(&lists[current].body),
        );
        agent.signal(Signal::SIGHUP);
        hups += 1;
        let aim = rng.chance(60);
        at_write += bad_moment(&mut rng, &out, cycle, aim) as u64;
        if rng.chance(30) {
            agent.signal(Signal::SIGHUP);
            hups += 1;
        }
        let sig = if rng.chance(20) {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        };
        let t_sig = Instant::now();
        agent.signal(sig);
        terms += 1;
        let st = agent.wait_exit(Duration::from_secs(10));
        let took = t_sig.elapsed();
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "round {round}: {sig:?} gave {st:?}\n{}",
            agent.log_new()
        );
        assert!(
            took < Duration::from_secs(1),
            "round {round}: {sig:?} took {took:?} to exit"
        );
        exit_times.push(took);
        // Before any restart (which would clean up): no temp file, and a
        // complete file holding one of the lists.
        let t = any_temp_files(&out);
        assert!(
            t.is_empty(),
            "round {round}: temp files after {sig:?}: {t:?}"
        );
        let c = fs::read(&file).unwrap();
        let got = which(&lists, &c).unwrap_or_else(|e| panic!("round {round}: {e}"));
        if got != current {
            // Stopped before the write: the served list comes on restart.
            current = got;
            server.set(
                if current == 0 { "a" } else { "b" },
                Reply::ok(&lists[current].body),
            );
        }
        let errors = reader.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "round {round}: {}", errors.join("\n"));
    }
    let reads = reader.reads.load(Ordering::Relaxed);
    drop(reader);
    let max_exit = exit_times.iter().max().copied().unwrap_or_default();
    report(
        "faults.txt",
        &format!(
            "signals during large writes ({sensors} targets, cycle {cycle:.1?}): {hups} SIGHUPs in \
             {} storms, {terms} SIGTERM/SIGINT ({at_write} aimed at a write in progress), \
             {changes} completed reloads; every exit 0 (slowest {max_exit:.0?}), no partial \
             file in {reads} concurrent reads, no temp file",
            rounds * storms
        ),
    );
}

/// After a restart: the start-up cycle's STATUS= (no READY=1 follows it).
fn settle_first(notify: &NotifySocket) {
    while notify.recv(Duration::from_millis(300)).is_some() {}
}
