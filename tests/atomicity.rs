//! Atomic replacement of large targets files under SIGKILL and SIGTERM:
//! the file always parses and holds exactly the old list or the new one, a
//! concurrent reader never sees anything else, and temp files do not
//! survive a restart.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const SENSORS: usize = 200_000;
const T: Duration = Duration::from_secs(30);

/// One of the two big inventories.
struct List {
    name: &'static str,
    serve: Behavior,
    targets: Vec<String>,
}

fn make_list(name: &'static str, prefix: &str, rng: &mut Rng) -> List {
    let mut names: Vec<String> = (0..SENSORS).map(|i| format!("{prefix}-{i:06}")).collect();
    let mut targets: Vec<String> = names.iter().map(|n| format!("{n}:9100")).collect();
    targets.sort();
    // Serve them shuffled, so the agent has to sort.
    for i in (1..names.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        names.swap(i, j);
    }
    List {
        name,
        serve: Behavior::json(serde_json::to_vec(&names).unwrap()),
        targets,
    }
}

/// Knows the two acceptable file contents. The first time a content is
/// seen it is parsed and compared as a target set; after that, bytes.
struct Checker {
    lists: [Arc<Vec<String>>; 2],
    names: [&'static str; 2],
    canonical: Mutex<[Option<Vec<u8>>; 2]>,
}

impl Checker {
    /// Which list the content holds, or what is wrong with it.
    fn classify(&self, content: &[u8]) -> Result<usize, String> {
        {
            let canon = self.canonical.lock().unwrap();
            for (i, c) in canon.iter().enumerate() {
                if c.as_deref() == Some(content) {
                    return Ok(i);
                }
            }
        }
        let targets = parse_targets(content).map_err(|e| {
            format!(
                "unparsable targets file ({} bytes): {e}; ends with {:?}",
                content.len(),
                String::from_utf8_lossy(&content[content.len().saturating_sub(80)..])
            )
        })?;
        for i in 0..2 {
            if targets == *self.lists[i] {
                let mut canon = self.canonical.lock().unwrap();
                match &canon[i] {
                    None => {
                        canon[i] = Some(content.to_vec());
                        return Ok(i);
                    }
                    // Another thread recorded it meanwhile.
                    Some(c) if c.as_slice() == content => return Ok(i),
                    Some(_) => {}
                }
                return Err(format!(
                    "list {} rendered differently from before ({} vs {} bytes)",
                    self.names[i],
                    content.len(),
                    canon[i].as_ref().unwrap().len()
                ));
            }
        }
        Err(format!(
            "file holds {} targets, neither list A nor list B (first {:?}, last {:?})",
            targets.len(),
            targets.first(),
            targets.last()
        ))
    }

    fn check_file(&self, path: &Path) -> Result<Option<usize>, String> {
        match fs::read(path) {
            Ok(c) => self.classify(&c).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

struct ReaderReport {
    reads: usize,
    /// How often the content switched between the lists: completed writes.
    switches: usize,
    errors: Vec<String>,
}

/// A Prometheus stand-in: reads the file in a loop and checks every read;
/// also watches the directory for temp files that would match `*.json`.
struct Reader {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<ReaderReport>>,
}

impl Reader {
    fn start(checker: Arc<Checker>, file: PathBuf) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let handle = thread::spawn(move || {
            let dir = file.parent().unwrap().to_path_buf();
            let mut reads = 0;
            let mut switches = 0;
            let mut last = None;
            let mut errors = Vec::new();
            while !st.load(Ordering::SeqCst) && errors.len() < 5 {
                match checker.check_file(&file) {
                    Ok(Some(which)) => {
                        reads += 1;
                        if last.is_some_and(|l| l != which) {
                            switches += 1;
                        }
                        last = Some(which);
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(format!("concurrent reader: {e}")),
                }
                if let Ok(rd) = fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if n != "targets.json" && n.ends_with(".json") {
                            errors.push(format!("file {n:?} matches Prometheus' *.json glob"));
                        }
                    }
                }
                thread::sleep(Duration::from_millis(3));
            }
            ReaderReport {
                reads,
                switches,
                errors,
            }
        });
        Reader {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> ReaderReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Temp files in `dir` not belonging to `pid`.
fn foreign_temp_files(dir: &Path, pid: i32) -> Vec<String> {
    let own = format!(".targets.json.tmp.{pid}.");
    temp_files(dir, "targets.json")
        .into_iter()
        .filter(|n| !n.starts_with(&own))
        .collect()
}

struct Setup {
    dir: TestDir,
    notify: NotifySocket,
    inv: FakeInventory,
    lists: [List; 2],
    checker: Arc<Checker>,
    cmd: AgentCmd,
}

fn setup(tag: &str, rng: &mut Rng) -> Setup {
    let dir = TestDir::new(tag);
    let notify = NotifySocket::new(&dir);
    let a = make_list("A", "sensor-a", rng);
    let b = make_list("B", "sensor-b", rng);
    let inv = FakeInventory::start(a.serve.clone());
    let cmd = daemon(&dir, &inv, &notify)
        .env("LOG_LEVEL", "info")
        .env("HTTP_TIMEOUT", "20");
    let checker = Arc::new(Checker {
        lists: [Arc::new(a.targets.clone()), Arc::new(b.targets.clone())],
        names: ["A", "B"],
        canonical: Mutex::new([None, None]),
    });
    Setup {
        dir,
        notify,
        inv,
        lists: [a, b],
        checker,
        cmd,
    }
}

/// Waits until the file holds list `which`; returns how long it took.
fn wait_for_list(s: &Setup, agent: &Agent, which: usize) -> Duration {
    let t0 = Instant::now();
    let path = s.cmd.targets_file();
    let ok = wait_for(T, || s.checker.check_file(&path) == Ok(Some(which)));
    assert!(
        ok,
        "list {} never written: {:?}\n{}",
        s.lists[which].name,
        s.checker.check_file(&path),
        agent.stderr()
    );
    t0.elapsed()
}

/// Polls the output dir until a temp file shows up (a write in progress).
fn wait_for_temp_file(dir: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !temp_files(dir, "targets.json").is_empty() {
            return true;
        }
        thread::sleep(Duration::from_micros(300));
    }
    false
}

/// The two tests each want both CPUs for realistic timing: run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn sigkill_during_large_writes_never_exposes_a_partial_file() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::from_env("atomicity");
    let seed = rng.0;
    let s = setup("atom-kill", &mut rng);
    let out_dir = s.dir.join("out");
    let file = s.cmd.targets_file();

    // Establish list A, then measure one SIGHUP cycle to list B.
    let agent = s.cmd.spawn();
    assert!(
        s.notify.wait_for("READY=1", T).is_some(),
        "{}",
        agent.stderr()
    );
    wait_for_list(&s, &agent, 0);
    let reader = Reader::start(s.checker.clone(), file.clone());
    s.inv.set(s.lists[1].serve.clone());
    let t0 = Instant::now();
    agent.signal(Signal::SIGHUP);
    // Measure how long the temp file lives (the write window) too.
    let window = if wait_for_temp_file(&out_dir, T) {
        let seen = Instant::now();
        wait_for(T, || temp_files(&out_dir, "targets.json").is_empty());
        seen.elapsed()
    } else {
        Duration::ZERO
    }
    .max(Duration::from_millis(2));
    wait_for_list(&s, &agent, 1);
    let cycle = t0.elapsed().max(Duration::from_millis(50));
    println!("one cycle of {SENSORS} targets takes {cycle:?}, the write about {window:?}");

    let budget = Duration::from_secs(24);
    let started = Instant::now();
    let mut current = 1;
    let mut last_seen = 1;
    let mut alive = Some(agent);
    let (mut kills, mut mid_write, mut transitions, mut restarts) = (0, 0, 0, 0);
    let mut iteration = 0;
    // On a loaded machine the budget stretches (up to three times) until
    // enough kills have happened, rather than failing for lack of them.
    let enough = |kills: usize, elapsed: Duration| {
        elapsed >= budget * 3 || (elapsed >= budget && kills >= 12)
    };
    while !enough(kills, started.elapsed()) && iteration < 60 {
        iteration += 1;
        // Always ask for the list the file does not hold, so that every
        // cycle writes: after a kill that is the one found in the file.
        current = if alive.is_some() {
            1 - current
        } else {
            1 - last_seen
        };
        s.inv.set(s.lists[current].serve.clone());
        let mut agent = match alive.take() {
            Some(a) => {
                a.signal(Signal::SIGHUP);
                a
            }
            None => {
                s.notify.skip_pending();
                let a = s.cmd.spawn();
                restarts += 1;
                assert!(
                    s.notify.wait_for("READY=1", T).is_some(),
                    "restart {restarts}: no READY=1\n{}",
                    a.stderr()
                );
                let ok = wait_for(Duration::from_millis(500), || {
                    foreign_temp_files(&out_dir, a.pid()).is_empty()
                });
                assert!(
                    ok,
                    "restart {restarts}: temp files of the killed run survive start-up: {:?}",
                    foreign_temp_files(&out_dir, a.pid())
                );
                a
            }
        };
        // Kill at a random moment of the cycle, or right inside the write
        // (once the temp file exists), or just after the rename (while the
        // directory is synced or the loop idles).
        match rng.below(3) {
            0 => {
                let ms = rng.below(cycle.as_millis() as u64 * 13 / 10 + 1);
                thread::sleep(Duration::from_millis(ms));
            }
            1 => {
                if wait_for_temp_file(&out_dir, cycle * 3 + SEC) {
                    let us = rng.below(window.as_micros() as u64 / 3);
                    thread::sleep(Duration::from_micros(us));
                }
            }
            _ => {
                wait_for_list(&s, &agent, current);
                thread::sleep(Duration::from_micros(rng.below(20_000)));
            }
        }
        // Now and then let the agent live on into the next SIGHUP.
        if rng.below(4) == 0 {
            alive = Some(agent);
            continue;
        }
        agent.kill9();
        kills += 1;
        if !temp_files(&out_dir, "targets.json").is_empty() {
            mid_write += 1;
        }
        match s.checker.check_file(&file) {
            Ok(Some(which)) => {
                if which != last_seen {
                    transitions += 1;
                    last_seen = which;
                }
            }
            Ok(None) => panic!("targets file vanished after kill {kills}"),
            Err(e) => panic!("after kill {kills} (seed {seed}): {e}"),
        }
    }

    // Finally let one cycle complete and stop cleanly.
    current = 1 - current;
    s.inv.set(s.lists[current].serve.clone());
    let mut agent = match alive.take() {
        Some(a) => {
            a.signal(Signal::SIGHUP);
            a
        }
        None => s.cmd.spawn(),
    };
    wait_for_list(&s, &agent, current);
    s.inv.wait_quiet(Duration::from_millis(300), T);
    s.notify.collect_for(Duration::from_millis(300));
    agent.signal(Signal::SIGTERM);
    let st = agent.wait_exit(T);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "{}", agent.stderr());
    assert!(
        temp_files(&out_dir, "targets.json").is_empty(),
        "temp files left after a clean stop: {:?}",
        temp_files(&out_dir, "targets.json")
    );

    let ReaderReport {
        reads,
        switches,
        errors,
    } = reader.finish();
    println!(
        "{iteration} iterations, {kills} kills ({mid_write} with a temp file present), \
         {restarts} restarts, {transitions} A/B transitions seen after kills, \
         {reads} concurrent reads seeing {switches} completed writes, in {:?}",
        started.elapsed()
    );
    assert!(errors.is_empty(), "seed {seed}: {}", errors.join("\n"));
    assert!(
        kills >= 8,
        "only {kills} kills: the test did not exercise much"
    );
    assert!(
        switches >= 2,
        "the reader saw only {switches} completed writes: the test exercised little"
    );
}

#[test]
fn sigterm_during_large_write_finishes_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::from_env("sigterm");
    let s = setup("atom-term", &mut rng);
    let out_dir = s.dir.join("out");
    let file = s.cmd.targets_file();
    let mut current = 0;
    for round in 0..3 {
        s.notify.skip_pending();
        let mut agent = s.cmd.spawn();
        assert!(
            s.notify.wait_for("READY=1", T).is_some(),
            "{}",
            agent.stderr()
        );
        wait_for_list(&s, &agent, current);
        s.inv.wait_quiet(Duration::from_millis(200), T);
        current = 1 - current;
        s.inv.set(s.lists[current].serve.clone());
        agent.signal(Signal::SIGHUP);
        let in_write = wait_for_temp_file(&out_dir, T);
        thread::sleep(Duration::from_micros(rng.below(5_000)));
        let t0 = Instant::now();
        agent.signal(Signal::SIGTERM);
        let st = agent.wait_exit(Duration::from_secs(5));
        let took = t0.elapsed();
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "round {round}: {st:?}\n{}",
            agent.stderr()
        );
        assert!(
            took < Duration::from_secs(1),
            "round {round}: SIGTERM during a write took {took:?}"
        );
        assert!(
            temp_files(&out_dir, "targets.json").is_empty(),
            "round {round} (temp file seen before SIGTERM: {in_write}): temp file left: {:?}",
            temp_files(&out_dir, "targets.json")
        );
        let which = s
            .checker
            .check_file(&file)
            .unwrap_or_else(|e| panic!("round {round}: {e}"))
            .expect("file exists");
        // Whatever it holds now is what the next round starts from.
        current = which;
    }
}
