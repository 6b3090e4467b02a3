//! Sinks: where the relay delivers envelopes. Every sink delivers a batch and returns only when
//! the far side acknowledged all of it (a Redis EXEC reply, a JetStream PubAck or a NATS PONG,
//! a Kafka delivery report, an HTTP 2xx, a flushed write), or how much of it was acknowledged:
//! the pipeline commits the consumer group's offset up to what was acknowledged, never past it
//! (at-least-once). The rest is delivered again after a reconnect: consumers drop the copies
//! by the envelope's dedup key, and apply messages in sequence order (docs/RELAY_GUIDE.md,
//! "Delivery guarantees").

pub mod nats;
pub mod redis;
pub mod stdout;
pub mod webhook;

#[cfg(feature = "kafka")]
pub mod kafka;

use std::fmt;

use crate::config::SinkConfig;

/// One message to deliver: its encoded envelope and what sinks key or label it with.
#[derive(Debug, Clone)]
pub struct Message {
    pub seq: i64,
    pub dedup_key: String,
    pub stream_table: String,
    /// The envelope, one line of JSON.
    pub body: String,
}

#[derive(Debug)]
pub enum SinkError {
    /// Could not connect (or authenticate).
    Connect(String),
    /// The connection failed while delivering.
    Io(String),
    /// The sink did not answer in time.
    Timeout(String),
    /// The sink answered with an error.
    Refused(String),
    /// A message larger than the sink takes: it cannot be delivered until the limit is raised.
    Oversized {
        seq: i64,
        bytes: usize,
        limit: usize,
    },
    /// The batch took its whole time (a slow webhook): what was acknowledged is committed and
    /// the rest delivered next, without a reconnect or a backoff.
    Deadline { acked: usize, of: usize },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Connect(e) => write!(f, "cannot connect: {e}"),
            SinkError::Io(e) => write!(f, "connection failed: {e}"),
            SinkError::Timeout(e) => f.write_str(e),
            SinkError::Refused(e) => write!(f, "the sink refused the batch: {e}"),
            SinkError::Deadline { acked, of } => write!(
                f,
                "{acked} of {of} messages delivered within the batch's time; the rest follow"
            ),
            SinkError::Oversized { seq, bytes, limit } => write!(
                f,
                "message {seq} is {bytes} bytes, more than the sink takes ({limit}): raise the sink's limit (max_message_bytes, or the server's) for it to be delivered; nothing after it is delivered meanwhile (an outbox whose inline_max_bytes is below the sink's limit sends larger bodies by claim check)"
            ),
        }
    }
}

/// A batch the sink did not acknowledge whole: its first `acked` messages were acknowledged
/// (the pipeline commits them), the rest failed with `error` and are delivered again.
#[derive(Debug)]
pub struct Partial {
    pub acked: usize,
    pub error: SinkError,
}

impl From<SinkError> for Partial {
    fn from(error: SinkError) -> Self {
        Partial { acked: 0, error }
    }
}

impl From<std::io::Error> for Partial {
    fn from(e: std::io::Error) -> Self {
        SinkError::from(e).into()
    }
}

/// `f`, or an `Io` error when it takes longer than `limit` (`what` names the wait).
pub async fn within<T>(
    limit: std::time::Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, SinkError>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::Timeout(format!(
            "no answer to {what} within {} ms",
            limit.as_millis()
        ))),
    }
}

impl From<std::io::Error> for SinkError {
    fn from(e: std::io::Error) -> Self {
        SinkError::Io(e.to_string())
    }
}

/// A configured sink.
pub enum Sink {
    Stdout(stdout::Stdout),
    Webhook(webhook::Webhook),
    Redis(redis::Redis),
    Nats(nats::Nats),
    #[cfg(feature = "kafka")]
    Kafka(kafka::Kafka),
}

impl Sink {
    /// A sink for `config`, not connected yet. `timeout_ms`: how long a batch may wait for its
    /// acknowledgement (Kafka's message timeout).
    pub fn new(config: &SinkConfig, timeout_ms: u64) -> Result<Sink, SinkError> {
        Ok(match config {
            SinkConfig::Stdout { path } => Sink::Stdout(stdout::Stdout::new(path.clone())),
            SinkConfig::Webhook {
                url,
                headers,
                max_message_bytes,
            } => Sink::Webhook(webhook::Webhook::new(
                url,
                headers.clone(),
                *max_message_bytes,
            )?),
            SinkConfig::Redis {
                address,
                stream,
                password,
                max_message_bytes,
            } => Sink::Redis(redis::Redis::new(
                address.clone(),
                stream.clone(),
                password.clone(),
                *max_message_bytes,
            )),
            SinkConfig::Nats {
                address,
                subject,
                jetstream_stream,
                token,
            } => Sink::Nats(nats::Nats::new(
                address.clone(),
                subject.clone(),
                jetstream_stream.clone(),
                token.clone(),
            )),
            #[cfg(feature = "kafka")]
            SinkConfig::Kafka {
                bootstrap_servers,
                topic,
                properties,
                max_message_bytes,
            } => Sink::Kafka(kafka::Kafka::new(
                bootstrap_servers.clone(),
                topic.clone(),
                properties.clone(),
                *max_message_bytes,
                timeout_ms,
            )),
            #[cfg(not(feature = "kafka"))]
            SinkConfig::Kafka { .. } => {
                let _ = timeout_ms;
                return Err(SinkError::Connect(
                    "this relay was built without the kafka feature".into(),
                ));
            }
        })
    }

    pub fn connected(&self) -> bool {
        match self {
            Sink::Stdout(s) => s.connected(),
            Sink::Webhook(s) => s.connected(),
            Sink::Redis(s) => s.connected(),
            Sink::Nats(s) => s.connected(),
            #[cfg(feature = "kafka")]
            Sink::Kafka(s) => s.connected(),
        }
    }

    pub async fn connect(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(s) => s.connect(),
            Sink::Webhook(s) => s.connect().await,
            Sink::Redis(s) => s.connect().await,
            Sink::Nats(s) => s.connect().await,
            #[cfg(feature = "kafka")]
            Sink::Kafka(s) => s.connect().await,
        }
    }

    /// Drops the connection (after a failure: the next batch reconnects).
    pub fn disconnect(&mut self) {
        match self {
            Sink::Stdout(s) => s.disconnect(),
            Sink::Webhook(s) => s.disconnect(),
            Sink::Redis(s) => s.disconnect(),
            Sink::Nats(s) => s.disconnect(),
            #[cfg(feature = "kafka")]
            Sink::Kafka(s) => s.disconnect(),
        }
    }

    /// The largest envelope the sink takes, if it has a limit.
    pub fn max_message_bytes(&self) -> Option<usize> {
        match self {
            Sink::Stdout(_) => None,
            Sink::Webhook(s) => Some(s.max_message_bytes()),
            Sink::Redis(s) => Some(s.max_message_bytes()),
            Sink::Nats(s) => s.max_message_bytes(),
            #[cfg(feature = "kafka")]
            Sink::Kafka(s) => Some(s.max_message_bytes()),
        }
    }

    /// Delivers the batch (whose messages fit `max_message_bytes`: the pipeline stops before
    /// one that does not); Ok only when the sink acknowledged every message of it, otherwise
    /// how many of its first messages it did acknowledge. Waits for the sink at most
    /// `timeout` (per message for the webhook, which posts them one by one; per batch for
    /// the others).
    pub async fn deliver(
        &mut self,
        batch: &[Message],
        timeout: std::time::Duration,
    ) -> Result<(), Partial> {
        match self {
            Sink::Stdout(s) => s.deliver(batch).map_err(Partial::from),
            Sink::Webhook(s) => s.deliver(batch, timeout).await,
            Sink::Redis(s) => within(timeout, "the batch", s.deliver(batch))
                .await
                .map_err(Partial::from),
            Sink::Nats(s) => s.deliver(batch, timeout).await,
            #[cfg(feature = "kafka")]
            Sink::Kafka(s) => s.deliver(batch).await.map_err(Partial::from),
        }
    }
}
