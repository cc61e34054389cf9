//! Chat on the wire: the message as every client sees it, and the live events a room's members
//! receive (over the `chat` data channel, QUIC or WebSocket). The REST history endpoint returns
//! the same [`ChatMessage`] shape.
//!
//! ```json
//! {"type":"chat.created","message":{"id":"…","seq":42,"room_id":"…","user_id":"…",
//!  "username":"alice","text":"hello","created_at":1795645284860,"edited_at":null,"deleted":false}}
//! ```
//!
//! `seq` numbers a room's messages 1, 2, 3, … in the order the server accepted them, without
//! gaps. Clients key messages by `seq`: an event for a `seq` they already hold replaces it
//! (edits, deletions, or the echo of their own message), and after a reconnect they ask the
//! history for `?after=<the last seq they hold>`.

use serde::{Deserialize, Serialize};

use crate::{MessageId, RoomId, UserId};

/// A chat message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Stable id.
    pub id: MessageId,
    /// Position in the room's chat: 1, 2, 3, … in the order the server accepted messages.
    pub seq: i64,
    /// The room.
    pub room_id: RoomId,
    /// The author.
    pub user_id: UserId,
    /// The author's name.
    pub username: String,
    /// The text; empty once the message is deleted.
    pub text: String,
    /// Server time of acceptance, ms since the Unix epoch.
    pub created_at: i64,
    /// Server time of the last edit, ms since the Unix epoch; `null` if never edited.
    #[serde(default)]
    pub edited_at: Option<i64>,
    /// Deleted by its author or a moderator: `text` is empty.
    #[serde(default)]
    pub deleted: bool,
}

/// A live change to a room's chat. Serialised with a `type` tag:
/// `{"type":"chat.created","message":{…}}`, `chat.edited`, `chat.deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChatEvent {
    /// A new message.
    #[serde(rename = "chat.created")]
    Created {
        /// The message.
        message: ChatMessage,
    },
    /// A message's text changed; `edited_at` is set.
    #[serde(rename = "chat.edited")]
    Edited {
        /// The message as it now is.
        message: ChatMessage,
    },
    /// A message was deleted; `deleted` is true and `text` empty.
    #[serde(rename = "chat.deleted")]
    Deleted {
        /// The message as it now is.
        message: ChatMessage,
    },
}

/// What a client sends on the `chat` data channel: `{"client_id","text"}` to post,
/// `{"type":"edit","seq","text"}` or `{"type":"delete","seq"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatRequest {
    /// Edit one's own message.
    Edit {
        /// Always `"edit"`.
        #[serde(rename = "type")]
        kind: EditTag,
        /// Which message.
        seq: i64,
        /// The new text.
        text: String,
    },
    /// Delete a message (one's own, or any as a moderator).
    Delete {
        /// Always `"delete"`.
        #[serde(rename = "type")]
        kind: DeleteTag,
        /// Which message.
        seq: i64,
    },
    /// Post a message; the same `client_id` again is stored and delivered once.
    Send {
        /// Chosen by the client, 1–64 characters of `A-Za-z0-9_-`.
        client_id: String,
        /// 1–4000 characters.
        text: String,
    },
}

/// The `"edit"` tag of [`ChatRequest::Edit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditTag {
    /// `"edit"`.
    Edit,
}

/// The `"delete"` tag of [`ChatRequest::Delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteTag {
    /// `"delete"`.
    Delete,
}

/// The server's answer on the data channel to the sender of a [`ChatRequest`]; everyone else
/// gets the [`ChatEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChatReply {
    /// Stored (or already stored, for a repeated `client_id`).
    #[serde(rename = "chat.ack")]
    Ack {
        /// The message as stored.
        message: ChatMessage,
    },
    /// Refused; nothing was stored.
    #[serde(rename = "chat.error")]
    Error {
        /// snake_case, as the REST API's codes.
        code: String,
        /// A sentence.
        message: String,
        /// The request's `client_id`, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
}

impl ChatEvent {
    /// The message the event is about.
    pub fn message(&self) -> &ChatMessage {
        match self {
            ChatEvent::Created { message }
            | ChatEvent::Edited { message }
            | ChatEvent::Deleted { message } => message,
        }
    }

    /// The room the event belongs to.
    pub fn room(&self) -> RoomId {
        self.message().room_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ChatMessage {
        ChatMessage {
            id: MessageId::new(),
            seq: 7,
            room_id: RoomId::new(),
            user_id: UserId::new(),
            username: "alice".into(),
            text: "hello".into(),
            created_at: 1_000,
            edited_at: None,
            deleted: false,
        }
    }

    #[test]
    fn events_are_tagged_and_round_trip() {
        let message = message();
        let event = ChatEvent::Created {
            message: message.clone(),
        };
        let json = serde_json::to_value(&event).expect("serialise");
        assert_eq!(json["type"], "chat.created");
        assert_eq!(json["message"]["seq"], 7);
        assert_eq!(json["message"]["id"], message.id.to_string());
        assert_eq!(json["message"]["edited_at"], serde_json::Value::Null);
        assert_eq!(json["message"]["deleted"], false);
        let back: ChatEvent = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back, event);
        assert_eq!(back.room(), message.room_id);

        for (event, tag) in [
            (
                ChatEvent::Edited {
                    message: message.clone(),
                },
                "chat.edited",
            ),
            (ChatEvent::Deleted { message }, "chat.deleted"),
        ] {
            assert_eq!(serde_json::to_value(&event).expect("json")["type"], tag);
        }
    }

    #[test]
    fn optional_fields_may_be_left_out_by_senders() {
        let mut json = serde_json::to_value(message()).expect("json");
        let object = json.as_object_mut().expect("an object");
        object.remove("edited_at");
        object.remove("deleted");
        let back: ChatMessage = serde_json::from_value(json).expect("deserialise");
        assert_eq!(back.edited_at, None);
        assert!(!back.deleted);
    }
}
