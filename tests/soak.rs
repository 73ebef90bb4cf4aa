//! Soak with fault injection: the daemon runs for `FISKIL_SOAK_SECONDS` against the stand-in
//! issuing 2-second tokens while faults are injected at random and readers hammer the token
//! file. With `FISKIL_CLUSTER_DIR` it also writes a Secret and the API server is restarted.
//! Run it with the release binary: `cargo test --release --test soak -- --ignored --nocapture`.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fiskil_stand_in::Behaviour;
use rand::seq::IndexedRandom;
use rand::Rng;
use support::control_plane::{spawn_with_identity, Cluster};
use support::{eventually, Daemon, Fixture};

const LIFETIME_S: i64 = 2;
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const READERS: usize = 4;
/// Pause between two reads of one reader: thousands of reads a second each, without
/// starving the daemon of the machine's cores for the length of a soak.
const READ_PAUSE: Duration = Duration::from_micros(200);

/// Faults the injector picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Outage,
    ServerErrors,
    Throttled,
    Hang,
    Malformed,
    Oversized,
    Rejected,
    Rotation,
    Sighup,
    ApiServerRestart,
}

/// What the readers and the expiry monitor found.
#[derive(Default)]
struct Watch {
    reads: AtomicU64,
    bad_reads: Mutex<Vec<String>>,
    seen: Mutex<HashSet<String>>,
    /// Milliseconds during which the file held an expired token while the endpoint was healthy.
    expired_while_healthy_ms: AtomicU64,
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Reads the token file continuously; every read must be one whole token.
fn reader(path: std::path::PathBuf, stop: Arc<AtomicBool>, watch: Arc<Watch>) {
    let mut local = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let problem = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(json)
                    if json["token"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("tok-")) =>
                {
                    local.insert(json["token"].as_str().unwrap().to_owned());
                    None
                }
                _ => Some(format!("unusable content of {} bytes", text.len())),
            },
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            watch.bad_reads.lock().unwrap().push(problem);
        }
        watch.reads.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(READ_PAUSE);
    }
    watch.seen.lock().unwrap().extend(local);
}

/// Samples the file every 20 ms and counts time spent expired while no fault was active.
fn expiry_monitor(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    healthy: Arc<AtomicBool>,
    watch: Arc<Watch>,
) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if !healthy.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let expires_at = humantime::parse_rfc3339(json["expires_at"].as_str().unwrap()).unwrap();
        if SystemTime::now() > expires_at + Duration::from_millis(50)
            && healthy.load(Ordering::SeqCst)
        {
            watch
                .expired_while_healthy_ms
                .fetch_add(20, Ordering::Relaxed);
        }
    }
}

#[test]
#[ignore = "needs minutes: FISKIL_SOAK_SECONDS (default 120), best with --release"]
fn soak_with_fault_injection() {
    let seconds: u64 = std::env::var("FISKIL_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cluster =
        std::env::var_os("FISKIL_CLUSTER_DIR").map(|_| runtime.block_on(Cluster::connect()));

    let mut fixture = Fixture::new("soak", LIFETIME_S);
    let extra = [
        "--token-format",
        "json",
        "--backoff-initial",
        "100ms",
        "--backoff-max",
        "1s",
        "--request-timeout",
        "1s",
        "--credentials-poll-interval",
        "1s",
    ];
    let mut daemon: Daemon = match &cluster {
        Some(cluster) => {
            let (namespace, kubeconfig) =
                runtime.block_on(cluster.namespace_with_identity("soak", fixture.dir.path()));
            spawn_with_identity(&fixture, &kubeconfig, &namespace, &extra)
        }
        None => fixture.spawn(&extra),
    };
    eventually("the first token", Duration::from_secs(15), || {
        fixture.read_token().is_some()
    });
    std::thread::sleep(Duration::from_secs(3));
    let pid = daemon.pid();
    let (rss_start, fds_start) = (resident_kib(pid), open_fds(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let healthy = Arc::new(AtomicBool::new(true));
    let watch = Arc::new(Watch::default());
    let mut threads = Vec::new();
    for _ in 0..READERS {
        let (path, stop, watch) = (fixture.token_file(), Arc::clone(&stop), Arc::clone(&watch));
        threads.push(std::thread::spawn(move || reader(path, stop, watch)));
    }
    {
        let (path, stop, healthy, watch) = (
            fixture.token_file(),
            Arc::clone(&stop),
            Arc::clone(&healthy),
            Arc::clone(&watch),
        );
        threads.push(std::thread::spawn(move || {
            expiry_monitor(path, stop, healthy, watch)
        }));
    }

    let mut faults = vec![
        Fault::Outage,
        Fault::ServerErrors,
        Fault::Throttled,
        Fault::Hang,
        Fault::Malformed,
        Fault::Oversized,
        Fault::Rejected,
        Fault::Rotation,
        Fault::Sighup,
    ];
    if cluster.is_some() {
        faults.push(Fault::ApiServerRestart);
    }
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    let mut recoveries: Vec<Duration> = Vec::new();
    let mut rng = rand::rng();
    let start = Instant::now();
    let mut rotation = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
        let fault = *faults.choose(&mut rng).unwrap();
        *injected.entry(fault).or_default() += 1;
        let issued_before = fixture.stand_in.issued().len();
        healthy.store(false, Ordering::SeqCst);
        let lasting = Duration::from_millis(rng.random_range(500..4000));
        match fault {
            Fault::Outage | Fault::ServerErrors | Fault::Rejected => {
                match fault {
                    Fault::Outage => fixture.stand_in.set_default(Behaviour::Close),
                    Fault::ServerErrors => fixture
                        .stand_in
                        .set_default(Behaviour::Fail { status: 500 }),
                    _ => fixture.stand_in.accept("someone-else", "not-these"),
                }
                std::thread::sleep(lasting);
                fixture.stand_in.set_default(Behaviour::Issue {
                    expires_in: LIFETIME_S,
                });
                fixture
                    .stand_in
                    .accept(&fixture.client_id.clone(), &fixture.client_secret.clone());
                let ended = Instant::now();
                let issued_at_end = fixture.stand_in.issued().len();
                eventually("recovery after an outage", Duration::from_secs(10), || {
                    let issued = fixture.stand_in.issued();
                    issued.len() > issued_at_end
                        && fixture_token(&fixture) == issued.last().cloned()
                });
                recoveries.push(ended.elapsed());
            }
            Fault::Throttled => fixture.stand_in.push(Behaviour::RetryAfter {
                status: 429,
                value: "1".into(),
            }),
            Fault::Hang => fixture.stand_in.push(Behaviour::Hang),
            Fault::Malformed => fixture
                .stand_in
                .push(Behaviour::Body("{\"token\": tok".into())),
            Fault::Oversized => fixture.stand_in.push(Behaviour::Oversized(200_000)),
            Fault::Rotation => {
                rotation += 1;
                let secret = format!("sekrit-soak-rotated-{rotation}-{:08x}", std::process::id());
                fixture.rotate(&format!("client-soak-{rotation}"), &secret);
                fixture.client_id = format!("client-soak-{rotation}");
                fixture.client_secret = secret;
            }
            Fault::Sighup => daemon.signal("HUP"),
            Fault::ApiServerRestart => {
                let cluster = cluster.as_ref().unwrap();
                let args = cluster.stop_apiserver();
                std::thread::sleep(lasting);
                runtime.block_on(cluster.start_apiserver(&args));
            }
        }
        if !matches!(fault, Fault::Outage | Fault::ServerErrors | Fault::Rejected) {
            eventually(
                "a good token after the fault",
                Duration::from_secs(10),
                || {
                    let issued = fixture.stand_in.issued();
                    issued.len() > issued_before
                        && fixture_token(&fixture) == issued.last().cloned()
                },
            );
        }
        healthy.store(true, Ordering::SeqCst);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let (rss_end, fds_end) = (resident_kib(pid), open_fds(pid));

    let cycles = fixture.stand_in.issued().len();
    let reads = watch.reads.load(Ordering::Relaxed);
    let bad_reads = watch.bad_reads.lock().unwrap().clone();
    let expired_ms = watch.expired_while_healthy_ms.load(Ordering::Relaxed);
    let worst_recovery = recoveries.iter().max().copied().unwrap_or_default();
    let issued: HashSet<String> = fixture.stand_in.issued().into_iter().collect();
    let unknown = watch.seen.lock().unwrap().difference(&issued).count();
    let logs = daemon.logs().join("\n");
    let leaked_lines = daemon
        .logs()
        .iter()
        .filter(|line| {
            fixture
                .secrets_seen
                .iter()
                .any(|s| line.contains(s.as_str()))
                || issued.iter().any(|t| line.contains(t.as_str()))
        })
        .count();

    println!(
        "soak: {:.0} s, {cycles} tokens issued (refresh cycles), {} faults injected",
        elapsed.as_secs_f64(),
        injected.values().sum::<u32>()
    );
    for (fault, count) in &injected {
        println!("  {fault:?}: {count}");
    }
    println!(
        "  reads by {READERS} readers: {reads}, bad reads: {}, unknown tokens read: {unknown}",
        bad_reads.len()
    );
    println!("  expired token while the endpoint was healthy: {expired_ms} ms");
    println!(
        "  recoveries after outages: {}, worst {:.3} s (bound {:.3} s)",
        recoveries.len(),
        worst_recovery.as_secs_f64(),
        (BACKOFF_MAX + Duration::from_secs(1)).as_secs_f64()
    );
    println!("  resident memory: {rss_start} KiB at start, {rss_end} KiB at end; open fds: {fds_start} -> {fds_end}");
    println!(
        "  log lines: {}, holding a secret or token: {leaked_lines}",
        logs.lines().count()
    );

    assert!(
        bad_reads.is_empty(),
        "bad reads: {:?}",
        &bad_reads[..bad_reads.len().min(5)]
    );
    assert_eq!(unknown, 0, "readers saw tokens that were never issued");
    assert_eq!(
        expired_ms, 0,
        "the file held an expired token while the endpoint was healthy"
    );
    assert!(
        worst_recovery <= BACKOFF_MAX + Duration::from_secs(1),
        "slow recovery: {worst_recovery:?}"
    );
    assert!(
        rss_end <= rss_start + 1024,
        "resident memory grew from {rss_start} to {rss_end} KiB"
    );
    assert!(
        fds_end <= fds_start + 2,
        "open fds grew from {fds_start} to {fds_end}"
    );
    assert_eq!(leaked_lines, 0, "secrets or tokens in the logs");
    assert!(
        daemon.wait_exit(Duration::from_millis(1)).is_none(),
        "the daemon exited on its own"
    );
}

fn fixture_token(fixture: &Fixture) -> Option<String> {
    let text = fixture.read_token()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["token"].as_str().map(str::to_owned)
}
