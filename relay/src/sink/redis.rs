//! Redis Streams: each envelope is appended with `XADD <stream> * dedup_key <k> stream_table <t>
//! seq <n> envelope <json>`, a batch in one MULTI/EXEC transaction pipelined on one connection;
//! every XADD's reply must be an entry id. Speaks RESP2 itself (`AUTH <password>` when one is
//! configured).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Message, SinkError};
use crate::config::Secret;

pub struct Redis {
    address: String,
    stream: String,
    password: Option<Secret>,
    max_message_bytes: usize,
    conn: Option<BufReader<TcpStream>>,
}

/// A RESP reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(usize),
}

/// Appends a RESP command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one reply (an array's elements are left to the caller).
pub async fn read_reply<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<Reply, SinkError> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(SinkError::Io("redis closed the connection".into()));
    }
    let l = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = l.split_at(l.len().min(1));
    let bad = || SinkError::Io(format!("not a RESP reply: {l:?}"));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Integer(rest.parse().map_err(|_| bad())?),
        "*" => Reply::Array(rest.parse::<i64>().map_err(|_| bad())?.max(0) as usize),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data).await?;
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
        }
        _ => return Err(bad()),
    })
}

impl Redis {
    pub fn new(
        address: String,
        stream: String,
        password: Option<Secret>,
        max_message_bytes: usize,
    ) -> Self {
        Redis {
            address,
            stream,
            password,
            max_message_bytes,
            conn: None,
        }
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    pub async fn connect(&mut self) -> Result<(), SinkError> {
        let s = TcpStream::connect(self.address.as_str())
            .await
            .map_err(|e| SinkError::Connect(format!("redis at {}: {e}", self.address)))?;
        s.set_nodelay(true).ok();
        let mut conn = BufReader::new(s);
        if let Some(pw) = &self.password {
            let mut out = Vec::new();
            command(&mut out, &[b"AUTH", pw.expose().as_bytes()]);
            conn.get_mut().write_all(&out).await?;
            match read_reply(&mut conn).await? {
                Reply::Simple(_) => {}
                Reply::Error(e) => {
                    return Err(SinkError::Connect(format!(
                        "redis at {} refused AUTH: {e}",
                        self.address
                    )))
                }
                other => {
                    return Err(SinkError::Connect(format!(
                        "unexpected AUTH reply {other:?}"
                    )))
                }
            }
        }
        self.conn = Some(conn);
        Ok(())
    }

    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Appends the batch in one transaction (`MULTI`, the XADDs, `EXEC`, pipelined): Redis
    /// runs all of them or, when one is refused as it is queued (out of memory, say), none,
    /// so a failed batch leaves no later message in the stream before an earlier one.
    pub async fn deliver(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| SinkError::Io("not connected".into()))?;
        let mut out = Vec::with_capacity(batch.iter().map(|m| m.body.len() + 128).sum());
        command(&mut out, &[b"MULTI"]);
        for m in batch {
            let seq = m.seq.to_string();
            command(
                &mut out,
                &[
                    b"XADD",
                    self.stream.as_bytes(),
                    b"*",
                    b"dedup_key",
                    m.dedup_key.as_bytes(),
                    b"stream_table",
                    m.stream_table.as_bytes(),
                    b"seq",
                    seq.as_bytes(),
                    b"envelope",
                    m.body.as_bytes(),
                ],
            );
        }
        command(&mut out, &[b"EXEC"]);
        conn.get_mut().write_all(&out).await?;
        conn.get_mut().flush().await?;
        let mut refused = None;
        // MULTI's +OK, then +QUEUED (or an error) per XADD.
        for _ in 0..=batch.len() {
            match read_reply(conn).await? {
                Reply::Simple(_) => {}
                Reply::Error(e) => {
                    refused.get_or_insert(format!("XADD refused when queued: {e}"));
                }
                other => {
                    refused.get_or_insert(format!("unexpected reply {other:?} in MULTI"));
                }
            }
        }
        match read_reply(conn).await? {
            Reply::Array(n) => {
                for i in 0..n {
                    match read_reply(conn).await? {
                        Reply::Bulk(Some(_)) => {}
                        Reply::Error(e) => {
                            let seq = batch.get(i).map_or(0, |m| m.seq);
                            refused.get_or_insert(format!("XADD of message {seq}: {e}"));
                        }
                        other => {
                            refused.get_or_insert(format!("unexpected XADD reply {other:?}"));
                        }
                    }
                }
                if n != batch.len() {
                    refused.get_or_insert(format!("EXEC ran {n} of {} XADDs", batch.len()));
                }
            }
            Reply::Error(e) => {
                refused.get_or_insert(format!("EXEC: {e}"));
            }
            other => {
                refused.get_or_insert(format!("unexpected EXEC reply {other:?}"));
            }
        }
        match refused {
            Some(e) => Err(SinkError::Refused(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        command(&mut out, &[b"XADD", b"s", b"*", b"k", b"v\r\n"]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n".to_vec()
        );
    }

    #[tokio::test]
    async fn reads_replies() {
        let data: &[u8] = b"$15\r\n1700000000000-0\r\n-ERR wrong\r\n+OK\r\n:5\r\n$-1\r\n*2\r\n";
        let mut r = BufReader::new(data);
        assert_eq!(
            read_reply(&mut r).await.unwrap(),
            Reply::Bulk(Some(b"1700000000000-0".to_vec()))
        );
        assert_eq!(
            read_reply(&mut r).await.unwrap(),
            Reply::Error("ERR wrong".into())
        );
        assert_eq!(
            read_reply(&mut r).await.unwrap(),
            Reply::Simple("OK".into())
        );
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Integer(5));
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Bulk(None));
        assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Array(2));
        assert!(read_reply(&mut r).await.is_err());
    }
}
