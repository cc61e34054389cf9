//! One room's order of delivery on one node, as a state machine without I/O: it is fed
//! `Created` messages from anywhere (the node's own sends, NATS, the store) in any order, and
//! hands back the ones to deliver, in strictly increasing `seq` without gaps or repeats. It
//! never reads the clock; the caller passes `now` and asks [`Sequencer::poll_fetch`] what to
//! read from the store.
//!
//! The store numbers a room's messages 1, 2, 3, … in commit order without gaps (see
//! `veza_store`'s chat module), so a message held above a gap means the missing ones are
//! committed and can be read back `After` the last delivered seq.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use veza_proto::chat::ChatMessage;

/// How long a gap may last before the missing messages are read from the store. NATS delivers
/// the messages of two publishers in any order, so a short wait usually fills the gap by itself.
pub const GAP_WAIT: Duration = Duration::from_millis(250);

/// Messages held above a gap at most; more are dropped and read back from the store later.
pub(crate) const MAX_HELD: usize = 4096;

/// What the sequencer needs from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Where delivery starts: the newest seq of the messages created before this time (ms
    /// since the Unix epoch), the subscription's time less a margin for clock skew.
    Baseline {
        /// Milliseconds since the Unix epoch.
        created_before: i64,
    },
    /// The messages after this seq, oldest first.
    After(i64),
}

#[derive(Debug)]
pub(crate) struct Sequencer {
    /// The last seq delivered; `None` until the baseline is known.
    last: Option<i64>,
    /// Messages received above `last + 1`.
    held: BTreeMap<i64, ChatMessage>,
    /// Since when `held` is not empty without progress.
    gap_since: Option<Instant>,
    /// A store read is under way: ask for no other.
    fetching: bool,
    /// See [`Fetch::Baseline`].
    created_before: i64,
}

impl Sequencer {
    /// A room's sequencer that does not know its baseline yet (it holds everything until
    /// [`baseline`](Self::baseline)): it will start with the messages created from
    /// `created_before` (ms since the Unix epoch) on.
    pub(crate) fn new(created_before: i64) -> Self {
        Self {
            last: None,
            held: BTreeMap::new(),
            gap_since: None,
            fetching: false,
            created_before,
        }
    }

    /// The last seq delivered.
    pub(crate) fn last(&self) -> Option<i64> {
        self.last
    }

    /// Delivery starts after `latest`, the room's newest seq created before the first
    /// subscriber came ([`Fetch::Baseline`]) — or earlier, at the oldest message already held
    /// (it arrived after the subscription, and every seq below it is committed, so none is
    /// missing for good). Starting early only delivers a few messages the subscriber may
    /// already have; clients key messages by seq.
    pub(crate) fn baseline(&mut self, now: Instant, latest: i64) -> Vec<ChatMessage> {
        if self.last.is_some() {
            return Vec::new();
        }
        let first_held = self.held.keys().next().map_or(i64::MAX, |seq| seq - 1);
        self.last = Some(latest.min(first_held).max(0));
        self.drain(now)
    }

    /// A `Created` message from anywhere: returns what to deliver now, in order.
    pub(crate) fn push(&mut self, now: Instant, message: ChatMessage) -> Vec<ChatMessage> {
        if self.last.is_some_and(|last| message.seq <= last) || message.seq < 1 {
            return Vec::new();
        }
        let next = self.last.is_some_and(|last| message.seq == last + 1);
        if self.held.len() >= MAX_HELD && !next && !self.held.contains_key(&message.seq) {
            // Read back from the store once the gap below is filled.
            tracing::debug!(seq = message.seq, "chat sequencer full: message dropped");
            return Vec::new();
        }
        self.held.entry(message.seq).or_insert(message);
        self.drain(now)
    }

    /// Starts a store read, when one is due: the baseline while it is unknown, the messages
    /// after the last delivered when a gap lasted [`GAP_WAIT`] or when `catch_up` (after a
    /// reconnect, and periodically). Call [`fetched`](Self::fetched) when it is over.
    pub(crate) fn poll_fetch(&mut self, now: Instant, catch_up: bool) -> Option<Fetch> {
        if self.fetching {
            return None;
        }
        let fetch = match self.last {
            // Before the baseline, `gap_since` only marks a failed read.
            None if !catch_up
                && self
                    .gap_since
                    .is_some_and(|since| now.saturating_duration_since(since) < GAP_WAIT) =>
            {
                return None;
            }
            None => Fetch::Baseline {
                created_before: self.created_before,
            },
            Some(last) => {
                let gap = self
                    .gap_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= GAP_WAIT);
                if !gap && !catch_up {
                    return None;
                }
                Fetch::After(last)
            }
        };
        self.fetching = true;
        Some(fetch)
    }

    /// A store read is over (the messages it found go through [`push`](Self::push)). After a
    /// failure the gap, if any, waits [`GAP_WAIT`] again before the next read.
    pub(crate) fn fetched(&mut self, now: Instant, ok: bool) {
        self.fetching = false;
        if !ok && (self.last.is_none() || self.gap_since.is_some()) {
            self.gap_since = Some(now);
        }
    }

    fn drain(&mut self, now: Instant) -> Vec<ChatMessage> {
        let Some(mut last) = self.last else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            let seq = *entry.key();
            if seq <= last {
                entry.remove();
            } else if seq == last + 1 {
                out.push(entry.remove());
                last = seq;
            } else {
                break;
            }
        }
        self.last = Some(last);
        self.gap_since = match (self.held.is_empty(), out.is_empty()) {
            (true, _) => None,
            // Progress: a new gap, a new wait.
            (false, false) => Some(now),
            (false, true) => self.gap_since.or(Some(now)),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use veza_proto::{MessageId, RoomId, UserId};

    use super::*;

    fn message(seq: i64) -> ChatMessage {
        ChatMessage {
            id: MessageId::new(),
            seq,
            room_id: RoomId::new(),
            user_id: UserId::new(),
            username: "u".into(),
            text: "t".into(),
            created_at: 0,
            edited_at: None,
            deleted: false,
        }
    }

    fn seqs(messages: Vec<ChatMessage>) -> Vec<i64> {
        messages.into_iter().map(|m| m.seq).collect()
    }

    #[test]
    fn holds_until_the_baseline_then_delivers_in_order() {
        let now = Instant::now();
        let mut s = Sequencer::new(0);
        assert_eq!(
            s.poll_fetch(now, false),
            Some(Fetch::Baseline { created_before: 0 })
        );
        assert_eq!(s.poll_fetch(now, false), None, "one read at a time");
        assert!(s.push(now, message(7)).is_empty());
        assert!(s.push(now, message(6)).is_empty());
        // 5 was the newest when the subscriber came, 6 and 7 came after.
        assert_eq!(seqs(s.baseline(now, 5)), [6, 7]);
        s.fetched(now, true);
        assert_eq!(s.last(), Some(7));
        assert_eq!(s.poll_fetch(now, false), None, "nothing missing");
    }

    #[test]
    fn messages_held_before_the_baseline_are_not_lost() {
        let now = Instant::now();
        let mut s = Sequencer::new(0);
        assert!(s.push(now, message(4)).is_empty());
        // The baseline read saw 5 committed already: 4 and 5 are delivered all the same.
        assert_eq!(seqs(s.baseline(now, 5)), [4]);
        assert_eq!(seqs(s.push(now, message(5))), [5]);
        assert_eq!(s.last(), Some(5));
    }

    #[test]
    fn reorders_and_drops_repeats() {
        let now = Instant::now();
        let mut s = Sequencer::new(0);
        assert!(s.baseline(now, 0).is_empty());
        assert_eq!(seqs(s.push(now, message(1))), [1]);
        assert!(s.push(now, message(3)).is_empty());
        assert!(s.push(now, message(3)).is_empty());
        assert!(s.push(now, message(1)).is_empty());
        assert_eq!(seqs(s.push(now, message(2))), [2, 3]);
        assert!(s.push(now, message(2)).is_empty());
        assert!(s.push(now, message(0)).is_empty());
        assert_eq!(seqs(s.push(now, message(4))), [4]);
    }

    #[test]
    fn a_lasting_gap_asks_the_store() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(0);
        assert!(s.baseline(t0, 10).is_empty());
        assert!(s.push(t0, message(12)).is_empty());
        assert_eq!(s.poll_fetch(t0 + GAP_WAIT / 2, false), None, "not yet");
        assert_eq!(
            s.poll_fetch(t0 + GAP_WAIT, false),
            Some(Fetch::After(10)),
            "the gap lasted"
        );
        s.fetched(t0 + GAP_WAIT, false);
        assert_eq!(
            s.poll_fetch(t0 + GAP_WAIT, false),
            None,
            "a failed read waits again"
        );
        let t1 = t0 + GAP_WAIT * 2;
        assert_eq!(s.poll_fetch(t1, false), Some(Fetch::After(10)));
        assert_eq!(seqs(s.push(t1, message(11))), [11, 12]);
        s.fetched(t1, true);
        assert_eq!(s.poll_fetch(t1 + GAP_WAIT * 10, false), None);
        assert_eq!(
            s.poll_fetch(t1, true),
            Some(Fetch::After(12)),
            "a catch-up reads even without a gap"
        );
    }

    #[test]
    fn progress_restarts_the_wait() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(0);
        assert!(s.baseline(t0, 0).is_empty());
        assert!(s.push(t0, message(2)).is_empty());
        assert!(s.push(t0, message(4)).is_empty());
        let t1 = t0 + GAP_WAIT;
        assert_eq!(seqs(s.push(t1, message(1))), [1, 2]);
        assert_eq!(s.poll_fetch(t1, false), None, "3 is a new gap");
        assert_eq!(s.poll_fetch(t1 + GAP_WAIT, false), Some(Fetch::After(2)));
    }

    #[test]
    fn the_held_buffer_is_bounded() {
        let now = Instant::now();
        let mut s = Sequencer::new(0);
        assert!(s.baseline(now, 0).is_empty());
        for seq in 2..(MAX_HELD as i64 + 10) {
            assert!(s.push(now, message(seq)).is_empty());
        }
        let delivered = seqs(s.push(now, message(1)));
        assert_eq!(delivered.len(), MAX_HELD + 1);
        assert_eq!(delivered.last(), Some(&(MAX_HELD as i64 + 1)));
    }
}
