//! Sends breaker transitions to the configured webhook: one JSON POST each, in order, with
//! a timeout per attempt and retries with backoff. It runs on its own task behind a bounded
//! queue, so a slow or dead receiver delays only the webhook, never ingest.

use std::time::Duration;

use callwatch_query::breakers::BreakerEvent;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config_file::Webhook;

/// First pause between attempts; it doubles after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Starts the sender; transitions sent into the returned queue are posted.
pub fn spawn(
    webhook: Webhook,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<mpsc::Sender<BreakerEvent>> {
    let (sender, mut receiver) = mpsc::channel::<BreakerEvent>(webhook.queue);
    let client = reqwest::Client::builder()
        .timeout(webhook.timeout)
        .build()?;
    tracker.spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = receiver.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                () = post(&client, &webhook, &event) => {}
            }
        }
    });
    Ok(sender)
}

async fn post(client: &reqwest::Client, webhook: &Webhook, event: &BreakerEvent) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 0..=webhook.retries {
        if attempt > 0 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        match client.post(webhook.url.clone()).json(event).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::warn!(
                status = %response.status(), attempt, url = %webhook.url,
                "the breaker webhook refused a transition"
            ),
            Err(error) => tracing::warn!(
                %error, attempt, url = %webhook.url,
                "the breaker webhook could not be reached"
            ),
        }
    }
    tracing::error!(
        client = %event.client, server = %event.server, to = ?event.to, url = %webhook.url,
        "gave up sending a breaker transition to the webhook"
    );
}
