//! The relay's side of PostgreSQL: polls a stream table's outbox as a consumer group
//! (`pgtrickle.poll_outbox`, which takes or renews the group's lease) and commits the group's
//! offset (`pgtrickle.commit_outbox`) once a sink acknowledged a batch.

use tokio_postgres::{Client, NoTls};

use crate::config::Secret;

/// A polled message: its number, dedup key, the lease epoch it was polled under, and the
/// envelope text.
#[derive(Debug, Clone)]
pub struct Polled {
    pub seq: i64,
    pub dedup_key: String,
    pub epoch: i64,
    pub envelope: String,
}

#[derive(Debug)]
pub enum SourceError {
    /// Another consumer holds the group's lease (55P03 from poll), or this one lost it (from
    /// commit): wait and poll again.
    Lease(String),
    /// Anything else from the server or the connection: reconnect after a backoff.
    Db(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Lease(e) | SourceError::Db(e) => f.write_str(e),
        }
    }
}

fn classify(e: tokio_postgres::Error) -> SourceError {
    match e.as_db_error() {
        Some(db) if db.code().code() == "55P03" => SourceError::Lease(db.message().to_string()),
        Some(db) => SourceError::Db(format!("{} ({})", db.message(), db.code().code())),
        None => SourceError::Db(e.to_string()),
    }
}

pub struct Source {
    url: Secret,
    client: Option<Client>,
}

impl Source {
    pub fn new(url: Secret) -> Self {
        Source { url, client: None }
    }

    pub fn connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    pub fn disconnect(&mut self) {
        self.client = None;
    }

    pub async fn connect(&mut self) -> Result<(), SourceError> {
        let (client, connection) = tokio_postgres::connect(self.url.expose(), NoTls)
            .await
            .map_err(|e| SourceError::Db(format!("cannot connect to PostgreSQL: {e}")))?;
        tokio::spawn(async move {
            // Ends with the connection; the next query on the client then fails and the
            // pipeline reconnects.
            let _ = connection.await;
        });
        client
            .batch_execute("SET application_name = 'pg_trickle_relay'")
            .await
            .map_err(classify)?;
        self.client = Some(client);
        Ok(())
    }

    fn client(&self) -> Result<&Client, SourceError> {
        self.client
            .as_ref()
            .ok_or_else(|| SourceError::Db("not connected".into()))
    }

    /// Creates the consumer group unless it exists.
    pub async fn ensure_group(&self, stream_table: &str, group: &str) -> Result<bool, SourceError> {
        let c = self.client()?;
        match c
            .execute(
                "SELECT pgtrickle.create_consumer_group($1, $2)",
                &[&stream_table, &group],
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42710") => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    pub async fn poll(
        &self,
        stream_table: &str,
        group: &str,
        consumer: &str,
        max: usize,
        lease_seconds: f64,
    ) -> Result<Vec<Polled>, SourceError> {
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let rows = self
            .client()?
            .query(
                "SELECT seq, dedup_key, lease_epoch, message::text \
                   FROM pgtrickle.poll_outbox($1, $2, $3, $4, $5)",
                &[&stream_table, &group, &consumer, &max, &lease_seconds],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(Polled {
                    seq: r.try_get(0).map_err(classify)?,
                    dedup_key: r.try_get(1).map_err(classify)?,
                    epoch: r.try_get(2).map_err(classify)?,
                    envelope: r.try_get(3).map_err(classify)?,
                })
            })
            .collect()
    }

    /// Gives the lease up (at shutdown); false when it was no longer held.
    pub async fn release(
        &self,
        stream_table: &str,
        group: &str,
        consumer: &str,
        epoch: Option<i64>,
    ) -> Result<bool, SourceError> {
        let row = self
            .client()?
            .query_one(
                "SELECT pgtrickle.release_outbox_lease($1, $2, $3, $4)",
                &[&stream_table, &group, &consumer, &epoch],
            )
            .await
            .map_err(classify)?;
        row.try_get(0).map_err(classify)
    }

    pub async fn commit(
        &self,
        stream_table: &str,
        group: &str,
        consumer: &str,
        epoch: i64,
        seq: i64,
    ) -> Result<i64, SourceError> {
        let row = self
            .client()?
            .query_one(
                "SELECT pgtrickle.commit_outbox($1, $2, $3, $4, $5)",
                &[&stream_table, &group, &consumer, &epoch, &seq],
            )
            .await
            .map_err(classify)?;
        row.try_get(0).map_err(classify)
    }
}
