//! The relay's TOML configuration: `${ENV:VAR}` interpolation, validation with errors that
//! name what is wrong, and [`Secret`] for every value that may hold a credential (it never
//! prints its value).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// A value that may hold a credential: it prints as `[redacted]` in logs, errors and `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value itself, for the one place that sends it (a connection, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a webhook goes: `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Option<Target> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, 80),
        };
        if host.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Target {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub relay: RelaySettings,
    pub postgres: PostgresSettings,
    #[serde(rename = "pipeline", default)]
    pub pipelines: Vec<Pipeline>,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// The consumer name the relay polls under; its leases are held as `<consumer_id>/<pid>.
    /// <token>`, so that every process fences the others. A relay stopped by SIGTERM gives its
    /// leases up, and its successor takes them at once; one that was killed leaves them to
    /// expire (`lease_seconds`) first.
    pub consumer_id: String,
    /// `host:port` of the health and Prometheus endpoint; empty: none.
    pub metrics_listen: String,
    /// Most messages delivered and not yet acknowledged by a sink, per pipeline: polling pauses
    /// while the window is full.
    pub sink_max_inflight: usize,
    /// Wait between polls of an outbox that had nothing new.
    pub poll_interval_ms: u64,
    /// The consumer-group lease the relay takes (renewed by every poll).
    pub lease_seconds: f64,
    /// A sink that has not acknowledged a batch within this time failed it.
    pub sink_timeout_ms: u64,
    /// `error`, `warn`, `info` or `debug`.
    pub log_level: String,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            consumer_id: default_consumer_id(),
            metrics_listen: String::new(),
            sink_max_inflight: 1000,
            poll_interval_ms: 200,
            lease_seconds: 30.0,
            sink_timeout_ms: 10_000,
            log_level: "info".into(),
        }
    }
}

fn default_consumer_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "pg_trickle_relay@{}",
        if host.is_empty() { "localhost" } else { &host }
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// A libpq-style connection string (`host=… dbname=… user=… password=…`) or URL.
    pub url: Secret,
}

/// One stream table's outbox, read by one consumer group, delivered to one sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    pub name: String,
    pub stream_table: String,
    pub consumer_group: String,
    /// The name of a `[sinks.<name>]` table.
    pub sink: String,
    /// Create the consumer group when it does not exist (from the earliest retained message).
    #[serde(default = "yes")]
    pub create_group: bool,
    /// Messages fetched per poll (at most `sink_max_inflight`).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn yes() -> bool {
    true
}
fn default_batch() -> usize {
    500
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output, or appended to `path`.
    Stdout {
        #[serde(default)]
        path: Option<String>,
    },
    /// An HTTP POST of each envelope to `url` (http only), with `Idempotency-Key: <dedup key>`.
    Webhook {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
        #[serde(default = "default_max_message")]
        max_message_bytes: usize,
    },
    /// XADD to Redis stream `stream`.
    Redis {
        address: String,
        stream: String,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default = "default_max_message")]
        max_message_bytes: usize,
    },
    /// PUB to `subject`; with `jetstream_stream`, acknowledged by JetStream (which stores the
    /// subject in that stream, created when missing).
    Nats {
        address: String,
        subject: String,
        #[serde(default)]
        jetstream_stream: Option<String>,
        #[serde(default)]
        token: Option<Secret>,
    },
    /// Produce to Kafka topic `topic` (librdkafka), keyed by stream table.
    Kafka {
        bootstrap_servers: String,
        topic: String,
        /// Further librdkafka properties (`sasl.password`, …): values are secrets.
        #[serde(default)]
        properties: BTreeMap<String, Secret>,
        #[serde(default = "default_max_message")]
        max_message_bytes: usize,
    },
}

fn default_max_message() -> usize {
    1_048_576
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::Webhook { .. } => "webhook",
            SinkConfig::Redis { .. } => "redis",
            SinkConfig::Nats { .. } => "nats",
            SinkConfig::Kafka { .. } => "kafka",
        }
    }
}

/// What is wrong with a configuration (never with a secret's value in it).
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    Read(String),
    /// `${ENV:VAR}` of a variable that is not set.
    UnknownVariable(String),
    /// `${…}` that is not `${ENV:NAME}`.
    BadPlaceholder(String),
    Parse(String),
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(e) => write!(f, "cannot read the configuration: {e}"),
            ConfigError::UnknownVariable(v) => write!(
                f,
                "the configuration refers to environment variable {v} (${{ENV:{v}}}), which is not set"
            ),
            ConfigError::BadPlaceholder(p) => write!(
                f,
                "bad placeholder {p:?} in the configuration: write ${{ENV:NAME}} (NAME of letters, digits and _)"
            ),
            ConfigError::Parse(e) => write!(f, "the configuration is not valid: {e}"),
            ConfigError::Invalid(e) => write!(f, "the configuration is not valid: {e}"),
        }
    }
}

/// Replaces every `${ENV:NAME}` in `text` with the variable's value, looked up by `env`.
/// `$${` stays a literal `${`. A value is inserted as is, inside whatever TOML string holds the
/// placeholder: a value with a quote or backslash must be placed in a literal string (`'…'`).
pub fn interpolate(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ConfigError::BadPlaceholder(after.chars().take(30).collect()))?;
        let inner = &after[..end];
        let name = inner
            .strip_prefix("ENV:")
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| ConfigError::BadPlaceholder(format!("${{{inner}}}")))?;
        let value = env(name).ok_or_else(|| ConfigError::UnknownVariable(name.to_string()))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses and validates a configuration (after interpolation).
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        // toml's Display quotes the offending line, which may hold an interpolated secret: the
        // message and the line number only.
        let line = e
            .span()
            .map(|s| {
                format!(
                    " (line {})",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        ConfigError::Parse(format!("{}{line}", e.message().trim().replace('\n', " ")))
    })?;
    validate(&config)?;
    Ok(config)
}

/// Reads, interpolates from the process environment, parses and validates `path`.
pub fn load(path: &str) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::Read(format!("{path}: {e}")))?;
    parse(&interpolate(&text, |v| std::env::var(v).ok())?)
}

fn validate(c: &Config) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    if c.pipelines.is_empty() {
        return bad("no [[pipeline]]: name at least one stream table to relay".into());
    }
    if c.relay.sink_max_inflight == 0 {
        return bad("relay.sink_max_inflight must be at least 1".into());
    }
    if !(c.relay.lease_seconds > 0.0 && c.relay.lease_seconds <= 86_400.0) {
        return bad("relay.lease_seconds must be more than 0 and at most 86400".into());
    }
    if c.relay.poll_interval_ms == 0 || c.relay.sink_timeout_ms == 0 {
        return bad("relay.poll_interval_ms and relay.sink_timeout_ms must be at least 1".into());
    }
    if c.relay.sink_timeout_ms as f64 * 2.0 > c.relay.lease_seconds * 1000.0 {
        return bad(format!(
            "relay.sink_timeout_ms ({}) must be at most half of relay.lease_seconds ({} s): a batch still unacknowledged when the lease expires is delivered again by the next holder",
            c.relay.sink_timeout_ms, c.relay.lease_seconds
        ));
    }
    if c.relay.consumer_id.is_empty() {
        return bad("relay.consumer_id must not be empty".into());
    }
    if !matches!(
        c.relay.log_level.as_str(),
        "error" | "warn" | "info" | "debug"
    ) {
        return bad(format!(
            "relay.log_level {:?}: use error, warn, info or debug",
            c.relay.log_level
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut reads = std::collections::BTreeSet::new();
    for p in &c.pipelines {
        if !names.insert(p.name.as_str()) {
            return bad(format!("two pipelines are named {:?}", p.name));
        }
        if !reads.insert((p.stream_table.as_str(), p.consumer_group.as_str())) {
            return bad(format!(
                "two pipelines read stream table {:?} as consumer group {:?}: one would wait for the other's lease forever",
                p.stream_table, p.consumer_group
            ));
        }
        if p.batch_size == 0 {
            return bad(format!(
                "pipeline {:?}: batch_size must be at least 1",
                p.name
            ));
        }
        let Some(sink) = c.sinks.get(&p.sink) else {
            return bad(format!(
                "pipeline {:?} names sink {:?}, which no [sinks.{}] defines",
                p.name, p.sink, p.sink
            ));
        };
        if matches!(sink, SinkConfig::Kafka { .. }) && !cfg!(feature = "kafka") {
            return bad(format!(
                "sink {:?} is a Kafka sink, and this relay was built without the kafka feature",
                p.sink
            ));
        }
    }
    for (name, sink) in &c.sinks {
        match sink {
            SinkConfig::Webhook { url, headers, .. } => {
                let broken = |t: &str| t.contains(['\r', '\n']) || t.is_empty();
                if let Some((h, _)) = headers.iter().find(|(h, v)| {
                    broken(h) || h.contains([':', ' ']) || v.expose().contains(['\r', '\n'])
                }) {
                    return bad(format!(
                        "sink {name:?}: header {h:?} has a bad name or a line break in its value"
                    ));
                }
                if Target::parse(url).is_none() {
                    return bad(format!(
                        "sink {name:?}: url must be http://host[:port][/path] (https is not supported: put a TLS proxy in front)"
                    ));
                }
            }
            SinkConfig::Redis {
                address, stream, ..
            } => {
                check_address(name, address)?;
                if stream.is_empty() {
                    return bad(format!("sink {name:?}: stream must not be empty"));
                }
            }
            SinkConfig::Nats {
                address, subject, ..
            } => {
                check_address(name, address)?;
                if subject.is_empty() || subject.contains([' ', '\t', '*', '>']) {
                    return bad(format!(
                        "sink {name:?}: subject must be a NATS subject without spaces or wildcards"
                    ));
                }
            }
            SinkConfig::Kafka {
                topic,
                bootstrap_servers,
                properties,
                ..
            } => {
                // What the relay's guarantees rest on: all replicas acknowledge, and retries
                // neither duplicate nor reorder within a partition.
                if let Some(k) = properties.keys().find(|k| {
                    matches!(
                        k.as_str(),
                        "acks"
                            | "enable.idempotence"
                            | "enable.gapless.guarantee"
                            | "bootstrap.servers"
                    )
                }) {
                    return bad(format!(
                        "sink {name:?}: property {k:?} is set by the relay (acks=all, an idempotent producer without gaps, bootstrap_servers)"
                    ));
                }
                if topic.is_empty() || bootstrap_servers.is_empty() {
                    return bad(format!(
                        "sink {name:?}: topic and bootstrap_servers must not be empty"
                    ));
                }
            }
            SinkConfig::Stdout { .. } => {}
        }
    }
    Ok(())
}

fn check_address(sink: &str, address: &str) -> Result<(), ConfigError> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "sink {sink:?}: address must be host:port, not {address:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[postgres]
url = "host=localhost password=${ENV:PW}"

[[pipeline]]
name = "p"
stream_table = "public.t"
consumer_group = "g"
sink = "out"

[sinks.out]
type = "stdout"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "PW").then(|| "s3cret".to_string())
    }

    #[test]
    fn interpolates_known_variables_and_names_unknown_ones() {
        let text = interpolate(BASE, env).unwrap();
        assert!(text.contains("password=s3cret"));
        assert_eq!(
            interpolate("a = \"${ENV:NOPE}\"", env),
            Err(ConfigError::UnknownVariable("NOPE".into()))
        );
        assert!(matches!(
            interpolate("a = \"${HOME}\"", env),
            Err(ConfigError::BadPlaceholder(_))
        ));
        assert!(matches!(
            interpolate("a = \"${ENV:PW\"", env),
            Err(ConfigError::BadPlaceholder(_))
        ));
        assert_eq!(
            interpolate("a = \"$${ENV:X}\"", env).unwrap(),
            "a = \"${ENV:X}\""
        );
    }

    #[test]
    fn parses_http_urls_only() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8080/hook").unwrap(),
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/hook".into()
            }
        );
        assert_eq!(Target::parse("http://example.com").unwrap().port, 80);
        assert!(Target::parse("https://example.com/").is_none());
        assert!(Target::parse("http://:80/").is_none());
        assert!(Target::parse("http://user:pw@host/").is_none());
    }

    #[test]
    fn the_secret_never_prints() {
        let c = parse(&interpolate(BASE, env).unwrap()).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("[redacted]"));
        assert_eq!(c.relay.sink_max_inflight, 1000);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let no_sink = BASE.replace("sink = \"out\"", "sink = \"nowhere\"");
        let e = parse(&interpolate(&no_sink, env).unwrap()).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
        let e = parse("[postgres]\nurl = 3\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)), "{e:?}");
        let e =
            parse(&interpolate(&format!("{BASE}\n[relay]\nsink_max_inflight = 0\n"), env).unwrap())
                .unwrap_err();
        assert!(e.to_string().contains("sink_max_inflight"), "{e}");
        let e = parse(
            &interpolate(&format!("{BASE}\n[relay]\nsink_timeout_ms = 20000\n"), env).unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("half of relay.lease_seconds"), "{e}");
        let bad_type = BASE.replace("type = \"stdout\"", "type = \"carrier-pigeon\"");
        assert!(parse(&interpolate(&bad_type, env).unwrap()).is_err());
    }

    #[test]
    fn a_parse_error_does_not_echo_a_secret() {
        // The secret lands on a line that does not parse: the error must not quote it.
        let text = interpolate("[postgres]\nurl = \"x\" password=${ENV:PW}\n", env).unwrap();
        let e = parse(&text).unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }
}
