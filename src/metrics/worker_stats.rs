//! The counters a worker keeps for itself and flushes into the Prometheus
//! metrics once a second, and the label values they are kept by: so
//! counting costs no shared cache line per message. The network layer
//! counts into [`WorkerStats`]; [`super::Metrics`] reads it. Kept here, below
//! the network layer, so metrics import none of the layers.

/// What a connection is being used for, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A plain HTTP request (or one not yet known to be anything else).
    Http = 0,
    WebSocket = 1,
    Sse = 2,
    LongPoll = 3,
    /// A WebSocket over TLS.
    Wss = 4,
    /// Anything else over TLS: HTTP requests, SSE streams, long-polls.
    Tls = 5,
}

impl Transport {
    pub const ALL: [Transport; 6] = [
        Transport::Http,
        Transport::WebSocket,
        Transport::Sse,
        Transport::LongPoll,
        Transport::Wss,
        Transport::Tls,
    ];

    /// The same use over a TLS connection.
    pub fn over_tls(self) -> Transport {
        match self {
            Transport::WebSocket | Transport::Wss => Transport::Wss,
            _ => Transport::Tls,
        }
    }

    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
            Transport::Wss => "wss",
            Transport::Tls => "tls",
        }
    }
}

/// The `reason` labels of refused requests and upgrades; which refusal
/// gets which is `crate::http::refusal::Refusal::label`'s decision.
pub const FAILURE_REASONS: [&str; 13] = [
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "timeout",
    "body_too_large",
    "expectation_failed",
    "unsupported_version",
    "headers_too_large",
    "not_implemented",
    "over_limit",
    "not_serving",
];

/// Why a TLS handshake failed: the `reason` labels of
/// `tickfan_tls_handshake_failures_total` (`crate::net::tls_outcome` decides).
pub const TLS_FAILURE_REASONS: [&str; 7] = [
    "not_tls",
    "incompatible",
    "peer_alert",
    "client_certificate",
    "protocol",
    "timeout",
    "closed",
];

/// The close codes the broker sends, counted per code.
pub const CLOSE_CODES: [u16; 11] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 4000, 4001, 4003,
];

/// Counters a worker keeps for itself, with no shared cache line per
/// message; they are flushed into the Prometheus metrics once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub published_ws: u64,
    pub published_http: u64,
    /// Ticks written, by [`Transport`] index.
    pub delivered: [u64; Transport::ALL.len()],
    pub write_syscalls: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub conflated: u64,
    pub dropped: u64,
    pub slow_disconnects: u64,
    /// Accepted upgrades and requests, by [`Transport`] index.
    pub handshakes: [u64; Transport::ALL.len()],
    /// Refusals, by index in [`FAILURE_REASONS`].
    pub handshake_failures: [u64; FAILURE_REASONS.len()],
    /// TLS handshakes completed.
    pub tls_handshakes: u64,
    /// TLS handshakes failed, by index in [`TLS_FAILURE_REASONS`].
    pub tls_handshake_failures: [u64; TLS_FAILURE_REASONS.len()],
    /// Close frames sent, by index in [`CLOSE_CODES`].
    pub closes: [u64; CLOSE_CODES.len()],
    pub accept_errors: u64,
    /// Reads of a connection that may publish put off because a mailbox
    /// held over `broker.max_mailbox_ticks`.
    pub publisher_pauses: u64,
    /// Sweeps (or connections) held back for batching (`net::pacer`).
    pub batch_waits: u64,
    /// Time the event loop spent outside `poll`.
    pub busy_nanos: u64,
    /// Ticks compressed for permessage-deflate subscribers (once each per
    /// window size, however many subscribers share it).
    pub deflate_compressions: u64,
    /// Envelope bytes compressed, and the compressed bytes they became.
    pub deflate_bytes_in: u64,
    pub deflate_bytes_out: u64,
    /// Compressed client messages inflated.
    pub inflated_messages: u64,
    /// Bytes those messages inflated to.
    pub inflated_bytes: u64,
}

impl WorkerStats {
    /// Counts an accepted upgrade or request of `transport`.
    pub fn count_handshake(&mut self, transport: Transport) {
        if let Some(count) = self.handshakes.get_mut(transport as usize) {
            *count += 1;
        }
    }

    /// Counts `ticks` written to clients of `transport`.
    pub fn count_delivered(&mut self, transport: Transport, ticks: usize) {
        if let Some(count) = self.delivered.get_mut(transport as usize) {
            *count += ticks as u64;
        }
    }

    /// Ticks written to clients of every transport.
    pub fn delivered_total(&self) -> u64 {
        self.delivered.iter().sum()
    }

    /// Counts a refused request under its `reason` label.
    pub fn count_refusal(&mut self, label: &str) {
        if let Some(i) = FAILURE_REASONS.iter().position(|reason| *reason == label) {
            self.handshake_failures[i] += 1;
        }
    }

    /// Counts a completed TLS handshake.
    pub fn count_tls_handshake(&mut self) {
        self.tls_handshakes += 1;
    }

    /// Counts a failed TLS handshake under its `reason` label.
    pub fn count_tls_failure(&mut self, reason: &str) {
        if let Some(i) = TLS_FAILURE_REASONS
            .iter()
            .position(|known| *known == reason)
        {
            self.tls_handshake_failures[i] += 1;
        }
    }

    /// Counts a close frame the broker sent.
    pub fn count_close(&mut self, code: u16) {
        if let Some(i) = CLOSE_CODES.iter().position(|c| *c == code) {
            self.closes[i] += 1;
        }
    }
}
