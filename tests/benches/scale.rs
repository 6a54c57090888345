//! `cargo bench -p kiln-tests --bench scale` (after `cargo build --release --bins`): the master
//! with many slaves, simulated over the real wire (a WebSocket each, its own registered token,
//! bincode frames: hello, a heartbeat every `heartbeat_secs`, assignments held and restated).
//! Prints a Markdown table for docs/benchmarks.md:
//!
//! - idle CPU (share of one core) and RSS of the master, and the CPU of PostgreSQL, with 2 and
//!   with 1,000 connected slaves (`KILN_BENCH_SLAVES`), over `KILN_BENCH_IDLE_SECS` (30);
//! - dispatch at scale: with 10,000 builds queued (`KILN_BENCH_QUEUED`) for projects no slave
//!   can take and 100 connected slaves (capacity 4 each), a build requested for a project they
//!   can take → the `Assign` read by a slave (client clock), p50/p99 over 200 builds; and the
//!   master's own created → dispatched;
//! - 100 consoles (`KILN_BENCH_CONSOLES`) following one live log over `/ws/console`: a simulated
//!   slave sends a line every 10 ms (each carrying the time it was sent), and every console's
//!   delay per line is measured, p50/p99, with the master's CPU meanwhile.
//!
//! Speed is never asserted: this prints numbers.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec;
use kiln_shared::frames::{MasterFrame, SlaveFrame};
use kiln_shared::BuildId;
use kiln_tests::farm::{test_hello, Ws};
use kiln_tests::measure::{
    cpu_ticks, cpu_ticks_of_all, now_ns, percentile, status_kib, ticks_per_second,
};
use kiln_tests::{Farm, FarmOptions};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const HEARTBEAT_SECS: u32 = 5;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU of the master and of PostgreSQL over `secs` of idling, as a share of one core, and the
/// master's RSS at the end.
async fn idle(farm: &Farm, secs: u64) -> (f64, f64, u64) {
    let pid = farm.master_pid().expect("the master runs");
    let hz = ticks_per_second();
    let (m0, p0, t0) = (cpu_ticks(pid), cpu_ticks_of_all("postgres"), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let wall = t0.elapsed().as_secs_f64();
    let (m1, p1) = (cpu_ticks(pid), cpu_ticks_of_all("postgres"));
    (
        (m1 - m0) as f64 / hz / wall,
        p1.saturating_sub(p0) as f64 / hz / wall,
        status_kib(pid, "VmRSS:"),
    )
}

/// A simulated slave: registers, says hello, heartbeats, and holds what it is given (reporting
/// each `Assign` with the time it was read).
async fn sim_slave(
    farm: &Farm,
    name: &str,
    capacity: u32,
    assigned: mpsc::UnboundedSender<(BuildId, i128)>,
) {
    let token = farm.register_slave(name).await;
    let mut ws: Ws = farm.slave_ws(&token).await.expect("slave WebSocket");
    let hello = SlaveFrame::Hello(kiln_shared::frames::Hello {
        capacity,
        ..test_hello(name)
    });
    ws.send(Message::Binary(codec::encode(&hello).unwrap().into()))
        .await
        .unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match codec::decode::<MasterFrame>(&b) {
                Ok(MasterFrame::Welcome { .. }) => break,
                other => panic!("{name}: expected Welcome, got {other:?}"),
            },
            Some(Ok(_)) => {}
            other => panic!("{name}: the master closed the handshake: {other:?}"),
        }
    }
    let held = Arc::new(Mutex::new(Vec::<BuildId>::new()));
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(Duration::from_secs(u64::from(HEARTBEAT_SECS)));
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let builds = held.lock().unwrap().clone();
                    let f = SlaveFrame::Heartbeat { builds };
                    if tx.send(Message::Binary(codec::encode(&f).unwrap().into())).await.is_err() {
                        return;
                    }
                }
                m = rx.next() => match m {
                    Some(Ok(Message::Binary(b))) => {
                        if let Ok(MasterFrame::Assign(job)) = codec::decode::<MasterFrame>(&b) {
                            held.lock().unwrap().push(job.build);
                            let _ = assigned.send((job.build, now_ns()));
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
            }
        }
    });
}

fn frame(f: &SlaveFrame) -> Message {
    Message::Binary(codec::encode(f).unwrap().into())
}

/// `consoles` consoles follow the log of one build while a simulated slave (tag `logger`, so the
/// build goes to it) sends `lines` lines, one every 10 ms, each its send time in ns. Returns the
/// table row: send → console p50/p99 over every console and line, and the master's CPU.
async fn live_log(farm: &Farm, consoles: usize, lines: u64) -> String {
    use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
    let token = farm.register_slave_tagged("logger", &["logger"]).await;
    let mut ws: Ws = farm.slave_ws(&token).await.expect("slave WebSocket");
    let hello = SlaveFrame::Hello(kiln_shared::frames::Hello {
        tags: vec!["logger".into()],
        ..test_hello("logger")
    });
    ws.send(frame(&hello)).await.unwrap();
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "live", "branch_url": "https://git.example.org/live.git", "tags": ["logger"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let b = farm
        .request_build(
            "live",
            json!({"commit": "0123456789abcdef0123456789abcdef01234567"}),
        )
        .await;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the logger gets its build within 30 s");
        if let Some(Ok(Message::Binary(bytes))) = m {
            if let Ok(MasterFrame::Assign(job)) = codec::decode::<MasterFrame>(&bytes) {
                assert_eq!(job.build, b.id);
                break;
            }
        }
    }
    // The consoles, each subscribed from the first line, counting the delay of every line.
    let delays = Arc::new(Mutex::new(Vec::<f64>::new()));
    let mut followers = vec![];
    for _ in 0..consoles {
        let mut c = farm
            .ws(
                "/ws/console",
                Some(&farm.token),
                &codec::PROTOCOL_VERSION.to_string(),
            )
            .await
            .expect("console socket");
        let sub = ConsoleRequest::SubscribeLog {
            build: b.id,
            from_seq: 0,
        };
        c.send(Message::Binary(codec::encode(&sub).unwrap().into()))
            .await
            .unwrap();
        let delays = delays.clone();
        followers.push(tokio::spawn(async move {
            let mut next = 0;
            while next < lines {
                let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(60), c.next()).await
                else {
                    panic!("a console stopped hearing the log at line {next}");
                };
                let Message::Binary(bytes) = m else { continue };
                if let Ok(ConsoleEvent::LogLines { lines: got, .. }) = codec::decode(&bytes) {
                    let at = now_ns();
                    let mut d = delays.lock().unwrap();
                    for l in &got {
                        if let Ok(sent) = l.trim().parse::<i128>() {
                            d.push((at - sent) as f64 / 1e6);
                            next += 1;
                        }
                    }
                }
            }
        }));
    }
    // Let every subscription reach the master before the first line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = farm.master_pid().expect("the master runs");
    let (m0, t0) = (cpu_ticks(pid), Instant::now());
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move { while rx.next().await.is_some() {} });
    tx.send(frame(&SlaveFrame::Started {
        build: b.id,
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
    }))
    .await
    .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for seq in 0..lines {
        tick.tick().await;
        let f = SlaveFrame::Log {
            build: b.id,
            first_seq: seq,
            lines: vec![now_ns().to_string()],
        };
        tx.send(frame(&f)).await.unwrap();
    }
    for f in followers {
        f.await.expect("a console follower");
    }
    let cpu = (cpu_ticks(pid) - m0) as f64 / ticks_per_second() / t0.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:");
    let mut d = delays.lock().unwrap().clone();
    format!(
        "| {consoles} consoles following one live log ({lines} lines, one every 10 ms): line sent by the slave → shown to each console ({} deliveries) | p50 {:.1} ms, p99 {:.1} ms; master {:.1} % of a core, RSS {:.1} MiB |",
        d.len(),
        percentile(&mut d, 0.5),
        percentile(&mut d, 0.99),
        cpu * 100.0,
        rss as f64 / 1024.0
    )
}

#[tokio::main]
async fn main() {
    let many = env_or("KILN_BENCH_SLAVES", 1000);
    let queued = env_or("KILN_BENCH_QUEUED", 10_000);
    let idle_secs = env_or("KILN_BENCH_IDLE_SECS", 30) as u64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let mut farm = Farm::with(FarmOptions {
        heartbeat_secs: HEARTBEAT_SECS,
        lost_timeout_secs: 6 * HEARTBEAT_SECS,
        extra_master_toml: format!(
            "connections.max_per_address = {}\nconnections.max_total = {}",
            many + 256,
            many + 512
        ),
        ..Default::default()
    })
    .await;
    farm.poll = Duration::from_millis(5);
    let (tx, mut assigned) = mpsc::unbounded_channel();
    let mut rows = vec![];

    // 1. Idle with 2 slaves.
    for i in 0..2 {
        sim_slave(&farm, &format!("sim-{i}"), 4, tx.clone()).await;
    }
    let (m, p, rss) = idle(&farm, idle_secs).await;
    rows.push(format!(
        "| idle, 2 slaves ({HEARTBEAT_SECS} s heartbeats, {idle_secs} s) | master {:.2} % of a core, RSS {:.1} MiB; PostgreSQL {:.2} % |",
        m * 100.0,
        rss as f64 / 1024.0,
        p * 100.0
    ));
    for i in 2..100 {
        sim_slave(&farm, &format!("sim-{i}"), 4, tx.clone()).await;
    }

    // 2. Dispatch with a long queue: builds no slave can take (tag `nowhere`) fill it.
    let t0 = Instant::now();
    let projects = 100;
    for p in 0..projects {
        let (s, v) = farm
            .post(
                "/api/projects",
                json!({"name": format!("waits-{p}"), "branch_url": "https://git.example.org/w.git", "tags": ["nowhere"]}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let per = queued / projects;
    let client = &farm;
    futures_util::stream::iter(0..projects * per)
        .for_each_concurrent(8, |i| async move {
            let (s, v) = client
                .post(
                    &format!("/api/projects/waits-{}/builds", i % projects),
                    json!({"commit": "0123456789abcdef0123456789abcdef01234567"}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        })
        .await;
    let fill_secs = t0.elapsed().as_secs_f64();
    eprintln!("queued {} builds in {fill_secs:.1} s", projects * per);
    farm.project("go", "https://git.example.org/go.git", "main")
        .await;
    let n = 200;
    let (mut to_assign, mut to_dispatch) = (vec![], vec![]);
    let mut early: HashMap<BuildId, i128> = HashMap::new();
    for _ in 0..n {
        let t0 = now_ns();
        let b = farm
            .request_build(
                "go",
                json!({"commit": "0123456789abcdef0123456789abcdef01234567"}),
            )
            .await;
        let got = loop {
            if let Some(t) = early.remove(&b.id) {
                break t;
            }
            let Ok(got) = tokio::time::timeout(Duration::from_secs(30), assigned.recv()).await
            else {
                let log = farm.master_log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let now = farm.build(b.id).await;
                panic!(
                    "no Assign for build {} within 30 s ({:?}, {:?}); the master's log ends:\n{}",
                    b.id,
                    now.state,
                    now.waiting_reason,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            };
            let (id, t) = got.unwrap();
            if id == b.id {
                break t;
            }
            early.insert(id, t);
        };
        to_assign.push((got - t0) as f64 / 1e6);
        let b = farm.build(b.id).await;
        if let Some(d) = b.dispatched_at {
            to_dispatch.push((d - b.created_at).num_microseconds().unwrap() as f64 / 1e3);
        }
    }
    rows.push(format!(
        "| dispatch with {} builds queued ({fill_secs:.0} s to queue them) and 100 slaves connected: requested → `Assign` read by the slave ({n} builds) | p50 {:.1} ms, p99 {:.1} ms |",
        projects * per,
        percentile(&mut to_assign, 0.5),
        percentile(&mut to_assign, 0.99)
    ));
    rows.push(format!(
        "| of which master: created → dispatched | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&mut to_dispatch, 0.5),
        percentile(&mut to_dispatch, 0.99)
    ));

    // 3. Consoles following one live log.
    rows.push(live_log(&farm, env_or("KILN_BENCH_CONSOLES", 100), 500).await);

    // 4. Idle with `many` slaves (and the long queue, and the builds held).
    let t0 = Instant::now();
    for i in 100..many {
        sim_slave(&farm, &format!("sim-{i}"), 1, tx.clone()).await;
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let (m, p, rss) = idle(&farm, idle_secs).await;
    rows.push(format!(
        "| idle, {many} slaves ({} more registered and connected one after another in {connect_secs:.1} s), {} builds queued, {n} held | master {:.2} % of a core, RSS {:.1} MiB; PostgreSQL {:.2} % |",
        many - 100,
        projects * per,
        m * 100.0,
        rss as f64 / 1024.0,
        p * 100.0
    ));

    println!("| measure | value |");
    println!("|---|---|");
    for r in rows {
        println!("{r}");
    }
}
