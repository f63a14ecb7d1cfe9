//! The engine thread: the one owner of the NATS client.
//!
//! It runs a current-thread tokio runtime that never leaves this thread,
//! and does four things in one `select!` loop:
//! - binds the stream (file storage, `max_msgs_per_subject` =
//!   `broker.history_depth`, the duplicate window) and fixes every topic's
//!   epoch from the stream's name and creation time;
//! - follows the stream with an ordered consumer from its first message,
//!   applying each to the topic table with its stream sequence as seq;
//! - publishes what the workers submit, asynchronously, with at most
//!   `cluster.publish_window` unacknowledged, each with a message id that
//!   its retries reuse (JetStream stores it once within the duplicate
//!   window), retried until `cluster.publish_timeout_ms`;
//! - watches the connection: on its loss the node stops serving (subscribers
//!   sent away with 4000, `/readyz` and publishes 503); once reconnected it
//!   re-follows the stream from the last sequence it applied and serves
//!   again when it has caught up with the stream's last sequence.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream, Context};
use futures_util::stream::FuturesUnordered;
use futures_util::{Future, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::quorum::leader_has_quorum;
use super::subject::{all_topics, subject_of, topic_of};
use super::{LinkState, Submitted};
use crate::broker::topic_table::TopicTable;
use crate::config::ClusterConfig;
use crate::metrics::ClusterMetrics;
use crate::tick::now_micros;
use crate::topic::TopicName;

/// The header carrying the publishing node's receive time (µs), so every
/// node sends the same `ts`.
const TS_HEADER: &str = "Tickfan-Ts";

/// How often the engine looks at retries, catch-up and lag.
const TICK: Duration = Duration::from_millis(100);

/// A follower that lags the stream and has read nothing for this long is
/// presumed dead (its consumer lived on a server that died) and replaced.
const STALL_AFTER: Duration = Duration::from_secs(2);

/// A failed publish waits this long before it is sent again.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// How long binding the stream is retried at start.
const STREAM_BIND_WAIT: Duration = Duration::from_secs(45);

/// How long one publish attempt waits for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the engine needs of the configuration, owned by its thread.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    config: ClusterConfig,
    history_depth: usize,
}

impl Settings {
    pub(super) fn new(config: &ClusterConfig, history_depth: usize) -> Self {
        Settings {
            config: config.clone(),
            history_depth,
        }
    }
}

/// A publish and its retries.
#[derive(Debug)]
struct Outgoing {
    submitted: Submitted,
    msg_id: String,
    first_sent: Instant,
}

type AckFuture =
    Pin<Box<dyn Future<Output = (Outgoing, Result<jetstream::publish::PublishAck, String>)>>>;

/// Runs the engine until the process ends; `ready` hears once whether it
/// connected, bound the stream and caught up.
pub(super) fn run(
    settings: Settings,
    table: Arc<TopicTable>,
    state: Arc<LinkState>,
    metrics: ClusterMetrics,
    inbox: mpsc::UnboundedReceiver<Submitted>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the engine's runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let mut engine = match Engine::connect(settings, table, state, metrics).await {
            Ok(engine) => engine,
            Err(reason) => {
                let _ = ready.send(Err(reason));
                return;
            }
        };
        engine.run(inbox, ready).await;
    });
}

struct Engine {
    settings: Settings,
    table: Arc<TopicTable>,
    state: Arc<LinkState>,
    metrics: ClusterMetrics,
    js: Context,
    stream: stream::Stream,
    events: mpsc::UnboundedReceiver<async_nats::Event>,
    /// Prefix of this process's message ids: unique per node run.
    node_id: String,
    next_msg: u64,
    /// The stream sequence the node must have applied to serve again.
    catch_up_to: Option<u64>,
    /// Follow the stream anew from `applied + 1` (after a reconnect).
    refollow: bool,
}

impl Engine {
    async fn connect(
        settings: Settings,
        table: Arc<TopicTable>,
        state: Arc<LinkState>,
        metrics: ClusterMetrics,
    ) -> Result<Engine, String> {
        let config = &settings.config;
        let (events_tx, events) = mpsc::unbounded_channel();
        let options = connect_options(config, events_tx).await?;
        let mut servers = Vec::with_capacity(config.nats_urls.len());
        for (i, url) in config.nats_urls.iter().enumerate() {
            let server: async_nats::ServerAddr = url
                .parse()
                .map_err(|e| format!("cluster.nats_urls[{i}] {url:?}: {e}"))?;
            servers.push(server);
        }
        let urls = config.nats_urls.join(", ");
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(|e| format!("cannot connect to NATS at {urls}: {e}"))?;
        state.connected.store(true, Ordering::Relaxed);
        metrics.connected.set(1);
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(config.publish_window.saturating_add(16))
            .build(client);
        let stream_config = stream::Config {
            name: config.stream.clone(),
            subjects: vec![all_topics(&config.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            // 0 would mean no limit: a node without history still keeps
            // each topic's last value in the stream.
            max_messages_per_subject: i64::try_from(settings.history_depth.max(1))
                .unwrap_or(i64::MAX),
            duplicate_window: config.duplicate_window(),
            ..Default::default()
        };
        // A JetStream cluster that has just started may still be electing
        // its meta leader: retry for a while before giving up.
        let deadline = Instant::now() + STREAM_BIND_WAIT;
        let (stream, info) = loop {
            let bound = match js.get_or_create_stream(stream_config.clone()).await {
                Ok(stream) => match stream.get_info().await {
                    Ok(info) => Ok((stream, info)),
                    Err(e) => Err(format!("cannot read stream {}: {e}", config.stream)),
                },
                Err(e) => Err(format!(
                    "cannot create or bind stream {}: {e}",
                    config.stream
                )),
            };
            match bound {
                Ok(bound) => break bound,
                Err(reason) if Instant::now() < deadline => {
                    tracing::info!(%reason, "cluster: stream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(reason) => return Err(reason),
            }
        };
        // The stream's identity: a stream deleted and made again numbers
        // from 1 again, and gets a new creation time, so a new epoch.
        let epoch = format!(
            "{}-{:x}",
            config.stream,
            info.created.unix_timestamp_nanos()
        );
        table.set_cluster_epoch(epoch);
        let node_id = format!("{:x}.{:x}", now_micros(), std::process::id());
        Ok(Engine {
            catch_up_to: Some(info.state.last_sequence),
            settings,
            table,
            state,
            metrics,
            js,
            stream,
            events,
            node_id,
            next_msg: 0,
            refollow: false,
        })
    }

    async fn follow(&self, from: u64) -> Result<consumer::pull::Ordered, String> {
        let deliver_policy = if from <= 1 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: all_topics(&self.settings.config.subject_prefix),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the stream follower: {e}"))?;
        consumer
            .messages()
            .await
            .map_err(|e| format!("cannot follow the stream: {e}"))
    }

    async fn run(
        &mut self,
        mut inbox: mpsc::UnboundedReceiver<Submitted>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let mut ready = Some(ready);
        let mut messages = match self.follow(1).await {
            Ok(messages) => Some(messages),
            Err(reason) => {
                let _ = ready.take().map(|ready| ready.send(Err(reason)));
                return;
            }
        };
        let window = self.settings.config.publish_window;
        let mut in_flight: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        let mut retries: VecDeque<(Instant, Outgoing)> = VecDeque::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lag_checked = Instant::now();
        let mut last_read = Instant::now();
        // When the stream last answered (stream info, once a second).
        let mut stream_seen = Instant::now();
        let mut probe: Option<Probe> = None;
        self.check_caught_up(&mut ready);
        loop {
            let room = in_flight.len().saturating_add(retries.len()) < window;
            tokio::select! {
                message = next_message(&mut messages) => match message {
                    Some(Ok(message)) => {
                        last_read = Instant::now();
                        self.apply(&message);
                        if self.catch_up_to.is_some() {
                            self.check_caught_up(&mut ready);
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "cluster: stream follower"),
                    None => {
                        messages = None;
                        self.refollow = true;
                    }
                },
                event = self.events.recv() => {
                    if let Some(event) = event {
                        self.on_event(event);
                        if self.refollow {
                            messages = None;
                        }
                    }
                }
                submitted = inbox.recv(), if room => match submitted {
                    Some(submitted) => {
                        let outgoing = self.outgoing(submitted);
                        if let Some(future) = self.send(outgoing).await.or_retry(&mut retries) {
                            in_flight.push(future);
                        }
                    }
                    None => return, // the server is gone
                },
                acked = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some((outgoing, result)) = acked {
                        self.on_ack(outgoing, result, &mut retries);
                    }
                }
                _ = ticker.tick() => {
                    let now = Instant::now();
                    while retries.front().is_some_and(|(at, _)| *at <= now) {
                        let Some((_, outgoing)) = retries.pop_front() else { break };
                        if outgoing.first_sent.elapsed() >= self.settings.config.publish_timeout() {
                            self.give_up(&outgoing, "not acknowledged within cluster.publish_timeout_ms");
                            continue;
                        }
                        self.metrics.publishes.with_label_values(&["retried"]).inc();
                        if let Some(future) = self.send(outgoing).await.or_retry(&mut retries) {
                            in_flight.push(future);
                        }
                    }
                    if self.refollow && self.state.connected.load(Ordering::Relaxed) {
                        messages = self.refollow_stream().await;
                    }
                    if self.catch_up_to.is_none() && !self.state.serving.load(Ordering::Relaxed)
                        && self.state.connected.load(Ordering::Relaxed)
                    {
                        self.catch_up_to =
                            last_sequence(self.stream.clone(), self.stream_lost_after()).await;
                    }
                    self.check_caught_up(&mut ready);
                    if probe.is_none() && now.duration_since(lag_checked) >= Duration::from_secs(1) {
                        lag_checked = now;
                        probe = Some(Box::pin(last_sequence(
                            self.stream.clone(),
                            self.stream_lost_after(),
                        )));
                    }
                    if self.state.serving.load(Ordering::Relaxed)
                        && stream_seen.elapsed() >= self.stream_lost_after()
                    {
                        // Connected to a server that cannot reach the
                        // stream (its cluster lost quorum, or the server
                        // is cut off from the others, the stream's leader
                        // among them): stale, so stop serving as if NATS
                        // were gone.
                        self.stop_serving("the stream does not answer with a quorum");
                        messages = None;
                    }
                }
                // The once-a-second stream info, polled here so that a
                // stream slow to answer never holds up publishes or applies.
                last = next_probe(&mut probe) => {
                    probe = None;
                    if let Some(last) = last {
                        stream_seen = Instant::now();
                        let applied = self.state.applied.load(Ordering::Relaxed);
                        let lag = last.saturating_sub(applied);
                        self.metrics.consumer_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
                        // The ordered consumer is an R1 ephemeral on one
                        // server; if that server died, the client notices
                        // only after missed idle heartbeats (tens of
                        // seconds). Behind with nothing read: follow anew.
                        if lag > 0 && last_read.elapsed() >= STALL_AFTER && !self.refollow {
                            tracing::warn!(lag, "cluster: stream follower stalled; following anew");
                            messages = None;
                            self.refollow = true;
                            last_read = Instant::now();
                        }
                    }
                }
            }
        }
    }

    /// Follows the stream again from the message after the last applied.
    async fn refollow_stream(&mut self) -> Option<consumer::pull::Ordered> {
        let from = self.state.applied.load(Ordering::Relaxed).saturating_add(1);
        match self.follow(from).await {
            Ok(messages) => {
                self.refollow = false;
                Some(messages)
            }
            Err(reason) => {
                tracing::warn!(%reason, "cluster: following the stream again failed; retrying");
                None
            }
        }
    }

    /// Serves again (or for the first time) once the stream's last sequence
    /// at the time of (re)connection has been applied.
    fn check_caught_up(&mut self, ready: &mut Option<std::sync::mpsc::Sender<Result<(), String>>>) {
        let Some(target) = self.catch_up_to else {
            return;
        };
        if !self.state.connected.load(Ordering::Relaxed)
            || self.refollow
            || self.state.applied.load(Ordering::Relaxed) < target
        {
            return;
        }
        self.catch_up_to = None;
        self.state.serving.store(true, Ordering::Release);
        self.metrics.serving.set(1);
        tracing::info!(seq = target, "cluster: caught up with the stream; serving");
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
    }

    /// Stops serving (subscribers sent away with 4000, /readyz and
    /// publishes 503) until the engine has followed the stream again and
    /// caught up with it.
    fn stop_serving(&mut self, why: &str) {
        self.catch_up_to = None;
        self.refollow = true;
        self.metrics.serving.set(0);
        if self.state.serving.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                reason = why,
                "cluster: not serving; subscribers sent away (4000)"
            );
            self.table.send_away_subscribers();
        }
    }

    /// How long the stream may go unanswered before the node stops
    /// serving: three NATS ping intervals, at least three seconds (a
    /// leader election here takes one to a few).
    fn stream_lost_after(&self) -> Duration {
        (self.settings.config.ping_interval() * 3).max(Duration::from_secs(3))
    }

    fn on_event(&mut self, event: async_nats::Event) {
        match event {
            async_nats::Event::Disconnected => {
                self.state.connected.store(false, Ordering::Relaxed);
                self.metrics.connected.set(0);
                self.stop_serving("lost NATS");
            }
            async_nats::Event::Connected => {
                tracing::info!("cluster: NATS connected; catching up before serving");
                self.state.connected.store(true, Ordering::Relaxed);
                self.metrics.connected.set(1);
            }
            other => tracing::debug!(event = %other, "cluster: NATS event"),
        }
    }

    /// Applies one stream message to the topic table.
    fn apply(&self, message: &jetstream::Message) {
        let Ok(info) = message.info() else {
            return;
        };
        let seq = info.stream_sequence;
        self.state.applied.fetch_max(seq, Ordering::Relaxed);
        self.metrics
            .applied_seq
            .set(i64::try_from(seq).unwrap_or(i64::MAX));
        let prefix = &self.settings.config.subject_prefix;
        let Some(topic) = topic_of(prefix, message.subject.as_str()) else {
            tracing::debug!(subject = %message.subject, "cluster: not a topic's subject; skipped");
            return;
        };
        let Ok(name) = TopicName::new(topic.as_str()) else {
            return;
        };
        // Written by a node, which checked it; anyone with access to the
        // stream could write, so it is checked again before it is sent on.
        if serde_json::from_slice::<&RawValue>(&message.payload).is_err() {
            tracing::debug!(seq, "cluster: payload is not JSON; skipped");
            return;
        }
        let ts = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(TS_HEADER))
            .and_then(|ts| ts.as_str().parse().ok())
            .unwrap_or_else(|| {
                u64::try_from(info.published.unix_timestamp_nanos() / 1000).unwrap_or(0)
            });
        self.table.apply(&name, seq, ts, &message.payload);
    }

    fn outgoing(&mut self, submitted: Submitted) -> Outgoing {
        self.next_msg = self.next_msg.wrapping_add(1);
        Outgoing {
            msg_id: format!("{}.{}", self.node_id, self.next_msg),
            submitted,
            first_sent: Instant::now(),
        }
    }

    /// Sends one attempt of a publish; the future resolves with its ack.
    async fn send(&self, outgoing: Outgoing) -> Result<AckFuture, Outgoing> {
        let Ok(topic) = TopicName::new(outgoing.submitted.topic.as_str()) else {
            self.give_up(&outgoing, "not a topic");
            return Err(outgoing);
        };
        let subject = subject_of(&self.settings.config.subject_prefix, &topic);
        let publish = jetstream::message::PublishMessage::build()
            .payload(outgoing.submitted.data.clone().into())
            .message_id(&outgoing.msg_id)
            .header(TS_HEADER, outgoing.submitted.ts.to_string().as_str());
        match self.js.send_publish(subject, publish).await {
            Ok(ack) => {
                let ack = ack.into_future();
                Ok(Box::pin(async move {
                    let result = ack.await.map_err(|e| e.to_string());
                    (outgoing, result)
                }))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster: publish not sent");
                Err(outgoing)
            }
        }
    }

    fn on_ack(
        &self,
        outgoing: Outgoing,
        result: Result<jetstream::publish::PublishAck, String>,
        retries: &mut VecDeque<(Instant, Outgoing)>,
    ) {
        match result {
            Ok(ack) => {
                self.metrics.publishes.with_label_values(&["acked"]).inc();
                if let Some(receipt) = outgoing.submitted.receipt {
                    self.table.report_stored(receipt, Some(ack.sequence));
                }
                self.metrics
                    .publish_latency
                    .observe(outgoing.first_sent.elapsed().as_secs_f64());
                self.state.pending.fetch_sub(1, Ordering::Relaxed);
            }
            Err(reason) => {
                tracing::debug!(%reason, msg_id = %outgoing.msg_id, "cluster: publish not acknowledged");
                Err::<AckFuture, Outgoing>(outgoing).or_retry(retries);
            }
        }
    }

    fn give_up(&self, outgoing: &Outgoing, reason: &str) {
        tracing::warn!(
            msg_id = %outgoing.msg_id,
            topic = %outgoing.submitted.topic,
            %reason,
            "cluster: publish given up"
        );
        self.metrics.publishes.with_label_values(&["failed"]).inc();
        self.state.pending.fetch_sub(1, Ordering::Relaxed);
        if let Some(receipt) = outgoing.submitted.receipt {
            self.table.report_stored(receipt, None);
        }
    }
}

/// A send that failed goes to the retry queue (or is given up past the
/// publish timeout, counted by the engine when it next looks).
trait OrRetry {
    fn or_retry(self, retries: &mut VecDeque<(Instant, Outgoing)>) -> Option<AckFuture>;
}

impl OrRetry for Result<AckFuture, Outgoing> {
    fn or_retry(self, retries: &mut VecDeque<(Instant, Outgoing)>) -> Option<AckFuture> {
        match self {
            Ok(future) => Some(future),
            Err(outgoing) => {
                retries.push_back((Instant::now() + RETRY_AFTER, outgoing));
                None
            }
        }
    }
}

/// The stream's last sequence, from a leader that still has a quorum of
/// its peers (a cut-off leader's answer would let the node serve stale
/// ticks); `None` when there is no such answer.
async fn last_sequence(stream: stream::Stream, seen_within: Duration) -> Option<u64> {
    match stream.get_info().await {
        Ok(info) if leader_has_quorum(info.cluster.as_ref(), seen_within) => {
            Some(info.state.last_sequence)
        }
        Ok(_) => {
            tracing::debug!("cluster: stream leader without a quorum of its peers");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "cluster: stream info");
            None
        }
    }
}

/// The stream's last sequence, asked once a second (`None`: no answer, or
/// an answer from a leader cut off from a quorum of its peers).
type Probe = Pin<Box<dyn Future<Output = Option<u64>>>>;

/// The answer of the probe in flight, or never while there is none.
async fn next_probe(probe: &mut Option<Probe>) -> Option<u64> {
    match probe {
        Some(probe) => probe.await,
        None => std::future::pending().await,
    }
}

/// The next message of the follower, or never while there is none.
async fn next_message(
    messages: &mut Option<consumer::pull::Ordered>,
) -> Option<Result<jetstream::Message, consumer::pull::OrderedError>> {
    match messages {
        Some(messages) => messages.next().await,
        None => std::future::pending().await,
    }
}

/// The client's options from `[cluster]`: pings, credentials, TLS, and the
/// connection events the engine acts on.
async fn connect_options(
    config: &ClusterConfig,
    events: mpsc::UnboundedSender<async_nats::Event>,
) -> Result<async_nats::ConnectOptions, String> {
    let mut options = async_nats::ConnectOptions::new()
        .name("tickfan")
        .ping_interval(config.ping_interval())
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        // Back soon after NATS is: at most a second between attempts
        // (the client's default backs off to several seconds).
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(
                u64::try_from(attempts)
                    .unwrap_or(10)
                    .saturating_mul(100)
                    .min(1000),
            )
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
    if let Some(file) = &config.credentials_file {
        options = options
            .credentials_file(file)
            .await
            .map_err(|e| format!("cluster.credentials_file {}: {e}", file.display()))?;
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}
