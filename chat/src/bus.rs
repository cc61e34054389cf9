//! Fan-out of chat events to the subscribers of a room.
//!
//! [`ChatBus`] hides the transport from callers: [`ChatBus::subscribe`] returns a plain
//! broadcast receiver of the room's events on this node, whichever the variant.
//!
//! - [`ChatBus::Local`]: one process, one broadcast channel per room.
//! - [`ChatBus::Nats`]: several nodes; events go out on `veza.chat.<room id>` and come back
//!   into the same local channels, with `Created` events in the store's `seq` order on every
//!   node (see [`NatsBus`]).

mod nats;
mod sequencer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;
use veza_proto::RoomId;
use veza_proto::chat::ChatEvent;
use veza_store::Store;

pub use nats::{CATCH_UP_EVERY, NatsBus, NatsBusError, SUBJECT_PREFIX};
pub use sequencer::GAP_WAIT;

/// Events buffered per room for a subscriber that falls behind. A subscriber that lags by more
/// gets [`broadcast::error::RecvError::Lagged`] and should catch up from the history
/// (`after` the last seq it holds).
pub const ROOM_CHANNEL_CAPACITY: usize = 1024;

/// Where chat events go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ChatBus {
    /// In-process: one broadcast channel per room, for a single node.
    Local(LocalBus),
    /// Across nodes over NATS, in one order everywhere.
    Nats(NatsBus),
}

impl ChatBus {
    /// The in-process bus.
    pub fn local() -> Self {
        ChatBus::Local(LocalBus::new())
    }

    /// The NATS bus, connected to `url` (see [`NatsBus::connect`]); `store` is the one the
    /// chat service writes to, read back to fill gaps.
    pub async fn nats(url: &str, store: Store) -> Result<Self, NatsBusError> {
        Ok(ChatBus::Nats(NatsBus::connect(url, store).await?))
    }

    /// Delivers `event` to every current subscriber of its room. Asynchronous so that a
    /// network transport fits behind the same call; it never waits for the network.
    pub async fn publish(&self, event: ChatEvent) {
        match self {
            ChatBus::Local(bus) => {
                bus.publish(event);
            }
            ChatBus::Nats(bus) => bus.publish(event),
        }
    }

    /// A receiver of every event published in `room` from now on.
    pub fn subscribe(&self, room: RoomId) -> broadcast::Receiver<ChatEvent> {
        match self {
            ChatBus::Local(bus) => bus.subscribe(room),
            ChatBus::Nats(bus) => bus.subscribe(room),
        }
    }
}

/// One tokio broadcast channel per room, created by the first subscriber and dropped once it
/// has no receivers left (noticed when publishing, or when the map is swept as it grows).
/// Cheap to clone; clones share the channels.
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    rooms: Arc<Mutex<Rooms>>,
}

#[derive(Debug)]
struct Rooms {
    channels: HashMap<RoomId, broadcast::Sender<ChatEvent>>,
    /// Sweep channels without receivers when the map reaches this size.
    sweep_at: usize,
}

impl Default for Rooms {
    fn default() -> Self {
        Self {
            channels: HashMap::new(),
            sweep_at: 64,
        }
    }
}

impl LocalBus {
    /// A bus with no channels.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        // Every update of the map is a single insert or remove: it is valid after a panic.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `event` to its room's subscribers; returns how many there were.
    pub fn publish(&self, event: ChatEvent) -> usize {
        let room = event.room();
        let Some(channel) = self.lock().channels.get(&room).cloned() else {
            return 0;
        };
        match channel.send(event) {
            Ok(receivers) => receivers,
            Err(_) => {
                // Nobody listens any more: forget the channel, unless someone subscribed
                // meanwhile.
                let mut rooms = self.lock();
                if rooms
                    .channels
                    .get(&room)
                    .is_some_and(|c| c.receiver_count() == 0)
                {
                    rooms.channels.remove(&room);
                }
                0
            }
        }
    }

    /// A receiver of the room's events, creating the room's channel if needed.
    pub fn subscribe(&self, room: RoomId) -> broadcast::Receiver<ChatEvent> {
        let mut rooms = self.lock();
        if rooms.channels.len() >= rooms.sweep_at {
            rooms.channels.retain(|_, c| c.receiver_count() > 0);
            rooms.sweep_at = (rooms.channels.len() * 2).max(64);
        }
        rooms
            .channels
            .entry(room)
            .or_insert_with(|| broadcast::channel(ROOM_CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// How many receivers the room's channel has.
    pub fn subscribers(&self, room: RoomId) -> usize {
        self.lock()
            .channels
            .get(&room)
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// How many rooms have a channel.
    pub fn rooms(&self) -> usize {
        self.lock().channels.len()
    }
}

#[cfg(test)]
mod tests {
    use veza_proto::chat::ChatMessage;
    use veza_proto::{MessageId, UserId};

    use super::*;

    fn event(room: RoomId, seq: i64) -> ChatEvent {
        ChatEvent::Created {
            message: ChatMessage {
                id: MessageId::new(),
                seq,
                room_id: room,
                user_id: UserId::new(),
                username: "u".into(),
                text: "t".into(),
                created_at: 0,
                edited_at: None,
                deleted: false,
            },
        }
    }

    #[test]
    fn channels_come_and_go_with_subscribers() {
        let bus = LocalBus::new();
        let (room, other) = (RoomId::new(), RoomId::new());
        assert_eq!(bus.publish(event(room, 1)), 0, "no channel, nobody reached");
        assert_eq!(bus.rooms(), 0, "publishing creates no channel");

        let mut a = bus.subscribe(room);
        let mut b = bus.subscribe(room);
        let mut elsewhere = bus.subscribe(other);
        assert_eq!(bus.rooms(), 2);
        assert_eq!(bus.publish(event(room, 2)), 2);
        assert_eq!(a.try_recv().expect("a").message().seq, 2);
        assert_eq!(b.try_recv().expect("b").message().seq, 2);
        assert!(elsewhere.try_recv().is_err(), "rooms are separate");

        drop((a, b));
        assert_eq!(bus.publish(event(room, 3)), 0);
        assert_eq!(
            bus.rooms(),
            1,
            "the room's channel went with its last receiver"
        );
    }

    #[test]
    fn abandoned_channels_are_swept_as_the_map_grows() {
        let bus = LocalBus::new();
        let keep = bus.subscribe(RoomId::new());
        for _ in 0..1000 {
            drop(bus.subscribe(RoomId::new()));
        }
        assert!(bus.rooms() <= 64, "{} channels", bus.rooms());
        drop(keep);
    }
}
