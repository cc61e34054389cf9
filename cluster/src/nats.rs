//! The NATS connection every cluster service opens the same way: no echo of its own messages,
//! reconnections forever (backing off to a second), and a notification on every (re)connect so
//! the service can catch up with what it missed while cut off.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Connects to `url` with `options`, logging connection changes as `service`. The returned
/// [`Notify`] fires on every connection, the first included.
pub async fn connect(
    options: async_nats::ConnectOptions,
    url: &str,
    service: &'static str,
) -> Result<(async_nats::Client, Arc<Notify>), async_nats::ConnectError> {
    let connected = Arc::new(Notify::new());
    let notify = Arc::clone(&connected);
    let client = options
        .no_echo()
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(100 * attempts.saturating_sub(1).min(10) as u64)
        })
        .event_callback(move |event| {
            let notify = Arc::clone(&notify);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(service, "connected to NATS");
                        notify.notify_one();
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(service, "disconnected from NATS");
                    }
                    other => tracing::debug!(service, event = %other, "NATS event"),
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, connected))
}
