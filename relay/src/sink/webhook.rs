//! HTTP webhooks: each envelope is POSTed to the URL (HTTP/1.1, plain http, one kept-alive
//! connection) with `Content-Type: application/json`, `Idempotency-Key: <dedup key>` and the
//! configured headers. A 2xx answer acknowledges the message; anything else fails the batch.

use std::collections::BTreeMap;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use std::time::Duration;

use super::{within, Message, Partial, SinkError};
use crate::config::{Secret, Target};

pub struct Webhook {
    target: Target,
    headers: BTreeMap<String, Secret>,
    max_message_bytes: usize,
    conn: Option<BufReader<TcpStream>>,
}

impl Webhook {
    pub fn new(
        url: &str,
        headers: BTreeMap<String, Secret>,
        max_message_bytes: usize,
    ) -> Result<Self, SinkError> {
        let target = Target::parse(url).ok_or_else(|| {
            SinkError::Connect("the webhook url is not http://host[:port]/path".into())
        })?;
        Ok(Webhook {
            target,
            headers,
            max_message_bytes,
            conn: None,
        })
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    pub async fn connect(&mut self) -> Result<(), SinkError> {
        let s = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| {
                SinkError::Connect(format!("{}:{}: {e}", self.target.host, self.target.port))
            })?;
        s.set_nodelay(true).ok();
        self.conn = Some(BufReader::new(s));
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Posts the messages one by one, each answered within `timeout`; once the batch has
    /// taken `timeout`, it starts no further POST and reports what was acknowledged (a slow
    /// endpoint makes progress, batch by batch, each within twice `timeout`, which the
    /// configuration keeps within the lease).
    pub async fn deliver(&mut self, batch: &[Message], timeout: Duration) -> Result<(), Partial> {
        let started = tokio::time::Instant::now();
        for (i, m) in batch.iter().enumerate() {
            if i > 0 && started.elapsed() >= timeout {
                return Err(Partial {
                    acked: i,
                    error: SinkError::Deadline {
                        acked: i,
                        of: batch.len(),
                    },
                });
            }
            let fail = |error| Partial { acked: i, error };
            if self.conn.is_none() {
                // The server closed the previous connection after its answer.
                within(timeout, "the connection", self.connect())
                    .await
                    .map_err(fail)?;
            }
            let close = match within(timeout, "a POST", self.post(m)).await {
                Ok(close) => close,
                // A kept-alive connection the server closed while it was idle (no answer, a
                // reset, a broken pipe; not a timeout): once more, on a new connection.
                Err(SinkError::Io(_)) if i == 0 => {
                    within(timeout, "the connection", self.connect())
                        .await
                        .map_err(fail)?;
                    within(timeout, "a POST", self.post(m))
                        .await
                        .map_err(fail)?
                }
                Err(e) => return Err(fail(e)),
            };
            if close {
                self.conn = None;
            }
        }
        Ok(())
    }

    /// POSTs one message; returns whether the server closes the connection after it.
    async fn post(&mut self, m: &Message) -> Result<bool, SinkError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::Io("not connected".into()))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nIdempotency-Key: {}\r\nUser-Agent: pg_trickle_relay\r\n",
            self.target.path,
            self.target.host,
            self.target.port,
            m.body.len(),
            m.dedup_key
        );
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value.expose());
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(m.body.as_bytes()).await?;
        stream.flush().await?;
        let (status, close) = read_response(conn).await?;
        if !(200..300).contains(&status) {
            return Err(SinkError::Refused(format!(
                "HTTP {status} for message {} ({})",
                m.seq, m.dedup_key
            )));
        }
        Ok(close)
    }
}

/// Reads one HTTP/1.x response: its status and whether the connection closes after it. The
/// body (by Content-Length, chunked, or up to the end of the connection) is read and dropped.
async fn read_response(conn: &mut BufReader<TcpStream>) -> Result<(u16, bool), SinkError> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(SinkError::Io("the server closed the connection".into()));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SinkError::Io(format!("not an HTTP status line: {:?}", line.trim())))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(SinkError::Io(
                "the connection closed inside a response".into(),
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => {
                    if value.eq_ignore_ascii_case("close") {
                        close = true;
                    } else if value.eq_ignore_ascii_case("keep-alive") {
                        close = false;
                    }
                }
                _ => {}
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| SinkError::Io("a bad chunk size".into()))?;
            let mut skip = vec![0u8; size + 2];
            conn.read_exact(&mut skip).await?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        let mut skip = vec![0u8; n];
        conn.read_exact(&mut skip).await?;
    } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
        // No length: the body runs to the end of the connection.
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await?;
        close = true;
    }
    Ok((status, close))
}
