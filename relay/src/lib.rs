//! pg_trickle's relay: delivers the messages of stream tables' outboxes
//! (`pgtrickle.enable_outbox`) to Redis Streams, NATS (JetStream), Kafka, HTTP webhooks or
//! standard output, at least once, in sequence order per stream table. docs/RELAY_GUIDE.md is
//! the user's guide.

pub mod backoff;
pub mod config;
pub mod envelope;
pub mod log;
pub mod metrics;
pub mod pipeline;
pub mod sink;
pub mod source;
