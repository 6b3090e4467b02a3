//! The Prometheus endpoint: a background worker, registered while preloading when
//! `pg_trickle.metrics_port` is not 0, that serves `GET /metrics` on
//! `pg_trickle.metrics_listen_address` (loopback by default).
//!
//! A background worker can attach to one database only, and stream tables live in many: at
//! each scrape the worker lists the databases that accept connections (through SPI in the
//! `postgres` database, as the launcher does) and reads `pgtrickle.metrics()` in each over a
//! client connection to its own server — the Unix socket of `unix_socket_directories` (or
//! 127.0.0.1 when there is none), as the bootstrap superuser, which `pg_hba.conf` must let in
//! without a password (Debian's default `local all postgres peer` does: the worker runs as
//! the operating-system user of the server). A database without the extension contributes
//! nothing; one that cannot be read is reported by `pgtrickle_scrape_database_up 0` and a
//! LOG line. One request is served at a time, each on a fresh set of connections.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use crate::config;
use crate::error::PgTrickleError;
use crate::metrics::{self, Sample};

/// Registers the endpoint's worker; called from `_PG_init` while preloading.
pub(crate) fn register() {
    crate::worker::register_static(
        "pg_trickle metrics",
        "pg_trickle_metrics_main",
        Duration::from_secs(10),
    );
}

/// Where the server can be reached from inside, and as whom.
struct Target {
    host: String,
    port: u16,
    user: String,
    databases: Vec<String>,
}

fn target() -> Result<Target, PgTrickleError> {
    crate::txn::in_transaction(|| {
        Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT current_setting('unix_socket_directories'), \
                     current_setting('port')::int, \
                     (SELECT rolname::text FROM pg_catalog.pg_authid WHERE oid = 10)",
                    None,
                    &[],
                )?
                .first();
            let dirs = row.get::<String>(1)?.unwrap_or_default();
            let port = crate::error::required(row.get::<i32>(2)?, "port")?;
            let user = crate::error::required(row.get::<String>(3)?, "bootstrap superuser")?;
            let databases = client
                .select(
                    "SELECT datname::text FROM pg_catalog.pg_database \
                     WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                    None,
                    &[],
                )?
                .filter_map(|r| r.get::<String>(1).transpose())
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()?;
            // The first socket directory; '@' names an abstract socket libpq-style clients
            // cannot reach by path.
            let host = dirs
                .split(',')
                .map(str::trim)
                .find(|d| !d.is_empty() && !d.starts_with('@'))
                .unwrap_or("127.0.0.1")
                .to_string();
            Ok(Target {
                host,
                port: u16::try_from(port)
                    .map_err(|_| PgTrickleError::Internal(format!("port {port} out of range")))?,
                user,
                databases,
            })
        })
    })
}

/// Reads one database's samples; `None` when the database has no pg_trickle.
fn read_database(t: &Target, db: &str) -> Result<Option<Vec<Sample>>, String> {
    let mut cfg = postgres::Config::new();
    if t.host.starts_with('/') {
        cfg.host_path(&t.host);
    } else {
        cfg.host(&t.host);
    }
    cfg.port(t.port)
        .user(&t.user)
        .dbname(db)
        .application_name("pg_trickle metrics")
        .connect_timeout(Duration::from_secs(5))
        .options("-c statement_timeout=10000 -c lock_timeout=2000");
    let mut client = cfg.connect(postgres::NoTls).map_err(|e| e.to_string())?;
    let has = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_trickle')",
            &[],
        )
        .map_err(|e| e.to_string())?
        .get::<_, bool>(0);
    if !has {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT metric, labels, value, scope FROM pgtrickle.metrics()",
            &[],
        )
        .map_err(|e| e.to_string())?;
    rows.into_iter()
        .map(|r| {
            metrics::sample_from_row(
                r.get::<_, String>(0),
                r.get::<_, Vec<String>>(1),
                r.get::<_, f64>(2),
                &r.get::<_, String>(3),
            )
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Some)
}

/// The whole exposition of one scrape.
fn scrape() -> Result<String, String> {
    let started = Instant::now();
    let t = target().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for db in &t.databases {
        let up = match read_database(&t, db) {
            Ok(Some(rows)) => {
                metrics::merge_database(&mut out, &mut seen, db, rows);
                true
            }
            Ok(None) => continue,
            Err(e) => {
                log!("pg_trickle metrics: cannot read the metrics of database \"{db}\": {e}");
                false
            }
        };
        out.push(Sample {
            metric: "pgtrickle_scrape_database_up".into(),
            labels: vec![("database".into(), db.clone())],
            value: f64::from(u8::from(up)),
            cluster: true,
        });
    }
    out.push(Sample {
        metric: "pgtrickle_scrape_duration_seconds".into(),
        labels: Vec::new(),
        value: started.elapsed().as_secs_f64(),
        cluster: true,
    });
    metrics::render(&out)
}

/// The request line's method and path, from the head of an HTTP/1.x request.
pub(crate) fn request_target(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    version.starts_with("HTTP/1.").then_some((method, target))
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    // A client that went away is no concern of the server's.
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
}

fn serve(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    const TEXT: &str = "text/plain; charset=utf-8";
    match request_target(&head) {
        Some(("GET", "/metrics")) | Some(("GET", "/metrics/")) => match scrape() {
            Ok(body) => respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            ),
            Err(e) => {
                log!("pg_trickle metrics: scrape failed: {e}");
                respond(
                    &mut stream,
                    "500 Internal Server Error",
                    TEXT,
                    &format!("{e}\n"),
                )
            }
        },
        Some(("GET", "/")) => respond(
            &mut stream,
            "200 OK",
            TEXT,
            "pg_trickle metrics: GET /metrics\n",
        ),
        Some(("GET", _)) => respond(&mut stream, "404 Not Found", TEXT, "not found\n"),
        Some(_) => respond(
            &mut stream,
            "405 Method Not Allowed",
            TEXT,
            "only GET is served\n",
        ),
        None => respond(&mut stream, "400 Bad Request", TEXT, "bad request\n"),
    }
}

/// The endpoint worker's main loop.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn pg_trickle_metrics_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(Some("postgres"), None);
    let address = config::metrics_listen_address();
    let port = config::METRICS_PORT.get();
    let Ok(port) = u16::try_from(port) else {
        return;
    };
    let mut warned = false;
    let mut listener: Option<TcpListener> = None;
    let mut last_try: Option<Instant> = None;
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(100))) {
        crate::worker::reload_config_if_asked();
        let Some(l) = &listener else {
            // Bind (again every 10 s while the port is taken), warning once.
            if last_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_try = Some(Instant::now());
                match TcpListener::bind((address.as_str(), port))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                {
                    Ok(l) => {
                        log!("pg_trickle metrics: serving http://{address}:{port}/metrics");
                        listener = Some(l);
                    }
                    Err(e) if !warned => {
                        warned = true;
                        warning!(
                            "pg_trickle metrics: cannot listen on {address}:{port}: {e}; \
                             retrying every 10 s"
                        );
                    }
                    Err(_) => {}
                }
            }
            continue;
        };
        loop {
            match l.accept() {
                Ok((stream, _)) => serve(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    log!("pg_trickle metrics: accept failed: {e}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod unit {
    use super::request_target;

    #[test]
    fn request_lines_are_parsed() {
        assert_eq!(
            request_target("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_target("GET /metrics\r\n"), None);
        assert_eq!(request_target("garbage"), None);
        assert_eq!(
            request_target("POST / HTTP/1.0\r\n\r\n"),
            Some(("POST", "/"))
        );
    }
}
