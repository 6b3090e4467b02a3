//! Test tools for the relay's Kafka sink, on librdkafka's built-in mock cluster (not a real
//! Kafka broker: it keeps messages in memory and speaks the protocol):
//!
//! - `pg_trickle_relay_tools kafka-mock [--brokers N] [--topic T --partitions P]` starts a mock
//!   cluster, prints `bootstrap=<servers>` and serves until killed.
//! - `pg_trickle_relay_tools kafka-tail --bootstrap B --topic T [--partitions P] [--idle-ms M]`
//!   reads the topic from the beginning and prints each message's value, one per line, until
//!   nothing arrived for M ms (default 3000).

#[cfg(feature = "kafka")]
fn main() {
    use std::collections::BTreeMap;
    use std::ffi::CString;
    use std::io::Write;

    use pg_trickle_relay::sink::kafka::{err_text, ffi, new_handle};

    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        eprintln!("usage: pg_trickle_relay_tools kafka-mock|kafka-tail [options]");
        std::process::exit(2);
    };
    let mut opts = BTreeMap::new();
    for pair in args[1..].chunks(2) {
        match pair {
            [k, v] if k.starts_with("--") => {
                opts.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
            _ => {
                eprintln!("pg_trickle_relay_tools: options are --name value pairs");
                std::process::exit(2);
            }
        }
    }
    let opt = |k: &str, d: &str| opts.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: i32| -> i32 {
        opt(k, &d.to_string()).parse().unwrap_or_else(|_| {
            eprintln!("pg_trickle_relay_tools: --{k} takes a number");
            std::process::exit(2)
        })
    };
    let fail = |m: String| -> ! {
        eprintln!("pg_trickle_relay_tools: {m}");
        std::process::exit(1)
    };
    match cmd.as_str() {
        "kafka-mock" => {
            let rk = new_handle(ffi::RD_KAFKA_PRODUCER, &[])
                .and_then(|h| h.create())
                .unwrap_or_else(|e| fail(e));
            // SAFETY: rk is a live client; the cluster lives as long as it (until exit).
            let cluster = unsafe { ffi::rd_kafka_mock_cluster_new(rk, num("brokers", 1)) };
            if cluster.is_null() {
                fail("cannot start the mock cluster".into());
            }
            if let Some(topic) = opts.get("topic") {
                let t = CString::new(topic.as_str()).unwrap_or_else(|_| fail("bad topic".into()));
                // SAFETY: a live mock cluster and a NUL-terminated topic name.
                let err = unsafe {
                    ffi::rd_kafka_mock_topic_create(cluster, t.as_ptr(), num("partitions", 1), 1)
                };
                if err != 0 {
                    fail(format!("cannot create topic {topic}: {}", err_text(err)));
                }
            }
            // SAFETY: returns a string owned by the cluster.
            let servers =
                unsafe { std::ffi::CStr::from_ptr(ffi::rd_kafka_mock_cluster_bootstraps(cluster)) };
            println!("bootstrap={}", servers.to_string_lossy());
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "kafka-tail" => {
            let bootstrap = opts
                .get("bootstrap")
                .cloned()
                .unwrap_or_else(|| fail("--bootstrap is required".into()));
            let topic = opts
                .get("topic")
                .cloned()
                .unwrap_or_else(|| fail("--topic is required".into()));
            let idle = num("idle-ms", 3000);
            let props = vec![
                ("bootstrap.servers".to_string(), bootstrap),
                ("group.id".to_string(), "pg_trickle_relay_tools".to_string()),
                ("enable.auto.commit".to_string(), "false".to_string()),
            ];
            let rk = new_handle(ffi::RD_KAFKA_CONSUMER, &props)
                .and_then(|h| h.create())
                .unwrap_or_else(|e| fail(e));
            let t = CString::new(topic.as_str()).unwrap_or_else(|_| fail("bad topic".into()));
            // SAFETY: a live consumer; the partition list is ours and destroyed after assign.
            unsafe {
                ffi::rd_kafka_poll_set_consumer(rk);
                let list = ffi::rd_kafka_topic_partition_list_new(1);
                for p in 0..num("partitions", 1) {
                    let tp = ffi::rd_kafka_topic_partition_list_add(list, t.as_ptr(), p);
                    (*tp).offset = ffi::RD_KAFKA_OFFSET_BEGINNING;
                }
                let err = ffi::rd_kafka_assign(rk, list);
                ffi::rd_kafka_topic_partition_list_destroy(list);
                if err != 0 {
                    fail(format!("assign: {}", err_text(err)));
                }
            }
            let mut out = std::io::stdout().lock();
            let mut quiet = std::time::Instant::now();
            loop {
                // SAFETY: a live consumer; a returned message is destroyed below.
                let m = unsafe { ffi::rd_kafka_consumer_poll(rk, 100) };
                if m.is_null() {
                    if quiet.elapsed().as_millis() as i32 >= idle {
                        break;
                    }
                    continue;
                }
                // SAFETY: m is a valid message until destroyed; payload has len bytes.
                unsafe {
                    if (*m).err == 0 && !(*m).payload.is_null() {
                        let bytes = std::slice::from_raw_parts((*m).payload as *const u8, (*m).len);
                        let _ = out.write_all(bytes);
                        let _ = out.write_all(b"\n");
                        quiet = std::time::Instant::now();
                    }
                    ffi::rd_kafka_message_destroy(m);
                }
            }
            let _ = out.flush();
            // SAFETY: closes and frees the consumer once.
            unsafe {
                ffi::rd_kafka_consumer_close(rk);
                ffi::rd_kafka_destroy(rk);
            }
        }
        other => fail(format!("unknown command {other:?}")),
    }
}

#[cfg(not(feature = "kafka"))]
fn main() {
    eprintln!("pg_trickle_relay_tools: built without the kafka feature");
    std::process::exit(2);
}
