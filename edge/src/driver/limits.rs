//! [`Limits`]: the edge-wide and per-source-address connection counts,
//! taken at a connection's first packet and given back when it ends.
//!
//! The edge asks an unvalidated client for QUIC Retry first (one round trip;
//! quinn's clients do it by themselves), so a source address that reaches
//! [`Limits::admit`] has shown that it receives packets sent to it: a flood
//! of spoofed first packets costs the edge one stateless Retry packet each
//! and never a slot. Handshakes in progress hold a slot like established
//! connections, so a client that opens handshakes and never finishes them
//! cannot get around the cap.
//!
//! An IPv6 source counts by its /64: one host usually has a whole /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The source an address counts as (IPv6 by /64; an IPv4-mapped IPv6 address
/// as its IPv4 address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Source::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Why [`Limits::admit`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The edge holds `connections_max` connections.
    Full,
    /// The source holds `connections_per_address_max` connections.
    Address,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_source: HashMap<Source, usize>,
}

/// See the module docs. Cheap to clone (shared counts).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    counts: Arc<Mutex<Counts>>,
    total_max: usize,
    per_source_max: usize,
}

/// One connection's place in the counts; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    counts: Arc<Mutex<Counts>>,
    source: Source,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = crate::lock(&self.counts);
        c.total -= 1;
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

impl Limits {
    pub(crate) fn new(total_max: usize, per_source_max: usize) -> Limits {
        Limits { counts: Arc::default(), total_max, per_source_max }
    }

    /// A slot for a new connection from `ip`, unless a cap is reached.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        let source = Source::from(ip);
        let mut c = crate::lock(&self.counts);
        if c.total >= self.total_max {
            return Err(Refusal::Full);
        }
        let n = c.by_source.entry(source).or_insert(0);
        if *n >= self.per_source_max {
            return Err(Refusal::Address);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot { counts: self.counts.clone(), source })
    }

    /// Connections held now, handshakes included.
    pub(crate) fn held(&self) -> usize {
        crate::lock(&self.counts).total
    }

    /// Connections held now from `ip`'s source.
    #[cfg(test)]
    pub(crate) fn held_from(&self, ip: IpAddr) -> usize {
        crate::lock(&self.counts).by_source.get(&Source::from(ip)).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_caps_hold_and_slots_come_back_on_drop() {
        let limits = Limits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::Address);
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refusal::Full);
        assert_eq!((limits.held(), limits.held_from(a)), (3, 2));
        drop(a1);
        assert_eq!((limits.held(), limits.held_from(a)), (2, 1));
        let _a3 = limits.admit(a).unwrap();
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let limits = Limits::new(100, 1);
        let _x = limits.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(limits.admit("2001:db8:1:2:ffff::9".parse().unwrap()).unwrap_err(), Refusal::Address);
        let _y = limits.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = limits.admit("192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(limits.admit("::ffff:192.0.2.7".parse().unwrap()).unwrap_err(), Refusal::Address);
    }
}
