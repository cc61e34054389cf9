//! Embedded migrations from `migrations/postgres` and `migrations/sqlite`.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::{Backend, Store, StoreError};

/// `(version, description, postgres sql, sqlite sql)`; append, never edit.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "chat",
        include_str!("../../migrations/postgres/0002_chat.sql"),
        include_str!("../../migrations/sqlite/0002_chat.sql"),
    ),
];

pub(crate) async fn run(store: &Store) -> Result<(), StoreError> {
    let migrations = MIGRATIONS
        .iter()
        .map(|&(version, description, postgres, sqlite)| {
            let sql = match store.backend {
                Backend::Postgres => postgres,
                Backend::Sqlite => sqlite,
            };
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    let migrator = Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    migrator.run(&store.pool).await?;
    Ok(())
}
