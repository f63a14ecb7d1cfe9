//! Plain HTTP requests on a connection: health and readiness, metrics,
//! `POST /publish`, and the start of a long-poll or an SSE stream. The pure
//! parts (routes, queries, bodies, answers) live in `crate::http`.

use super::awaited_publish::PublishRequest;
use super::{presented_rights, AwaitedBody, Connection, Flow, Phase};
use crate::broker::auth::{Access, Rights};
use crate::broker::cluster_link::ReplyTo;
use crate::broker::topic_table::{BatchItem, PublishError, Start};
use crate::http::demo::demo_asset;
use crate::http::publish::parse_publish_body;
use crate::http::query::{parse_stream_request, QueryLimits, StreamRequest};
use crate::http::refusal::Refusal;
use crate::http::request::Request;
use crate::http::response::Response;
use crate::http::router::{http_route, HttpRoute, RouteError, RoutePaths};
use crate::metrics::auth::FORBIDDEN_TOPIC;
use crate::metrics::CONTENT_TYPE;
use crate::net::context::{Ctx, Transport};
use crate::net::out_queue::Wire;
use crate::net::session::Session;

/// The head of an SSE response. The stream ends when the connection does
/// (no Content-Length); `X-Accel-Buffering` keeps nginx from buffering it.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\nretry: 2000\n\n";

/// `response` as the answer to `request`'s method: without its body for
/// `HEAD` (RFC 9110 §9.3.2), so a kept connection stays in step.
fn for_method(request: &Request<'_>, response: Response) -> Response {
    if request.method == "HEAD" {
        response.head()
    } else {
        response
    }
}

impl Connection {
    /// Answers a non-upgrade request. `bytes` holds the request head and
    /// whatever followed it (a body, or the next pipelined request).
    pub(super) fn on_plain_request(
        &mut self,
        request: &Request<'_>,
        bytes: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> (usize, Flow) {
        super::fault_injection::on_request(request.path);
        let paths = RoutePaths {
            metrics: ctx.settings.metrics_path.as_deref(),
            demo: ctx.settings.demo_path.as_deref(),
        };
        let route = match http_route(request.method, request.path, paths) {
            Ok(route) => route,
            Err(error) => {
                return self.refuse_request(request, Refusal::Route(error), bytes.len(), ctx)
            }
        };
        let body_len = match request.content_length() {
            Ok(len) => len.unwrap_or(0),
            Err(error) => {
                return self.refuse_request(request, Refusal::Head(error), bytes.len(), ctx)
            }
        };
        let expects_continue = match request.expects_continue() {
            Ok(expects) => expects,
            Err(error) => {
                return self.refuse_request(request, Refusal::Head(error), bytes.len(), ctx)
            }
        };
        // A cluster node cut off from its stream serves no ticks: clients
        // go to another node (README.md, "Cluster").
        let needs_stream = matches!(route, HttpRoute::Publish | HttpRoute::Poll | HttpRoute::Sse);
        if needs_stream && !ctx.table.serving() {
            return self.refuse_request(request, Refusal::NotServing, bytes.len(), ctx);
        }
        if route == HttpRoute::Publish {
            return self.on_publish(request, body_len, expects_continue, bytes, ctx);
        }
        // A route that takes no body is answered (or refused, below) at
        // once, so `Expect: 100-continue` needs no 100 there (RFC 9110 §10.1.1).
        if body_len > 0 {
            return self.refuse_request(request, Refusal::UnexpectedBody, bytes.len(), ctx);
        }
        let response = match route {
            HttpRoute::Health | HttpRoute::Ready if ctx.unhealthy => {
                Response::error(503, "a worker died; the broker is exiting")
            }
            HttpRoute::Health => Response::error(200, "ok"),
            HttpRoute::Ready if ctx.not_ready => Response::error(503, "shutting down"),
            HttpRoute::Ready if !ctx.table.serving() => {
                Response::error(503, "cluster node cut off from its stream or catching up")
            }
            HttpRoute::Ready => Response::error(200, "ready"),
            HttpRoute::Metrics => {
                Response::new(200).body(CONTENT_TYPE, ctx.metrics.render(ctx.table.topic_count()))
            }
            HttpRoute::Demo => {
                let asset = paths
                    .demo
                    .and_then(|demo_path| demo_asset(request.path, demo_path));
                match asset {
                    Some(asset) => Response::new(200)
                        .header("Cache-Control", asset.cache_control)
                        .header("X-Content-Type-Options", "nosniff")
                        .body(asset.content_type, asset.body),
                    None => {
                        let refusal = Refusal::Route(RouteError::NotFound);
                        return self.refuse_request(request, refusal, bytes.len(), ctx);
                    }
                }
            }
            HttpRoute::Poll | HttpRoute::Sse => {
                return self.on_stream_request(route, request, bytes.len(), ctx)
            }
            HttpRoute::Publish => unreachable!("handled above"),
        };
        self.answer(request, for_method(request, response), ctx)
    }

    /// Sends a successful answer, keeping the connection for the next request
    /// when HTTP keep-alive allows.
    fn answer(
        &mut self,
        request: &Request<'_>,
        response: Response,
        ctx: &mut Ctx<'_>,
    ) -> (usize, Flow) {
        ctx.stats.count_handshake(self.counted_as(Transport::Http));
        self.end_request();
        if request.keep_alive() {
            let response = if request.needs_keep_alive_header() {
                response.keep_alive()
            } else {
                response
            };
            self.io.out.append(|buf| response.write_to(buf));
            self.phase_since = ctx.now;
            (request.head_len, Flow::Continue)
        } else {
            self.respond_and_close(response, ctx.now);
            (request.head_len, Flow::NeedMore)
        }
    }

    /// Refuses `request` and closes the connection; the rest of the input
    /// (`available` bytes) is dropped with it.
    fn refuse_request(
        &mut self,
        request: &Request<'_>,
        refusal: Refusal,
        available: usize,
        ctx: &mut Ctx<'_>,
    ) -> (usize, Flow) {
        self.end_request();
        self.refuse_with(&refusal, for_method(request, refusal.response()), ctx);
        (available, Flow::NeedMore)
    }

    /// Forgets what was kept about a request that waited for its body.
    fn end_request(&mut self) {
        if let Phase::Http(body) = &mut self.phase {
            *body = AwaitedBody::default();
        }
    }

    /// `POST /publish`: refuses on the head what the head shows cannot be
    /// accepted (size, token), waits for the whole body (after `100
    /// Continue` when the client asked for it), then publishes every tick
    /// in it (a batch is checked whole before any tick is published).
    fn on_publish(
        &mut self,
        request: &Request<'_>,
        body_len: usize,
        expects_continue: bool,
        bytes: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> (usize, Flow) {
        if body_len > ctx.settings.max_body_bytes {
            let refusal = Refusal::BodyTooLarge {
                max_bytes: ctx.settings.max_body_bytes,
            };
            return self.refuse_request(request, refusal, bytes.len(), ctx);
        }
        let total = request.head_len + body_len;
        let complete = bytes.len() >= total;
        let rights = match presented_rights(request, Access::Publish, "http_publish", complete, ctx)
        {
            Ok(rights) => rights,
            Err(refusal) => return self.refuse_request(request, refusal, bytes.len(), ctx),
        };
        if bytes.len() < total {
            // RFC 9110 §10.1.1: a server that will accept the content
            // "ought to" send 100 (curl waits a second for it otherwise).
            if let Phase::Http(body) = &mut self.phase {
                if expects_continue && !body.continue_sent {
                    body.continue_sent = true;
                    self.io.out.append(|buf| Response::new(100).write_to(buf));
                }
                body.wanted = total;
            }
            return (0, Flow::NeedMore);
        }
        let topic = request
            .query_params()
            .find(|(k, _)| k == "topic")
            .map(|(_, v)| v);
        let Some(body) = bytes.get(request.head_len..total) else {
            return (0, Flow::NeedMore); // not reached: the length was checked above
        };
        let items = match parse_publish_body(topic.as_deref(), body) {
            Ok(items) => items,
            Err(error) => {
                return self.refuse_request(request, Refusal::Body(error), bytes.len(), ctx)
            }
        };
        // A batch with one topic the token does not grant publishes nothing.
        if let Some(item) = items.iter().find(|item| !rights.may_publish(&item.topic)) {
            ctx.metrics.auth.count("http_publish", FORBIDDEN_TOPIC);
            let refusal = Refusal::Forbidden(item.topic.to_string());
            return self.refuse_request(request, refusal, bytes.len(), ctx);
        }
        if ctx.table.publish_window_full() {
            return self.refuse_request(request, Refusal::PublishWindowFull, bytes.len(), ctx);
        }
        let batch: Vec<BatchItem<'_>> = items
            .iter()
            .map(|item| BatchItem {
                topic: &item.topic,
                data: item.data.as_bytes(),
            })
            .collect();
        // Cluster mode: answered once the stream has stored the ticks.
        let reply_to = ctx.table.is_clustered().then(|| ReplyTo {
            worker: ctx.worker,
            token: ctx.token.0,
            request: ctx.table.new_request_id(),
        });
        // All or nothing: a batch that would pass the topic limit publishes
        // no tick, so the client may retry it whole.
        let published = match ctx.table.publish_batch(&batch, reply_to) {
            Ok(published) => published,
            Err(PublishError::TooManyTopics) => {
                return self.refuse_request(request, Refusal::TopicLimit, bytes.len(), ctx)
            }
            Err(PublishError::NotServing) => {
                return self.refuse_request(request, Refusal::NotServing, bytes.len(), ctx)
            }
        };
        if let Some(reply_to) = reply_to {
            ctx.stats.published_http += items.len() as u64;
            ctx.stats.count_handshake(self.counted_as(Transport::Http));
            self.end_request();
            let held = PublishRequest {
                reply_to,
                topics: items.iter().map(|item| item.topic.to_string()).collect(),
                single: topic.is_some(),
                keep_alive: request.keep_alive(),
                announce_keep_alive: request.needs_keep_alive_header(),
            };
            self.await_stored(held, ctx);
            // On to whatever came behind it, so the bound on what may wait
            // behind a held request applies to this read already.
            return (total, Flow::Continue);
        }
        let mut seqs: Vec<serde_json::Value> = items
            .iter()
            .zip(&published)
            .map(|(item, published)| serde_json::json!({"topic": item.topic.as_str(), "seq": published.seq}))
            .collect();
        ctx.stats.published_http += seqs.len() as u64;
        let body = if topic.is_some() {
            seqs.pop().unwrap_or_default()
        } else {
            serde_json::json!({"published": seqs.len(), "ticks": seqs})
        };
        let (_, flow) = self.answer(request, Response::json(202, body.to_string()), ctx);
        (total, flow)
    }

    /// `GET /poll` and `GET /sse`: parse the topics and cursors, check the
    /// rights, and start the long-poll or the stream.
    fn on_stream_request(
        &mut self,
        route: HttpRoute,
        request: &Request<'_>,
        available: usize,
        ctx: &mut Ctx<'_>,
    ) -> (usize, Flow) {
        let settings = ctx.settings;
        let limits = QueryLimits {
            max_topics: settings.max_request_topics,
            default_timeout: settings.poll_timeout,
            max_timeout: settings.max_poll_timeout,
        };
        let last_event_id = request
            .header("Last-Event-ID")
            .and_then(|id| std::str::from_utf8(id).ok());
        let stream = match parse_stream_request(request, last_event_id, limits) {
            Ok(stream) => stream,
            Err(error) => {
                return self.refuse_request(request, Refusal::Query(error), available, ctx)
            }
        };
        let transport = if route == HttpRoute::Poll {
            "longpoll"
        } else {
            "sse"
        };
        let rights = match presented_rights(request, Access::Subscribe, transport, true, ctx) {
            Ok(rights) => rights,
            Err(refusal) => return self.refuse_request(request, refusal, available, ctx),
        };
        if let Some(wanted) = stream
            .topics
            .iter()
            .find(|t| !rights.may_subscribe(&t.topic))
        {
            ctx.metrics.auth.count(transport, FORBIDDEN_TOPIC);
            let refusal = Refusal::Forbidden(wanted.topic.to_string());
            return self.refuse_request(request, refusal, available, ctx);
        }
        self.end_request();
        if route == HttpRoute::Poll {
            return self.start_poll(request, stream, ctx);
        }
        self.start_sse(rights, stream, ctx);
        (available, Flow::NeedMore)
    }

    /// Opens an SSE stream: the response head, then for each topic the
    /// `subscribed` event, any gap, and the snapshot or replay.
    fn start_sse(&mut self, rights: Rights, stream: StreamRequest, ctx: &mut Ctx<'_>) {
        let mut session = Session::new(rights, ctx.settings.max_client_errors, ctx.now)
            .expire_with(ctx.settings, ctx.now);
        self.io.out.append(|buf| buf.extend_from_slice(SSE_HEAD));
        self.io.out.set_wire(Wire::Sse);
        for wanted in &stream.topics {
            let start = Start::from_cursor(wanted.since, wanted.epoch.as_deref());
            // Refusals (topic limits) arrive as `error` events on the stream.
            let _ = session.subscribe(&mut self.io.out, &wanted.topic, start, stream.max_hz, ctx);
        }
        let transport = self.set_transport(Transport::Sse);
        ctx.stats.count_handshake(transport);
        self.enter(Phase::Sse(Box::new(session)), ctx.now);
    }
}
