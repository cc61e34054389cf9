//! Connecting to Redis, shared by the Redis backends of all services.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::ClusterError;

/// Time allowed for establishing a TCP connection to Redis.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one Redis round trip before the operation fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts retried (with backoff) before giving up.
const CONNECT_RETRIES: usize = 2;
/// Upper bound on the backoff between connection attempts, in milliseconds.
const MAX_RETRY_DELAY_MS: u64 = 500;

/// Opens a `ConnectionManager` (which reconnects after failures) to `url`.
///
/// Fails quickly, after a couple of retries, if Redis is unreachable.
pub(crate) async fn connect(url: &str) -> Result<ConnectionManager, ClusterError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECTION_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(CONNECT_RETRIES)
        .set_max_delay(MAX_RETRY_DELAY_MS);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}
