//! Waiting on an SDK client's events, for tests of the whole pipeline.

use std::time::Duration;

use chorus_client::{ChatChange, Error, Event, Message};
use chorus_schema::EdgeErrorCode;
use tokio::sync::mpsc::Receiver;

/// Waits for the `Synced` event (the sync after a (re)connect is over) and
/// returns the messages that came before it.
///
/// # Panics
/// When the client stops, or nothing arrives for 30 s.
pub async fn synced(events: &mut Receiver<Event>) -> Vec<Message> {
    let mut before = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Synced { .. })) => return before,
            Ok(Some(Event::Message(m))) => before.push(m),
            Ok(Some(_)) => {}
            other => panic!("no sync: {other:?}"),
        }
    }
}

/// Receives events until `n` messages came.
///
/// # Panics
/// When the client stops, or `timeout` passes without any event.
pub async fn messages(events: &mut Receiver<Event>, n: usize, timeout: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(timeout, events.recv()).await {
            Ok(Some(Event::Message(m))) => out.push(m),
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped after {} of {n} messages", out.len()),
            Err(_) => panic!("only {} of {n} messages arrived", out.len()),
        }
    }
    out
}

/// Receives events until `n` group changes came (messages in between are
/// dropped).
///
/// # Panics
/// When the client stops, or `timeout` passes without any event.
pub async fn changes(events: &mut Receiver<Event>, n: usize, timeout: Duration) -> Vec<ChatChange> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(timeout, events.recv()).await {
            Ok(Some(Event::ChatChange(c))) => out.push(c),
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped after {} of {n} group changes", out.len()),
            Err(_) => panic!("only {} of {n} group changes arrived: {out:?}", out.len()),
        }
    }
    out
}

/// The code and message of a refused request.
///
/// # Panics
/// When `r` is not a refusal.
pub fn refused<T: std::fmt::Debug>(r: Result<T, Error>) -> (EdgeErrorCode, String) {
    match r {
        Err(Error::Refused { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
