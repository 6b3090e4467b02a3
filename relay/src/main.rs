//! `pg_trickle_relay --config FILE [--check]`: runs the configured pipelines until SIGTERM or
//! SIGINT (then finishes the batches in flight and exits 0). Exit status 2: the configuration
//! is wrong (the error says where); 1: the relay could not start.

use std::sync::Arc;

use pg_trickle_relay::config::{self, Config};
use pg_trickle_relay::metrics::{self, PipelineStats};
use pg_trickle_relay::pipeline::{self, Spec};
use pg_trickle_relay::sink::Sink;
use pg_trickle_relay::source::Source;
use pg_trickle_relay::{error, info};

const USAGE: &str = "usage: pg_trickle_relay --config FILE [--check]

  --config FILE   the relay's TOML configuration (docs/RELAY_GUIDE.md); ${ENV:NAME} in it is
                  replaced by the environment variable NAME
  --check         validate the configuration and exit (0: valid, 2: not)
  --version       print the version";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut path = None;
    let mut check = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--config" if i + 1 < args.len() => {
                path = Some(args[i + 1].clone());
                i += 1;
            }
            "--check" => check = true,
            "--version" => {
                println!("pg_trickle_relay {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("pg_trickle_relay: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    let Some(path) = path else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pg_trickle_relay: {e}");
            std::process::exit(2);
        }
    };
    if check {
        println!(
            "pg_trickle_relay: {path} is valid: {} pipeline(s), {} sink(s)",
            config.pipelines.len(),
            config.sinks.len()
        );
        return;
    }
    pg_trickle_relay::log::set_level(&config.relay.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pg_trickle_relay: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    std::process::exit(runtime.block_on(run(config)));
}

async fn run(config: Config) -> i32 {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    for p in &config.pipelines {
        let Some(sink_config) = config.sinks.get(&p.sink) else {
            error!("pipeline {}: no sink {}", p.name, p.sink);
            return 2;
        };
        let sink = match Sink::new(sink_config, config.relay.sink_timeout_ms) {
            Ok(s) => s,
            Err(e) => {
                error!("pipeline {}: sink {}: {e}", p.name, p.sink);
                return 2;
            }
        };
        let s = Arc::new(PipelineStats {
            name: p.name.clone(),
            sink: p.sink.clone(),
            sink_kind: sink_config.kind().to_string(),
            max_inflight: config.relay.sink_max_inflight as u64,
            ..Default::default()
        });
        stats.push(s.clone());
        let spec = Spec::new(&config, p);
        info!(
            "pipeline {}: {} as consumer group {:?} ({}) to {} sink {}, window {}",
            p.name,
            p.stream_table,
            p.consumer_group,
            config.relay.consumer_id,
            sink_config.kind(),
            p.sink,
            spec.window
        );
        let source = Source::new(config.postgres.url.clone());
        tasks.push(tokio::spawn(pipeline::run(
            spec,
            source,
            sink,
            s,
            shutdown.clone(),
        )));
    }
    let stats = Arc::new(stats);
    if !config.relay.metrics_listen.is_empty() {
        match tokio::net::TcpListener::bind(config.relay.metrics_listen.as_str()).await {
            Ok(l) => {
                info!(
                    "health and metrics on http://{}/ (/health, /ready, /metrics)",
                    config.relay.metrics_listen
                );
                tokio::spawn(metrics::serve(l, stats.clone()));
            }
            Err(e) => {
                error!("cannot listen on {}: {e}", config.relay.metrics_listen);
                return 1;
            }
        }
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot handle SIGTERM: {e}");
            return 1;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing the batches in flight"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: finishing the batches in flight"),
    }
    let _ = stop.send(true);
    // A second signal stops at once (a pipeline may be waiting for a sink's timeout).
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        error!("second signal: exiting without waiting for the batches in flight");
        std::process::exit(1);
    });
    for t in tasks {
        let _ = t.await;
    }
    info!("stopped");
    0
}
