//! NATS: each envelope is published to the subject (the NATS client protocol, spoken here).
//! With `jetstream_stream`, every publish carries a reply subject and counts as delivered
//! when JetStream's PubAck arrives (the message is stored in that stream, which the relay
//! creates when it is missing, on the subject, file storage); without it, a batch is
//! delivered when the server answers the PING sent after it (core NATS: the server has the
//! messages, subscribers may not).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use std::time::Duration;

use super::{within, Message, Partial, SinkError};
use crate::config::Secret;

pub struct Nats {
    address: String,
    subject: String,
    jetstream_stream: Option<String>,
    token: Option<Secret>,
    conn: Option<BufReader<TcpStream>>,
    /// The server's `max_payload` (from its INFO).
    max_payload: Option<usize>,
    /// This connection's reply-subject prefix.
    inbox: String,
    next_reply: u64,
}

/// A protocol line (and payload) from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp {
    Info(String),
    Msg {
        subject: String,
        reply_to: String,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    Ok,
    Err(String),
}

pub async fn read_op<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<ServerOp, SinkError> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(SinkError::Io("nats closed the connection".into()));
    }
    let l = line.trim_end_matches(['\r', '\n']);
    let mut words = l.split_whitespace();
    let op = words.next().unwrap_or("").to_ascii_uppercase();
    Ok(match op.as_str() {
        "INFO" => ServerOp::Info(l[4..].trim().to_string()),
        "PING" => ServerOp::Ping,
        "PONG" => ServerOp::Pong,
        "+OK" => ServerOp::Ok,
        "-ERR" => ServerOp::Err(l[4..].trim().trim_matches('\'').to_string()),
        "MSG" => {
            let parts: Vec<&str> = words.collect();
            let (subject, reply_to, size) = match parts.as_slice() {
                [s, _sid, size] => (*s, "", *size),
                [s, _sid, reply, size] => (*s, *reply, *size),
                _ => return Err(SinkError::Io(format!("bad MSG line {l:?}"))),
            };
            let n: usize = size
                .parse()
                .map_err(|_| SinkError::Io(format!("bad MSG size in {l:?}")))?;
            let mut payload = vec![0u8; n + 2];
            r.read_exact(&mut payload).await?;
            payload.truncate(n);
            ServerOp::Msg {
                subject: subject.to_string(),
                reply_to: reply_to.to_string(),
                payload,
            }
        }
        _ => return Err(SinkError::Io(format!("unexpected NATS line {l:?}"))),
    })
}

impl Nats {
    pub fn new(
        address: String,
        subject: String,
        jetstream_stream: Option<String>,
        token: Option<Secret>,
    ) -> Self {
        Nats {
            address,
            subject,
            jetstream_stream,
            token,
            conn: None,
            max_payload: None,
            inbox: String::new(),
            next_reply: 0,
        }
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    pub fn max_message_bytes(&self) -> Option<usize> {
        self.max_payload
    }

    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    pub async fn connect(&mut self) -> Result<(), SinkError> {
        let s = TcpStream::connect(self.address.as_str())
            .await
            .map_err(|e| SinkError::Connect(format!("nats at {}: {e}", self.address)))?;
        s.set_nodelay(true).ok();
        let mut conn = BufReader::new(s);
        let info = match read_op(&mut conn).await? {
            ServerOp::Info(i) => i,
            other => return Err(SinkError::Connect(format!("expected INFO, got {other:?}"))),
        };
        let info: serde_json::Value = serde_json::from_str(&info)
            .map_err(|e| SinkError::Connect(format!("bad INFO from nats: {e}")))?;
        self.max_payload = info
            .get("max_payload")
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize);
        let mut connect = serde_json::json!({
            "verbose": false, "pedantic": false, "name": "pg_trickle_relay",
            "lang": "rust", "version": env!("CARGO_PKG_VERSION"), "protocol": 1,
        });
        if let Some(t) = &self.token {
            connect["auth_token"] = serde_json::Value::String(t.expose().to_string());
        }
        self.inbox = format!(
            "_INBOX.pgtrickle.{}.{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let mut out = format!("CONNECT {connect}\r\nPING\r\n");
        if self.jetstream_stream.is_some() {
            out.push_str(&format!("SUB {}.* 1\r\n", self.inbox));
        }
        conn.get_mut().write_all(out.as_bytes()).await?;
        loop {
            match read_op(&mut conn).await? {
                ServerOp::Pong => break,
                ServerOp::Err(e) => {
                    return Err(SinkError::Connect(format!(
                        "nats at {} refused: {e}",
                        self.address
                    )))
                }
                ServerOp::Ping => conn.get_mut().write_all(b"PONG\r\n").await?,
                _ => {}
            }
        }
        self.conn = Some(conn);
        if let Some(stream) = self.jetstream_stream.clone() {
            if let Err(e) = self.ensure_stream(&stream).await {
                self.conn = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// A request on JetStream's API; its JSON answer.
    async fn request(&mut self, subject: &str, body: &str) -> Result<serde_json::Value, SinkError> {
        self.next_reply += 1;
        let reply = format!("{}.r{}", self.inbox, self.next_reply);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::Io("not connected".into()))?;
        let out = format!("PUB {subject} {reply} {}\r\n{body}\r\n", body.len());
        conn.get_mut().write_all(out.as_bytes()).await?;
        loop {
            match read_op(conn).await? {
                ServerOp::Msg {
                    subject, payload, ..
                } if subject == reply => {
                    return serde_json::from_slice(&payload)
                        .map_err(|e| SinkError::Io(format!("bad JetStream answer: {e}")));
                }
                ServerOp::Ping => conn.get_mut().write_all(b"PONG\r\n").await?,
                ServerOp::Err(e) => return Err(SinkError::Refused(e)),
                _ => {}
            }
        }
    }

    async fn ensure_stream(&mut self, stream: &str) -> Result<(), SinkError> {
        let info = self
            .request(&format!("$JS.API.STREAM.INFO.{stream}"), "")
            .await?;
        if info.get("error").is_none() {
            return Ok(());
        }
        let create = serde_json::json!({
            "name": stream, "subjects": [self.subject], "storage": "file",
        });
        let created = self
            .request(
                &format!("$JS.API.STREAM.CREATE.{stream}"),
                &create.to_string(),
            )
            .await?;
        match created.get("error") {
            None => Ok(()),
            Some(e) => Err(SinkError::Connect(format!(
                "JetStream could not create stream {stream}: {e} (is the server started with JetStream, -js?)"
            ))),
        }
    }

    /// Publishes the batch; with JetStream, waits (at most `timeout` in all) for every
    /// PubAck and reports the prefix of the batch acknowledged in order when one is refused
    /// or missing.
    pub async fn deliver(&mut self, batch: &[Message], timeout: Duration) -> Result<(), Partial> {
        let deadline = tokio::time::Instant::now() + timeout;
        let jetstream = self.jetstream_stream.is_some();
        let first = self.next_reply + 1;
        let mut out = Vec::with_capacity(batch.iter().map(|m| m.body.len() + 96).sum());
        for m in batch {
            if jetstream {
                self.next_reply += 1;
                out.extend_from_slice(
                    format!(
                        "PUB {} {}.a{} {}\r\n",
                        self.subject,
                        self.inbox,
                        self.next_reply,
                        m.body.len()
                    )
                    .as_bytes(),
                );
            } else {
                out.extend_from_slice(
                    format!("PUB {} {}\r\n", self.subject, m.body.len()).as_bytes(),
                );
            }
            out.extend_from_slice(m.body.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !jetstream {
            out.extend_from_slice(b"PING\r\n");
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::Io("not connected".into()))?;
        within(timeout, "the batch", async {
            conn.get_mut().write_all(&out).await?;
            conn.get_mut().flush().await?;
            Ok(())
        })
        .await?;
        let prefix = format!("{}.a", self.inbox);
        // Per message of the batch: acknowledged (true), refused (false), or not yet answered.
        let mut answers: Vec<Option<bool>> = vec![None; batch.len()];
        let mut answered = 0usize;
        let mut refused: Option<String> = None;
        let acked_prefix =
            |answers: &[Option<bool>]| answers.iter().take_while(|a| **a == Some(true)).count();
        loop {
            if jetstream && answered == batch.len() {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let op = match tokio::time::timeout(left, read_op(conn)).await {
                Ok(Ok(op)) => op,
                Ok(Err(e)) => {
                    return Err(Partial {
                        acked: acked_prefix(&answers),
                        error: e,
                    })
                }
                Err(_) => {
                    return Err(Partial {
                        acked: acked_prefix(&answers),
                        error: SinkError::Io(format!(
                            "{} of {} messages not acknowledged within {} ms",
                            batch.len() - answered,
                            batch.len(),
                            timeout.as_millis()
                        )),
                    })
                }
            };
            match op {
                ServerOp::Pong if !jetstream => break,
                ServerOp::Ping => conn.get_mut().write_all(b"PONG\r\n").await?,
                ServerOp::Err(e) => {
                    return Err(Partial {
                        acked: acked_prefix(&answers),
                        error: SinkError::Refused(e),
                    })
                }
                ServerOp::Msg {
                    subject, payload, ..
                } => {
                    let Some(n) = subject
                        .strip_prefix(&prefix)
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    // An answer to an earlier, failed batch is not one of ours.
                    let Some(i) = n.checked_sub(first).map(|i| i as usize) else {
                        continue;
                    };
                    let Some(slot) = answers.get_mut(i) else {
                        continue;
                    };
                    if slot.is_none() {
                        answered += 1;
                    }
                    // A PubAck without an error; anything else (an error, an answer that
                    // is no JSON) refuses the message.
                    let ack = serde_json::from_slice::<serde_json::Value>(&payload)
                        .map_err(|e| format!("an answer that is no JSON ({e})"))
                        .and_then(|a| match a.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(()),
                        });
                    match ack.err() {
                        Some(e) => {
                            *slot = Some(false);
                            refused.get_or_insert(format!(
                                "JetStream refused message {}: {e}",
                                batch[i].seq
                            ));
                        }
                        None => *slot = Some(true),
                    }
                }
                _ => {}
            }
        }
        match refused {
            Some(e) => Err(Partial {
                acked: acked_prefix(&answers),
                error: SinkError::Refused(e),
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_server_operations() {
        let data: &[u8] =
            b"INFO {\"max_payload\":1048576}\r\nMSG _INBOX.x.a1 1 10\r\n{\"seq\": 1}\r\n\
            MSG s 1 r 2\r\nhi\r\nPING\r\n+OK\r\n-ERR 'Authorization Violation'\r\n";
        let mut r = BufReader::new(data);
        assert_eq!(
            read_op(&mut r).await.unwrap(),
            ServerOp::Info("{\"max_payload\":1048576}".into())
        );
        assert_eq!(
            read_op(&mut r).await.unwrap(),
            ServerOp::Msg {
                subject: "_INBOX.x.a1".into(),
                reply_to: String::new(),
                payload: b"{\"seq\": 1}".to_vec()
            }
        );
        assert_eq!(
            read_op(&mut r).await.unwrap(),
            ServerOp::Msg {
                subject: "s".into(),
                reply_to: "r".into(),
                payload: b"hi".to_vec()
            }
        );
        assert_eq!(read_op(&mut r).await.unwrap(), ServerOp::Ping);
        assert_eq!(read_op(&mut r).await.unwrap(), ServerOp::Ok);
        assert_eq!(
            read_op(&mut r).await.unwrap(),
            ServerOp::Err("Authorization Violation".into())
        );
    }
}
