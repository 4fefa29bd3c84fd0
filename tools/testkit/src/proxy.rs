//! UDP proxies in front of every node's Raft port, so that the nemesis can cut
//! links between nodes for real: packets are dropped, not flagged.
//!
//! A node binds its Raft endpoint at a private address; the cluster membership
//! (the `peers` of every node's config) names the node's *proxy* address
//! instead. Raft is QUIC over UDP, and a node dials its peers from its own Raft
//! socket, so a proxy knows every packet's directed link: a packet arriving at
//! node X's proxy from node A's private address travels A → X, and its answer
//! X → A. One proxy per node therefore controls every directed pair, both for
//! connections A dialed and for those X dialed (through A's proxy).
//!
//! ```text
//!   node A (private a) ──▶ proxy of X ──(drop A→X?)──▶ node X (private x)
//!                     ◀──(drop X→A?)── per-source upstream socket ◀──
//! ```
//!
//! The rules live in [`Links`], a bit set read on every packet.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Largest node id the link table can hold (ids are 1-based).
pub const NODES_MAX: u64 = 8;

/// Which directed links drop their packets, and how many packets each dropped.
#[derive(Debug, Default)]
pub struct Links {
    /// Bit `(from - 1) * 8 + (to - 1)` set: packets from → to are dropped.
    blocked: AtomicU64,
    dropped: AtomicU64,
    passed: AtomicU64,
}

fn bit(from: u64, to: u64) -> u64 {
    assert!((1..=NODES_MAX).contains(&from) && (1..=NODES_MAX).contains(&to), "node ids are 1..={NODES_MAX}");
    1 << ((from - 1) * NODES_MAX + (to - 1))
}

impl Links {
    /// Drops exactly the directed links in `cut` from now on (all others pass).
    pub fn set(&self, cut: &BTreeSet<(u64, u64)>) {
        let mask = cut.iter().fold(0, |m, (a, b)| m | bit(*a, *b));
        self.blocked.store(mask, Ordering::SeqCst);
    }

    /// Lets every packet through.
    pub fn heal(&self) {
        self.blocked.store(0, Ordering::SeqCst);
    }

    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.blocked.load(Ordering::Relaxed) & bit(from, to) != 0
    }

    /// The links cut right now.
    pub fn cut(&self, nodes: u64) -> BTreeSet<(u64, u64)> {
        let mut out = BTreeSet::new();
        for a in 1..=nodes {
            for b in 1..=nodes {
                if a != b && self.is_cut(a, b) {
                    out.insert((a, b));
                }
            }
        }
        out
    }

    /// Packets dropped and passed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.dropped.load(Ordering::Relaxed), self.passed.load(Ordering::Relaxed))
    }

    /// Whether a packet `from → to` may pass; counts it. Packets from an
    /// unknown source (`None`) always pass.
    fn pass(&self, from: Option<u64>, to: Option<u64>) -> bool {
        let ok = match (from, to) {
            (Some(a), Some(b)) => !self.is_cut(a, b),
            _ => true,
        };
        let counter = if ok { &self.passed } else { &self.dropped };
        counter.fetch_add(1, Ordering::Relaxed);
        ok
    }
}

/// One node's proxy: listens at the node's public Raft address and forwards to
/// its private one. Dropping it stops it.
#[derive(Debug)]
pub struct Proxy {
    pub listen: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Largest UDP payload.
const DATAGRAM_BYTES_MAX: usize = 65_535;

impl Proxy {
    /// Binds `listen` and forwards to `target`, the private Raft address of
    /// node `node`. `sources` maps every node's private Raft address to its id.
    ///
    /// # Errors
    /// When `listen` cannot be bound.
    pub async fn start(
        node: u64,
        listen: SocketAddr,
        target: SocketAddr,
        sources: HashMap<SocketAddr, u64>,
        links: Arc<Links>,
    ) -> std::io::Result<Proxy> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let listen = socket.local_addr()?;
        let task = tokio::spawn(forward(node, socket, target, Arc::new(sources), links));
        Ok(Proxy { listen, task })
    }
}

/// Forwards datagrams from peers to the node, each peer source through its own
/// upstream socket so that the node's answers can be routed back.
async fn forward(
    node: u64,
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    sources: Arc<HashMap<SocketAddr, u64>>,
    links: Arc<Links>,
) {
    let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors of earlier sends surface here on some systems; the
            // socket itself stays usable.
            Err(_) => continue,
        };
        let from = sources.get(&src).copied();
        if !links.pass(from, Some(node)) {
            continue;
        }
        let up = match upstreams.get(&src) {
            Some((up, _)) => up.clone(),
            None => {
                let up = match UdpSocket::bind("127.0.0.1:0").await {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy cannot bind an upstream socket");
                        continue;
                    }
                };
                if up.connect(target).await.is_err() {
                    continue;
                }
                let back = tokio::spawn(backward(node, from, up.clone(), socket.clone(), src, links.clone()));
                upstreams.insert(src, (up.clone(), back));
                up
            }
        };
        // A dead or paused node: the datagram is lost, as on a real network.
        let _ = up.send(buf.get(..n).unwrap_or_default()).await;
    }
}

/// Forwards the node's answers to one peer source.
async fn backward(
    node: u64,
    peer: Option<u64>,
    up: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    peer_addr: SocketAddr,
    links: Arc<Links>,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        let n = match up.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => {
                // ECONNREFUSED while the node is down: wait for it to return.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                continue;
            }
        };
        if links.pass(Some(node), peer) {
            let _ = socket.send_to(buf.get(..n).unwrap_or_default(), peer_addr).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn recv(sock: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    /// Real sockets: node 1 talks to node 2 through node 2's proxy; cutting
    /// 1 → 2 drops requests, cutting 2 → 1 drops answers, healing restores both.
    #[tokio::test]
    async fn cuts_each_direction_separately() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sources: HashMap<SocketAddr, u64> =
            [(a.local_addr().unwrap(), 1), (b.local_addr().unwrap(), 2)].into_iter().collect();
        let links = Arc::new(Links::default());
        let proxy = Proxy::start(2, "127.0.0.1:0".parse().unwrap(), b.local_addr().unwrap(), sources, links.clone())
            .await
            .unwrap();

        let round_trip = || async {
            a.send_to(b"ping", proxy.listen).await.unwrap();
            let mut buf = [0u8; 64];
            let got = match tokio::time::timeout(Duration::from_millis(200), b.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
                _ => None,
            };
            let Some((req, from)) = got else { return (false, false) };
            assert_eq!(req, b"ping");
            b.send_to(b"pong", from).await.unwrap();
            (true, recv(&a).await.as_deref() == Some(b"pong".as_slice()))
        };

        assert_eq!(round_trip().await, (true, true));
        links.set(&[(1, 2)].into_iter().collect());
        assert_eq!(round_trip().await, (false, false), "1 → 2 cut");
        links.set(&[(2, 1)].into_iter().collect());
        assert_eq!(round_trip().await, (true, false), "2 → 1 cut: the request arrives, the answer does not");
        assert_eq!(links.cut(2), [(2, 1)].into_iter().collect());
        links.heal();
        assert_eq!(round_trip().await, (true, true));
        let (dropped, passed) = links.counts();
        assert_eq!(dropped, 2);
        assert!(passed >= 5, "{passed}");
    }
}
