//! What both endpoints (metrics HTTP, control socket) do to survive a
//! local user who opens connections and never speaks, speaks one byte a
//! second, or exhausts the agent's file descriptors: a cap on concurrent
//! connections (the excess is answered "busy" and closed at once, so it
//! never holds an fd), a timeout on every read and write, and a backoff
//! when `accept` itself fails (EMFILE would otherwise spin the loop).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::Metrics;

/// First sleep after a failed `accept`; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("{endpoint}: no answer within {timeout:?}")]
    Timeout {
        endpoint: &'static str,
        timeout: Duration,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The limits one endpoint applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Connections served at once; more are closed at once.
    pub max_connections: usize,
    /// Bound on each read and on each write.
    pub io_timeout: Duration,
}

/// Admission and accounting for one endpoint.
#[derive(Clone)]
pub struct Gate {
    pub endpoint: &'static str,
    pub limits: Limits,
    slots: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
}

impl Gate {
    pub fn new(endpoint: &'static str, limits: Limits, metrics: Option<Arc<Metrics>>) -> Gate {
        Gate {
            endpoint,
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            metrics,
        }
    }

    /// A slot for a new connection, or `None` (counted) when all are taken.
    pub fn admit(&self) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                if let Some(m) = &self.metrics {
                    m.endpoint_connections
                        .with_label_values(&[self.endpoint])
                        .inc();
                }
                Some(Slot {
                    _permit: permit,
                    gate: self.clone(),
                })
            }
            Err(_) => {
                if let Some(m) = &self.metrics {
                    m.endpoint_refused.with_label_values(&[self.endpoint]).inc();
                }
                None
            }
        }
    }

    /// Runs one read or write under the timeout; a timeout is counted.
    pub async fn io<T>(
        &self,
        f: impl Future<Output = std::io::Result<T>>,
    ) -> Result<T, AcceptError> {
        match tokio::time::timeout(self.limits.io_timeout, f).await {
            Ok(r) => Ok(r?),
            Err(_) => {
                if let Some(m) = &self.metrics {
                    m.endpoint_timeouts
                        .with_label_values(&[self.endpoint])
                        .inc();
                }
                Err(AcceptError::Timeout {
                    endpoint: self.endpoint,
                    timeout: self.limits.io_timeout,
                })
            }
        }
    }

    fn accept_failed(&self) {
        if let Some(m) = &self.metrics {
            m.endpoint_accept_errors
                .with_label_values(&[self.endpoint])
                .inc();
        }
    }
}

/// A connection's place under the cap, given back on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Gate,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(m) = &self.gate.metrics {
            m.endpoint_connections
                .with_label_values(&[self.gate.endpoint])
                .dec();
        }
    }
}

/// Sleeps after failed accepts: 100 ms doubling to 1 s, reset by a
/// success. One warning per burst of failures, one line when it ends.
#[derive(Debug, Default)]
pub struct Backoff {
    delay: Duration,
    /// Failures in the current burst.
    pub burst: u64,
}

impl Backoff {
    /// The delay to sleep after one more failure; says whether to log it.
    pub fn failed(&mut self) -> (Duration, bool) {
        self.burst += 1;
        self.delay = if self.delay.is_zero() {
            BACKOFF_MIN
        } else {
            (self.delay * 2).min(BACKOFF_MAX)
        };
        (self.delay, self.burst == 1)
    }

    /// A successful accept; returns the length of the burst it ended.
    pub fn succeeded(&mut self) -> u64 {
        self.delay = Duration::ZERO;
        std::mem::take(&mut self.burst)
    }
}

/// Accepts connections forever: each admitted one is handed to `serve`
/// in its own task with its slot; the excess gets `busy` written without
/// waiting (best effort) and is closed; accept errors back off.
pub async fn accept_loop<S, A, F, Fut>(gate: Gate, mut accept: A, busy: &'static [u8], serve: F)
where
    S: TrySend + Send + 'static,
    A: AsyncAccept<S> + Send,
    F: Fn(S, Slot) -> Fut + Send,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Backoff::default();
    loop {
        match accept.accept().await {
            Ok(stream) => {
                let ended = backoff.succeeded();
                if ended > 1 {
                    tracing::info!("{}: accepting again after {ended} failures", gate.endpoint);
                }
                match gate.admit() {
                    Some(slot) => {
                        tokio::spawn(serve(stream, slot));
                    }
                    None => {
                        // Never await here: a client that does not read
                        // must not hold up the accept loop.
                        stream.try_send(busy);
                    }
                }
            }
            Err(e) => {
                gate.accept_failed();
                let (delay, log) = backoff.failed();
                if log {
                    tracing::warn!(
                        "{}: accept failed ({e}); backing off up to {BACKOFF_MAX:?} until it recovers",
                        gate.endpoint
                    );
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// A listener whose `accept` yields a stream.
pub trait AsyncAccept<S> {
    fn accept(&mut self) -> impl Future<Output = std::io::Result<S>> + Send;
}

impl AsyncAccept<tokio::net::TcpStream> for tokio::net::TcpListener {
    async fn accept(&mut self) -> std::io::Result<tokio::net::TcpStream> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl AsyncAccept<tokio::net::UnixStream> for tokio::net::UnixListener {
    async fn accept(&mut self) -> std::io::Result<tokio::net::UnixStream> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// A stream the accept loop can answer "busy" on without awaiting.
pub trait TrySend {
    fn try_send(&self, bytes: &[u8]);
}

impl TrySend for tokio::net::TcpStream {
    fn try_send(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

impl TrySend for tokio::net::UnixStream {
    fn try_send(&self, bytes: &[u8]) {
        let _ = self.try_write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn backoff_doubles_to_a_second_and_logs_once_per_burst() {
        let mut b = Backoff::default();
        let got: Vec<(u128, bool)> = (0..7)
            .map(|_| {
                let (d, log) = b.failed();
                (d.as_millis(), log)
            })
            .collect();
        assert_eq!(
            got,
            [
                (100, true),
                (200, false),
                (400, false),
                (800, false),
                (1000, false),
                (1000, false),
                (1000, false)
            ]
        );
        assert_eq!(b.succeeded(), 7);
        assert_eq!(b.failed(), (BACKOFF_MIN, true));
    }

    fn gate(
        name: &'static str,
        max_connections: usize,
        io_timeout: Duration,
    ) -> (Arc<Metrics>, Gate) {
        let metrics = Metrics::new().expect("metrics");
        let limits = Limits {
            max_connections,
            io_timeout,
        };
        (metrics.clone(), Gate::new(name, limits, Some(metrics)))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Connections past the cap are told "busy" and closed while the ones
    /// admitted are idle; once those time out, service resumes.
    #[test]
    fn the_cap_closes_the_excess_and_timeouts_free_the_slots() {
        rt().block_on(async {
            let (metrics, gate) = gate("test", 2, Duration::from_millis(300));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let g = gate.clone();
            tokio::spawn(accept_loop(
                gate,
                listener,
                b"busy\n",
                move |mut s, slot| {
                    let g = g.clone();
                    async move {
                        let _slot = slot;
                        let mut b = [0u8; 1];
                        if g.io(s.read_exact(&mut b)).await.is_ok() {
                            let _ = g.io(s.write_all(b"ok\n")).await;
                        }
                    }
                },
            ));
            let mut idle = Vec::new();
            for _ in 0..2 {
                idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut excess = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut got = Vec::new();
            excess.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"busy\n");
            // The idle ones are cut after the timeout …
            for mut s in idle {
                let mut rest = Vec::new();
                let n = s.read_to_end(&mut rest).await.unwrap_or(0);
                assert_eq!(n, 0);
            }
            // … and a well-behaved client is served again.
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"x").await.expect("send");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"ok\n");
            let text = metrics.render();
            assert!(
                text.contains("vigil_endpoint_refused_total{endpoint=\"test\"} 1"),
                "{text}"
            );
            assert!(
                text.contains("vigil_endpoint_timeouts_total{endpoint=\"test\"} 2"),
                "{text}"
            );
            assert!(
                text.contains("vigil_endpoint_connections{endpoint=\"test\"} 0"),
                "{text}"
            );
        });
    }

    /// A listener that fails like EMFILE a few times, then accepts.
    struct Flaky {
        fails: u32,
        attempts: Arc<std::sync::atomic::AtomicU32>,
        inner: tokio::net::TcpListener,
    }

    impl AsyncAccept<tokio::net::TcpStream> for Flaky {
        async fn accept(&mut self) -> std::io::Result<tokio::net::TcpStream> {
            let n = self
                .attempts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < self.fails {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.inner.accept().await.map(|(s, _)| s)
        }
    }

    #[test]
    fn accept_errors_back_off_instead_of_spinning() {
        rt().block_on(async {
            let (metrics, gate) = gate("flaky", 4, Duration::from_secs(1));
            let inner = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = inner.local_addr().expect("addr");
            let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let flaky = Flaky {
                fails: 3,
                attempts: attempts.clone(),
                inner,
            };
            let t0 = tokio::time::Instant::now();
            tokio::spawn(accept_loop(gate, flaky, b"", |mut s, _slot| async move {
                let _ = s.write_all(b"hi").await;
            }));
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"hi");
            // 100 + 200 + 400 ms of backoff, not a hot loop.
            assert!(
                t0.elapsed() >= Duration::from_millis(700),
                "{:?}",
                t0.elapsed()
            );
            // Three failures, the accept that served us, and the next one waiting.
            assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 5);
            assert!(metrics
                .render()
                .contains("vigil_endpoint_accept_errors_total{endpoint=\"flaky\"} 3"));
        });
    }
}
