//! One store test suite, run against real PostgreSQL (a fresh database per test) and SQLite.

use veza_proto::{Role, RoomId, UserId, Visibility};
use veza_store::testing::TestDb;
use veza_store::{ChatPage, NewAuditEntry, NewRoom, RefreshOutcome, RoomPatch, Store, StoreError};

/// Runs each scenario once per backend, on a multi-threaded runtime so that concurrent
/// scenarios really run in parallel.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() {
                let db = veza_store::testing::TestDb::postgres().await.expect("PostgreSQL at 127.0.0.1:5432");
                super::$name(db.store().await.expect("migrate")).await;
            })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() {
                let db = veza_store::testing::TestDb::sqlite();
                super::$name(db.store().await.expect("migrate")).await;
            })*
        }
    };
}

conformance!(
    migrations_are_idempotent,
    first_user_is_admin_and_names_are_unique_case_insensitively,
    totp_steps_are_single_use,
    refresh_rotation_and_family_revocation,
    rooms_listing_respects_visibility_and_pages,
    room_update_and_delete_cascade,
    members_and_bans,
    audit_log_pages_newest_first,
    chat_messages_are_sequenced_deduplicated_and_paged,
    chat_edits_and_deletes,
    concurrent_chat_inserts_get_gap_free_seqs,
    chat_mutes_and_standing,
);

async fn user(store: &Store, name: &str) -> UserId {
    store
        .create_user(name, "$argon2id$fake")
        .await
        .expect("create user")
        .id
}

async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.expect("second migrate is a no-op");
    store.ping().await.expect("ping");
}

async fn first_user_is_admin_and_names_are_unique_case_insensitively(store: Store) {
    let alice = store.create_user("Alice", "hash-a").await.expect("alice");
    assert!(alice.is_admin, "the first user is admin");
    assert_eq!(alice.username, "Alice");
    let bob = store.create_user("bob", "hash-b").await.expect("bob");
    assert!(!bob.is_admin);
    assert!(matches!(
        store.create_user("ALICE", "x").await,
        Err(StoreError::Conflict("username"))
    ));
    let creds = store.credentials("aLiCe").await.expect("lookup any case");
    assert_eq!(creds.user.id, alice.id);
    assert_eq!(creds.password_hash, "hash-a");
    assert!(
        !format!("{creds:?}").contains("hash-a"),
        "Debug hides secrets"
    );
    assert!(matches!(
        store.credentials("nobody").await,
        Err(StoreError::NotFound)
    ));
    assert!(store.grant_admin("BOB").await.expect("grant").is_admin);
    assert!(matches!(
        store.grant_admin("nobody").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.count_users().await.expect("count"), 2);
}

async fn totp_steps_are_single_use(store: Store) {
    let id = user(&store, "carol").await;
    assert!(
        matches!(store.enable_totp(id).await, Err(StoreError::NotFound)),
        "no secret yet"
    );
    store
        .set_pending_totp(id, "SECRET1")
        .await
        .expect("pending");
    store
        .set_pending_totp(id, "SECRET2")
        .await
        .expect("replace pending");
    store.enable_totp(id).await.expect("enable");
    assert!(matches!(
        store.set_pending_totp(id, "SECRET3").await,
        Err(StoreError::Conflict(_))
    ));
    let creds = store.credentials_by_id(id).await.expect("creds");
    assert_eq!(creds.totp_secret.as_deref(), Some("SECRET2"));
    assert!(creds.user.totp_enabled);
    assert!(store.consume_totp_step(id, 100).await.expect("first use"));
    assert!(!store.consume_totp_step(id, 100).await.expect("replay"));
    assert!(!store.consume_totp_step(id, 99).await.expect("older step"));
    assert!(store.consume_totp_step(id, 101).await.expect("next step"));
}

async fn refresh_rotation_and_family_revocation(store: Store) {
    let id = user(&store, "dave").await;
    store
        .insert_refresh_token("h1", "fam", id, 1_000, 10_000)
        .await
        .expect("insert");
    assert_eq!(
        store
            .rotate_refresh_token("h1", "h2", 2_000, 20_000)
            .await
            .expect("rotate"),
        RefreshOutcome::Rotated { user_id: id }
    );
    assert_eq!(
        store
            .rotate_refresh_token("h2", "h3", 3_000, 30_000)
            .await
            .expect("rotate"),
        RefreshOutcome::Rotated { user_id: id }
    );
    // h1 presented again: reuse, so the family (including the live h3) is revoked.
    assert_eq!(
        store
            .rotate_refresh_token("h1", "h4", 4_000, 40_000)
            .await
            .expect("reuse"),
        RefreshOutcome::Reused {
            user_id: id,
            family_id: "fam".into()
        }
    );
    assert_eq!(
        store
            .rotate_refresh_token("h3", "h5", 5_000, 50_000)
            .await
            .expect("revoked"),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", "h6", 5_000, 50_000)
            .await
            .expect("unknown"),
        RefreshOutcome::Invalid
    );
    // Expiry.
    store
        .insert_refresh_token("e1", "fam2", id, 1_000, 2_000)
        .await
        .expect("insert");
    assert_eq!(
        store
            .rotate_refresh_token("e1", "e2", 2_000, 3_000)
            .await
            .expect("expired"),
        RefreshOutcome::Invalid
    );
    // Logout revokes the family.
    store
        .insert_refresh_token("l1", "fam3", id, 1_000, 90_000)
        .await
        .expect("insert");
    assert_eq!(
        store.revoke_family_of("l1", 2_000).await.expect("logout"),
        Some(id)
    );
    assert_eq!(
        store
            .rotate_refresh_token("l1", "l2", 3_000, 90_000)
            .await
            .expect("after logout"),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .revoke_family_of("nope", 2_000)
            .await
            .expect("unknown"),
        None
    );
    assert!(
        store
            .purge_expired_refresh_tokens(60_000)
            .await
            .expect("purge")
            >= 4
    );
}

async fn rooms_listing_respects_visibility_and_pages(store: Store) {
    let owner = user(&store, "erin").await;
    let other = user(&store, "frank").await;
    let mut public = Vec::new();
    for i in 0..5 {
        let room = store
            .create_room(NewRoom {
                name: &format!("public {i}"),
                description: None,
                visibility: Visibility::Public,
                owner_id: owner,
            })
            .await
            .expect("room");
        public.push(room.id);
    }
    let private = store
        .create_room(NewRoom {
            name: "private",
            description: Some("secret"),
            visibility: Visibility::Private,
            owner_id: owner,
        })
        .await
        .expect("private room");
    assert_eq!(
        store.member_role(private.id, owner).await.expect("role"),
        Some(Role::Owner)
    );

    let owner_sees = store.list_rooms(owner, 100, None).await.expect("list");
    assert_eq!(owner_sees.len(), 6);
    assert!(owner_sees.iter().all(|r| r.role == Some(Role::Owner)));
    let other_sees = store.list_rooms(other, 100, None).await.expect("list");
    assert_eq!(
        other_sees.len(),
        5,
        "private rooms are hidden from non-members"
    );
    assert!(other_sees.iter().all(|r| r.role.is_none()));

    // Pages of two cover everything exactly once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_rooms(other, 2, cursor).await.expect("page");
        if page.is_empty() {
            break;
        }
        let last = &page[page.len() - 1].room;
        cursor = Some((last.created_at, last.id));
        seen.extend(page.into_iter().map(|r| r.room.id));
    }
    seen.sort();
    public.sort();
    assert_eq!(seen, public);

    store
        .set_member_role(private.id, other, Role::Listener)
        .await
        .expect("add");
    assert_eq!(
        store
            .list_rooms(other, 100, None)
            .await
            .expect("list")
            .len(),
        6
    );
    assert_eq!(store.count_rooms().await.expect("count"), 6);
}

async fn room_update_and_delete_cascade(store: Store) {
    let owner = user(&store, "gina").await;
    let member = user(&store, "hank").await;
    let room = store
        .create_room(NewRoom {
            name: "r",
            description: Some("d"),
            visibility: Visibility::Public,
            owner_id: owner,
        })
        .await
        .expect("room");
    let patched = store
        .update_room(
            room.id,
            RoomPatch {
                name: Some("renamed".into()),
                description: Some(None),
                visibility: Some(Visibility::Private),
            },
        )
        .await
        .expect("patch");
    assert_eq!(patched.name, "renamed");
    assert_eq!(patched.description, None);
    assert_eq!(patched.visibility, Visibility::Private);
    assert_eq!(store.room(room.id).await.expect("get"), patched);
    let untouched = store
        .update_room(room.id, RoomPatch::default())
        .await
        .expect("noop");
    assert_eq!(untouched.name, "renamed");

    store
        .set_member_role(room.id, member, Role::Speaker)
        .await
        .expect("member");
    store.delete_room(room.id).await.expect("delete");
    assert!(matches!(
        store.room(room.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.member_role(room.id, member).await.expect("role"),
        None
    );
    assert!(matches!(
        store.delete_room(room.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_room(RoomId::new(), RoomPatch::default()).await,
        Err(StoreError::NotFound)
    ));
}

async fn members_and_bans(store: Store) {
    let owner = user(&store, "ivy").await;
    let a = user(&store, "jack").await;
    let b = user(&store, "kate").await;
    let room = store
        .create_room(NewRoom {
            name: "r",
            description: None,
            visibility: Visibility::Public,
            owner_id: owner,
        })
        .await
        .expect("room");
    store
        .set_member_role(room.id, a, Role::Listener)
        .await
        .expect("add");
    store
        .set_member_role(room.id, a, Role::Moderator)
        .await
        .expect("promote");
    store
        .set_member_role(room.id, b, Role::Speaker)
        .await
        .expect("add");
    let members = store.list_members(room.id).await.expect("members");
    let roles: Vec<_> = members
        .iter()
        .map(|m| (m.username.as_str(), m.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("ivy", Role::Owner),
            ("jack", Role::Moderator),
            ("kate", Role::Speaker)
        ]
    );
    assert!(matches!(
        store
            .set_member_role(room.id, UserId::new(), Role::Listener)
            .await,
        Err(StoreError::NotFound)
    ));

    store.ban(room.id, b, owner).await.expect("ban");
    store
        .ban(room.id, b, owner)
        .await
        .expect("ban twice is fine");
    assert!(store.is_banned(room.id, b).await.expect("banned"));
    assert_eq!(
        store.member_role(room.id, b).await.expect("role"),
        None,
        "ban ends membership"
    );
    assert!(matches!(
        store.set_member_role(room.id, b, Role::Listener).await,
        Err(StoreError::Conflict("ban"))
    ));
    assert!(store.unban(room.id, b).await.expect("unban"));
    assert!(!store.unban(room.id, b).await.expect("unban twice"));
    assert!(!store.is_banned(room.id, b).await.expect("not banned"));

    assert!(store.remove_member(room.id, a).await.expect("remove"));
    assert!(!store.remove_member(room.id, a).await.expect("remove twice"));
}

async fn audit_log_pages_newest_first(store: Store) {
    for i in 0..5 {
        store
            .audit(NewAuditEntry {
                actor_id: Some(format!("actor{i}")),
                action: "login_failed",
                target: Some("t".into()),
                ip: Some("127.0.0.1".into()),
                detail: None,
            })
            .await
            .expect("audit");
    }
    let first = store.list_audit(None, 3).await.expect("page 1");
    assert_eq!(first.len(), 3);
    assert_eq!(first[0].actor_id.as_deref(), Some("actor4"));
    assert!(first.windows(2).all(|w| w[0].id > w[1].id));
    let second = store
        .list_audit(Some(first[2].id), 3)
        .await
        .expect("page 2");
    assert_eq!(second.len(), 2);
    assert_eq!(second[1].actor_id.as_deref(), Some("actor0"));
    assert_eq!(second[0].ip.as_deref(), Some("127.0.0.1"));
}

async fn public_room(store: &Store, owner: UserId) -> RoomId {
    store
        .create_room(NewRoom {
            name: "chat",
            description: None,
            visibility: Visibility::Public,
            owner_id: owner,
        })
        .await
        .expect("room")
        .id
}

async fn chat_messages_are_sequenced_deduplicated_and_paged(store: Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room = public_room(&store, alice).await;
    let other_room = public_room(&store, alice).await;

    let (first, created) = store
        .insert_chat_message(room, alice, "c1", "hello")
        .await
        .expect("insert");
    assert!(created);
    assert_eq!(first.seq, 1);
    assert_eq!(
        (first.username.as_str(), first.text.as_str()),
        ("alice", "hello")
    );
    assert_eq!((first.edited_at, first.deleted_at), (None, None));
    assert!(first.created_at > 0);

    // The same client id again: the stored message, nothing new, no seq used.
    let (again, created) = store
        .insert_chat_message(room, alice, "c1", "a different text")
        .await
        .expect("duplicate");
    assert!(!created);
    assert_eq!(again, first);
    // The same client id from another user, or in another room, is another message.
    let (from_bob, created) = store
        .insert_chat_message(room, bob, "c1", "hi")
        .await
        .expect("bob");
    assert!(created);
    assert_eq!(from_bob.seq, 2, "the duplicate used no seq");
    let (elsewhere, _) = store
        .insert_chat_message(other_room, alice, "c1", "elsewhere")
        .await
        .expect("other room");
    assert_eq!(elsewhere.seq, 1, "seqs count per room");

    for i in 3..=10 {
        let (m, _) = store
            .insert_chat_message(room, alice, &format!("c{i}"), &format!("m{i}"))
            .await
            .expect("insert");
        assert_eq!(m.seq, i);
    }
    assert_eq!(store.chat_message(room, 2).await.expect("by seq"), from_bob);
    assert!(matches!(
        store.chat_message(room, 11).await,
        Err(StoreError::NotFound)
    ));

    let seqs = |page: Vec<veza_store::ChatMessage>| page.iter().map(|m| m.seq).collect::<Vec<_>>();
    let latest = store
        .chat_history(room, ChatPage::Latest, 3)
        .await
        .expect("latest");
    assert_eq!(seqs(latest), [10, 9, 8]);
    let before = store
        .chat_history(room, ChatPage::Before(8), 3)
        .await
        .expect("before");
    assert_eq!(seqs(before), [7, 6, 5]);
    let tail = store
        .chat_history(room, ChatPage::Before(3), 50)
        .await
        .expect("before, short page");
    assert_eq!(seqs(tail), [2, 1]);
    let after = store
        .chat_history(room, ChatPage::After(2), 4)
        .await
        .expect("after");
    assert_eq!(seqs(after), [3, 4, 5, 6]);
    assert!(
        store
            .chat_history(room, ChatPage::After(10), 4)
            .await
            .expect("caught up")
            .is_empty()
    );
    assert_eq!(
        seqs(
            store
                .chat_history(other_room, ChatPage::Latest, 50)
                .await
                .expect("other")
        ),
        [1]
    );

    assert!(matches!(
        store
            .insert_chat_message(RoomId::new(), alice, "c1", "nowhere")
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .insert_chat_message(room, UserId::new(), "c1", "nobody")
            .await,
        Err(StoreError::NotFound)
    ));
    let (next, _) = store
        .insert_chat_message(room, bob, "c2", "after the failures")
        .await
        .expect("insert");
    assert_eq!(next.seq, 11, "failed inserts gave their seq back");

    // Deleting the room deletes its chat.
    store.delete_room(room).await.expect("delete room");
    assert!(matches!(
        store.chat_message(room, 1).await,
        Err(StoreError::NotFound)
    ));
}

async fn chat_edits_and_deletes(store: Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room = public_room(&store, alice).await;
    let (m, _) = store
        .insert_chat_message(room, bob, "b1", "tpyo")
        .await
        .expect("insert");

    let edited = store
        .edit_chat_message(room, m.seq, bob, "typo")
        .await
        .expect("edit");
    assert_eq!(edited.text, "typo");
    assert!(edited.edited_at.is_some_and(|at| at >= m.created_at));
    assert_eq!(
        (edited.id, edited.seq, edited.created_at),
        (m.id, m.seq, m.created_at)
    );
    assert!(
        matches!(
            store.edit_chat_message(room, m.seq, alice, "hijack").await,
            Err(StoreError::NotFound)
        ),
        "only the author's message matches"
    );
    assert!(matches!(
        store.edit_chat_message(room, 99, bob, "x").await,
        Err(StoreError::NotFound)
    ));

    let deleted = store
        .delete_chat_message(room, m.seq, alice)
        .await
        .expect("delete");
    assert!(deleted.is_deleted());
    assert_eq!(deleted.text, "", "a deleted message's text is erased");
    assert_eq!(deleted.deleted_by, Some(alice));
    assert!(matches!(
        store.delete_chat_message(room, m.seq, alice).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.edit_chat_message(room, m.seq, bob, "back").await,
        Err(StoreError::NotFound)
    ));
    let history = store
        .chat_history(room, ChatPage::Latest, 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 1, "a deleted message keeps its place");
    assert!(history[0].is_deleted() && history[0].text.is_empty());
    // A retry of the deleted message's client id does not bring it back.
    let (again, created) = store
        .insert_chat_message(room, bob, "b1", "tpyo")
        .await
        .expect("retry");
    assert!(!created && again.is_deleted());
}

async fn concurrent_chat_inserts_get_gap_free_seqs(store: Store) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room = public_room(&store, alice).await;
    // 50 distinct messages from two users, plus 10 retries racing their originals.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = store.clone();
        let (author, n) = if i < 50 {
            (if i % 2 == 0 { alice } else { bob }, i)
        } else {
            (if (i - 50) % 2 == 0 { alice } else { bob }, i - 50)
        };
        tasks.push(tokio::spawn(async move {
            store
                .insert_chat_message(room, author, &format!("m{n}"), &format!("text {n}"))
                .await
        }));
    }
    let mut created = Vec::new();
    let mut duplicates = 0;
    for task in tasks {
        let (message, new) = task.await.expect("task").expect("insert");
        if new {
            created.push(message.seq);
        } else {
            duplicates += 1;
        }
    }
    created.sort_unstable();
    assert_eq!(
        created,
        (1..=50).collect::<Vec<i64>>(),
        "seqs 1..=50 exactly"
    );
    assert_eq!(duplicates, 10);
    let all = store
        .chat_history(room, ChatPage::After(0), 200)
        .await
        .expect("history");
    assert_eq!(all.len(), 50);
    assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    // Order of seqs is the order of acceptance: created_at never goes backwards.
    assert!(all.windows(2).all(|w| w[0].created_at <= w[1].created_at));
}

async fn chat_mutes_and_standing(store: Store) {
    let owner = user(&store, "olga").await;
    let member = user(&store, "pete").await;
    let stranger = user(&store, "quinn").await;
    let room = store
        .create_room(NewRoom {
            name: "private",
            description: None,
            visibility: Visibility::Private,
            owner_id: owner,
        })
        .await
        .expect("room")
        .id;
    store
        .set_member_role(room, member, Role::Speaker)
        .await
        .expect("member");

    let standing = store.chat_standing(room, member).await.expect("standing");
    assert_eq!(standing.visibility, Visibility::Private);
    assert_eq!(standing.owner_id, owner);
    assert_eq!(standing.role, Some(Role::Speaker));
    assert!(!standing.banned && !standing.muted);
    assert_eq!(
        store
            .chat_standing(room, stranger)
            .await
            .expect("standing")
            .role,
        None
    );
    assert!(matches!(
        store.chat_standing(RoomId::new(), member).await,
        Err(StoreError::NotFound)
    ));

    assert!(!store.is_chat_muted(room, member).await.expect("muted?"));
    store.mute_chat(room, member, owner).await.expect("mute");
    store
        .mute_chat(room, member, owner)
        .await
        .expect("mute twice is fine");
    assert!(store.is_chat_muted(room, member).await.expect("muted?"));
    assert!(
        store
            .chat_standing(room, member)
            .await
            .expect("standing")
            .muted
    );
    assert!(matches!(
        store.mute_chat(room, UserId::new(), owner).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.mute_chat(RoomId::new(), member, owner).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.unmute_chat(room, member).await.expect("unmute"));
    assert!(!store.unmute_chat(room, member).await.expect("unmute twice"));
    assert!(!store.is_chat_muted(room, member).await.expect("muted?"));

    store.ban(room, stranger, owner).await.expect("ban");
    assert!(
        store
            .chat_standing(room, stranger)
            .await
            .expect("standing")
            .banned
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    assert!(matches!(
        Store::connect("mysql://localhost/x").await,
        Err(StoreError::UnsupportedUrl)
    ));
    let _ = TestDb::sqlite();
}
