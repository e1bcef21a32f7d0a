//! `round_trips`: client-server round trips of one tenant transaction and one plain one.
//!
//! Both pools connect through an in-process TCP proxy on 127.0.0.1 that forwards bytes
//! unchanged and parses the PostgreSQL wire protocol on the way. A round trip is a client
//! flush that waits for the server: counted when the client sends a request after the
//! server has spoken last (messages pipelined in one flush count once). A flush holding
//! only Close + Sync is not counted: tokio-postgres sends it fire-and-forget when a
//! prepared statement is dropped, and never awaits the answer. The proxy also counts the
//! client's Query and Sync messages (each answered by a ReadyForQuery), its Parse
//! messages (a statement prepared: a statement-cache miss) and its Close messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::db::{BenchDb, OWNER, UrlParts};
use crate::error::{BenchError, IoContext, Result};
use crate::stats::Rng;
use crate::workload::{self, Pick, Pools, Read};

/// Counters over every connection through the proxy.
#[derive(Debug)]
pub struct Counters {
    /// Client flushes after a server answer.
    round_trips: AtomicU64,
    /// Client messages by type byte.
    client: [AtomicU64; 256],
    /// Server messages by type byte.
    server: [AtomicU64; 256],
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Round trips.
    pub round_trips: u64,
    /// Query messages (simple protocol).
    pub queries: u64,
    /// Sync messages (extended protocol).
    pub syncs: u64,
    /// Parse messages.
    pub parses: u64,
    /// Close messages (prepared statements deallocated).
    pub closes: u64,
    /// ReadyForQuery messages from the server.
    pub ready: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            round_trips: AtomicU64::new(0),
            client: std::array::from_fn(|_| AtomicU64::new(0)),
            server: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        let client = |b: u8| self.client[usize::from(b)].load(Ordering::SeqCst);
        Snapshot {
            round_trips: self.round_trips.load(Ordering::SeqCst),
            queries: client(b'Q'),
            syncs: client(b'S'),
            parses: client(b'P'),
            closes: client(b'C'),
            ready: self.server[usize::from(b'Z')].load(Ordering::SeqCst),
        }
    }
}

impl std::ops::Sub for Snapshot {
    type Output = Snapshot;
    fn sub(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            round_trips: self.round_trips - earlier.round_trips,
            queries: self.queries - earlier.queries,
            syncs: self.syncs - earlier.syncs,
            parses: self.parses - earlier.parses,
            closes: self.closes - earlier.closes,
            ready: self.ready - earlier.ready,
        }
    }
}

/// Splits a byte stream into PostgreSQL protocol messages and counts them by type.
#[derive(Debug)]
pub struct MessageSplitter {
    /// The client's first message (startup, SSL or GSS request) has no type byte.
    untyped_first: bool,
    buffer: Vec<u8>,
}

impl MessageSplitter {
    /// A splitter for the client side (`true`: starts with the untyped startup message)
    /// or the server side.
    pub fn new(client: bool) -> Self {
        Self {
            untyped_first: client,
            buffer: Vec::new(),
        }
    }

    /// Feeds `bytes`; calls `seen` with the type byte of every complete message.
    pub fn feed(&mut self, bytes: &[u8], mut seen: impl FnMut(u8)) {
        self.buffer.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let rest = &self.buffer[at..];
            if self.untyped_first {
                let Some(len) = rest.get(..4).map(be_len) else {
                    break;
                };
                if rest.len() < len {
                    break;
                }
                // SSLRequest / GSSENCRequest are followed by another untyped message.
                let code = rest.get(4..8).map_or(0, be_len);
                if code != 80_877_103 && code != 80_877_104 {
                    self.untyped_first = false;
                }
                at += len.max(4);
            } else {
                let Some(len) = rest.get(1..5).map(be_len) else {
                    break;
                };
                if rest.len() < 1 + len {
                    break;
                }
                seen(rest[0]);
                at += 1 + len.max(4);
            }
        }
        self.buffer.drain(..at);
    }
}

fn be_len(bytes: &[u8]) -> usize {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word) as usize
}

/// Listens on 127.0.0.1 and forwards every connection to `upstream`, counting.
async fn start_proxy(upstream: String, counters: Arc<Counters>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context(|| "proxy: bind 127.0.0.1".into())?;
    let port = listener
        .local_addr()
        .context(|| "proxy: local address".into())?
        .port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counters = Arc::clone(&counters);
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(&upstream).await {
                    relay(client, server, counters).await;
                }
            });
        }
    });
    Ok(port)
}

/// Whether a client message of type `t` is one the client waits on. Not: Close and its
/// Sync (tokio-postgres deallocates a dropped prepared statement fire-and-forget: it
/// never awaits the answer, so such a flush alone costs no wait) and Terminate.
fn waits_for_answer(t: u8) -> bool {
    !matches!(t, b'C' | b'S' | b'X')
}

/// Copies both ways until either side closes.
async fn relay(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    // Nagle would delay small writes by up to 40 ms on both legs; the client and the
    // server disable it on their own sockets, so the proxy does too.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // True while the server has spoken last: the next client bytes start a round trip.
    let clients_turn = Arc::new(AtomicBool::new(true));

    let upstream = {
        let counters = Arc::clone(&counters);
        let clients_turn = Arc::clone(&clients_turn);
        async move {
            let mut splitter = MessageSplitter::new(true);
            let mut buffer = vec![0u8; 64 * 1024];
            // Whether the current flush has been counted as a round trip.
            let mut counted = false;
            loop {
                let n = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if clients_turn.swap(false, Ordering::SeqCst) {
                    counted = false;
                }
                splitter.feed(&buffer[..n], |t| {
                    counters.client[usize::from(t)].fetch_add(1, Ordering::SeqCst);
                    if !counted && waits_for_answer(t) {
                        counters.round_trips.fetch_add(1, Ordering::SeqCst);
                        counted = true;
                    }
                });
                if server_write.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            let _ = server_write.shutdown().await;
        }
    };
    let downstream = async move {
        let mut splitter = MessageSplitter::new(false);
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            splitter.feed(&buffer[..n], |t| {
                counters.server[usize::from(t)].fetch_add(1, Ordering::SeqCst);
            });
            // Set before forwarding: the client cannot answer what it has not received.
            clients_turn.store(true, Ordering::SeqCst);
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// Per-transaction figures of `n` transactions.
fn per_tx(total: Snapshot, n: u64) -> [f64; 6] {
    let f = |v: u64| v as f64 / n as f64;
    [
        f(total.round_trips),
        f(total.queries),
        f(total.syncs),
        f(total.parses),
        f(total.closes),
        f(total.ready),
    ]
}

fn describe(name: &str, v: [f64; 6]) -> String {
    format!(
        "{name:<36} {:>5.2} round trips | {:.2} Query + {:.2} Sync, {:.2} Parse, {:.2} Close; {:.2} ReadyForQuery",
        v[0], v[1], v[2], v[3], v[4], v[5]
    )
}

/// Runs the benchmark (`n` measured transactions per side) and returns its `bench` line.
pub async fn run(smoke: bool) -> Result<String> {
    let n: u64 = if smoke { 5 } else { 200 };
    let per_tenant = 10;
    let db = BenchDb::create("tenants_bench_round_trips").await?;
    workload::setup(&db, per_tenant).await?;

    let counters = Arc::new(Counters::default());
    let target = db.url_parts();
    let port = start_proxy(target.host_port(), Arc::clone(&counters)).await?;
    let proxied = UrlParts {
        userinfo: Some(OWNER.to_string()),
        host: format!("127.0.0.1:{port}"),
        // The proxy reads the protocol, so no TLS between client and server.
        query: Some("sslmode=disable".into()),
        ..target
    }
    .render();
    println!(
        "proxy 127.0.0.1:{port} -> {}; one connection per pool",
        db.url_parts().host_port()
    );
    println!(
        "method: the proxy forwards bytes unchanged and parses the protocol; a round trip = a client flush sent after the server spoke last and holding a request the client awaits (pipelined messages count once; a fire-and-forget Close+Sync flush does not count); Query/Sync/Parse/Close are client messages, ReadyForQuery the server's"
    );
    let pools = Pools::new(&proxied, 1).await?;
    let mut rng = Rng::new(0);

    // Warm up: the connections exist and hold their prepared statements.
    for _ in 0..3 {
        workload::tenant_tx(
            &pools.tenant,
            &Pick::random(&mut rng, per_tenant),
            Read::ById,
        )
        .await?;
        workload::plain_tx(
            &pools.plain,
            &Pick::random(&mut rng, per_tenant),
            Read::ById,
        )
        .await?;
        drop(pools.tenant.unscoped().await?);
    }

    let measure =
        async |tenant_side: bool, rng: &mut Rng, checkout_only: bool| -> Result<[f64; 6]> {
            let before = counters.snapshot();
            for _ in 0..n {
                let pick = Pick::random(rng, per_tenant);
                match (tenant_side, checkout_only) {
                    (true, false) => workload::tenant_tx(&pools.tenant, &pick, Read::ById).await?,
                    (false, false) => workload::plain_tx(&pools.plain, &pick, Read::ById).await?,
                    // A tenant checkout sends nothing (the begin batch sets role and
                    // tenant itself); a plain one runs the recycle check.
                    (true, true) => drop(pools.tenant.unscoped().await?),
                    (false, true) => drop(pools.plain.get().await?),
                }
            }
            // Let a trailing fire-and-forget Close reach the proxy inside this window.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(per_tx(counters.snapshot() - before, n))
        };
    let tenant = measure(true, &mut rng, false).await?;
    let plain = measure(false, &mut rng, false).await?;
    let tenant_checkout = measure(true, &mut rng, true).await?;
    let plain_checkout = measure(false, &mut rng, true).await?;
    drop(pools);
    db.drop_db().await?;

    println!("per transaction (mean of {n}; checkout + begin + select + insert + commit):");
    println!("{}", describe("A tenant (pool.tenant .. commit)", tenant));
    println!("{}", describe("B plain (pool.get, BEGIN .. COMMIT)", plain));
    println!(
        "the pool checkout: A's tenant checkout sends nothing; a plain one runs the recycle check:"
    );
    println!(
        "{}",
        describe("A TenantPool plain checkout (unscoped)", tenant_checkout)
    );
    println!(
        "{}",
        describe("B diesel-async pool checkout", plain_checkout)
    );
    let uncached = |v: [f64; 6]| v[3] > 0.0;
    if uncached(tenant) || uncached(plain) {
        return Err(BenchError::Failed(
            "statements of the transaction were prepared during the measurement: the warm-up did not fill the statement cache".into(),
        ));
    }
    if uncached(tenant_checkout) {
        println!(
            "note: a plain TenantPool checkout prepares its recycle check every time (diesel's `sql` literal is never cached): one extra round trip per plain checkout"
        );
    }
    let ratio = tenant[0] / plain[0];
    println!("target: ratio <= 1.00 (no extra round trip)");
    Ok(format!(
        "bench round_trips: ratio {ratio:.2} (tenant {:.2}, plain {:.2} round trips per transaction incl. pool checkout; a tenant checkout sends nothing, a plain one its check: TenantPool {:.2}, diesel-async {:.2}; counted by a TCP proxy)",
        tenant[0], plain[0], tenant_checkout[0], plain_checkout[0],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(t: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![t];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn splits_messages_across_reads() {
        let mut stream = Vec::new();
        // SSLRequest, then the startup message: both untyped.
        stream.extend_from_slice(&8u32.to_be_bytes());
        stream.extend_from_slice(&80_877_103u32.to_be_bytes());
        stream.extend_from_slice(&9u32.to_be_bytes());
        stream.extend_from_slice(&196_608u32.to_be_bytes());
        stream.push(0);
        stream.extend(typed(b'Q', b"BEGIN\0"));
        stream.extend(typed(b'B', b"xx"));
        stream.extend(typed(b'E', b"yyy"));
        stream.extend(typed(b'S', b""));
        let mut splitter = MessageSplitter::new(true);
        let mut seen = Vec::new();
        for chunk in stream.chunks(3) {
            splitter.feed(chunk, |t| seen.push(t));
        }
        assert_eq!(seen, b"QBES");
    }
}
