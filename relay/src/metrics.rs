//! The relay's health and Prometheus endpoint (`relay.metrics_listen`): `GET /health` (200 while
//! the process runs, with each pipeline's state), `GET /ready` (200 when every pipeline is
//! delivering or idle, 503 otherwise) and `GET /metrics` (the Prometheus text format).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A pipeline's counters and state, shared with the endpoint.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub name: String,
    pub sink: String,
    pub sink_kind: String,
    pub max_inflight: u64,
    pub delivered: AtomicU64,
    pub batches: AtomicU64,
    /// Polls of the outbox (none while a batch is in flight).
    pub polls: AtomicU64,
    pub failures: AtomicU64,
    pub reconnects_sink: AtomicU64,
    pub reconnects_db: AtomicU64,
    pub inflight: AtomicU64,
    /// The highest number of messages ever in flight at once.
    pub inflight_peak: AtomicU64,
    pub committed_seq: AtomicI64,
    pub backoff_ms: AtomicU64,
    pub state: Mutex<String>,
    pub last_error: Mutex<Option<String>>,
}

impl PipelineStats {
    pub fn set_state(&self, s: &str) {
        if let Ok(mut st) = self.state.lock() {
            s.clone_into(&mut st);
        }
    }
    pub fn set_error(&self, e: Option<String>) {
        if let Ok(mut le) = self.last_error.lock() {
            *le = e;
        }
    }
    pub fn set_inflight(&self, n: u64) {
        self.inflight.store(n, Ordering::SeqCst);
        self.inflight_peak.fetch_max(n, Ordering::SeqCst);
    }
    fn state(&self) -> String {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// The process's resident memory in bytes (Linux), 0 where unknown.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text of all pipelines.
pub fn render(stats: &[Arc<PipelineStats>]) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, value: &dyn Fn(&PipelineStats) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in stats {
                let _ = writeln!(
                    out,
                    "{name}{{pipeline=\"{}\",sink=\"{}\",sink_type=\"{}\"}} {}",
                    escape(&s.name),
                    escape(&s.sink),
                    s.sink_kind,
                    value(s)
                );
            }
        };
    family(
        "pgtrickle_relay_messages_delivered_total",
        "counter",
        "Messages acknowledged by the sink (redeliveries counted again).",
        &|s| s.delivered.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_batches_delivered_total",
        "counter",
        "Batches acknowledged by the sink.",
        &|s| s.batches.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_polls_total",
        "counter",
        "Polls of the outbox (never while a batch is in flight).",
        &|s| s.polls.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_delivery_failures_total",
        "counter",
        "Batches the sink failed (delivered again after a backoff).",
        &|s| s.failures.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_sink_reconnects_total",
        "counter",
        "Connections made to the sink.",
        &|s| s.reconnects_sink.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_postgres_reconnects_total",
        "counter",
        "Connections made to PostgreSQL.",
        &|s| s.reconnects_db.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_inflight_messages",
        "gauge",
        "Messages handed to the sink and not yet acknowledged.",
        &|s| s.inflight.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_inflight_messages_peak",
        "gauge",
        "The most messages ever in flight at once.",
        &|s| s.inflight_peak.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_sink_max_inflight",
        "gauge",
        "The in-flight window (relay.sink_max_inflight).",
        &|s| s.max_inflight.to_string(),
    );
    family(
        "pgtrickle_relay_committed_seq",
        "gauge",
        "The consumer group's committed offset, as last committed by this relay.",
        &|s| s.committed_seq.load(Ordering::SeqCst).to_string(),
    );
    family(
        "pgtrickle_relay_backoff_seconds",
        "gauge",
        "The current reconnect backoff (0 when connected).",
        &|s| format!("{:.3}", s.backoff_ms.load(Ordering::SeqCst) as f64 / 1000.0),
    );
    let _ = writeln!(
        out,
        "# HELP pgtrickle_relay_resident_memory_bytes Resident memory of the relay process."
    );
    let _ = writeln!(out, "# TYPE pgtrickle_relay_resident_memory_bytes gauge");
    let _ = writeln!(
        out,
        "pgtrickle_relay_resident_memory_bytes {}",
        resident_bytes()
    );
    out
}

fn health(stats: &[Arc<PipelineStats>]) -> (bool, String) {
    let mut ready = true;
    let pipelines: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            let state = s.state();
            if !matches!(state.as_str(), "delivering" | "idle") {
                ready = false;
            }
            serde_json::json!({
                "pipeline": s.name,
                "state": state,
                "last_error": s.last_error.lock().ok().and_then(|e| e.clone()),
                "delivered": s.delivered.load(Ordering::SeqCst),
                "committed_seq": s.committed_seq.load(Ordering::SeqCst),
            })
        })
        .collect();
    (
        ready,
        serde_json::json!({"status": "ok", "pipelines": pipelines}).to_string(),
    )
}

/// Serves the endpoint until the process ends.
pub async fn serve(listener: TcpListener, stats: Arc<Vec<Arc<PipelineStats>>>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            while n < buf.len() {
                match sock.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", render(&stats)),
                "/health" => ("200 OK", "application/json", health(&stats).1),
                "/ready" => {
                    let (ready, body) = health(&stats);
                    (
                        if ready {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        },
                        "application/json",
                        body,
                    )
                }
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
