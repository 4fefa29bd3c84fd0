//! One QUIC connection per node address, each connected on its own: a slow
//! or dead node delays only the requests that go to it.
//!
//! Each address has a slot: the live connection (read without waiting) and
//! a gate held while connecting, so that concurrent requests to one address
//! share one handshake. Requests that were waiting at the gate when that
//! handshake failed get its error at once instead of dialing again one after
//! the other (a dead node would otherwise cost each of them a connect timeout
//! in turn).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::network::tls::{Principal, Role};
use crate::network::SERVER_NAME;

#[derive(Default)]
struct Slot {
    live: Mutex<Option<quinn::Connection>>,
    /// Held while connecting; holds the time and reason of the last failure.
    gate: tokio::sync::Mutex<Option<(Instant, String)>>,
}

impl Slot {
    fn live(&self) -> Option<quinn::Connection> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }
}

/// The connections of a client, by address.
pub(crate) struct Conns {
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    connect_timeout: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Conns {
    pub(crate) fn new(endpoint: quinn::Endpoint, quic: quinn::ClientConfig, connect_timeout: Duration) -> Conns {
        Conns { endpoint, quic, connect_timeout, slots: Mutex::new(HashMap::new()) }
    }

    fn slot(&self, addr: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(addr.to_string()).or_default().clone()
    }

    /// The live connection to `addr`, connecting if there is none.
    ///
    /// # Errors
    /// Why no connection could be made (nothing was sent to the node).
    pub(crate) async fn get(&self, addr: &str) -> Result<quinn::Connection, String> {
        let slot = self.slot(addr);
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        let asked = Instant::now();
        let mut gate = slot.gate.lock().await;
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        if let Some((at, why)) = gate.as_ref() {
            if *at >= asked {
                return Err(why.clone());
            }
        }
        match self.connect(addr).await {
            Ok(c) => {
                *gate = None;
                *slot.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                Ok(c)
            }
            Err(why) => {
                *gate = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    /// Drops the connection `conn` to `addr` (if it is still the slot's), so
    /// that the next request dials afresh: a peer that answered nothing may
    /// have been killed, its connection looking alive until the idle timeout.
    pub(crate) fn forget(&self, addr: &str, conn: &quinn::Connection) {
        let slot = self.slot(addr);
        let mut live = slot.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.as_ref().is_some_and(|c| c.stable_id() == conn.stable_id()) {
            *live = None;
        }
    }

    async fn connect(&self, addr: &str) -> Result<quinn::Connection, String> {
        let dial = async {
            let sock: SocketAddr = tokio::net::lookup_host(addr)
                .await
                .map_err(|e| e.to_string())?
                .next()
                .ok_or_else(|| "no address".to_string())?;
            let connecting =
                self.endpoint.connect_with(self.quic.clone(), sock, SERVER_NAME).map_err(|e| e.to_string())?;
            connecting.await.map_err(|e| e.to_string())
        };
        let conn = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| format!("connecting to {addr}: no handshake within {:?}", self.connect_timeout))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        // The handshake checked the chain and `serverAuth`; this checks that the
        // server is a log-node and not, say, another certificate of the CA.
        match Principal::of_connection(&conn) {
            Ok(p) if p.role == Role::Node => Ok(conn),
            Ok(p) => Err(format!("connecting to {addr}: the server is {p}, not a log-node")),
            Err(e) => Err(format!("connecting to {addr}: {e}")),
        }
    }
}
