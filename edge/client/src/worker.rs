//! The worker: the task that drives a client's [`Core`] with quinn. A thin
//! shell: it turns the app's calls, the link's streams and the timer into
//! core inputs, and performs the core's outputs (connect, write, close,
//! hand over events and answers). Every decision is the core's.

use std::collections::HashMap;
use std::future::{pending, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chorus_schema::{ClientMsgId, ServerFrame};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::client::{lock, Command, Shared};
use crate::conn::{Core, LinkId, Output};
use crate::link::{read_frame, Frames, Link};
use crate::types::{Event, Result, Sent};

/// A caller waiting for an answer, holding its slot of the commands queue.
struct Waiter<T> {
    reply: oneshot::Sender<Result<T>>,
    _slot: OwnedSemaphorePermit,
}

type Opening = Pin<Box<dyn Future<Output = Result<Link>> + Send>>;

/// The open link (once the core's attempt succeeded).
struct Open {
    id: LinkId,
    link: Link,
    deliveries: Option<quinn::RecvStream>,
    dframes: Frames,
    /// The delivery stream ended: it is not read (nor accepted) again.
    delivery_ended: bool,
}

/// What woke the worker.
enum Wake {
    Command(Option<Command>),
    Signals,
    Opened(LinkId, Result<Link>),
    Control(LinkId, Result<ServerFrame>),
    DeliveryStream(LinkId, Result<quinn::RecvStream, quinn::ConnectionError>),
    Delivery(LinkId, Result<ServerFrame>),
    Timer,
}

pub(crate) struct Worker {
    core: Core,
    /// The core's time 0.
    start: Instant,
    endpoint: quinn::Endpoint,
    quic: quinn::ClientConfig,
    events: mpsc::Sender<Event>,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    /// Answered once: the first login, or why there was none.
    ready: Option<oneshot::Sender<Result<()>>>,
    sends: HashMap<ClientMsgId, Vec<Waiter<Sent>>>,
    requests: HashMap<ClientMsgId, Waiter<crate::types::Answer>>,
    /// `Client::devices` calls waiting (linked devices, issue 12).
    device_lists: HashMap<ClientMsgId, Waiter<Vec<chorus_schema::edge::DeviceInfo>>>,
    opening: Option<(LinkId, Opening)>,
    open: Option<Open>,
}

impl Worker {
    pub(crate) fn new(
        core: Core,
        endpoint: quinn::Endpoint,
        quic: quinn::ClientConfig,
        events: mpsc::Sender<Event>,
        commands: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
        ready: oneshot::Sender<Result<()>>,
    ) -> Worker {
        Worker {
            core,
            start: Instant::now(),
            endpoint,
            quic,
            events,
            commands,
            shared,
            ready: Some(ready),
            sends: HashMap::new(),
            requests: HashMap::new(),
            device_lists: HashMap::new(),
            opening: None,
            open: None,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) async fn run(mut self) {
        while !self.perform().await {
            let wake = self.wait().await;
            self.handle(wake);
        }
    }

    /// Performs the core's outputs; true once it stopped.
    async fn perform(&mut self) -> bool {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Connect { link, edge } => {
                    if let Some(old) = self.open.take() {
                        old.link.conn.close(0u32.into(), b"superseded");
                    }
                    let opening: Opening = Box::pin(Link::open(self.endpoint.clone(), self.quic.clone(), edge));
                    self.opening = Some((link, opening));
                }
                Output::Send(frame) => {
                    if let Some(open) = &mut self.open {
                        if let Err(e) = open.link.write(&frame).await {
                            let (id, now) = (open.id, self.now_ms());
                            self.core.handle_link_down(now, id, &e.to_string());
                        }
                    }
                }
                Output::Disconnect { link, reason } => {
                    if self.open.as_ref().is_some_and(|o| o.id == link) {
                        if let Some(open) = self.open.take() {
                            open.link.conn.close(0u32.into(), reason.as_bytes());
                        }
                    }
                    if self.opening.as_ref().is_some_and(|(id, _)| *id == link) {
                        self.opening = None;
                    }
                }
                Output::Event(event) => {
                    if let Event::Message(m) = &event {
                        lock(&self.shared.positions).insert(m.chat, m.seq);
                    }
                    if matches!(event, Event::Connected { .. }) {
                        *lock(&self.shared.media_conn) = self.open.as_ref().map(|o| o.link.conn.clone());
                        self.shared.connected.notify_waiters();
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                    // Back-pressure: a full events queue stops the worker
                    // (and so the reading of the edge's streams).
                    let _ = self.events.send(event).await;
                }
                Output::SendDone { client_msg_id, result } => {
                    for w in self.sends.remove(&client_msg_id).unwrap_or_default() {
                        let _ = w.reply.send(result.clone());
                    }
                }
                Output::RequestDone { client_msg_id, result } => {
                    if let Some(w) = self.requests.remove(&client_msg_id) {
                        let _ = w.reply.send(result);
                    } else if let Some(w) = self.device_lists.remove(&client_msg_id) {
                        let result =
                            result.and_then(|_| Err(crate::Error::Protocol("ListDevices answered Done".into())));
                        let _ = w.reply.send(result);
                    }
                }
                Output::DevicesListed { client_msg_id, devices } => {
                    if let Some(w) = self.device_lists.remove(&client_msg_id) {
                        let _ = w.reply.send(Ok(devices));
                    }
                }
                Output::Stopped(error) => {
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(error));
                    }
                    self.store_stats();
                    return true;
                }
            }
        }
        self.store_stats();
        false
    }

    fn store_stats(&self) {
        let (s, stats) = (&self.shared.stats, self.core.stats());
        s.connects.store(stats.connects, Ordering::Relaxed);
        s.resent.store(stats.resent, Ordering::Relaxed);
        s.duplicates_dropped.store(stats.duplicates_dropped, Ordering::Relaxed);
    }

    /// Waits for the next input. Every branch is cancel-safe.
    async fn wait(&mut self) -> Wake {
        let deadline = self.core.poll_timeout().map(|ms| self.start + Duration::from_millis(ms));
        let Worker { commands, shared, opening, open, .. } = self;
        let (mut control, mut accept, mut delivery) = (None, None, None);
        if let Some(Open { id, link, deliveries, dframes, delivery_ended }) = open {
            if !*delivery_ended {
                match deliveries {
                    Some(stream) => delivery = Some((*id, stream, dframes)),
                    None => accept = Some((*id, link.conn.clone())),
                }
            }
            control = Some((*id, link));
        }
        tokio::select! {
            c = commands.recv() => Wake::Command(c),
            () = shared.signalled.notified() => Wake::Signals,
            (id, r) = opened(opening.as_mut()) => Wake::Opened(id, r),
            (id, r) = read_control(control) => Wake::Control(id, r),
            (id, r) = accept_deliveries(accept) => Wake::DeliveryStream(id, r),
            (id, r) = read_delivery(delivery) => Wake::Delivery(id, r),
            () = sleep_until(deadline) => Wake::Timer,
        }
    }

    fn handle(&mut self, wake: Wake) {
        let now = self.now_ms();
        match wake {
            Wake::Command(None) => self.core.close(),
            Wake::Command(Some(Command::Send {
                to,
                client_msg_id,
                ciphertext,
                media,
                devices_digest,
                reply,
                permit,
            })) => {
                let waiters = self.sends.entry(client_msg_id).or_default();
                // Callers that gave up (a timeout around `send`) free their slot.
                waiters.retain(|w| !w.reply.is_closed());
                waiters.push(Waiter { reply, _slot: permit });
                self.core.send_with(to, client_msg_id, ciphertext, media, devices_digest);
            }
            Wake::Command(Some(Command::Request { client_msg_id, request, reply, permit })) => {
                self.requests.insert(client_msg_id, Waiter { reply, _slot: permit });
                self.core.request(client_msg_id, request);
            }
            Wake::Command(Some(Command::Devices { client_msg_id, reply, permit })) => {
                self.device_lists.insert(client_msg_id, Waiter { reply, _slot: permit });
                self.core.request(client_msg_id, crate::conn::Request::ListDevices);
            }
            Wake::Signals => {
                let signals = std::mem::take(&mut *lock(&self.shared.signals));
                for ((chat, kind), up_to_seq) in signals.acks {
                    self.core.ack(chat, kind, up_to_seq);
                }
                if let Some(users) = signals.watch {
                    self.core.subscribe_presence(users);
                }
                for (chat, typing) in signals.typing {
                    self.core.typing(chat, typing);
                }
                if signals.sync {
                    self.core.sync();
                }
                if signals.reconnect {
                    self.core.reconnect(now);
                }
                if signals.close {
                    self.core.close();
                }
            }
            Wake::Opened(id, result) => {
                self.opening = None;
                match result {
                    Ok(link) => {
                        self.open = Some(Open {
                            id,
                            link,
                            deliveries: None,
                            dframes: Frames::default(),
                            delivery_ended: false,
                        });
                        self.core.handle_link_up(now, id);
                    }
                    Err(e) => self.core.handle_link_down(now, id, &e.to_string()),
                }
            }
            Wake::Control(id, Ok(frame)) => self.core.handle_control(now, id, frame),
            Wake::Control(id, Err(e)) => self.core.handle_link_down(now, id, &e.to_string()),
            Wake::DeliveryStream(id, Ok(stream)) => {
                if let Some(open) = self.open.as_mut().filter(|o| o.id == id) {
                    open.deliveries = Some(stream);
                }
            }
            Wake::DeliveryStream(id, Err(e)) => self.core.handle_link_down(now, id, &e.to_string()),
            Wake::Delivery(id, Ok(frame)) => self.core.handle_delivery_at(now, id, frame),
            Wake::Delivery(id, Err(e)) => {
                if let Some(open) = self.open.as_mut().filter(|o| o.id == id) {
                    open.deliveries = None;
                    open.delivery_ended = true;
                }
                self.core.handle_delivery_ended(now, id, &e.to_string());
            }
            Wake::Timer => self.core.handle_timeout(now),
        }
    }
}

async fn opened(opening: Option<&mut (LinkId, Opening)>) -> (LinkId, Result<Link>) {
    match opening {
        Some((id, f)) => (*id, f.as_mut().await),
        None => pending().await,
    }
}

async fn read_control(link: Option<(LinkId, &mut Link)>) -> (LinkId, Result<ServerFrame>) {
    match link {
        Some((id, link)) => (id, link.read().await),
        None => pending().await,
    }
}

async fn accept_deliveries(
    conn: Option<(LinkId, quinn::Connection)>,
) -> (LinkId, Result<quinn::RecvStream, quinn::ConnectionError>) {
    match conn {
        // The edge opens the delivery stream after the login; QUIC streams
        // appear when their first data arrives.
        Some((id, conn)) => (id, conn.accept_uni().await),
        None => pending().await,
    }
}

async fn read_delivery(stream: Option<(LinkId, &mut quinn::RecvStream, &mut Frames)>) -> (LinkId, Result<ServerFrame>) {
    match stream {
        Some((id, stream, frames)) => (id, read_frame(stream, frames).await),
        None => pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => pending().await,
    }
}
