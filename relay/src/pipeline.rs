//! One pipeline: poll a stream table's outbox as a consumer group, deliver each batch to the
//! sink, commit the offset after the sink acknowledged it. At-least-once: a batch whose
//! delivery failed (or whose relay died) is polled and delivered again; the offset never
//! passes a message the sink has not acknowledged.
//!
//! Backpressure: at most `sink_max_inflight` messages are handed to the sink at once, and the
//! next poll waits until they are acknowledged, so a stalled sink stops the polling and the
//! relay holds at most one window of messages in memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{Config, Pipeline};
use crate::envelope::Envelope;
use crate::metrics::PipelineStats;
use crate::sink::{Message, Sink, SinkError};
use crate::source::{Source, SourceError};
use crate::{debug, error, info, warn};

pub struct Spec {
    pub name: String,
    pub stream_table: String,
    pub group: String,
    pub create_group: bool,
    pub consumer: String,
    pub window: usize,
    pub lease_seconds: f64,
    pub poll_interval: Duration,
    pub sink_timeout: Duration,
}

impl Spec {
    pub fn new(c: &Config, p: &Pipeline) -> Spec {
        Spec {
            name: p.name.clone(),
            stream_table: p.stream_table.clone(),
            group: p.consumer_group.clone(),
            create_group: p.create_group,
            consumer: lease_holder(&c.relay.consumer_id),
            window: p.batch_size.min(c.relay.sink_max_inflight),
            lease_seconds: c.relay.lease_seconds,
            poll_interval: Duration::from_millis(c.relay.poll_interval_ms),
            sink_timeout: Duration::from_millis(c.relay.sink_timeout_ms),
        }
    }
}

/// The name this process holds leases under: the configured consumer id and a part of its
/// own, so that two relays given the same id fence each other (the second waits for the
/// first's lease) instead of sharing a lease.
fn lease_holder(consumer_id: &str) -> String {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let token = TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{}.{:08x}", std::process::id(), nanos)
    });
    format!("{consumer_id}/{token}")
}

/// Sleeps `d`, or less when shutdown is asked; true when it was.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Runs the pipeline until shutdown. A batch being delivered when shutdown is asked is
/// finished (acknowledged and committed) first.
pub async fn run(
    spec: Spec,
    mut source: Source,
    mut sink: Sink,
    stats: Arc<PipelineStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut db_backoff = Backoff::from_clock();
    let mut sink_backoff = Backoff::from_clock();
    let mut group_ready = !spec.create_group;
    // The epoch of the lease this pipeline last delivered under, if any (at shutdown the
    // lease is given up: by this holder name, which no other process uses, of any epoch).
    let mut held: Option<i64> = None;
    let p = &spec.name;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if !source.connected() {
            stats.set_state("connecting_postgres");
            match source.connect().await {
                Ok(()) => {
                    stats.reconnects_db.fetch_add(1, Ordering::SeqCst);
                    if db_backoff.attempts() > 0 {
                        info!("pipeline {p}: reconnected to PostgreSQL");
                    }
                    // Reset by a successful poll, not by the connection: an error that persists
                    // after every reconnect keeps growing the delay.
                    stats.backoff_ms.store(0, Ordering::SeqCst);
                }
                Err(e) => {
                    let d = db_backoff.next_delay();
                    warn!(
                        "pipeline {p}: {e}; reconnecting in {} ms (attempt {})",
                        d.as_millis(),
                        db_backoff.attempts()
                    );
                    stats.set_error(Some(e.to_string()));
                    stats
                        .backoff_ms
                        .store(d.as_millis() as u64, Ordering::SeqCst);
                    if pause(d, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        if !group_ready {
            match source.ensure_group(&spec.stream_table, &spec.group).await {
                Ok(created) => {
                    if created {
                        info!(
                            "pipeline {p}: created consumer group {:?} of {}",
                            spec.group, spec.stream_table
                        );
                    }
                    group_ready = true;
                }
                Err(e) => {
                    let d = db_backoff.next_delay();
                    error!(
                        "pipeline {p}: cannot create consumer group {:?}: {e}; again in {} ms",
                        spec.group,
                        d.as_millis()
                    );
                    stats.set_error(Some(e.to_string()));
                    source.disconnect();
                    if pause(d, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        if !sink.connected() {
            stats.set_state("connecting_sink");
            match crate::sink::within(spec.sink_timeout, "the connection", sink.connect()).await {
                Ok(()) => {
                    stats.reconnects_sink.fetch_add(1, Ordering::SeqCst);
                    if sink_backoff.attempts() > 0 {
                        info!(
                            "pipeline {p}: reconnected to sink {} after {} attempts",
                            stats.sink,
                            sink_backoff.attempts()
                        );
                    }
                    // Reset by an acknowledged batch: a sink that accepts connections and fails
                    // every batch keeps growing the delay.
                    stats.backoff_ms.store(0, Ordering::SeqCst);
                }
                Err(e) => {
                    let d = sink_backoff.next_delay();
                    warn!(
                        "pipeline {p}: sink {} {e}; reconnecting in {} ms (attempt {})",
                        stats.sink,
                        d.as_millis(),
                        sink_backoff.attempts()
                    );
                    stats.set_error(Some(e.to_string()));
                    stats
                        .backoff_ms
                        .store(d.as_millis() as u64, Ordering::SeqCst);
                    stats.set_state("backoff");
                    if pause(d, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            }
        }
        // The window is empty here: the previous batch was acknowledged (or dropped to be
        // polled again), so polling may take a whole window.
        debug_assert_eq!(stats.inflight.load(Ordering::SeqCst), 0);
        stats.polls.fetch_add(1, Ordering::SeqCst);
        let polled = match source
            .poll(
                &spec.stream_table,
                &spec.group,
                &spec.consumer,
                spec.window,
                spec.lease_seconds,
            )
            .await
        {
            Ok(v) => {
                db_backoff.reset();
                v
            }
            Err(SourceError::Lease(e)) => {
                stats.set_state("waiting_for_lease");
                info!(
                    "pipeline {p}: {e}; polling again in {} ms",
                    (spec.lease_seconds * 250.0) as u64
                );
                if pause(
                    Duration::from_secs_f64(spec.lease_seconds / 4.0),
                    &mut shutdown,
                )
                .await
                {
                    break;
                }
                continue;
            }
            Err(e) => {
                let d = db_backoff.next_delay();
                warn!(
                    "pipeline {p}: poll failed: {e}; reconnecting in {} ms",
                    d.as_millis()
                );
                stats.set_error(Some(e.to_string()));
                source.disconnect();
                if pause(d, &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        if polled.is_empty() {
            stats.set_state("idle");
            if pause(spec.poll_interval, &mut shutdown).await {
                break;
            }
            continue;
        }
        debug_assert!(
            polled.len() <= spec.window,
            "a poll returns at most the window"
        );
        debug_assert!(
            polled.windows(2).all(|w| w[0].seq < w[1].seq),
            "polled in sequence order"
        );
        let mut batch = Vec::with_capacity(polled.len());
        let mut bad = None;
        for m in &polled {
            match Envelope::check(&m.envelope) {
                // Delivered as PostgreSQL wrote it: decoding checks it, re-encoding could
                // change its numbers (a numeric's digits, beyond what f64 holds).
                Ok(e) => batch.push(Message {
                    seq: m.seq,
                    dedup_key: m.dedup_key.clone(),
                    stream_table: e.stream_table,
                    body: m.envelope.clone(),
                }),
                Err(e) => {
                    bad = Some(format!("message {} ({}): {e}", m.seq, m.dedup_key));
                    break;
                }
            }
        }
        if let Some(e) = bad {
            // Deliver what precedes it; nothing after it is delivered or committed.
            error!("pipeline {p}: {e}; nothing after it is delivered until this is resolved");
            stats.set_error(Some(e));
            if batch.is_empty() {
                stats.set_state("stuck");
                let d = sink_backoff.next_delay();
                if pause(d, &mut shutdown).await {
                    break;
                }
                continue;
            }
        }
        // A message larger than the sink takes: deliver (and commit) what precedes it, then
        // stop there with an error until the limit is raised.
        if let Some(limit) = sink.max_message_bytes() {
            if let Some(i) = batch.iter().position(|m| m.body.len() > limit) {
                if i == 0 {
                    let m = &batch[0];
                    let e = SinkError::Oversized {
                        seq: m.seq,
                        bytes: m.body.len(),
                        limit,
                    };
                    error!("pipeline {p}: sink {}: {e}", stats.sink);
                    stats.set_error(Some(e.to_string()));
                    stats.set_state("stuck");
                    let d = sink_backoff.next_delay();
                    if pause(d, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
                batch.truncate(i);
            }
        }
        let epoch = polled[0].epoch;
        held = Some(epoch);
        let last = batch.last().map(|m| m.seq).unwrap_or(0);
        stats.set_state("delivering");
        stats.set_inflight(batch.len() as u64);
        debug!(
            "pipeline {p}: delivering {} messages up to {last}",
            batch.len()
        );
        // The sink waits at most sink_timeout for its acknowledgements (a blocked Kafka
        // delivery thread is waited for, never left running beside a new producer).
        let delivered = sink.deliver(&batch, spec.sink_timeout).await;
        stats.set_inflight(0);
        // Commit what the sink acknowledged: all of the batch, or the prefix it acknowledged
        // before failing.
        let acked = match &delivered {
            Ok(()) => batch.len(),
            Err(partial) => partial.acked.min(batch.len()),
        };
        if acked > 0 {
            stats.delivered.fetch_add(acked as u64, Ordering::SeqCst);
            let upto = batch[acked - 1].seq;
            match source
                .commit(&spec.stream_table, &spec.group, &spec.consumer, epoch, upto)
                .await
            {
                Ok(committed) => {
                    stats.committed_seq.store(committed, Ordering::SeqCst);
                }
                Err(SourceError::Lease(e)) => {
                    warn!("pipeline {p}: commit refused, {e}: the batch may be delivered again by the new holder");
                }
                Err(e) => {
                    warn!("pipeline {p}: commit failed: {e}; the batch will be delivered again");
                    source.disconnect();
                }
            }
        }
        match delivered.map_err(|partial| partial.error) {
            Ok(()) => {
                sink_backoff.reset();
                stats.batches.fetch_add(1, Ordering::SeqCst);
                stats.set_error(None);
            }
            Err(SinkError::Deadline { acked, of }) => {
                // Progress: the rest of the window is polled again at once.
                debug!("pipeline {p}: {acked} of {of} delivered in the batch's time");
                stats.set_error(None);
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::SeqCst);
                let d = sink_backoff.next_delay();
                warn!(
                    "pipeline {p}: sink {} failed a batch of {} (messages {}..{last}): {e}; reconnecting in {} ms (attempt {})",
                    stats.sink,
                    batch.len(),
                    batch[0].seq,
                    d.as_millis(),
                    sink_backoff.attempts()
                );
                stats.set_state("backoff");
                sink.disconnect();
                stats.set_error(Some(e.to_string()));
                stats
                    .backoff_ms
                    .store(d.as_millis() as u64, Ordering::SeqCst);
                if pause(d, &mut shutdown).await {
                    break;
                }
            }
        }
    }
    if source.connected() {
        match source
            .release(&spec.stream_table, &spec.group, &spec.consumer, held)
            .await
        {
            Ok(true) => info!(
                "pipeline {p}: lease of consumer group {:?} given up",
                spec.group
            ),
            Ok(false) => {}
            Err(e) => warn!("pipeline {p}: could not give the lease up: {e}"),
        }
    }
    stats.set_state("stopped");
    info!("pipeline {p}: stopped");
}
