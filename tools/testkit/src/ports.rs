//! Loopback ports for processes a test starts later.
//!
//! The usual trick — bind port 0, read the port, close the socket, hand the
//! number to a child process — races with every other socket bound to port 0
//! meanwhile: the kernel may give the just-closed port to a QUIC client, a
//! proxy's upstream socket or another test's probe before the child binds it,
//! and the child then dies with "address in use". With five clusters starting
//! in parallel this happened in CI (a node never came up).
//!
//! So ports here come from *below* the kernel's ephemeral range, which port-0
//! binds never use. Within a process an atomic cursor hands each port out
//! once; across processes each starts at an offset derived from its pid, and
//! every candidate must be bindable for both UDP and TCP when it is handed out.
//! When the ephemeral range leaves no room below it, this falls back to
//! probing port 0.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out (above the well-known and most registered ports).
const FLOOR: u16 = 10_000;
/// Fewer free ports than this below the ephemeral range: fall back to port 0.
const ROOM_MIN: u16 = 2_000;

/// The kernel's ephemeral range `[low, high]` (Linux), or the IANA default.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((49_152, 65_535))
}

/// The range this process draws from, `[start, end)`, if there is room.
fn range() -> Option<(u16, u16)> {
    static RANGE: OnceLock<Option<(u16, u16)>> = OnceLock::new();
    *RANGE.get_or_init(|| {
        let (low, _) = ephemeral_range();
        (low > FLOOR && low - FLOOR >= ROOM_MIN).then_some((FLOOR, low))
    })
}

/// How many ports this process has handed out (the cursor).
static NEXT: AtomicU32 = AtomicU32::new(0);

fn bindable(port: u16) -> bool {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    UdpSocket::bind(addr).is_ok() && TcpListener::bind(addr).is_ok()
}

fn probe_ephemeral() -> std::io::Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// A port on 127.0.0.1, free for UDP and TCP when returned, that this process
/// has not handed out before and that no port-0 bind will be given.
///
/// # Errors
/// When no free port is found (every candidate taken).
pub fn free_port() -> std::io::Result<u16> {
    let Some((start, end)) = range() else { return probe_ephemeral() };
    let span = u32::from(end - start);
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // Below `span`, a u16.
        let port = start + u16::try_from((offset + n) % span).unwrap_or(0);
        if bindable(port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("no free port in {start}..{end}")))
}

/// [`free_port`] as a loopback socket address.
///
/// # Errors
/// As [`free_port`].
pub fn free_addr() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let (low, _) = ephemeral_range();
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for p in &ports {
            if range().is_some() {
                assert!(*p >= FLOOR && *p < low, "{p} is not in {FLOOR}..{low}");
            }
            // Still free: nothing bound it since.
            UdpSocket::bind((Ipv4Addr::LOCALHOST, *p)).unwrap();
        }
    }

    #[test]
    fn a_taken_port_is_skipped() {
        let taken = free_port().unwrap();
        let _hold = UdpSocket::bind((Ipv4Addr::LOCALHOST, taken)).unwrap();
        // The cursor wraps the whole range at most once; the held port is
        // never returned while held.
        for _ in 0..50 {
            assert_ne!(free_port().unwrap(), taken);
        }
    }
}
