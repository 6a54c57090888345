//! Accepting connections: the one accept loop behind plain HTTP and HTTPS, and what keeps a rude
//! network from taking the master down (`[master.connections]`).
//!
//! - **Limits.** At most `max_total` connections at once, and at most `max_per_address` from one
//!   IP address. A connection holds its place until its socket closes, so WebSockets count too.
//!   A connection over a limit is closed as soon as it is accepted.
//! - **Time-outs.** A connection has `header_read_secs` from its accept to finish the TLS
//!   handshake and the headers of its first request, and as long again from the first byte of
//!   each later request; a connection with no request in progress and no traffic for
//!   `idle_secs` (keep-alive, or a response its client stopped reading) is closed. While the
//!   router handles a request (reading its body included) no time-out runs here. A connection
//!   upgraded to a WebSocket leaves these rules: its own protocol decides how long it lives.
//! - **Logs.** What is refused or closed is logged at most once a second, as counts.
//! - **Memory.** Once many connections have closed, the memory they freed is handed back to the
//!   system (`malloc_trim`), so a flood leaves no lasting footprint.
//!
//! Requests are served by hyper's HTTP/1.1 connection (upgrades included) with the axum router as
//! the service; each request carries its peer address as `ConnectInfo<SocketAddr>`. On shutdown
//! the loop stops accepting and open connections finish their requests within 10 s.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use kiln_shared::config::ConnectionLimits;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tower::ServiceExt;

/// How long open connections may take to finish once the master stops.
const DRAIN: Duration = Duration::from_secs(10);
/// Hand freed memory back once this many connections have closed since the peak.
const TRIM_AFTER_CLOSED: usize = 256;
/// File descriptors kept for everything but connections (database pool, logs, artifacts).
const FD_RESERVE: u64 = 256;

/// The TLS context, replaceable while serving (SIGHUP): new connections get the new one, open
/// connections keep the one they started with.
#[derive(Clone)]
pub struct Tls(Arc<RwLock<Arc<ServerConfig>>>);

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Tls {
        Tls(Arc::new(RwLock::new(config)))
    }

    pub fn reload(&self, config: Arc<ServerConfig>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `stop` turns true, then lets
/// open connections finish for up to 10 s.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Tls>,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    if let Some(fds) = open_file_limit() {
        if u64::from(limits.max_total) + FD_RESERVE > fds {
            tracing::warn!(
                "master.connections.max_total ({}) leaves less than {FD_RESERVE} of the open-file limit ({fds}) for the rest: past the limit, connections fail to be accepted instead of being refused. Raise the limit (LimitNOFILE=) or lower the key",
                limits.max_total
            );
        }
    }
    let shared = Arc::new(Shared {
        app,
        tls,
        header_read: Duration::from_secs(limits.header_read_secs.into()),
        idle: Duration::from_secs(limits.idle_secs.into()),
        admission: Arc::new(Admission::new(&limits)),
        head_timeouts: AtomicU64::new(0),
        idle_closed: AtomicU64::new(0),
        handshakes_failed: AtomicU64::new(0),
    });
    let tasks = tokio_util::task::TaskTracker::new();
    let stopping = stop.clone();
    let mut report = Report::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match shared.admission.admit(peer.ip()) {
                    Ok(permit) => {
                        tasks.spawn(connection(tcp, peer, permit, shared.clone(), stopping.clone()));
                    }
                    // Dropping the socket closes it at once.
                    Err(why) => report.refused(why, peer.ip()),
                },
                Err(e) => {
                    let exhausted = matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    );
                    report.accept_failed(e);
                    if exhausted {
                        // Out of descriptors or memory: wait for some to come back.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
            _ = tick.tick() => report.flush(&shared),
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Until the master stops (or whoever could stop it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What the accept loop and its connections share.
struct Shared {
    app: Router,
    tls: Option<Tls>,
    header_read: Duration,
    idle: Duration,
    admission: Arc<Admission>,
    /// Closed for not finishing the handshake and headers in time, since the last report.
    head_timeouts: AtomicU64,
    /// Closed for being idle, since the last report.
    idle_closed: AtomicU64,
    handshakes_failed: AtomicU64,
}

/// The once-a-second summary of what the loop refused and its connections closed.
#[derive(Default)]
struct Report {
    over_total: u64,
    over_address: u64,
    last_refused: Option<IpAddr>,
    accept_errors: u64,
    last_accept_error: Option<std::io::Error>,
    /// Trim again once the number of open connections stops falling.
    trim_again: bool,
    last_open: usize,
}

impl Report {
    fn refused(&mut self, why: Refusal, ip: IpAddr) {
        match why {
            Refusal::Total => self.over_total += 1,
            Refusal::Address => self.over_address += 1,
        }
        self.last_refused = Some(ip);
    }

    fn accept_failed(&mut self, e: std::io::Error) {
        self.accept_errors += 1;
        self.last_accept_error = Some(e);
    }

    fn flush(&mut self, shared: &Shared) {
        let admission = &shared.admission;
        let (open, peak) = admission.open_and_peak();
        if self.over_total + self.over_address > 0 {
            let over = [
                (self.over_total, "max_total", admission.max_total),
                (
                    self.over_address,
                    "max_per_address",
                    admission.max_per_address as usize,
                ),
            ]
            .iter()
            .filter(|(n, ..)| *n > 0)
            .map(|(n, key, max)| format!("{n} connection(s) over master.connections.{key} ({max})"))
            .collect::<Vec<_>>()
            .join(" and ");
            tracing::warn!(
                "refused {over}, the last from {}; {open} open",
                self.last_refused
                    .map(|ip| ip.to_string())
                    .unwrap_or_default(),
            );
        }
        if let Some(e) = self.last_accept_error.take() {
            tracing::warn!(
                "accepting failed {} time(s), the last with: {e}; {open} open",
                self.accept_errors
            );
        }
        let head = shared.head_timeouts.swap(0, Relaxed);
        if head > 0 {
            tracing::info!(
                "closed {head} connection(s) that did not send their request headers (and finish the TLS handshake) within {} s (master.connections.header_read_secs); {open} open",
                shared.header_read.as_secs()
            );
        }
        let idle = shared.idle_closed.swap(0, Relaxed);
        if idle > 0 {
            tracing::debug!(
                "closed {idle} connection(s) idle for {} s (master.connections.idle_secs); {open} open",
                shared.idle.as_secs()
            );
        }
        let failed = shared.handshakes_failed.swap(0, Relaxed);
        if failed > 0 {
            tracing::debug!("{failed} TLS handshake(s) failed");
        }
        // Hand freed memory back while a flood ebbs, and once more when it has ended.
        if peak >= open + TRIM_AFTER_CLOSED || (self.trim_again && open >= self.last_open) {
            self.trim_again = peak >= open + TRIM_AFTER_CLOSED;
            admission.reset_peak();
            tokio::task::spawn_blocking(move || {
                release_freed_memory();
                tracing::debug!("handed freed memory back to the system ({peak} connections at the peak, {open} now)");
            });
        }
        self.last_open = open;
        *self = Report {
            trim_again: self.trim_again,
            last_open: self.last_open,
            ..Report::default()
        };
    }
}

/// Returns the heap's free pages to the system. glibc keeps what a burst of connections freed
/// (in each thread's arena) until asked.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The soft limit on open files (`None`: unlimited or unknown).
fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(lim.rlim_cur)
}

/// Raises the soft limit on open files to the hard limit (every connection is one); returns the
/// soft limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        // The kernel refuses an unlimited number of files; its own ceiling is nr_open.
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur >= target {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(target)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Total,
    Address,
}

/// The connections open now, against the limits.
struct Admission {
    max_total: usize,
    max_per_address: u32,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// The most open at once since the last memory trim.
    peak: usize,
    by_address: HashMap<IpAddr, u32>,
}

impl Admission {
    fn new(limits: &ConnectionLimits) -> Admission {
        Admission {
            max_total: limits.max_total as usize,
            max_per_address: limits.max_per_address,
            open: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        // An IPv4 client on a dual-stack socket is the same address as over IPv4.
        let ip = ip.to_canonical();
        let mut guard = self.lock();
        let open = &mut *guard;
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = open.by_address.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Refusal::Address);
        }
        *n += 1;
        open.total += 1;
        open.peak = open.peak.max(open.total);
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }

    fn open_and_peak(&self) -> (usize, usize) {
        let open = self.lock();
        (open.total, open.peak)
    }

    /// After a trim: the peak starts again from now, and the address table gives back the room
    /// a flood from many addresses made it take.
    fn reset_peak(&self) {
        let mut open = self.lock();
        open.peak = open.total;
        open.by_address.shrink_to_fit();
    }
}

/// One admitted connection's place; it is given back when the socket closes (the permit lives in
/// the socket's wrapper, which a WebSocket takes over).
struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.admission.lock();
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
    }
}

/// Where a connection is: what decides its time-out.
const HEAD: u8 = 0;
const HANDLING: u8 = 1;
const RESPONDING: u8 = 2;
const IDLE: u8 = 3;

/// A connection's phase and when it last moved. Written by the socket wrapper (bytes in and out)
/// and the service (a request's head parsed, its response finished); read by the connection's
/// watchdog. All of them run in the connection's one task until an upgrade.
struct Activity {
    start: Instant,
    phase: AtomicU8,
    /// Milliseconds after `start` when the current request's head began (phase `HEAD`).
    head_since: AtomicU64,
    /// Milliseconds after `start` of the last byte in or out, or the last response finished.
    last_io: AtomicU64,
    /// A deadline came nearer (a request began after an idle spell, a response was produced).
    changed: Notify,
}

enum Expired {
    Head,
    Idle,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            phase: AtomicU8::new(HEAD),
            head_since: AtomicU64::new(0),
            last_io: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Relaxed);
        // The first byte after an idle spell starts the next request's header clock; later
        // bytes of the same head do not move it.
        if self
            .phase
            .compare_exchange(IDLE, HEAD, Relaxed, Relaxed)
            .is_ok()
        {
            self.head_since.store(now, Relaxed);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Relaxed);
    }

    fn handling(&self) {
        self.phase.store(HANDLING, Relaxed);
    }

    fn responding(&self) {
        self.last_io.store(self.now(), Relaxed);
        self.phase.store(RESPONDING, Relaxed);
        self.changed.notify_one();
    }

    fn done(&self) {
        self.last_io.store(self.now(), Relaxed);
        self.phase.store(IDLE, Relaxed);
    }

    /// When this connection is to be closed unless something happens first.
    fn deadline(&self, shared: &Shared) -> Option<(Instant, Expired)> {
        let at = |ms: &AtomicU64| self.start + Duration::from_millis(ms.load(Relaxed));
        match self.phase.load(Relaxed) {
            HEAD => Some((at(&self.head_since) + shared.header_read, Expired::Head)),
            HANDLING => None,
            _ => Some((at(&self.last_io) + shared.idle, Expired::Idle)),
        }
    }
}

/// The accepted socket, noting its traffic and holding the connection's place.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    _permit: Permit,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection: the TLS handshake (within the header-read time), then HTTP.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let _ = tcp.set_nodelay(true);
    let io = Watched {
        inner: tcp,
        activity: activity.clone(),
        _permit: permit,
    };
    let Some(acceptor) = shared.tls.as_ref().map(Tls::acceptor) else {
        return http(io, peer, &shared, activity, stop).await;
    };
    let deadline = activity.start + shared.header_read;
    let tls = tokio::select! {
        r = tokio::time::timeout_at(deadline, acceptor.accept(io)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::trace!(%peer, "TLS handshake failed: {e}");
                shared.handshakes_failed.fetch_add(1, Relaxed);
                return;
            }
            Err(_) => {
                shared.head_timeouts.fetch_add(1, Relaxed);
                return;
            }
        },
        _ = stopped(&mut stop) => return,
    };
    http(tls, peer, &shared, activity, stop).await
}

/// Serves HTTP/1.1 on `io` until the client closes, a time-out closes it, it is upgraded (the
/// upgraded socket lives on with whoever took it) or the master stops.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    shared: &Shared,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = shared.app.clone();
    let watched = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // The head is in: from here until the response is produced the router takes its time.
        watched.handling();
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let done = Done(watched.clone());
        async move {
            let Ok(response) = app.oneshot(req).await;
            done.0.responding();
            Ok::<_, Infallible>(response.map(|inner| Tracked { inner, _done: done }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header time-out is ours (it starts at the accept and covers the TLS handshake).
    builder.header_read_timeout(None);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut drain_until: Option<Instant> = None;
    loop {
        let deadline = activity.deadline(shared);
        let wake = match (&deadline, drain_until) {
            (Some((at, _)), Some(d)) => Some((*at).min(d)),
            (Some((at, _)), None) => Some(*at),
            (None, d) => d,
        };
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(%peer, "connection ended: {e}");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = stopped(&mut stop), if drain_until.is_none() => {
                conn.as_mut().graceful_shutdown();
                drain_until = Some(Instant::now() + DRAIN);
            }
            _ = sleep => {
                let now = Instant::now();
                if drain_until.is_some_and(|d| d <= now) {
                    return;
                }
                // Traffic since the deadline was taken may have moved it.
                match activity.deadline(shared) {
                    Some((at, Expired::Head)) if at <= now => {
                        shared.head_timeouts.fetch_add(1, Relaxed);
                        return;
                    }
                    Some((at, Expired::Idle)) if at <= now => {
                        shared.idle_closed.fetch_add(1, Relaxed);
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Marks the end of a request's response when dropped (hyper drops the body once it is sent,
/// or when the connection ends).
struct Done(Arc<Activity>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// A response body that says when it is finished.
struct Tracked {
    inner: axum::body::Body,
    _done: Done,
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(total: u32, per_address: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_total: total,
            max_per_address: per_address,
            header_read_secs: 1,
            idle_secs: 2,
        }
    }

    #[test]
    fn admission_counts_per_address_and_in_all_and_gives_places_back() {
        let a = Arc::new(Admission::new(&limits(3, 2)));
        let one = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let two = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let p1 = a.admit(one).unwrap();
        // The same address as an IPv4-mapped IPv6 address.
        let p2 = a.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(a.admit(one).err(), Some(Refusal::Address));
        let p3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).err(), Some(Refusal::Total));
        assert_eq!(a.open_and_peak(), (3, 3));
        drop(p1);
        assert!(a.lock().by_address.contains_key(&one));
        let p4 = a.admit(one).unwrap();
        drop((p2, p3, p4));
        assert_eq!(a.open_and_peak(), (0, 3));
        assert!(a.lock().by_address.is_empty());
        a.reset_peak();
        assert_eq!(a.open_and_peak(), (0, 0));
    }

    /// A plain-HTTP server with `/` and `/upgrade` (raw bytes echoed after a 101).
    async fn server(l: ConnectionLimits) -> (SocketAddr, watch::Sender<bool>) {
        use axum::routing::get;
        async fn upgrade(req: axum::extract::Request) -> axum::response::Response {
            let on = hyper::upgrade::on(req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.unwrap());
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            axum::response::Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(axum::body::Body::empty())
                .unwrap()
        }
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/upgrade", get(upgrade));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, app, None, l, rx));
        (addr, tx)
    }

    /// Reads until the server closes; how long after `since` that was.
    async fn closed_after(s: &mut TcpStream, since: Instant) -> Duration {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server never closed the connection"),
            }
        }
    }

    #[tokio::test]
    async fn headers_must_come_in_time_and_idle_connections_are_closed() {
        let (addr, _stop) = server(limits(100, 100)).await;
        let start = Instant::now();
        // Nothing at all, and half a request line.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(b"GET / HT").await.unwrap();
        // A complete request, then nothing: idle.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut upgraded = TcpStream::connect(addr).await.unwrap();
        upgraded
            .write_all(
                b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let mut head = [0u8; 12];
        upgraded.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101");
        for s in [&mut silent, &mut partial] {
            let t = closed_after(s, start).await;
            assert!(t >= Duration::from_secs(1), "closed after {t:?}");
        }
        // The idle time-out is counted from the response.
        let mut response = [0u8; 15];
        idle.read_exact(&mut response).await.unwrap();
        assert_eq!(&response, b"HTTP/1.1 200 OK");
        let t = closed_after(&mut idle, start).await;
        assert!(t >= Duration::from_secs(2), "closed after {t:?}");
        // The upgraded connection outlived both time-outs.
        let mut rest = vec![0u8; 256];
        let _ = tokio::time::timeout(Duration::from_millis(100), upgraded.read(&mut rest)).await;
        upgraded.write_all(b"still here").await.unwrap();
        let mut echo = [0u8; 10];
        upgraded.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"still here");
    }

    #[tokio::test]
    async fn a_request_on_a_kept_alive_connection_gets_its_own_header_time() {
        let (addr, _stop) = server(limits(100, 100)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        for _ in 0..3 {
            // Each request well within the header time, together longer than it.
            tokio::time::sleep(Duration::from_millis(600)).await;
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut response = [0u8; 15];
            s.read_exact(&mut response).await.unwrap();
            assert_eq!(&response, b"HTTP/1.1 200 OK");
            let mut rest = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut rest)).await;
        }
        // A head begun after an idle spell has the header time from its first byte.
        let begun = Instant::now();
        s.write_all(b"GET / HT").await.unwrap();
        let t = closed_after(&mut s, begun).await;
        assert!(
            t >= Duration::from_millis(900) && t < Duration::from_millis(1900),
            "closed after {t:?}"
        );
    }

    #[tokio::test]
    async fn connections_over_a_limit_are_closed_at_once_and_places_come_back() {
        let (addr, _stop) = server(limits(100, 2)).await;
        let mut held = vec![
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        let start = Instant::now();
        let mut over = TcpStream::connect(addr).await.unwrap();
        let t = closed_after(&mut over, start).await;
        assert!(t < Duration::from_millis(900), "closed after {t:?}");
        drop(held.pop());
        // The place is given back once the server has seen the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut response = [0u8; 15];
            if s.read_exact(&mut response).await.is_ok() {
                assert_eq!(&response, b"HTTP/1.1 200 OK");
                break;
            }
            assert!(Instant::now() < deadline, "the place never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn stopping_closes_idle_connections_and_the_listener() {
        let (addr, stop) = server(limits(100, 100)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut response = [0u8; 15];
        s.read_exact(&mut response).await.unwrap();
        let start = Instant::now();
        stop.send(true).unwrap();
        let t = closed_after(&mut s, start).await;
        assert!(t < Duration::from_secs(1), "closed after {t:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
