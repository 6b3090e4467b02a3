//! Kafka, through Debian's librdkafka (its C API, declared in [`ffi`]): each envelope is
//! produced to the topic with the stream table's name as key, so that one stream table's
//! messages share a partition and keep their order (the producer is idempotent). A batch is
//! delivered when librdkafka reported every message delivered (acks=all).
//!
//! The tests use librdkafka's built-in mock cluster (`pg_trickle_relay_tools kafka-mock`), not
//! a real Kafka broker.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Message, SinkError};
use crate::config::Secret;

/// The part of librdkafka's C API the relay and its test tools use (rdkafka.h,
/// rdkafka_mock.h, librdkafka 2.x).
#[allow(non_camel_case_types)]
pub mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    pub type rd_kafka_t = c_void;
    pub type rd_kafka_conf_t = c_void;
    pub type rd_kafka_topic_t = c_void;
    pub type rd_kafka_mock_cluster_t = c_void;

    pub const RD_KAFKA_PRODUCER: c_int = 0;
    pub const RD_KAFKA_CONSUMER: c_int = 1;
    pub const RD_KAFKA_CONF_OK: c_int = 0;
    pub const RD_KAFKA_PARTITION_UA: i32 = -1;
    pub const RD_KAFKA_MSG_F_COPY: c_int = 0x2;
    pub const RD_KAFKA_OFFSET_BEGINNING: i64 = -2;
    pub const RD_KAFKA_RESP_ERR__QUEUE_FULL: c_int = -184;

    /// `rd_kafka_message_t`.
    #[repr(C)]
    pub struct rd_kafka_message_t {
        pub err: c_int,
        pub rkt: *mut rd_kafka_topic_t,
        pub partition: i32,
        pub payload: *mut c_void,
        pub len: usize,
        pub key: *mut c_void,
        pub key_len: usize,
        pub offset: i64,
        pub _private: *mut c_void,
    }

    /// `rd_kafka_topic_partition_t`.
    #[repr(C)]
    pub struct rd_kafka_topic_partition_t {
        pub topic: *mut c_char,
        pub partition: i32,
        pub offset: i64,
        pub metadata: *mut c_void,
        pub metadata_size: usize,
        pub opaque: *mut c_void,
        pub err: c_int,
        pub _private: *mut c_void,
    }
    pub type rd_kafka_topic_partition_list_t = c_void;

    pub type DrMsgCb =
        unsafe extern "C" fn(*mut rd_kafka_t, *const rd_kafka_message_t, *mut c_void);

    #[link(name = "rdkafka")]
    extern "C" {
        pub fn rd_kafka_conf_new() -> *mut rd_kafka_conf_t;
        pub fn rd_kafka_conf_set(
            conf: *mut rd_kafka_conf_t,
            name: *const c_char,
            value: *const c_char,
            errstr: *mut c_char,
            errstr_size: usize,
        ) -> c_int;
        pub fn rd_kafka_conf_destroy(conf: *mut rd_kafka_conf_t);
        pub fn rd_kafka_conf_set_dr_msg_cb(conf: *mut rd_kafka_conf_t, cb: DrMsgCb);
        pub fn rd_kafka_conf_set_opaque(conf: *mut rd_kafka_conf_t, opaque: *mut c_void);
        pub fn rd_kafka_new(
            kind: c_int,
            conf: *mut rd_kafka_conf_t,
            errstr: *mut c_char,
            errstr_size: usize,
        ) -> *mut rd_kafka_t;
        pub fn rd_kafka_destroy(rk: *mut rd_kafka_t);
        pub fn rd_kafka_topic_new(
            rk: *mut rd_kafka_t,
            topic: *const c_char,
            conf: *mut c_void,
        ) -> *mut rd_kafka_topic_t;
        pub fn rd_kafka_topic_destroy(rkt: *mut rd_kafka_topic_t);
        pub fn rd_kafka_produce(
            rkt: *mut rd_kafka_topic_t,
            partition: i32,
            msgflags: c_int,
            payload: *mut c_void,
            len: usize,
            key: *const c_void,
            keylen: usize,
            msg_opaque: *mut c_void,
        ) -> c_int;
        pub fn rd_kafka_last_error() -> c_int;
        pub fn rd_kafka_err2str(err: c_int) -> *const c_char;
        pub fn rd_kafka_poll(rk: *mut rd_kafka_t, timeout_ms: c_int) -> c_int;
        pub fn rd_kafka_flush(rk: *mut rd_kafka_t, timeout_ms: c_int) -> c_int;
        pub fn rd_kafka_poll_set_consumer(rk: *mut rd_kafka_t) -> c_int;
        pub fn rd_kafka_consumer_poll(
            rk: *mut rd_kafka_t,
            timeout_ms: c_int,
        ) -> *mut rd_kafka_message_t;
        pub fn rd_kafka_message_destroy(m: *mut rd_kafka_message_t);
        pub fn rd_kafka_consumer_close(rk: *mut rd_kafka_t) -> c_int;
        pub fn rd_kafka_topic_partition_list_new(
            size: c_int,
        ) -> *mut rd_kafka_topic_partition_list_t;
        pub fn rd_kafka_topic_partition_list_add(
            list: *mut rd_kafka_topic_partition_list_t,
            topic: *const c_char,
            partition: i32,
        ) -> *mut rd_kafka_topic_partition_t;
        pub fn rd_kafka_topic_partition_list_destroy(list: *mut rd_kafka_topic_partition_list_t);
        pub fn rd_kafka_assign(
            rk: *mut rd_kafka_t,
            partitions: *const rd_kafka_topic_partition_list_t,
        ) -> c_int;
        pub fn rd_kafka_mock_cluster_new(
            rk: *mut rd_kafka_t,
            broker_cnt: c_int,
        ) -> *mut rd_kafka_mock_cluster_t;
        pub fn rd_kafka_mock_cluster_bootstraps(
            mcluster: *const rd_kafka_mock_cluster_t,
        ) -> *const c_char;
        pub fn rd_kafka_mock_topic_create(
            mcluster: *mut rd_kafka_mock_cluster_t,
            topic: *const c_char,
            partition_cnt: c_int,
            replication_factor: c_int,
        ) -> c_int;
    }
}

/// librdkafka's text for an error code.
pub fn err_text(err: c_int) -> String {
    // SAFETY: rd_kafka_err2str returns a static NUL-terminated string for any code.
    unsafe { CStr::from_ptr(ffi::rd_kafka_err2str(err)) }
        .to_string_lossy()
        .into_owned()
}

/// A configuration for `rd_kafka_new`, built from (name, value) pairs. Values may be secrets:
/// errors name the property only.
pub fn new_handle(kind: c_int, props: &[(String, String)]) -> Result<Handle, String> {
    // SAFETY: a fresh configuration object, owned here until rd_kafka_new takes it.
    let conf = unsafe { ffi::rd_kafka_conf_new() };
    let mut errstr = [0 as c_char; 512];
    for (name, value) in props {
        let (n, v) = match (CString::new(name.as_str()), CString::new(value.as_str())) {
            (Ok(n), Ok(v)) => (n, v),
            _ => {
                // SAFETY: conf is ours and not yet given to rd_kafka_new.
                unsafe { ffi::rd_kafka_conf_destroy(conf) };
                return Err(format!("librdkafka property {name} contains a NUL byte"));
            }
        };
        // SAFETY: valid NUL-terminated strings and an error buffer of the size passed.
        let r = unsafe {
            ffi::rd_kafka_conf_set(
                conf,
                n.as_ptr(),
                v.as_ptr(),
                errstr.as_mut_ptr(),
                errstr.len(),
            )
        };
        if r != ffi::RD_KAFKA_CONF_OK {
            // SAFETY: as above.
            unsafe { ffi::rd_kafka_conf_destroy(conf) };
            return Err(format!("librdkafka refused property {name}"));
        }
    }
    Ok(Handle { conf, kind })
}

/// A configuration about to become a client.
pub struct Handle {
    conf: *mut ffi::rd_kafka_conf_t,
    kind: c_int,
}

impl Handle {
    pub fn conf(&self) -> *mut ffi::rd_kafka_conf_t {
        self.conf
    }

    /// Creates the client (which takes the configuration).
    pub fn create(self) -> Result<*mut ffi::rd_kafka_t, String> {
        let mut errstr = [0 as c_char; 512];
        // SAFETY: on success rd_kafka_new takes ownership of conf; on failure we still own it.
        let rk =
            unsafe { ffi::rd_kafka_new(self.kind, self.conf, errstr.as_mut_ptr(), errstr.len()) };
        if rk.is_null() {
            // SAFETY: rd_kafka_new failed, conf is still ours; errstr is NUL-terminated.
            let msg = unsafe {
                ffi::rd_kafka_conf_destroy(self.conf);
                CStr::from_ptr(errstr.as_ptr())
            };
            return Err(msg.to_string_lossy().into_owned());
        }
        Ok(rk)
    }
}

/// Delivery reports of the batch in flight.
#[derive(Default)]
struct Reports {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

unsafe extern "C" fn on_delivery(
    _rk: *mut ffi::rd_kafka_t,
    msg: *const ffi::rd_kafka_message_t,
    opaque: *mut c_void,
) {
    // SAFETY: opaque is the `Reports` the producer was configured with, alive as long as it;
    // msg is valid for the duration of the callback.
    let (reports, err) = unsafe { (&*(opaque as *const Reports), (*msg).err) };
    if err == 0 {
        reports.delivered.fetch_add(1, Ordering::SeqCst);
    } else {
        reports.failed.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut first) = reports.first_error.lock() {
            first.get_or_insert_with(|| err_text(err));
        }
    }
}

/// A producer and its topic.
struct Producer {
    rk: *mut ffi::rd_kafka_t,
    rkt: *mut ffi::rd_kafka_topic_t,
    reports: Arc<Reports>,
}

// SAFETY: librdkafka handles are thread-safe; the relay uses one from one thread at a time.
unsafe impl Send for Producer {}

impl Drop for Producer {
    fn drop(&mut self) {
        // SAFETY: handles created by us and destroyed once, topic before client; flush gives
        // queued messages a moment (they are delivered again by the relay anyway).
        unsafe {
            ffi::rd_kafka_flush(self.rk, 1000);
            ffi::rd_kafka_topic_destroy(self.rkt);
            ffi::rd_kafka_destroy(self.rk);
        }
    }
}

impl Producer {
    fn send(&self, batch: &[(String, String)], timeout: Duration) -> Result<(), SinkError> {
        self.reports.delivered.store(0, Ordering::SeqCst);
        self.reports.failed.store(0, Ordering::SeqCst);
        if let Ok(mut e) = self.reports.first_error.lock() {
            *e = None;
        }
        let deadline = Instant::now() + timeout;
        for (key, body) in batch {
            loop {
                // SAFETY: F_COPY makes librdkafka copy payload and key before returning.
                let r = unsafe {
                    ffi::rd_kafka_produce(
                        self.rkt,
                        ffi::RD_KAFKA_PARTITION_UA,
                        ffi::RD_KAFKA_MSG_F_COPY,
                        body.as_ptr() as *mut c_void,
                        body.len(),
                        key.as_ptr() as *const c_void,
                        key.len(),
                        std::ptr::null_mut(),
                    )
                };
                if r == 0 {
                    break;
                }
                // SAFETY: reads the calling thread's last error.
                let err = unsafe { ffi::rd_kafka_last_error() };
                if err == ffi::RD_KAFKA_RESP_ERR__QUEUE_FULL && Instant::now() < deadline {
                    // SAFETY: serves delivery reports, freeing queue space.
                    unsafe { ffi::rd_kafka_poll(self.rk, 50) };
                    continue;
                }
                return Err(SinkError::Refused(format!("produce: {}", err_text(err))));
            }
        }
        let n = batch.len();
        loop {
            let done = self.reports.delivered.load(Ordering::SeqCst)
                + self.reports.failed.load(Ordering::SeqCst);
            if done >= n {
                break;
            }
            if Instant::now() >= deadline {
                return Err(SinkError::Io(format!(
                    "{} of {n} messages not acknowledged in time",
                    n - done
                )));
            }
            // SAFETY: serves delivery reports (on_delivery) on this thread.
            unsafe { ffi::rd_kafka_poll(self.rk, 50) };
        }
        if self.reports.failed.load(Ordering::SeqCst) > 0 {
            let first = self
                .reports
                .first_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default();
            return Err(SinkError::Refused(format!("delivery failed: {first}")));
        }
        Ok(())
    }
}

pub struct Kafka {
    bootstrap_servers: String,
    topic: String,
    properties: BTreeMap<String, Secret>,
    max_message_bytes: usize,
    timeout_ms: u64,
    producer: Option<Arc<Mutex<Producer>>>,
}

impl Kafka {
    pub fn new(
        bootstrap_servers: String,
        topic: String,
        properties: BTreeMap<String, Secret>,
        max_message_bytes: usize,
        timeout_ms: u64,
    ) -> Self {
        Kafka {
            bootstrap_servers,
            topic,
            properties,
            max_message_bytes,
            timeout_ms,
            producer: None,
        }
    }

    pub fn connected(&self) -> bool {
        self.producer.is_some()
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    pub fn disconnect(&mut self) {
        self.producer = None;
    }

    pub async fn connect(&mut self) -> Result<(), SinkError> {
        let mut props = vec![
            (
                "bootstrap.servers".to_string(),
                self.bootstrap_servers.clone(),
            ),
            ("enable.idempotence".to_string(), "true".to_string()),
            // A failure that could leave a gap in the produced sequence is fatal to the
            // producer (the batch fails whole, the relay reconnects and delivers it again)
            // instead of letting later messages through.
            ("enable.gapless.guarantee".to_string(), "true".to_string()),
            ("acks".to_string(), "all".to_string()),
            (
                "message.timeout.ms".to_string(),
                self.timeout_ms.max(1000).to_string(),
            ),
            (
                "message.max.bytes".to_string(),
                (self.max_message_bytes + 4096).to_string(),
            ),
            ("linger.ms".to_string(), "5".to_string()),
        ];
        for (k, v) in &self.properties {
            props.push((k.clone(), v.expose().to_string()));
        }
        let handle = new_handle(ffi::RD_KAFKA_PRODUCER, &props).map_err(SinkError::Connect)?;
        let reports = Arc::new(Reports::default());
        // SAFETY: the callback and its opaque (kept alive by `reports` in the Producer, which
        // outlives the client) are set before the client is created.
        unsafe {
            ffi::rd_kafka_conf_set_dr_msg_cb(handle.conf(), on_delivery);
            ffi::rd_kafka_conf_set_opaque(handle.conf(), Arc::as_ptr(&reports) as *mut c_void);
        }
        let rk = handle.create().map_err(SinkError::Connect)?;
        let topic = CString::new(self.topic.as_str())
            .map_err(|_| SinkError::Connect("the topic contains a NUL byte".into()))?;
        // SAFETY: rk is a live client; a NULL topic configuration means the defaults.
        let rkt = unsafe { ffi::rd_kafka_topic_new(rk, topic.as_ptr(), std::ptr::null_mut()) };
        if rkt.is_null() {
            // SAFETY: the client is ours and unused.
            let err = unsafe {
                let e = ffi::rd_kafka_last_error();
                ffi::rd_kafka_destroy(rk);
                e
            };
            return Err(SinkError::Connect(format!(
                "topic {}: {}",
                self.topic,
                err_text(err)
            )));
        }
        self.producer = Some(Arc::new(Mutex::new(Producer { rk, rkt, reports })));
        Ok(())
    }

    pub async fn deliver(&mut self, batch: &[Message]) -> Result<(), SinkError> {
        let producer = self
            .producer
            .clone()
            .ok_or_else(|| SinkError::Io("not connected".into()))?;
        let items: Vec<(String, String)> = batch
            .iter()
            .map(|m| (m.stream_table.clone(), m.body.clone()))
            .collect();
        let timeout = Duration::from_millis(self.timeout_ms);
        tokio::task::spawn_blocking(move || {
            let p = producer
                .lock()
                .map_err(|_| SinkError::Io("the producer's lock is poisoned".into()))?;
            p.send(&items, timeout)
        })
        .await
        .map_err(|e| SinkError::Io(format!("the delivery thread failed: {e}")))?
    }
}
