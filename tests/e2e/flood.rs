//! A rude network (`[master.connections]`): thousands of connections that never finish a request
//! do not take the master down. Connections over the per-address limit are closed at once, the
//! rest when their header-read time runs out, `/api/health` answers throughout, and the memory
//! they took comes back. An idle keep-alive connection is closed after `idle_secs`; a WebSocket
//! is not.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_tests::{Farm, FarmOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Source addresses of the flood (all of 127/8 is loopback), so the test's own requests from
/// 127.0.0.1 have their own per-address count.
const SOURCES: u8 = 10;
const PER_SOURCE: usize = 500;
const MAX_PER_ADDRESS: usize = 400;
const HEADER_READ_SECS: u64 = 10;

/// The test process holds one end of every connection too.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    let need = (usize::from(SOURCES) * PER_SOURCE + 512) as u64;
    assert!(
        lim.rlim_cur >= need,
        "this test needs {need} open files; the hard limit is {}",
        lim.rlim_max
    );
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// `/api/health` answers 200; how long it took.
async fn health(farm: &Farm) -> Duration {
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        farm.http.get(farm.api("/api/health")).send(),
    )
    .await
    .expect("/api/health answers within 5 s")
    .expect("/api/health");
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    t.elapsed()
}

/// When a rude connection was opened and when the master closed it.
struct Rude {
    opened: Instant,
    closed: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_that_never_finish_is_shed_and_its_memory_comes_back() {
    raise_fd_limit();
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!(
            "connections = {{ max_total = 8000, max_per_address = {MAX_PER_ADDRESS}, header_read_secs = {HEADER_READ_SECS}, idle_secs = 60 }}\n"
        ),
        ..FarmOptions::default()
    })
    .await;
    let pid = farm.master_pid().unwrap();
    let master: SocketAddr = farm.host_port().parse().unwrap();
    health(&farm).await;
    let rss_start = rss_mib(pid);

    // Half send nothing, half the first bytes of a TLS record (a ClientHello that never comes).
    let flood_start = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let sources: Vec<_> = (0..SOURCES)
        .map(|source| {
            let open = open.clone();
            tokio::spawn(async move {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + source));
                let mut readers = vec![];
                for i in 0..PER_SOURCE {
                    let socket = tokio::net::TcpSocket::new_v4().unwrap();
                    socket.bind(SocketAddr::new(ip, 0)).unwrap();
                    let mut s = socket.connect(master).await.expect("connect");
                    let opened = Instant::now();
                    if i % 2 == 1 {
                        // The master may have closed it already: that is one of the outcomes.
                        let _ = s.write_all(&[0x16, 0x03, 0x01]).await;
                    }
                    open.fetch_add(1, Ordering::SeqCst);
                    let open = open.clone();
                    readers.push(tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        // EOF or a reset: the master closed it. It never sends anything.
                        if let Ok(n @ 1..) = s.read(&mut buf).await {
                            panic!("the master sent {n} bytes to a silent connection");
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                        Rude {
                            opened,
                            closed: Instant::now(),
                        }
                    }));
                }
                readers
            })
        })
        .collect();
    let mut readers = vec![];
    for s in sources {
        readers.extend(s.await.unwrap());
    }
    // A few that finish the TLS handshake and then send half a request line.
    let tls = farm.tls_client_config().unwrap();
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let tls = tls.clone();
            tokio::task::spawn_blocking(move || {
                // Timed from before the connect: the master's clock for this connection starts
                // at its accept, which cannot come earlier (timed after it, a busy machine can
                // read the clock a little after the master did).
                let opened = Instant::now();
                let sock = std::net::TcpStream::connect(master).unwrap();
                let conn =
                    rustls::ClientConnection::new(tls, "127.0.0.1".try_into().unwrap()).unwrap();
                let mut s = rustls::StreamOwned::new(conn, sock);
                s.write_all(b"GET /api/health HT").unwrap();
                s.flush().unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap_or(0);
                assert_eq!(n, 0, "no response to half a request line");
                opened.elapsed()
            })
        })
        .collect();
    let opened_in = flood_start.elapsed();

    // While they are held, the master answers.
    let rss_during = rss_mib(pid);
    let held_at_health = open.load(Ordering::SeqCst);
    let mut latencies = vec![];
    for _ in 0..3 {
        latencies.push(health(&farm).await);
    }
    eprintln!(
        "flood: {} connections opened in {opened_in:?}; {held_at_health} still open while /api/health answered in {latencies:?}",
        readers.len()
    );

    // Every connection is closed by the master: those over the per-address limit at once, the
    // others when their header-read time runs out (never before).
    let header_read = Duration::from_secs(HEADER_READ_SECS);
    let (mut refused, mut timed_out) = (0, 0);
    for r in readers {
        let r = tokio::time::timeout(header_read + Duration::from_secs(60), r)
            .await
            .expect("the master closes every rude connection")
            .unwrap();
        // Refused ones are closed within moments of their accept; the others not before the
        // header-read time (counted from the accept, which the client may see a little late).
        if r.closed - r.opened < header_read / 2 {
            refused += 1;
        } else {
            timed_out += 1;
        }
    }
    for s in slow {
        let t = s.await.unwrap();
        assert!(t >= header_read, "a slow request was closed after {t:?}");
    }
    let flood_secs = flood_start.elapsed().as_secs();
    let rss_closed = rss_mib(pid);
    eprintln!("flood: {refused} refused at once, {timed_out} closed by the header-read time-out");
    let total = usize::from(SOURCES) * PER_SOURCE;
    let over = total - usize::from(SOURCES) * MAX_PER_ADDRESS;
    assert!(
        (1..=over).contains(&refused),
        "{refused} closed at once (at most {over} are over the per-address limit)"
    );
    assert!(
        held_at_health > 0,
        "the flood was over before /api/health was asked"
    );

    // The memory the flood took comes back (4,000 pending handshakes take about 45 MiB; without
    // the master's trim after a flood, glibc keeps all of it).
    let deadline = Instant::now() + Duration::from_secs(20);
    let rss_after = loop {
        let rss = rss_mib(pid);
        if rss < rss_start + 16.0 || Instant::now() > deadline {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "flood: master RSS {rss_start:.1} MiB before, {rss_during:.1} during, {rss_closed:.1} when the last closed, {rss_after:.1} after"
    );
    assert!(
        rss_after < rss_start + 16.0,
        "the master's RSS stayed at {rss_after:.1} MiB (it started at {rss_start:.1} MiB)"
    );
    health(&farm).await;

    // Counted and logged, at most once a second.
    let log = farm.master_log();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let refusals = lines("over master.connections.max_per_address");
    let time_outs = lines("master.connections.header_read_secs");
    assert!(refusals >= 1, "refusals are logged");
    assert!(time_outs >= 1, "time-outs are logged");
    assert!(
        refusals + time_outs <= 2 * (flood_secs as usize + 2),
        "{refusals} refusal and {time_outs} time-out lines in {flood_secs} s"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_websocket_is_not() {
    let farm = Farm::with(FarmOptions {
        extra_master_toml: "connections = { header_read_secs = 2, idle_secs = 3 }\n".into(),
        ..FarmOptions::default()
    })
    .await;
    // One slave, so the console's queue snapshot has something in it.
    farm.register_slave("idle-check").await;
    let version = codec::PROTOCOL_VERSION.to_string();
    let mut console = farm
        .ws("/ws/console", Some(&farm.token), &version)
        .await
        .expect("the console's WebSocket");

    // A request, its response, then nothing.
    let master: SocketAddr = farm.host_port().parse().unwrap();
    let tls = farm.tls_client_config().unwrap();
    let idle = tokio::task::spawn_blocking(move || {
        let sock = std::net::TcpStream::connect(master).unwrap();
        let conn = rustls::ClientConnection::new(tls, "127.0.0.1".try_into().unwrap()).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        s.write_all(b"GET /api/health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .unwrap();
        s.flush().unwrap();
        let mut got = vec![];
        let mut buf = [0u8; 4096];
        // The whole response: its headers and the body they announce.
        let answered = loop {
            let n = s.read(&mut buf).expect("a response");
            assert!(n > 0, "closed before the response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("content-length");
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                if body.len() >= length {
                    break Instant::now();
                }
            }
        };
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "nothing more is sent on an idle connection");
        answered.elapsed()
    });
    let t = idle.await.unwrap();
    assert!(
        t >= Duration::from_millis(2800) && t < Duration::from_secs(15),
        "an idle connection was closed {t:?} after its response (idle_secs = 3)"
    );

    // The WebSocket, opened before it and quiet since, outlived both time-outs.
    let subscribe = codec::encode(&ConsoleRequest::SubscribeQueue).unwrap();
    console
        .send(Message::Binary(subscribe.into()))
        .await
        .expect("the console's WebSocket is still open");
    let reply = tokio::time::timeout(Duration::from_secs(10), console.next())
        .await
        .expect("the console answers")
        .expect("the console's WebSocket is still open")
        .unwrap();
    let Message::Binary(b) = reply else {
        panic!("{reply:?}")
    };
    let event: ConsoleEvent = codec::decode(&b).unwrap();
    assert!(matches!(event, ConsoleEvent::Slave(_)), "{event:?}");
}
