//! Veza persistence: one [`Store`] API over PostgreSQL (a cluster) and SQLite (one node).
//!
//! Both backends run the same SQL through sqlx's `Any` driver. The schema keeps to types that
//! both understand — UUIDs as text, times as milliseconds since the Unix epoch in `BIGINT`,
//! flags as `0`/`1` — so there is one query per operation and the conformance suite in
//! `tests/` proves both backends behave alike.
//!
//! ```no_run
//! # async fn demo() -> Result<(), veza_store::StoreError> {
//! let store = veza_store::Store::connect("sqlite://./veza-data/veza.db").await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod audit;
mod chat;
mod migrate;
mod rooms;
pub mod testing;
mod tokens;
mod users;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use audit::{AuditEntry, NewAuditEntry};
pub use chat::{ChatMessage, ChatPage, ChatStanding};
pub use rooms::{Member, NewRoom, Room, RoomPatch, RoomWithRole};
pub use tokens::RefreshOutcome;
pub use users::{Credentials, User};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: shared by every node of a cluster.
    Postgres,
    /// SQLite: a file in the data folder, for one node.
    Sqlite,
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row that the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the string names what clashed.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The database URL names no supported database.
    #[error("unsupported database URL (use postgres://… or sqlite://…)")]
    UnsupportedUrl,
    /// A stored value could not be read back (a corrupt or foreign row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database failed or was unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// A handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `url` (`postgres://…`, or `sqlite://path`, whose file is created if missing).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if url.starts_with("sqlite:") {
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = if url.contains("mode=") {
                url.to_owned()
            } else {
                format!("{url}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyPoolOptions::new().max_connections(match backend {
            Backend::Postgres => 16,
            Backend::Sqlite => 8,
        });
        let options = match backend {
            Backend::Postgres => options,
            // WAL lets readers run beside the one writer; a busy writer waits instead of failing.
            Backend::Sqlite => options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            }),
        };
        let pool = options.connect(&url).await?;
        Ok(Self { pool, backend })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies every migration not yet applied (holding a lock on PostgreSQL, so several nodes
    /// starting at once are safe).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(self).await
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch, the store's unit of time.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_or(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(err),
    }
}

/// Parses an id column.
fn parse_id<T: std::str::FromStr>(column: &str, value: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{column}: {value:?} is not a valid id")))
}
