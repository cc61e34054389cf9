//! Chat over REST: history pages both ways, posting with dedupe and live delivery, edits,
//! deletes, chat mutes, permissions and the error codes of each refusal.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use common::{Db, Reply, Session, TestApp, assert_error};
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;
use veza_api::ChatConfig;
use veza_proto::RoomId;
use veza_proto::chat::ChatEvent;

both_backends!(
    history_pages_both_ways,
    posts_are_deduplicated_and_delivered_live,
    who_may_read_and_post,
    invalid_messages_get_their_codes,
    the_chat_rate_limit_is_a_429_with_retry_after,
    edits_and_deletes_follow_permissions_and_are_audited,
    chat_mutes_follow_the_ban_rules_and_are_audited,
);

/// No chat rate limit to speak of.
fn unlimited() -> ChatConfig {
    ChatConfig {
        rate_per_sec: 1_000_000,
        burst: 1_000_000,
        ..ChatConfig::default()
    }
}

fn messages_path(room: &str) -> String {
    format!("/api/v1/rooms/{room}/messages")
}

async fn post_message(
    app: &TestApp,
    who: &Session,
    room: &str,
    client_id: &str,
    text: &str,
) -> Reply {
    app.post(
        &messages_path(room),
        Some(&who.access),
        json!({"text": text, "client_id": client_id}),
    )
    .await
}

/// Posts and expects a 201; returns the message.
async fn posted(app: &TestApp, who: &Session, room: &str, client_id: &str, text: &str) -> Value {
    let reply = post_message(app, who, room, client_id, text).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.body
}

fn seqs(reply: &Reply) -> Vec<i64> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect()
}

fn room_id(room: &str) -> RoomId {
    room.parse().expect("a room id")
}

async fn next(rx: &mut Receiver<ChatEvent>) -> ChatEvent {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("an event within a second")
        .expect("open channel")
}

async fn assert_quiet(rx: &mut Receiver<ChatEvent>) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no event, got {other:?}"),
    }
}

async fn set_role(app: &TestApp, owner: &Session, room: &str, who: &Session, role: &str) {
    let reply = app
        .call(
            Method::PUT,
            &format!("/api/v1/rooms/{room}/members/{}", who.id),
            Some(&owner.access),
            Some(json!({"role": role})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// The audit entries with this action, newest first.
async fn audit(app: &TestApp, admin: &Session, action: &str) -> Vec<Value> {
    let reply = app.get("/api/v1/admin/audit", &admin.access).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

async fn history_pages_both_ways(db: Db) {
    let app = TestApp::with_chat(db, unlimited()).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "public").await;
    for i in 1..=12 {
        let who = if i % 3 == 0 { &bob } else { &alice };
        let message = posted(&app, who, &room, &format!("c{i}"), &format!("message {i}")).await;
        assert_eq!(message["seq"], i);
    }
    let path = messages_path(&room);
    let page = |query: &str| {
        let uri = format!("{path}{query}");
        let app = &app;
        let token = bob.access.clone();
        async move { app.get(&uri, &token).await }
    };

    // Neither bound: the latest, newest first; default limit 50.
    let latest = page("").await;
    assert_eq!(seqs(&latest), (1..=12).rev().collect::<Vec<_>>());
    let newest = &latest.body["messages"][0];
    let mut keys: Vec<&str> = newest
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "deleted",
            "edited_at",
            "id",
            "room_id",
            "seq",
            "text",
            "user_id",
            "username"
        ]
    );
    assert_eq!(newest["text"], "message 12");
    assert_eq!(newest["username"], "bob");
    assert_eq!(newest["user_id"], bob.id.as_str());
    assert_eq!(newest["room_id"], room.as_str());
    assert_eq!(newest["edited_at"], Value::Null);
    assert_eq!(newest["deleted"], false);

    // Scrolling back: before is exclusive, newest first.
    assert_eq!(seqs(&page("?limit=5").await), [12, 11, 10, 9, 8]);
    assert_eq!(seqs(&page("?before=8&limit=5").await), [7, 6, 5, 4, 3]);
    assert_eq!(seqs(&page("?before=3&limit=5").await), [2, 1]);
    assert_eq!(seqs(&page("?before=1").await), Vec::<i64>::new());
    // Catching up: after is exclusive, oldest first.
    assert_eq!(seqs(&page("?after=9").await), [10, 11, 12]);
    assert_eq!(seqs(&page("?after=0&limit=4").await), [1, 2, 3, 4]);
    assert_eq!(seqs(&page("?after=12").await), Vec::<i64>::new());
    assert_eq!(seqs(&page("?limit=200").await).len(), 12);

    for (query, status, code) in [
        ("?limit=0", StatusCode::BAD_REQUEST, "invalid_limit"),
        ("?limit=201", StatusCode::BAD_REQUEST, "invalid_limit"),
        ("?limit=-1", StatusCode::BAD_REQUEST, "invalid_limit"),
        (
            "?before=5&after=2",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        ("?before=abc", StatusCode::BAD_REQUEST, "invalid_query"),
        ("?cursor=1", StatusCode::BAD_REQUEST, "invalid_query"),
    ] {
        assert_error(&page(query).await, status, code);
    }
}

async fn posts_are_deduplicated_and_delivered_live(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "public").await;
    let mut rx = app.state.chat.subscribe(room_id(&room));

    let first = post_message(&app, &alice, &room, "bot-1", "deploy finished").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.body["seq"], 1);
    assert_eq!(first.body["username"], "alice");
    let event = next(&mut rx).await;
    let ChatEvent::Created { message } = &event else {
        panic!("expected chat.created, got {event:?}");
    };
    assert_eq!(
        message.id.to_string(),
        first.body["id"].as_str().expect("id")
    );
    assert_eq!(message.text, "deploy finished");
    // The event on the wire is the REST message with a type tag.
    let wire = serde_json::to_value(&event).expect("json");
    assert_eq!(wire["type"], "chat.created");
    assert_eq!(wire["message"], first.body);

    // The same client id again: 200 with the stored message, nothing delivered.
    let again = post_message(&app, &alice, &room, "bot-1", "deploy finished").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_quiet(&mut rx).await;

    // A non-member of a public room posts as a listener.
    let from_bob = post_message(&app, &bob, &room, "bot-1", "hi").await;
    assert_eq!(from_bob.status, StatusCode::CREATED, "{}", from_bob.body);
    assert_eq!(from_bob.body["seq"], 2);
    assert_eq!(next(&mut rx).await.message().text, "hi");
    assert_eq!(
        seqs(&app.get(&messages_path(&room), &bob.access).await),
        [2, 1]
    );
}

async fn who_may_read_and_post(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let private = app.room(&alice, "private").await;
    let public = app.room(&alice, "public").await;
    posted(&app, &alice, &private, "p1", "members only").await;
    posted(&app, &alice, &public, "p1", "everyone").await;

    // Private: members only.
    assert_error(
        &app.get(&messages_path(&private), &bob.access).await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
    assert_error(
        &post_message(&app, &bob, &private, "b1", "let me in").await,
        StatusCode::FORBIDDEN,
        "not_a_member",
    );
    set_role(&app, &alice, &private, &bob, "listener").await;
    assert_eq!(
        seqs(&app.get(&messages_path(&private), &bob.access).await),
        [1]
    );
    posted(&app, &bob, &private, "b1", "listeners chat").await;

    // Banned: neither read nor post, even in a public room.
    let ban = app
        .call(
            Method::POST,
            &format!("/api/v1/rooms/{public}/bans/{}", carol.id),
            Some(&alice.access),
            None,
        )
        .await;
    assert_eq!(ban.status, StatusCode::NO_CONTENT, "{}", ban.body);
    assert_error(
        &app.get(&messages_path(&public), &carol.access).await,
        StatusCode::FORBIDDEN,
        "banned",
    );
    assert_error(
        &post_message(&app, &carol, &public, "c1", "hi").await,
        StatusCode::FORBIDDEN,
        "banned",
    );

    // No room, no token, a bad id.
    let nowhere = uuid::Uuid::new_v4().to_string();
    assert_error(
        &app.get(&messages_path(&nowhere), &bob.access).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &post_message(&app, &bob, &nowhere, "x", "hi").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call(Method::GET, &messages_path(&public), None, None)
            .await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    );
    assert_error(
        &app.get(&messages_path("not-a-room"), &bob.access).await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
}

async fn invalid_messages_get_their_codes(db: Db) {
    let app = TestApp::with_chat(
        db,
        ChatConfig {
            blocked_words: vec!["darn".into()],
            ..unlimited()
        },
    )
    .await;
    let alice = app.register("alice").await;
    let room = app.room(&alice, "public").await;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    for (client_id, text, code) in [
        ("ok", String::new(), "empty_message"),
        ("ok", "   \n ".to_owned(), "empty_message"),
        ("ok", "x".repeat(4001), "message_too_long"),
        ("ok", "a\u{0}b".to_owned(), "invalid_text"),
        ("ok", "Oh DARN!".to_owned(), "blocked_word"),
        ("", "hello".to_owned(), "invalid_client_id"),
        ("white space", "hello".to_owned(), "invalid_client_id"),
        (&"c".repeat(65), "hello".to_owned(), "invalid_client_id"),
    ] {
        assert_error(
            &post_message(&app, &alice, &room, client_id, &text).await,
            unprocessable,
            code,
        );
    }
    for body in [
        json!({"text": "no client id"}),
        json!({"client_id": "no-text"}),
        json!({"text": "hi", "client_id": "x", "user_id": alice.id}),
        json!({"text": 5, "client_id": "x"}),
    ] {
        assert_error(
            &app.post(&messages_path(&room), Some(&alice.access), body)
                .await,
            unprocessable,
            "invalid_body",
        );
    }
    // 4000 characters of three bytes each are fine, and so is a word that merely contains a
    // blocked one.
    posted(&app, &alice, &room, "long", &"€".repeat(4000)).await;
    posted(&app, &alice, &room, "darned", "darned socks").await;
    assert_eq!(
        seqs(&app.get(&messages_path(&room), &alice.access).await),
        [2, 1]
    );
}

async fn the_chat_rate_limit_is_a_429_with_retry_after(db: Db) {
    // 1 a second with bursts of 3, so a slow database cannot refill the bucket by much while
    // the burst is spent (the bucket's arithmetic is unit-tested on a virtual clock in chat/).
    let config = ChatConfig {
        rate_per_sec: 1,
        burst: 3,
        ..ChatConfig::default()
    };
    let app = TestApp::with_chat(db, config).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "public").await;
    let started = std::time::Instant::now();
    let mut accepted = 0;
    let limited = loop {
        let reply = post_message(&app, &alice, &room, &format!("r{accepted}"), "burst").await;
        if reply.status != StatusCode::CREATED {
            break reply;
        }
        accepted += 1;
        assert!(accepted <= 20, "never limited");
    };
    let refills = started.elapsed().as_secs() + 1;
    assert!(
        (3..=3 + refills).contains(&accepted),
        "{accepted} accepted in {:?}",
        started.elapsed()
    );
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "chat_rate_limited");
    assert_eq!(
        limited
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "whole seconds, rounded up"
    );
    // Per user: bob is not limited; reading is not limited.
    posted(&app, &bob, &room, "b1", "hello").await;
    let expected = usize::try_from(accepted).expect("small") + 1;
    assert_eq!(
        seqs(&app.get(&messages_path(&room), &alice.access).await).len(),
        expected
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    posted(&app, &alice, &room, "refill", "refilled").await;
}

async fn edits_and_deletes_follow_permissions_and_are_audited(db: Db) {
    let app = TestApp::with_chat(db, unlimited()).await;
    let alice = app.register("alice").await; // owner, and the admin who reads the audit log
    let bob = app.register("bob").await; // moderator
    let carol = app.register("carol").await; // speaker
    let dave = app.register("dave").await; // not a member
    let room = app.room(&alice, "public").await;
    set_role(&app, &alice, &room, &bob, "moderator").await;
    set_role(&app, &alice, &room, &carol, "speaker").await;
    let m1 = posted(&app, &carol, &room, "c1", "frist").await;
    posted(&app, &dave, &room, "d1", "drive-by").await;
    let mut rx = app.state.chat.subscribe(room_id(&room));
    let message = |seq: i64| format!("{}/{seq}", messages_path(&room));
    let patch = |who: &Session, seq: &str, text: &str| {
        let (app, uri, token) = (
            &app,
            format!("{}/{seq}", messages_path(&room)),
            who.access.clone(),
        );
        let body = json!({ "text": text });
        async move {
            app.call(Method::PATCH, &uri, Some(&token), Some(body))
                .await
        }
    };
    let delete = |who: &Session, seq: i64| {
        let (app, uri, token) = (&app, message(seq), who.access.clone());
        async move { app.call(Method::DELETE, &uri, Some(&token), None).await }
    };

    // Edit: the author only.
    let edited = patch(&carol, "1", "first").await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["text"], "first");
    assert_eq!(edited.body["id"], m1["id"]);
    assert_eq!(edited.body["created_at"], m1["created_at"]);
    assert!(
        edited.body["edited_at"].as_i64().is_some(),
        "{}",
        edited.body
    );
    match next(&mut rx).await {
        ChatEvent::Edited { message } => assert_eq!(message.text, "first"),
        other => panic!("expected chat.edited, got {other:?}"),
    }
    for who in [&alice, &bob, &dave] {
        assert_error(
            &patch(who, "1", "hijack").await,
            StatusCode::FORBIDDEN,
            "not_author",
        );
    }
    assert_error(
        &patch(&carol, "99", "x").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &patch(&carol, "1", "").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty_message",
    );
    for bad_seq in ["0", "-1", "abc", "1.5", "99999999999999999999"] {
        assert_error(
            &patch(&carol, bad_seq, "x").await,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        );
    }

    // Delete: the author, or the owner or a moderator.
    assert_error(
        &delete(&carol, 2).await,
        StatusCode::FORBIDDEN,
        "not_author",
    );
    let own = delete(&dave, 2).await;
    assert_eq!(own.status, StatusCode::NO_CONTENT, "{}", own.body);
    let moderated = delete(&bob, 1).await;
    assert_eq!(
        moderated.status,
        StatusCode::NO_CONTENT,
        "{}",
        moderated.body
    );
    for seq in [2, 1] {
        match next(&mut rx).await {
            ChatEvent::Deleted { message } => {
                assert_eq!(message.seq, seq);
                assert!(message.deleted && message.text.is_empty());
            }
            other => panic!("expected chat.deleted, got {other:?}"),
        }
    }
    assert_quiet(&mut rx).await;
    assert_error(
        &delete(&bob, 1).await,
        StatusCode::CONFLICT,
        "message_deleted",
    );
    assert_error(
        &patch(&carol, "1", "back").await,
        StatusCode::CONFLICT,
        "message_deleted",
    );
    assert_error(
        &delete(&alice, 99).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // The history keeps both as tombstones.
    let history = app.get(&messages_path(&room), &dave.access).await;
    assert_eq!(seqs(&history), [2, 1]);
    for m in history.body["messages"].as_array().expect("messages") {
        assert_eq!(
            (m["deleted"].clone(), m["text"].clone()),
            (json!(true), json!(""))
        );
    }

    // Only the moderator's deletion is audited.
    let entries = audit(&app, &alice, "chat_message_deleted").await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["actor_id"], bob.id.as_str());
    assert_eq!(entries[0]["target"], carol.id.as_str());
    assert_eq!(entries[0]["detail"], format!("room {room}: message 1"));
}

async fn chat_mutes_follow_the_ban_rules_and_are_audited(db: Db) {
    let app = TestApp::with_chat(db, unlimited()).await;
    let alice = app.register("alice").await; // owner and admin
    let bob = app.register("bob").await; // moderator
    let carol = app.register("carol").await; // speaker
    let mo = app.register("morgan").await; // another moderator
    let room = app.room(&alice, "public").await;
    set_role(&app, &alice, &room, &bob, "moderator").await;
    set_role(&app, &alice, &room, &mo, "moderator").await;
    set_role(&app, &alice, &room, &carol, "speaker").await;
    let mute = |who: &Session, method: Method, target: &str| {
        let (app, uri, token) = (
            &app,
            format!("/api/v1/rooms/{room}/chat-mutes/{target}"),
            who.access.clone(),
        );
        async move { app.call(method, &uri, Some(&token), None).await }
    };

    assert_error(
        &mute(&carol, Method::POST, &bob.id).await,
        StatusCode::FORBIDDEN,
        "not_moderator",
    );
    assert_error(
        &mute(&bob, Method::POST, &alice.id).await,
        StatusCode::FORBIDDEN,
        "owner_protected",
    );
    assert_error(
        &mute(&alice, Method::POST, &alice.id).await,
        StatusCode::FORBIDDEN,
        "owner_protected",
    );
    assert_error(
        &mute(&bob, Method::POST, &mo.id).await,
        StatusCode::FORBIDDEN,
        "owner_only",
    );
    assert_error(
        &mute(&bob, Method::POST, &bob.id).await,
        StatusCode::FORBIDDEN,
        "owner_only",
    );
    let nobody = uuid::Uuid::new_v4().to_string();
    assert_error(
        &mute(&bob, Method::POST, &nobody).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &mute(&bob, Method::POST, "nobody").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );

    let muted = mute(&bob, Method::POST, &carol.id).await;
    assert_eq!(muted.status, StatusCode::NO_CONTENT, "{}", muted.body);
    let again = mute(&bob, Method::POST, &carol.id).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "muting again is fine");
    assert_error(
        &post_message(&app, &carol, &room, "c1", "hello?").await,
        StatusCode::FORBIDDEN,
        "chat_muted",
    );
    assert_eq!(
        seqs(&app.get(&messages_path(&room), &carol.access).await),
        Vec::<i64>::new(),
        "a muted user still reads"
    );
    let owner_mutes_moderator = mute(&alice, Method::POST, &mo.id).await;
    assert_eq!(owner_mutes_moderator.status, StatusCode::NO_CONTENT);
    assert_error(
        &post_message(&app, &mo, &room, "m1", "hello?").await,
        StatusCode::FORBIDDEN,
        "chat_muted",
    );

    let unmuted = mute(&bob, Method::DELETE, &carol.id).await;
    assert_eq!(unmuted.status, StatusCode::NO_CONTENT, "{}", unmuted.body);
    assert_error(
        &mute(&bob, Method::DELETE, &carol.id).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &mute(&bob, Method::DELETE, &mo.id).await,
        StatusCode::FORBIDDEN,
        "owner_only",
    );
    posted(&app, &carol, &room, "c1", "I'm back").await;

    let mutes = audit(&app, &alice, "chat_mute").await;
    assert_eq!(mutes.len(), 3, "{mutes:?}");
    assert_eq!(mutes[0]["actor_id"], alice.id.as_str());
    assert_eq!(mutes[0]["target"], mo.id.as_str());
    assert_eq!(mutes[2]["actor_id"], bob.id.as_str());
    assert_eq!(mutes[2]["target"], carol.id.as_str());
    assert_eq!(mutes[2]["detail"], format!("room {room}"));
    let unmutes = audit(&app, &alice, "chat_unmute").await;
    assert_eq!(unmutes.len(), 1, "{unmutes:?}");
    assert_eq!(unmutes[0]["target"], carol.id.as_str());
}
