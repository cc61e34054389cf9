//! A ban over REST removes the user from the media path at once.

mod common;

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use common::{Db, TestApp};
use veza_proto::{RoomId, UserId};

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(RoomId, UserId)>>);

impl veza_api::MediaControl for Recorder {
    fn remove_user(&self, room: RoomId, user: UserId) {
        self.0.lock().expect("lock").push((room, user));
    }
}

#[tokio::test]
async fn a_ban_removes_the_user_from_the_media_path() {
    let app = TestApp::new(Db::Sqlite).await;
    let recorder = Arc::new(Recorder::default());
    app.state.set_media_control(recorder.clone());
    let owner = app.register("olga").await;
    let guest = app.register("gus").await;
    let room = app.room(&owner, "public").await;
    let reply = app
        .post(
            &format!("/api/v1/rooms/{room}/bans/{}", guest.id),
            Some(&owner.access),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{:?}", reply.body);
    let calls = recorder.0.lock().expect("lock").clone();
    assert_eq!(
        calls,
        [(
            room.parse().expect("room id"),
            guest.id.parse().expect("user id")
        )]
    );
}
