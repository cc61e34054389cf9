//! Chat across nodes over core NATS.
//!
//! Each event goes out as its JSON (the [`ChatEvent`] wire form) on `veza.chat.<room id>`;
//! each node subscribes once to `veza.chat.*` and feeds what it receives into its
//! [`LocalBus`]. `Created` events pass through a per-room [`Sequencer`], so that every local
//! subscriber sees one order, the store's: strictly increasing `seq`, no gaps, no repeats.
//! Gaps that last (two publishers' messages crossing, a dropped NATS message, a NATS outage)
//! are filled from the store, which numbers a room's messages without gaps in commit order.
//!
//! A node delivers its own events locally at once, before NATS sees them, so a NATS outage
//! neither delays nor loses them for local subscribers; the connection is made with `no_echo`,
//! so they do not come back. Other nodes read what they missed from the store: on every
//! (re)connection, and every [`CATCH_UP_EVERY`] for each room with local subscribers. Edits and
//! deletions are not sequenced: they pass through as they come, and one lost in an outage is
//! not read back (a client sees it at its next history read).
//!
//! Background tasks (the NATS reader, the publisher, the timer) live as long as the bus: they
//! stop when its last clone is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinHandle;
use veza_proto::RoomId;
use veza_proto::chat::{ChatEvent, ChatMessage};
use veza_store::{ChatPage, Store};

use super::LocalBus;
use super::sequencer::{Fetch, Sequencer};

/// Subjects are `veza.chat.<room id>`.
pub const SUBJECT_PREFIX: &str = "veza.chat.";

/// How often every room with local subscribers is read from the store after its last delivered
/// seq, in case NATS lost something without a reconnection to tell.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(2);

/// How often lasting gaps are looked for.
const TICK: Duration = Duration::from_millis(50);

/// Events waiting for the NATS client. When full (the connection is down long enough for the
/// client's own buffer to fill), events are dropped from NATS only: they are delivered locally
/// and other nodes read them from the store.
const OUTGOING_CAPACITY: usize = 4096;

/// Page size of store reads.
const FETCH_PAGE: i64 = 200;

/// A room's first subscriber on a node gets the messages created from this long before it
/// came: more than the clock skew between nodes and the time from a message's timestamp to
/// its commit, so that nothing sent after the subscription is missed.
const BASELINE_MARGIN_MS: i64 = 1000;

/// How far back the baseline read looks; in a room busier than this the subscriber simply
/// starts at the oldest of these.
const BASELINE_PAGE: i64 = 100;

/// Why the NATS bus could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsBusError {
    /// The first connection failed (later ones are retried forever). The URL is left out: it
    /// may hold credentials.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// The subscription to `veza.chat.*` failed.
    #[error("cannot subscribe to {SUBJECT_PREFIX}*: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// The NATS transport of [`ChatBus`](super::ChatBus). Cheap to clone; clones share the
/// connection, the local channels and the sequencers.
#[derive(Clone)]
pub struct NatsBus {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &self.shared.client.connection_state())
            .field("rooms", &self.shared.lock().len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: async_nats::Client,
    store: Store,
    local: LocalBus,
    /// A sequencer for each room with local subscribers. Deliveries happen under this lock,
    /// which keeps them in the sequencers' order.
    rooms: Mutex<HashMap<RoomId, Sequencer>>,
    outgoing: mpsc::Sender<(RoomId, Vec<u8>)>,
    runtime: tokio::runtime::Handle,
}

/// Aborts the background tasks when the last clone of the bus goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl NatsBus {
    /// Connects to the NATS server(s) at `url` (e.g. `nats://127.0.0.1:4222`, or several
    /// separated by commas) and starts the background tasks. Reconnections are automatic and
    /// retried forever, backing off up to a second.
    pub async fn connect(url: &str, store: Store) -> Result<Self, NatsBusError> {
        Self::connect_with(async_nats::ConnectOptions::new(), url, store).await
    }

    /// [`connect`](Self::connect) with client options (credentials, TLS, name…). The bus sets
    /// `no_echo`, its reconnection delay and the event callback itself.
    pub async fn connect_with(
        options: async_nats::ConnectOptions,
        url: &str,
        store: Store,
    ) -> Result<Self, NatsBusError> {
        let (client, connected) = veza_cluster::nats::connect(options, url, "chat").await?;
        let subscriber = client.subscribe(format!("{SUBJECT_PREFIX}*")).await?;
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let shared = Arc::new(Shared {
            client,
            store,
            local: LocalBus::new(),
            rooms: Mutex::new(HashMap::new()),
            outgoing,
            runtime: tokio::runtime::Handle::current(),
        });
        let tasks = Tasks(vec![
            tokio::spawn(read(Arc::clone(&shared), subscriber)),
            tokio::spawn(write(shared.client.clone(), outgoing_rx)),
            tokio::spawn(tick(Arc::downgrade(&shared), connected)),
        ]);
        Ok(Self {
            shared,
            _tasks: Arc::new(tasks),
        })
    }

    /// Delivers `event` to this node's subscribers at once and hands it to NATS without
    /// waiting for the connection.
    pub fn publish(&self, event: ChatEvent) {
        let room = event.room();
        self.shared.deliver(event.clone());
        let payload = match serde_json::to_vec(&event) {
            Ok(payload) => payload,
            Err(err) => {
                // Not reachable: the event is plain data.
                tracing::error!(%room, error = %err, "chat event not serialisable");
                return;
            }
        };
        if self.shared.outgoing.try_send((room, payload)).is_err() {
            // Happens on every event of a long outage, which is logged once already.
            tracing::debug!(
                %room,
                "chat bus: NATS backlog full, event not published (other nodes read it from the store)"
            );
        }
    }

    /// A receiver of the room's events on this node, from now on.
    pub fn subscribe(&self, room: RoomId) -> broadcast::Receiver<ChatEvent> {
        let mut rooms = self.shared.lock();
        let receiver = self.shared.local.subscribe(room);
        if let std::collections::hash_map::Entry::Vacant(entry) = rooms.entry(room) {
            let created_before = veza_store::now_ms() - BASELINE_MARGIN_MS;
            let fetch = entry
                .insert(Sequencer::new(created_before))
                .poll_fetch(Instant::now(), false);
            if let Some(fetch) = fetch {
                self.shared
                    .runtime
                    .spawn(fetch_from_store(Arc::clone(&self.shared), room, fetch));
            }
        }
        receiver
    }

    /// The NATS connection's state.
    pub fn connection_state(&self) -> async_nats::connection::State {
        self.shared.client.connection_state()
    }

    /// The underlying client (to publish test traffic, or share the connection).
    pub fn client(&self) -> &async_nats::Client {
        &self.shared.client
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<RoomId, Sequencer>> {
        // Every update is a sequencer step or a single insert or remove: valid after a panic.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers an event from this node or from NATS: `Created` through the room's sequencer,
    /// the others as they are. Rooms without local subscribers have no sequencer: their events
    /// go nowhere.
    fn deliver(&self, event: ChatEvent) {
        let mut rooms = self.lock();
        match event {
            ChatEvent::Created { message } => {
                if let Some(sequencer) = rooms.get_mut(&message.room_id) {
                    let ready = sequencer.push(Instant::now(), message);
                    self.send(ready);
                }
            }
            other => {
                self.local.publish(other);
            }
        }
    }

    /// Hands messages a sequencer released to the local subscribers (under the rooms lock).
    fn send(&self, ready: Vec<ChatMessage>) {
        for message in ready {
            self.local.publish(ChatEvent::Created { message });
        }
    }
}

/// Feeds what NATS brings into the local channels.
async fn read(shared: Arc<Shared>, mut subscriber: async_nats::Subscriber) {
    while let Some(message) = subscriber.next().await {
        let subject = message.subject.as_str();
        let event: ChatEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::debug!(%subject, error = %err, "chat bus: malformed message dropped");
                continue;
            }
        };
        let room = event.room();
        if subject.strip_prefix(SUBJECT_PREFIX) != Some(room.to_string().as_str()) {
            tracing::debug!(%subject, %room, "chat bus: event on another room's subject dropped");
            continue;
        }
        shared.deliver(event);
    }
    tracing::warn!("chat bus: NATS subscription ended");
}

/// Publishes events in order, waiting for the client as long as it takes (the queue in front
/// absorbs outages).
async fn write(client: async_nats::Client, mut outgoing: mpsc::Receiver<(RoomId, Vec<u8>)>) {
    while let Some((room, payload)) = outgoing.recv().await {
        if let Err(err) = client
            .publish(format!("{SUBJECT_PREFIX}{room}"), payload.into())
            .await
        {
            tracing::debug!(%room, error = %err, "chat bus: publish failed");
        }
    }
}

/// Drives the sequencers' store reads: lasting gaps every [`TICK`], a catch-up of every room
/// every [`CATCH_UP_EVERY`] and after every (re)connection. Also forgets the rooms whose last
/// local subscriber left. Holds the bus weakly, so that dropping the bus ends it.
async fn tick(shared: std::sync::Weak<Shared>, connected: Arc<Notify>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_catch_up = Instant::now();
    loop {
        let reconnected = tokio::select! {
            _ = ticks.tick() => false,
            () = connected.notified() => true,
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let catch_up = reconnected || now.duration_since(last_catch_up) >= CATCH_UP_EVERY;
        if catch_up {
            last_catch_up = now;
        }
        let due: Vec<(RoomId, Fetch)> = {
            let mut rooms = shared.lock();
            rooms.retain(|room, _| shared.local.subscribers(*room) > 0);
            rooms
                .iter_mut()
                .filter_map(|(room, sequencer)| {
                    sequencer.poll_fetch(now, catch_up).map(|f| (*room, f))
                })
                .collect()
        };
        for (room, fetch) in due {
            tokio::spawn(fetch_from_store(Arc::clone(&shared), room, fetch));
        }
    }
}

/// Reads what a sequencer asked for and feeds it in.
async fn fetch_from_store(shared: Arc<Shared>, room: RoomId, fetch: Fetch) {
    let ok = match fetch {
        Fetch::Baseline { created_before } => match shared
            .store
            .chat_history(room, ChatPage::Latest, BASELINE_PAGE)
            .await
        {
            Ok(newest_first) => {
                let latest = match newest_first.iter().find(|m| m.created_at < created_before) {
                    Some(m) => m.seq,
                    // All recent (or none at all): start at the oldest read.
                    None => newest_first.last().map_or(0, |m| m.seq - 1),
                };
                let mut rooms = shared.lock();
                if let Some(sequencer) = rooms.get_mut(&room) {
                    let ready = sequencer.baseline(Instant::now(), latest);
                    shared.send(ready);
                }
                true
            }
            Err(err) => {
                tracing::warn!(%room, error = %err, "chat bus: cannot read the room's newest seq");
                false
            }
        },
        Fetch::After(mut after) => loop {
            let page = match shared
                .store
                .chat_history(room, ChatPage::After(after), FETCH_PAGE)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(%room, error = %err, "chat bus: cannot read missed messages");
                    break false;
                }
            };
            let full = page.len() as i64 == FETCH_PAGE;
            let mut rooms = shared.lock();
            let Some(sequencer) = rooms.get_mut(&room) else {
                // The last subscriber left.
                return;
            };
            let now = Instant::now();
            for message in page {
                let ready = sequencer.push(now, crate::wire(message));
                shared.send(ready);
            }
            match sequencer.last() {
                Some(last) if full && last > after => after = last,
                _ => break true,
            }
        },
    };
    if let Some(sequencer) = shared.lock().get_mut(&room) {
        sequencer.fetched(Instant::now(), ok);
    }
}
