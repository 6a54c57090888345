//! A TCP proxy of the test's own, to cut a link the way a network does: `partition()` stops
//! forwarding in both directions without closing anything (the peers see silence, not a reset),
//! `heal()` lets the held bytes through again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    opened: Notify,
}

impl Gate {
    async fn pass(&self) {
        loop {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

pub struct Proxy {
    /// `https://127.0.0.1:PORT` (the scheme of the URL it forwards to): give this to the slave
    /// instead of the master's URL.
    pub url: String,
    gate: Arc<Gate>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection to the host and port of `target` (a URL; TLS passes through).
    pub async fn start(target: &str) -> Proxy {
        let (scheme, host_port) = target.split_once("://").expect("a URL");
        let target = host_port.trim_end_matches('/');
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let gate = Arc::new(Gate::default());
        let (g, target) = (gate.clone(), target.to_string());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (g, target) = (g.clone(), target.clone());
                tokio::spawn(async move {
                    g.pass().await;
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, g.clone()));
                    tokio::spawn(pump(ro, wi, g));
                });
            }
        });
        Proxy { url, gate, accept }
    }

    /// Stops forwarding; nothing is closed.
    pub fn partition(&self) {
        self.gate.closed.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.gate.closed.store(false, Ordering::SeqCst);
        self.gate.opened.notify_waiters();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: Arc<Gate>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        gate.pass().await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Bytes read just before a partition are held until it heals.
        gate.pass().await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
