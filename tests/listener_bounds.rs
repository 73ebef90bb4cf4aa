//! Hostile neighbours against the real binary's listeners: idle, trickling and non-reading
//! clients of the proxy, an upstream that never answers, TRACE and upgrades, floods of
//! connections from many loopback source addresses while a probe asks `/healthz`, more
//! connections than a file-descriptor limit allows, and request heads meant to fill memory.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::{eventually, Daemon, Fixture};

/// The daemon's bounds, as src/serve.rs and src/reach/proxy.rs set them.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
const UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to every bound before a test calls it broken: room for a busy machine.
const SLACK: Duration = Duration::from_secs(20);

/// The address a feature listens on, from its `listening` log line.
fn listening(daemon: &Daemon, flag: &str) -> SocketAddr {
    let find = || {
        daemon
            .json_logs()
            .into_iter()
            .find(|l| l["message"] == "listening" && l["flag"] == flag)
    };
    eventually("the listener to start", Duration::from_secs(10), || {
        find().is_some()
    });
    find().unwrap()["listen"].as_str().unwrap().parse().unwrap()
}

/// The daemon with a proxy to the stand-in's API side and a token endpoint, once it has a
/// token.
fn proxy_daemon(fixture: &Fixture, upstream: &str) -> (Daemon, SocketAddr) {
    let daemon = fixture.spawn(&[
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream",
        upstream,
    ]);
    let proxy = listening(&daemon, "--proxy-listen");
    eventually("a token", Duration::from_secs(20), || {
        fixture.read_token().is_some()
    });
    (daemon, proxy)
}

/// Reads until the peer closes (`Some(bytes read)`), or `None` if it is still open after
/// `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<usize> {
    let start = Instant::now();
    let mut total = 0;
    let mut buf = [0u8; 64 * 1024];
    while start.elapsed() < limit {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(total),
        }
    }
    None
}

/// Sends `head` (ending the request) on a new connection and returns the status code and
/// the whole answer, or `None` if nothing complete came within `limit`.
fn ask(addr: SocketAddr, head: &str, limit: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, limit).ok()?;
    stream.write_all(head.as_bytes()).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer))
}

/// A GET of `path` from `source` (port 0), as a probe sends it: `Some(status)` if answered
/// within `limit`.
fn probe_from(source: [u8; 4], addr: SocketAddr, path: &str, limit: Duration) -> Option<u16> {
    let mut stream = connect_from(source, addr, limit).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A connection to `addr` from the loopback address `source`.
fn connect_from(source: [u8; 4], addr: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&addr.into(), limit)?;
    Ok(socket.into())
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A field of /proc/PID/status in KiB, e.g. `RssAnon`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn the_proxy_closes_idle_trickling_and_non_reading_clients() {
    let fixture = Fixture::new("proxy-phases", 900);
    fixture.stand_in.enable_api();
    let (daemon, proxy) = proxy_daemon(&fixture, &fixture.stand_in.api_url());

    let idle = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(proxy).unwrap();
        closed_within(&mut stream, HEADER_READ_TIMEOUT + SLACK)
    });
    // One header byte every 2 s: never a whole head.
    let header_trickle = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(proxy).unwrap();
        let start = Instant::now();
        for byte in b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if stream.write_all(&[*byte]).is_err() {
                return Some(start.elapsed());
            }
            if start.elapsed() > HEADER_READ_TIMEOUT + SLACK {
                return None;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        None
    });
    // A whole head, then one body byte every 2 s.
    let body_trickle = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(proxy).unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
            .unwrap();
        let start = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut answer = Vec::new();
        while start.elapsed() < BODY_READ_TIMEOUT + SLACK {
            // Read before writing: a byte sent after the daemon closed could reset the
            // connection before its answer is read.
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf) {
                Ok(0) => return Some(String::from_utf8_lossy(&answer).into_owned()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            }
            if answer.is_empty() {
                let _ = stream.write_all(b"x");
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        None
    });
    // A large download the client never reads.
    let size: usize = 256 << 20;
    let non_reader = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(proxy).unwrap();
        write!(
            stream,
            "GET /download/{size} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(WRITE_STALL_TIMEOUT + SLACK);
        closed_within(&mut stream, SLACK)
    });

    assert!(
        idle.join().unwrap().is_some(),
        "an idle connection was still open after {:?}",
        HEADER_READ_TIMEOUT + SLACK
    );
    assert!(
        header_trickle.join().unwrap().is_some(),
        "a connection sending one header byte every 2 s was still open after {:?}",
        HEADER_READ_TIMEOUT + SLACK
    );
    let answer = body_trickle.join().unwrap().unwrap_or_else(|| {
        panic!(
            "a connection sending one body byte every 2 s was still open after {:?}",
            BODY_READ_TIMEOUT + SLACK
        )
    });
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let read = non_reader.join().unwrap();
    assert!(
        read.is_some_and(|read| read < size),
        "a client that did not read its download was still served after {:?} ({read:?} bytes \
         of {size} read afterwards)",
        WRITE_STALL_TIMEOUT + SLACK
    );
    assert!(daemon.logs_contain("the request body came too slowly"));
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn an_upstream_that_never_answers_gets_the_client_a_504() {
    let fixture = Fixture::new("proxy-silent-upstream", 900);
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", silent.local_addr().unwrap());
    // Accepts, reads nothing and answers nothing, for as long as the test runs.
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let (daemon, proxy) = proxy_daemon(&fixture, &upstream);
    let start = Instant::now();
    let answer = ask(
        proxy,
        "GET /v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        UPSTREAM_RESPONSE_TIMEOUT + SLACK,
    );
    let (status, body) = answer.unwrap_or_else(|| {
        panic!(
            "no answer within {:?} from an upstream that accepted and never answered",
            UPSTREAM_RESPONSE_TIMEOUT + SLACK
        )
    });
    assert_eq!(status, 504, "{body}");
    assert!(
        start.elapsed() >= UPSTREAM_RESPONSE_TIMEOUT - Duration::from_secs(1),
        "504 after only {:?}",
        start.elapsed()
    );
    daemon.wait_log("the upstream did not answer in time");
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn the_proxy_refuses_trace_and_protocol_upgrades() {
    let fixture = Fixture::new("proxy-trace", 900);
    fixture.stand_in.enable_api();
    let (daemon, proxy) = proxy_daemon(&fixture, &fixture.stand_in.api_url());
    let limit = Duration::from_secs(20);
    let (status, answer) = ask(
        proxy,
        "TRACE /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        limit,
    )
    .expect("an answer to TRACE");
    assert_eq!(status, 405, "{answer}");
    let (status, answer) = ask(
        proxy,
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        limit,
    )
    .expect("an answer to an upgrade");
    assert_eq!(status, 501, "{answer}");
    assert!(
        fixture.stand_in.api_seen().is_empty(),
        "a refused request reached the upstream: {:?}",
        fixture.stand_in.api_seen()
    );
    let (status, answer) = ask(
        proxy,
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        limit,
    )
    .expect("an answer to GET");
    assert_eq!(status, 200, "{answer}");
    fixture.assert_logs_clean(&daemon);
}

/// Connections from many loopback addresses, each sending half a request head and reopened
/// as soon as the daemon closes it, until `stop`; counts the connections opened.
fn churn(
    target: SocketAddr,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<AtomicUsize>) {
    let opened = Arc::new(AtomicUsize::new(0));
    let threads = 10;
    let handles = (0..threads)
        .map(|t| {
            let (stop, opened) = (Arc::clone(&stop), Arc::clone(&opened));
            std::thread::spawn(move || {
                let mut n = t;
                let mut open = || {
                    n += threads;
                    // 127.0.0.2 to 127.0.0.241; the probe comes from 127.0.0.250.
                    let source = [127, 0, 0, 2 + (n % 240) as u8];
                    let mut stream = connect_from(source, target, Duration::from_secs(2)).ok()?;
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                        .ok()?;
                    stream.set_nonblocking(true).ok()?;
                    opened.fetch_add(1, Ordering::Relaxed);
                    Some(stream)
                };
                let mut streams: Vec<Option<TcpStream>> =
                    (0..connections / threads).map(|_| open()).collect();
                while !stop.load(Ordering::Relaxed) {
                    for slot in &mut streams {
                        let closed = match slot {
                            Some(stream) => !matches!(
                                stream.read(&mut [0u8; 512]),
                                Err(e) if e.kind() == ErrorKind::WouldBlock
                            ),
                            None => true,
                        };
                        if closed {
                            *slot = open();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();
    (handles, opened)
}

#[test]
fn health_probes_are_answered_while_500_connections_from_other_sources_churn() {
    let fixture = Fixture::new("probe-churn", 900);
    let mut daemon = fixture.spawn(&["--token-listen", "127.0.0.1:0"]);
    let admin = daemon.admin();
    let token_endpoint = listening(&daemon, "--token-listen");
    eventually("a token", Duration::from_secs(20), || {
        fixture.read_token().is_some()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (mut churners, opened) = churn(admin, 500, Arc::clone(&stop));
    let (more, opened_too) = churn(token_endpoint, 200, Arc::clone(&stop));
    churners.extend(more);
    eventually(
        "the floods to open 500 and 200",
        Duration::from_secs(30),
        || opened.load(Ordering::Relaxed) >= 500 && opened_too.load(Ordering::Relaxed) >= 200,
    );
    std::thread::sleep(Duration::from_secs(2));
    // As the chart's probes: a fresh connection, a GET, an answer awaited for a while (the
    // chart's timeoutSeconds is 2; more here, for a busy machine).
    let probes = 20;
    let (mut answered, mut tokens) = (0, 0);
    for _ in 0..probes {
        let limit = Duration::from_secs(5);
        if probe_from([127, 0, 0, 250], admin, "/healthz", limit) == Some(200) {
            answered += 1;
        }
        if probe_from([127, 0, 0, 250], token_endpoint, "/token", limit) == Some(200) {
            tokens += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = open_fds(daemon.pid());
    stop.store(true, Ordering::Relaxed);
    for churner in churners {
        churner.join().unwrap();
    }
    let total = opened.load(Ordering::Relaxed) + opened_too.load(Ordering::Relaxed);
    assert!(
        answered == probes && tokens == probes,
        "/healthz answered {answered} of {probes} probes and GET /token {tokens} of {probes} \
         while 500 and 200 connections from other addresses churned ({total} opened in all)"
    );
    assert!(
        during < 64 + 64 + 32,
        "{during} descriptors open during the floods"
    );
    assert_eq!(daemon.get("/healthz").0, 200);
}

#[test]
fn more_connections_than_descriptors_leave_the_token_file_and_healthz_working() {
    let fixture = Fixture::new("fd-flood", 900);
    fixture.stand_in.enable_api();
    // A container's usual limit, whatever this shell's is.
    let args = fixture.args_with(&[
        "--proxy-listen",
        "127.0.0.1:0",
        "--proxy-upstream",
        &fixture.stand_in.api_url(),
        "--token-listen",
        "127.0.0.1:0",
    ]);
    let mut daemon = Daemon::spawn_wrapped(
        &["sh", "-c", "ulimit -n 1024 && exec \"$0\" \"$@\""],
        &args,
        &[],
    );
    let proxy = listening(&daemon, "--proxy-listen");
    let token_endpoint = listening(&daemon, "--token-listen");
    let admin = daemon.admin();
    eventually("a token", Duration::from_secs(20), || {
        fixture.read_token().is_some()
    });
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    assert!(
        limit
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limit}"
    );

    let mut held = Vec::new();
    for (target, count) in [(proxy, 1100), (token_endpoint, 200), (admin, 200)] {
        for _ in 0..count {
            if let Ok(stream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                held.push(stream);
            }
        }
    }
    assert!(held.len() >= 1400, "only {} connections opened", held.len());
    std::thread::sleep(Duration::from_secs(1));
    let fds = open_fds(daemon.pid());

    let before = fixture.read_token();
    daemon.signal("HUP");
    eventually(
        "the token file rewritten with a new token",
        Duration::from_secs(20),
        || fixture.read_token() != before,
    );
    let answer = ask(
        admin,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(answer.map(|(status, _)| status), Some(200), "/healthz");
    assert!(
        !daemon.logs_contain("Too many open files"),
        "{:?}",
        daemon.logs()
    );
    assert!(
        fds < 64 + 64 + 128 + 64,
        "{fds} descriptors open with {} connections held",
        held.len()
    );
    drop(held);
    fixture.assert_logs_clean(&daemon);
}

#[test]
fn unfinished_huge_request_heads_do_not_fill_memory() {
    let fixture = Fixture::new("huge-heads", 900);
    fixture.stand_in.enable_api();
    let (mut daemon, proxy) = proxy_daemon(&fixture, &fixture.stand_in.api_url());
    let admin = daemon.admin();
    let idle = status_kib(daemon.pid(), "RssAnon");
    // Just under hyper's default 400 KB limit, in a few long header lines (hyper takes at
    // most 100), without the blank line that ends a head.
    let mut head = b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_vec();
    for _ in 0..4 {
        head.extend_from_slice(b"X-Filler: ");
        head.extend(std::iter::repeat_n(b'a', 97 * 1024));
        head.extend_from_slice(b"\r\n");
    }
    let mut held = Vec::new();
    for target in [proxy, admin] {
        for _ in 0..150 {
            let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                continue;
            };
            stream
                .set_write_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(&head);
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let flooded = status_kib(daemon.pid(), "RssAnon");
    assert!(
        flooded < idle + 16 * 1024,
        "anonymous memory grew from {idle} KiB to {flooded} KiB with {} unfinished 390 KiB heads",
        held.len()
    );
    assert_eq!(daemon.get("/healthz").0, 200);
    drop(held);
    fixture.assert_logs_clean(&daemon);
}

/// Sends `head` and `body` on a keep-alive connection and reads the answer whole (the
/// stand-in's answers carry a Content-Length); returns the status code.
fn exchange(stream: &mut TcpStream, head: &str, body: &[u8]) -> Option<u16> {
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).ok().filter(|n| *n > 0)?;
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    let mut have = got.len() - end;
    while have < length {
        have += stream.read(&mut buf).ok().filter(|n| *n > 0)?;
    }
    head.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn memory_used_by_a_burst_of_proxy_connections_is_given_back() {
    let fixture = Fixture::new("proxy-memory", 900);
    fixture.stand_in.enable_api();
    let (daemon, proxy) = proxy_daemon(&fixture, &fixture.stand_in.api_url());
    std::thread::sleep(Duration::from_secs(1));
    let idle = status_kib(daemon.pid(), "RssAnon");
    // 64 keep-alive connections, each: downloads of 256 KiB, uploads of 64 KiB, small GETs.
    let upload = vec![b'u'; 64 * 1024];
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let upload = upload.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(proxy).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut ok = 0;
                for i in 0..30 {
                    let (head, body) = match i % 3 {
                        0 => (
                            "GET /download/262144 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned(),
                            &[][..],
                        ),
                        1 => (
                            format!(
                                "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
                                upload.len()
                            ),
                            &upload[..],
                        ),
                        _ => (
                            "GET /v1/accounts HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned(),
                            &[][..],
                        ),
                    };
                    if exchange(&mut stream, &head, body) == Some(200) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 64 * 30, "requests answered 200");
    let loaded = status_kib(daemon.pid(), "RssAnon");
    // Coarse: the benchmark (tests/bench/listeners.py) measures within 2 MiB of idle.
    let mut now = loaded;
    let given_back = (|| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            now = status_kib(daemon.pid(), "RssAnon");
            if now < idle + 4 * 1024 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    })();
    println!(
        "measured: anonymous memory {idle} KiB idle, {loaded} KiB after 64 connections, {now} KiB \
         when last read"
    );
    assert!(
        given_back,
        "anonymous memory: {idle} KiB idle, {loaded} KiB after 64 connections, still {now} KiB \
         30 s later"
    );
    fixture.assert_logs_clean(&daemon);
}
