//! Rooms, members and roles, bans, joining (media tokens, ICE servers) and the audit log.

mod common;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode};
use common::{Db, PUBLIC_URL, Reply, Session, TestApp, assert_error};
use serde_json::{Value, json};
use veza_proto::{Grants, MEDIA_AUDIENCE, Role};

both_backends!(
    create_room_makes_the_caller_owner,
    create_room_validates_input,
    rooms_need_a_valid_access_token,
    list_shows_public_rooms_and_mine,
    list_pages_walk_every_room_once,
    list_rejects_bad_paging,
    private_rooms_are_for_members_only,
    only_the_owner_updates_or_deletes,
    patch_changes_only_given_fields,
    deleted_room_is_gone,
    malformed_ids_are_rejected,
    owner_and_moderators_set_roles,
    role_changes_are_guarded,
    members_are_listed_by_role,
    removing_a_member,
    ban_ends_membership_until_lifted,
    bans_are_guarded,
    join_grants_follow_the_role,
    join_describes_where_to_connect,
    join_is_refused_to_outsiders,
    media_token_is_signed_for_the_room,
    turn_credentials_are_minted_per_user,
    stun_only_has_no_credentials,
    audit_log_records_security_events,
    audit_log_is_paged_and_admin_only,
);

/// The password `TestApp::register` uses.
const PASSWORD: &str = "correct horse battery";

fn room_path(room: &str) -> String {
    format!("/api/v1/rooms/{room}")
}

fn member_path(room: &str, user: &str) -> String {
    format!("/api/v1/rooms/{room}/members/{user}")
}

fn ban_path(room: &str, user: &str) -> String {
    format!("/api/v1/rooms/{room}/bans/{user}")
}

fn join_path(room: &str) -> String {
    format!("/api/v1/rooms/{room}/join")
}

fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Asserts the status and returns the body.
#[track_caller]
fn expect(reply: &Reply, status: StatusCode) -> &Value {
    assert_eq!(reply.status, status, "body: {:?}", reply.body);
    &reply.body
}

/// The array `field` of a reply's body.
#[track_caller]
fn array<'a>(body: &'a Value, field: &str) -> &'a Vec<Value> {
    body[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} is an array: {body:?}"))
}

async fn create(app: &TestApp, token: Option<&str>, body: Value) -> Reply {
    app.post("/api/v1/rooms", token, body).await
}

async fn patch(app: &TestApp, token: &str, room: &str, body: Value) -> Reply {
    app.call(Method::PATCH, &room_path(room), Some(token), Some(body))
        .await
}

async fn delete(app: &TestApp, token: &str, path: &str) -> Reply {
    app.call(Method::DELETE, path, Some(token), None).await
}

async fn set_role(app: &TestApp, token: &str, room: &str, user: &str, role: &str) -> Reply {
    let body = json!({ "role": role });
    app.call(
        Method::PUT,
        &member_path(room, user),
        Some(token),
        Some(body),
    )
    .await
}

async fn ban(app: &TestApp, token: &str, room: &str, user: &str) -> Reply {
    app.call(Method::POST, &ban_path(room, user), Some(token), None)
        .await
}

async fn join(app: &TestApp, token: &str, room: &str) -> Reply {
    app.call(Method::POST, &join_path(room), Some(token), None)
        .await
}

/// `(username, role)` of each member, in the order listed.
async fn members(app: &TestApp, token: &str, room: &str) -> Vec<(String, String)> {
    let reply = app
        .get(&format!("{}/members", room_path(room)), token)
        .await;
    array(expect(&reply, StatusCode::OK), "members")
        .iter()
        .map(|m| {
            let field = |name: &str| m[name].as_str().expect("string").to_owned();
            (field("username"), field("role"))
        })
        .collect()
}

/// Owned `(username, role)` pairs, to compare with [`members`].
fn roster(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(user, role)| ((*user).to_owned(), (*role).to_owned()))
        .collect()
}

/// Registers `name` and gives them `role` in the room.
async fn member(app: &TestApp, owner: &Session, room: &str, name: &str, role: &str) -> Session {
    let user = app.register(name).await;
    expect(
        &set_role(app, &owner.access, room, &user.id, role).await,
        StatusCode::OK,
    );
    user
}

/// A room with one user of each role, and one who is no member.
struct Cast {
    app: TestApp,
    room: String,
    owner: Session,
    moderator: Session,
    speaker: Session,
    listener: Session,
    outsider: Session,
}

async fn cast(db: Db, visibility: &str) -> Cast {
    let app = TestApp::new(db).await;
    let owner = app.register("olivia").await;
    let room = app.room(&owner, visibility).await;
    let moderator = member(&app, &owner, &room, "mona", "moderator").await;
    let speaker = member(&app, &owner, &room, "sam", "speaker").await;
    let listener = member(&app, &owner, &room, "lena", "listener").await;
    let outsider = app.register("oscar").await;
    Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        listener,
        outsider,
    }
}

async fn create_room_makes_the_caller_owner(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let reply = create(
        &app,
        Some(&alice.access),
        json!({"name": "  Jazz night ", "visibility": "public", "description": "bring a horn"}),
    )
    .await;
    let room = expect(&reply, StatusCode::CREATED).clone();
    let id = room["id"].as_str().expect("id");
    assert!(id.parse::<uuid::Uuid>().is_ok(), "{id}");
    assert_eq!(room["name"], "Jazz night", "the name is trimmed");
    assert_eq!(room["description"], "bring a horn");
    assert_eq!(room["visibility"], "public");
    assert_eq!(room["owner_id"], alice.id.as_str());
    assert_eq!(room["my_role"], "owner");
    let created = room["created_at"].as_i64().expect("created_at");
    assert!(created > 1_600_000_000_000, "milliseconds: {created}");
    assert_eq!(room["updated_at"], created);

    let fetched = app.get(&room_path(id), &alice.access).await;
    assert_eq!(expect(&fetched, StatusCode::OK), &room);
    assert_eq!(
        members(&app, &alice.access, id).await,
        roster(&[("alice", "owner")])
    );
}

async fn create_room_validates_input(db: Db) {
    let app = TestApp::new(db).await;
    let token = app.register("alice").await.access;
    let attempt = |name: String, description: Option<String>| {
        let body = json!({"name": name, "visibility": "private", "description": description});
        create(&app, Some(&token), body)
    };
    for name in [String::new(), "   ".into(), "a".repeat(101)] {
        let reply = attempt(name, None).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_name");
    }
    let long = attempt("Room".into(), Some("d".repeat(1001))).await;
    assert_error(
        &long,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_description",
    );
    // The limits count characters, not bytes.
    let widest = attempt("é".repeat(100), Some("é".repeat(1000))).await;
    assert_eq!(
        expect(&widest, StatusCode::CREATED)["name"],
        "é".repeat(100)
    );

    for body in [
        json!({"name": "Room", "visibility": "secret"}),
        json!({"name": "Room"}),
        json!({"name": "Room", "visibility": "public", "owner_id": "x"}),
    ] {
        let reply = create(&app, Some(&token), body).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    }
}

async fn rooms_need_a_valid_access_token(db: Db) {
    let app = TestApp::new(db).await;
    let body = json!({"name": "Room", "visibility": "public"});
    let missing = create(&app, None, body.clone()).await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "missing_token");
    let garbage = create(&app, Some("not.a.jwt"), body).await;
    assert_error(&garbage, StatusCode::UNAUTHORIZED, "invalid_token");
    let list = app.get("/api/v1/rooms", "garbage").await;
    assert_error(&list, StatusCode::UNAUTHORIZED, "invalid_token");
    let join = app
        .call(Method::POST, &join_path(&unknown_id()), None, None)
        .await;
    assert_error(&join, StatusCode::UNAUTHORIZED, "missing_token");
}

/// `(id, my_role)` of every room `token` sees, by id.
async fn visible_rooms(app: &TestApp, token: &str) -> Vec<(String, Value)> {
    let reply = app.get("/api/v1/rooms?limit=100", token).await;
    let body = expect(&reply, StatusCode::OK);
    assert_eq!(body["next_cursor"], Value::Null);
    let rooms = array(body, "rooms").iter().map(|r| {
        let id = r["id"].as_str().expect("id");
        (id, r["my_role"].as_str())
    });
    by_id(rooms)
}

/// Owned `(id, role)` pairs sorted by id.
fn by_id<'a>(rooms: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Vec<(String, Value)> {
    let mut rooms: Vec<_> = rooms
        .into_iter()
        .map(|(id, role)| (id.to_owned(), json!(role)))
        .collect();
    rooms.sort_by(|a, b| a.0.cmp(&b.0));
    rooms
}

async fn list_shows_public_rooms_and_mine(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let alice_public = app.room(&alice, "public").await;
    let alice_private = app.room(&alice, "private").await;
    let bob_private = app.room(&bob, "private").await;
    let bob_public = app.room(&bob, "public").await;

    // Each sees the public rooms and their own; the other's private room is hidden.
    assert_eq!(
        visible_rooms(&app, &alice.access).await,
        by_id([
            (bob_public.as_str(), None),
            (&alice_private, Some("owner")),
            (&alice_public, Some("owner")),
        ])
    );
    assert_eq!(
        visible_rooms(&app, &bob.access).await,
        by_id([
            (bob_public.as_str(), Some("owner")),
            (&bob_private, Some("owner")),
            (&alice_public, None),
        ])
    );
    // Membership makes a private room visible, with the member's role.
    expect(
        &set_role(&app, &bob.access, &bob_private, &alice.id, "speaker").await,
        StatusCode::OK,
    );
    assert_eq!(
        visible_rooms(&app, &alice.access).await,
        by_id([
            (bob_public.as_str(), None),
            (&bob_private, Some("speaker")),
            (&alice_private, Some("owner")),
            (&alice_public, Some("owner")),
        ])
    );
}

/// Follows `next_cursor` with pages of `limit` rooms; returns every id seen, in order, after
/// checking the order is newest first.
async fn walk_rooms(app: &TestApp, token: &str, limit: usize) -> Vec<String> {
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/rooms?limit={limit}&cursor={cursor}");
        let reply = app.get(&path, token).await;
        let body = expect(&reply, StatusCode::OK);
        let rooms = array(body, "rooms");
        assert!(rooms.len() <= limit, "{path}: {} rooms", rooms.len());
        seen.extend(rooms.iter().map(|r| {
            let created = r["created_at"].as_i64().expect("created_at");
            (created, r["id"].as_str().expect("id").to_owned())
        }));
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(rooms.len(), limit, "only full pages have a next cursor");
                cursor = next.to_owned();
            }
            None => break,
        }
        assert!(seen.len() <= 100, "the walk does not end");
    }
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, ties by id: {seen:?}"
    );
    seen.into_iter().map(|(_, id)| id).collect()
}

async fn list_pages_walk_every_room_once(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut expected = HashSet::new();
    // Created back to back, so several rooms share a millisecond: the id breaks the tie.
    for i in 0..9 {
        let (owner, visibility) = match i % 3 {
            0 => (&alice, "private"),
            1 => (&bob, "public"),
            _ => (&bob, "private"),
        };
        let room = app.room(owner, visibility).await;
        if i % 3 != 2 {
            expected.insert(room);
        }
    }
    let all = walk_rooms(&app, &alice.access, 100).await;
    assert_eq!(all.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(all.len(), expected.len());
    for limit in [1, 2, 4, 6, 7] {
        assert_eq!(
            walk_rooms(&app, &alice.access, limit).await,
            all,
            "limit {limit}"
        );
    }
}

async fn list_rejects_bad_paging(db: Db) {
    let app = TestApp::new(db).await;
    let token = app.register("alice").await.access;
    for limit in ["0", "101", "-1"] {
        let reply = app
            .get(&format!("/api/v1/rooms?limit={limit}"), &token)
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_limit");
    }
    let words = app.get("/api/v1/rooms?limit=many", &token).await;
    assert_error(&words, StatusCode::BAD_REQUEST, "invalid_query");
    let id = unknown_id();
    for cursor in ["garbage".to_owned(), "12_nope".into(), format!("soon_{id}")] {
        let reply = app
            .get(&format!("/api/v1/rooms?cursor={cursor}"), &token)
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_cursor");
    }
    for ok in ["limit=1", "limit=100", &format!("cursor=1_{id}")] {
        let reply = app.get(&format!("/api/v1/rooms?{ok}"), &token).await;
        expect(&reply, StatusCode::OK);
    }
}

async fn private_rooms_are_for_members_only(db: Db) {
    let Cast {
        app,
        room,
        owner,
        listener,
        outsider,
        ..
    } = cast(db, "private").await;
    let path = room_path(&room);
    for reply in [
        app.get(&path, &outsider.access).await,
        app.get(&format!("{path}/members"), &outsider.access).await,
        patch(&app, &outsider.access, &room, json!({"name": "Mine"})).await,
        delete(&app, &outsider.access, &path).await,
        set_role(&app, &outsider.access, &room, &listener.id, "speaker").await,
    ] {
        assert_error(&reply, StatusCode::FORBIDDEN, "not_a_member");
    }
    let member_view = app.get(&path, &listener.access).await;
    assert_eq!(expect(&member_view, StatusCode::OK)["my_role"], "listener");
    // Once a member, the outsider sees it too.
    expect(
        &set_role(&app, &owner.access, &room, &outsider.id, "listener").await,
        StatusCode::OK,
    );
    expect(&app.get(&path, &outsider.access).await, StatusCode::OK);
}

async fn only_the_owner_updates_or_deletes(db: Db) {
    let Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        outsider,
        ..
    } = cast(db, "public").await;
    let path = room_path(&room);
    for user in [&moderator, &speaker, &outsider] {
        let renamed = patch(&app, &user.access, &room, json!({"name": "Taken"})).await;
        assert_error(&renamed, StatusCode::FORBIDDEN, "not_owner");
        let deleted = delete(&app, &user.access, &path).await;
        assert_error(&deleted, StatusCode::FORBIDDEN, "not_owner");
    }
    let outsider_view = app.get(&path, &outsider.access).await;
    let view = expect(&outsider_view, StatusCode::OK);
    assert_eq!(view["name"], "Room");
    assert_eq!(view["my_role"], Value::Null);
    let renamed = patch(&app, &owner.access, &room, json!({"name": "Ours"})).await;
    assert_eq!(expect(&renamed, StatusCode::OK)["name"], "Ours");
}

async fn patch_changes_only_given_fields(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "public").await;
    let update = |body: Value| patch(&app, &alice.access, &room, body);

    let both = update(json!({"name": " Late show ", "description": "quiet please"})).await;
    let view = expect(&both, StatusCode::OK).clone();
    assert_eq!(view["name"], "Late show");
    assert_eq!(view["description"], "quiet please");
    assert_eq!(view["my_role"], "owner");
    assert!(view["updated_at"].as_i64() >= view["created_at"].as_i64());

    // Leaving the description out keeps it.
    let private = update(json!({"visibility": "private"})).await;
    let view = expect(&private, StatusCode::OK);
    assert_eq!(view["description"], "quiet please");
    assert_eq!(view["name"], "Late show");
    assert_eq!(view["visibility"], "private");
    let hidden = app.get(&room_path(&room), &bob.access).await;
    assert_error(&hidden, StatusCode::FORBIDDEN, "not_a_member");

    // `null` clears it.
    let cleared = update(json!({"description": null})).await;
    let view = expect(&cleared, StatusCode::OK);
    assert_eq!(view["description"], Value::Null);
    assert_eq!(view["name"], "Late show");
    let stored = app.get(&room_path(&room), &alice.access).await;
    assert_eq!(expect(&stored, StatusCode::OK)["description"], Value::Null);

    let bad_name = update(json!({"name": ""})).await;
    assert_error(&bad_name, StatusCode::UNPROCESSABLE_ENTITY, "invalid_name");
    let bad_description = update(json!({"description": "d".repeat(1001)})).await;
    assert_error(
        &bad_description,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_description",
    );
    let bad_visibility = update(json!({"visibility": "hidden"})).await;
    assert_error(
        &bad_visibility,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
}

async fn deleted_room_is_gone(db: Db) {
    let Cast {
        app,
        room,
        owner,
        speaker,
        ..
    } = cast(db, "public").await;
    let path = room_path(&room);
    let deleted = delete(&app, &owner.access, &path).await;
    assert_eq!(expect(&deleted, StatusCode::NO_CONTENT), &Value::Null);
    for reply in [
        app.get(&path, &owner.access).await,
        app.get(&format!("{path}/members"), &owner.access).await,
        delete(&app, &owner.access, &path).await,
        join(&app, &speaker.access, &room).await,
        set_role(&app, &owner.access, &room, &speaker.id, "listener").await,
    ] {
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    assert!(visible_rooms(&app, &owner.access).await.is_empty());
}

async fn malformed_ids_are_rejected(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let room = app.room(&alice, "public").await;
    let token = alice.access.as_str();
    for reply in [
        app.get(&room_path("not-a-uuid"), token).await,
        patch(&app, token, "42", json!({"name": "x"})).await,
        delete(&app, token, &room_path("42")).await,
        app.get(&format!("{}/members", room_path("zz")), token)
            .await,
        join(&app, token, "nope").await,
        set_role(&app, token, "nope", &alice.id, "speaker").await,
        set_role(&app, token, &room, "nobody", "speaker").await,
        delete(&app, token, &member_path(&room, "nobody")).await,
        ban(&app, token, &room, "nobody").await,
        delete(&app, token, &ban_path(&room, "nobody")).await,
    ] {
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_id");
    }
    let unknown = app.get(&room_path(&unknown_id()), token).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
}

async fn owner_and_moderators_set_roles(db: Db) {
    let Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        outsider,
        ..
    } = cast(db, "public").await;
    let promoted = set_role(&app, &owner.access, &room, &outsider.id, "speaker").await;
    assert_eq!(
        expect(&promoted, StatusCode::OK),
        &json!({"user_id": outsider.id, "username": "oscar", "role": "speaker"})
    );
    let demoted = set_role(&app, &moderator.access, &room, &speaker.id, "listener").await;
    assert_eq!(expect(&demoted, StatusCode::OK)["role"], "listener");
    // Only the owner appoints moderators, and a moderator cannot act on another moderator.
    let refused = set_role(&app, &moderator.access, &room, &outsider.id, "moderator").await;
    assert_error(&refused, StatusCode::FORBIDDEN, "owner_only");
    let raised = set_role(&app, &owner.access, &room, &outsider.id, "moderator").await;
    assert_eq!(expect(&raised, StatusCode::OK)["role"], "moderator");
    for reply in [
        set_role(&app, &moderator.access, &room, &outsider.id, "listener").await,
        ban(&app, &moderator.access, &room, &outsider.id).await,
        app.call(
            Method::DELETE,
            &format!("{}/members/{}", room_path(&room), outsider.id),
            Some(&moderator.access),
            None,
        )
        .await,
    ] {
        assert_error(&reply, StatusCode::FORBIDDEN, "owner_only");
    }
    let view = app.get(&room_path(&room), &outsider.access).await;
    assert_eq!(expect(&view, StatusCode::OK)["my_role"], "moderator");
    assert_eq!(
        members(&app, &owner.access, &room).await,
        roster(&[
            ("olivia", "owner"),
            ("mona", "moderator"),
            ("oscar", "moderator"),
            ("lena", "listener"),
            ("sam", "listener"),
        ])
    );
}

async fn role_changes_are_guarded(db: Db) {
    let Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        listener,
        outsider,
    } = cast(db, "public").await;
    let guarded = [
        (&moderator, &owner, "owner_protected"),
        (&owner, &owner, "owner_protected"),
        (&speaker, &listener, "not_moderator"),
        (&listener, &speaker, "not_moderator"),
        (&outsider, &listener, "not_moderator"),
    ];
    for (actor, target, code) in guarded {
        let reply = set_role(&app, &actor.access, &room, &target.id, "moderator").await;
        assert_error(&reply, StatusCode::FORBIDDEN, code);
    }
    let removed = delete(&app, &moderator.access, &member_path(&room, &owner.id)).await;
    assert_error(&removed, StatusCode::FORBIDDEN, "owner_protected");
    let crowned = set_role(&app, &owner.access, &room, &speaker.id, "owner").await;
    assert_error(&crowned, StatusCode::UNPROCESSABLE_ENTITY, "invalid_role");
    let unknown_role = set_role(&app, &owner.access, &room, &speaker.id, "admin").await;
    assert_error(
        &unknown_role,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let ghost = set_role(&app, &owner.access, &room, &unknown_id(), "speaker").await;
    assert_error(&ghost, StatusCode::NOT_FOUND, "not_found");
    let no_room = set_role(&app, &owner.access, &unknown_id(), &speaker.id, "listener").await;
    assert_error(&no_room, StatusCode::NOT_FOUND, "not_found");
    // Nothing changed.
    assert_eq!(
        members(&app, &owner.access, &room).await,
        roster(&[
            ("olivia", "owner"),
            ("mona", "moderator"),
            ("sam", "speaker"),
            ("lena", "listener"),
        ])
    );
}

async fn members_are_listed_by_role(db: Db) {
    let app = TestApp::new(db).await;
    let owner = app.register("zoe").await;
    let room = app.room(&owner, "private").await;
    // Added in scrambled order; listed by role, then by name regardless of case.
    for (name, role) in [
        ("yan", "listener"),
        ("Walt", "speaker"),
        ("bea", "listener"),
        ("xia", "moderator"),
        ("abe", "speaker"),
    ] {
        member(&app, &owner, &room, name, role).await;
    }
    let expected = roster(&[
        ("zoe", "owner"),
        ("xia", "moderator"),
        ("abe", "speaker"),
        ("Walt", "speaker"),
        ("bea", "listener"),
        ("yan", "listener"),
    ]);
    assert_eq!(members(&app, &owner.access, &room).await, expected);
    let reply = app
        .get(&format!("{}/members", room_path(&room)), &owner.access)
        .await;
    let first = &array(expect(&reply, StatusCode::OK), "members")[0];
    assert_eq!(first["user_id"], owner.id.as_str());
}

async fn removing_a_member(db: Db) {
    let Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        listener,
        outsider,
    } = cast(db, "private").await;
    let listener_path = member_path(&room, &listener.id);
    let removed = delete(&app, &owner.access, &listener_path).await;
    assert_eq!(expect(&removed, StatusCode::NO_CONTENT), &Value::Null);
    let again = delete(&app, &owner.access, &listener_path).await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    let gone = app.get(&room_path(&room), &listener.access).await;
    assert_error(&gone, StatusCode::FORBIDDEN, "not_a_member");

    let by_moderator = delete(&app, &moderator.access, &member_path(&room, &speaker.id)).await;
    expect(&by_moderator, StatusCode::NO_CONTENT);
    let not_member = delete(&app, &owner.access, &member_path(&room, &outsider.id)).await;
    assert_error(&not_member, StatusCode::NOT_FOUND, "not_found");
    let by_speaker = delete(&app, &speaker.access, &member_path(&room, &moderator.id)).await;
    assert_error(&by_speaker, StatusCode::FORBIDDEN, "not_a_member");
    assert_eq!(
        members(&app, &owner.access, &room).await,
        roster(&[("olivia", "owner"), ("mona", "moderator")])
    );
}

async fn ban_ends_membership_until_lifted(db: Db) {
    let Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        ..
    } = cast(db, "public").await;
    let banned = ban(&app, &owner.access, &room, &speaker.id).await;
    assert_eq!(expect(&banned, StatusCode::NO_CONTENT), &Value::Null);
    assert!(
        !members(&app, &owner.access, &room)
            .await
            .iter()
            .any(|(name, _)| name == "sam")
    );
    let refused = join(&app, &speaker.access, &room).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "banned");
    let promoted = set_role(&app, &owner.access, &room, &speaker.id, "speaker").await;
    assert_error(&promoted, StatusCode::CONFLICT, "banned");
    // Banning twice is harmless.
    expect(
        &ban(&app, &moderator.access, &room, &speaker.id).await,
        StatusCode::NO_CONTENT,
    );

    let unban_path = ban_path(&room, &speaker.id);
    let lifted = delete(&app, &moderator.access, &unban_path).await;
    assert_eq!(expect(&lifted, StatusCode::NO_CONTENT), &Value::Null);
    // Back in, but the old role is gone: a listener of the public room.
    let joined = join(&app, &speaker.access, &room).await;
    assert_eq!(expect(&joined, StatusCode::OK)["role"], "listener");
    let again = delete(&app, &owner.access, &unban_path).await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
}

async fn bans_are_guarded(db: Db) {
    let Cast {
        app,
        room,
        owner,
        moderator,
        speaker,
        listener,
        outsider,
    } = cast(db, "public").await;
    let owner_banned = ban(&app, &moderator.access, &room, &owner.id).await;
    assert_error(&owner_banned, StatusCode::FORBIDDEN, "owner_protected");
    // Nobody bans themselves: the owner is protected, and a moderator cannot act on a
    // moderator.
    for (user, code) in [(&owner, "owner_protected"), (&moderator, "owner_only")] {
        let own = ban(&app, &user.access, &room, &user.id).await;
        assert_error(&own, StatusCode::FORBIDDEN, code);
    }
    for actor in [&listener, &speaker, &outsider] {
        let reply = ban(&app, &actor.access, &room, &moderator.id).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "not_moderator");
    }
    let ghost = ban(&app, &owner.access, &room, &unknown_id()).await;
    assert_error(&ghost, StatusCode::NOT_FOUND, "not_found");
    let no_room = ban(&app, &owner.access, &unknown_id(), &listener.id).await;
    assert_error(&no_room, StatusCode::NOT_FOUND, "not_found");
    // Non-members can be banned pre-emptively; only moderators lift bans.
    expect(
        &ban(&app, &moderator.access, &room, &outsider.id).await,
        StatusCode::NO_CONTENT,
    );
    let outsider_join = join(&app, &outsider.access, &room).await;
    assert_error(&outsider_join, StatusCode::FORBIDDEN, "banned");
    let lifted = delete(&app, &listener.access, &ban_path(&room, &outsider.id)).await;
    assert_error(&lifted, StatusCode::FORBIDDEN, "not_moderator");
    // Nobody else lost their membership.
    assert_eq!(members(&app, &owner.access, &room).await.len(), 4);
}

/// Asserts a successful join as `role` with its grants.
#[track_caller]
fn assert_joined(reply: &Reply, role: &str, can_publish: bool) {
    let body = expect(reply, StatusCode::OK);
    assert_eq!(body["role"], role);
    assert_eq!(
        body["grants"],
        json!({"can_publish": can_publish, "can_subscribe": true, "can_chat": true}),
        "{role}"
    );
}

async fn join_grants_follow_the_role(db: Db) {
    let crew = cast(db, "public").await;
    for (user, role, can_publish) in [
        (&crew.owner, "owner", true),
        (&crew.moderator, "moderator", true),
        (&crew.speaker, "speaker", true),
        (&crew.listener, "listener", false),
        (&crew.outsider, "listener", false),
    ] {
        assert_joined(
            &join(&crew.app, &user.access, &crew.room).await,
            role,
            can_publish,
        );
    }
    // A role change takes effect on the next join.
    expect(
        &set_role(
            &crew.app,
            &crew.owner.access,
            &crew.room,
            &crew.listener.id,
            "speaker",
        )
        .await,
        StatusCode::OK,
    );
    assert_joined(
        &join(&crew.app, &crew.listener.access, &crew.room).await,
        "speaker",
        true,
    );
}

async fn join_describes_where_to_connect(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let room = app.room(&alice, "private").await;
    let first = join(&app, &alice.access, &room).await;
    let body = expect(&first, StatusCode::OK);
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["expires_in"], 600);
    assert_eq!(
        body["urls"],
        json!({
            "signaling": "ws://veza.test/rtc",
            "whip": format!("{PUBLIC_URL}/whip/{room}"),
            "whep": format!("{PUBLIC_URL}/whep/{room}"),
        })
    );
    assert_eq!(body["ice_servers"], json!([]));
    let participant = body["participant_id"].as_str().expect("participant");
    assert!(participant.parse::<uuid::Uuid>().is_ok());
    let second = join(&app, &alice.access, &room).await;
    let again = expect(&second, StatusCode::OK);
    assert_ne!(again["participant_id"], participant);
    assert_ne!(again["token"], body["token"]);
}

async fn join_is_refused_to_outsiders(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "private").await;
    let private = join(&app, &bob.access, &room).await;
    assert_error(&private, StatusCode::FORBIDDEN, "not_a_member");
    let unknown = join(&app, &bob.access, &unknown_id()).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
}

async fn media_token_is_signed_for_the_room(db: Db) {
    let Cast {
        app,
        room,
        listener,
        speaker,
        ..
    } = cast(db, "public").await;
    for (user, role, can_publish) in [
        (&listener, Role::Listener, false),
        (&speaker, Role::Speaker, true),
    ] {
        let reply = join(&app, &user.access, &room).await;
        let body = expect(&reply, StatusCode::OK);
        let token = body["token"].as_str().expect("token");
        let claims = app.state.keys.verify_media(token).expect("a media token");
        assert_eq!(claims.room.to_string(), room);
        assert_eq!(claims.participant.to_string(), body["participant_id"]);
        assert_eq!(claims.sub.to_string(), user.id);
        assert_eq!(claims.name, user.username);
        assert_eq!(claims.role, role);
        let grants = Grants {
            can_publish,
            can_subscribe: true,
            can_chat: true,
        };
        assert_eq!(claims.grants, grants);
        assert_eq!(claims.aud, MEDIA_AUDIENCE);
        assert_eq!(claims.aud, "veza-media");
        assert_eq!(claims.iss, PUBLIC_URL);
        assert_eq!(claims.exp - claims.iat, 600);
        assert!(claims.iat.abs_diff(unix_now()) <= 5);

        // Neither token stands in for the other.
        let as_access = app.get("/api/v1/me", token).await;
        assert_error(&as_access, StatusCode::UNAUTHORIZED, "invalid_token");
        assert!(app.state.keys.verify_media(&user.access).is_err());
        expect(&app.get("/api/v1/me", &user.access).await, StatusCode::OK);
    }
}

const TURN_SECRET: &str = "0123456789abcdef0123";

async fn turn_credentials_are_minted_per_user(db: Db) {
    let app = TestApp::with(db, |c| {
        c.turn = Some(veza_turn::TurnSettings {
            urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
            secret: TURN_SECRET.into(),
            ttl: std::time::Duration::from_secs(3600),
        });
        c.stun_urls = vec!["stun:127.0.0.1:3478".into()];
    })
    .await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let room = app.room(&alice, "public").await;
    let mut credentials = HashSet::new();
    for user in [&alice, &bob] {
        let before = unix_now();
        let reply = join(&app, &user.access, &room).await;
        let after = unix_now();
        let servers = array(expect(&reply, StatusCode::OK), "ice_servers");
        assert_eq!(servers.len(), 2, "{servers:?}");
        assert_eq!(servers[0], json!({"urls": ["stun:127.0.0.1:3478"]}));
        let turn = &servers[1];
        assert_eq!(turn["urls"], json!(["turn:127.0.0.1:3478?transport=udp"]));
        let username = turn["username"].as_str().expect("username");
        let (expiry, user_id) = username.split_once(':').expect("<expiry>:<user id>");
        assert_eq!(user_id, user.id);
        let expiry: u64 = expiry.parse().expect("expiry");
        assert!((before + 3600..=after + 3600).contains(&expiry), "{expiry}");
        let expected = veza_turn::mint_credential(TURN_SECRET, &user.id, expiry);
        assert_eq!(expected.username, username);
        assert_eq!(turn["credential"], expected.credential.as_str());
        credentials.insert(expected.credential);
    }
    assert_eq!(credentials.len(), 2, "each user has their own credential");
}

/// No entry of a join's `ice_servers` carries credentials.
#[track_caller]
fn assert_no_credentials(reply: &Reply) {
    for server in array(expect(reply, StatusCode::OK), "ice_servers") {
        let keys: Vec<_> = server.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["urls"], "{server:?}");
    }
}

async fn stun_only_has_no_credentials(db: Db) {
    let app = TestApp::with(db, |c| {
        c.stun_urls = vec!["stun:127.0.0.1:3478".into(), "stun:127.0.0.2:3478".into()];
    })
    .await;
    let alice = app.register("alice").await;
    let room = app.room(&alice, "public").await;
    let reply = join(&app, &alice.access, &room).await;
    assert_no_credentials(&reply);
    assert_eq!(
        reply.body["ice_servers"],
        json!([{"urls": ["stun:127.0.0.1:3478", "stun:127.0.0.2:3478"]}])
    );
}

/// Every entry of the audit log, newest first.
async fn audit_entries(app: &TestApp, token: &str) -> Vec<Value> {
    let reply = app.get("/api/v1/admin/audit?limit=500", token).await;
    let body = expect(&reply, StatusCode::OK);
    assert_eq!(body["next_before"], Value::Null);
    array(body, "entries").clone()
}

/// The one entry with this action and target.
#[track_caller]
fn entry<'a>(entries: &'a [Value], action: &str, target: &str) -> &'a Value {
    let mut found = entries
        .iter()
        .filter(|e| e["action"] == action && e["target"] == target);
    let hit = found
        .next()
        .unwrap_or_else(|| panic!("no {action} of {target}: {entries:?}"));
    assert!(found.next().is_none(), "one {action} of {target}");
    hit
}

/// Asserts an entry's actor, ip and detail.
#[track_caller]
fn assert_entry(entry: &Value, actor: Option<&String>, ip: &str, detail: Value) {
    assert_eq!(entry["actor_id"], json!(actor), "{entry:?}");
    assert_eq!(entry["ip"], ip, "{entry:?}");
    assert_eq!(entry["detail"], detail, "{entry:?}");
}

async fn failed_login(app: &TestApp, username: &str, from: &str) {
    let body = json!({"username": username, "password": "wrong password!"});
    let reply = app
        .call_from(Method::POST, "/api/v1/auth/login", None, Some(body), from)
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_credentials");
}

async fn audit_log_records_security_events(db: Db) {
    let app = TestApp::new(db).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    failed_login(&app, "bob", "10.1.2.3:4567").await;
    failed_login(&app, "ghost", "127.0.0.1:40000").await;
    let room = app.room(&alice, "public").await;
    let media = join(&app, &bob.access, &room).await.body["token"].clone();
    let (a, r) = (alice.access.as_str(), room.as_str());
    for reply in [
        set_role(&app, a, r, &bob.id, "speaker").await,
        set_role(&app, a, r, &carol.id, "listener").await,
    ] {
        expect(&reply, StatusCode::OK);
    }
    for reply in [
        delete(&app, a, &member_path(r, &carol.id)).await,
        ban(&app, a, r, &bob.id).await,
        delete(&app, a, &ban_path(r, &bob.id)).await,
        delete(&app, a, &room_path(r)).await,
    ] {
        expect(&reply, StatusCode::NO_CONTENT);
    }

    let entries = audit_entries(&app, a).await;
    let actions: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        [
            "register",
            "register",
            "register",
            "login_failed",
            "login_failed",
            "role_change",
            "role_change",
            "member_removed",
            "ban",
            "unban",
            "room_deleted",
        ]
    );
    let ids: Vec<i64> = entries
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let local = "127.0.0.1";
    let first = json!("first user: admin");
    assert_entry(
        entry(&entries, "register", &alice.id),
        Some(&alice.id),
        local,
        first,
    );
    assert_entry(
        entry(&entries, "register", &bob.id),
        Some(&bob.id),
        local,
        Value::Null,
    );
    let credentials = json!("bad credentials");
    // Nobody proved who they are, so no actor; the target is the account tried.
    let bob_failed = entry(&entries, "login_failed", &bob.id);
    assert_entry(bob_failed, None, "10.1.2.3", credentials.clone());
    assert_entry(
        entry(&entries, "login_failed", "ghost"),
        None,
        local,
        credentials,
    );
    let role = entry(&entries, "role_change", &bob.id);
    assert_entry(
        role,
        Some(&alice.id),
        local,
        json!(format!("room {room}: speaker")),
    );
    let in_room = json!(format!("room {room}"));
    for action in ["ban", "unban"] {
        let hit = entry(&entries, action, &bob.id);
        assert_entry(hit, Some(&alice.id), local, in_room.clone());
    }
    let removed = entry(&entries, "member_removed", &carol.id);
    assert_entry(removed, Some(&alice.id), local, in_room);
    let deleted = entry(&entries, "room_deleted", &room);
    assert_entry(deleted, Some(&alice.id), local, json!("Room"));
    assert!(entries.iter().all(|e| e["created_at"].as_i64() > Some(0)));

    // No secret ever reaches the log.
    let text = Value::Array(entries).to_string();
    let media = media.as_str().expect("media token");
    let mut secrets = vec![PASSWORD, "wrong password!", media];
    for session in [&alice, &bob, &carol] {
        secrets.extend([session.access.as_str(), session.refresh.as_str()]);
    }
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
}

/// Follows `next_before` with pages of `limit` entries; returns every id seen, in order.
async fn walk_audit(app: &TestApp, token: &str, limit: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/api/v1/admin/audit?limit={limit}{before}");
        let reply = app.get(&path, token).await;
        let body = expect(&reply, StatusCode::OK);
        let entries = array(body, "entries");
        assert!(entries.len() <= limit, "{path}: {} entries", entries.len());
        ids.extend(entries.iter().map(|e| e["id"].as_i64().expect("id")));
        match body["next_before"].as_i64() {
            Some(next) => {
                assert_eq!(entries.len(), limit, "only full pages have a next page");
                assert_eq!(ids.last(), Some(&next));
                before = format!("&before={next}");
            }
            None => return ids,
        }
        assert!(ids.len() <= 100, "the walk does not end");
    }
}

async fn audit_log_is_paged_and_admin_only(db: Db) {
    let app = TestApp::new(db).await;
    let admin = app.register("admin").await;
    let user = app.register("user").await;
    for name in ["x1", "x2", "x3", "x4", "x5"] {
        failed_login(&app, name, "127.0.0.1:1").await;
    }
    let all: Vec<i64> = audit_entries(&app, &admin.access)
        .await
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(all.len(), 7);
    for limit in [1, 2, 3, 7] {
        assert_eq!(
            walk_audit(&app, &admin.access, limit).await,
            all,
            "limit {limit}"
        );
    }
    let older = app
        .get(
            &format!("/api/v1/admin/audit?before={}", all[2]),
            &admin.access,
        )
        .await;
    let older: Vec<_> = array(expect(&older, StatusCode::OK), "entries")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(older, all[3..]);

    let denied = app.get("/api/v1/admin/audit", &user.access).await;
    assert_error(&denied, StatusCode::FORBIDDEN, "not_admin");
    let anonymous = app
        .call(Method::GET, "/api/v1/admin/audit", None, None)
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "missing_token");
    for limit in ["0", "501"] {
        let reply = app
            .get(&format!("/api/v1/admin/audit?limit={limit}"), &admin.access)
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_limit");
    }
    let words = app
        .get("/api/v1/admin/audit?before=yesterday", &admin.access)
        .await;
    assert_error(&words, StatusCode::BAD_REQUEST, "invalid_query");
}
