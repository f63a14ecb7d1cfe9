//! Which route a request's path selects, for WebSocket upgrades and for
//! plain HTTP requests alike. Pure: the connection acts on the answer.

use super::demo::is_demo_path;
use crate::wire::{HEALTHZ_PATH, POLL_PATH, PUBLISH_PATH, READYZ_PATH, SSE_PATH};

/// What an upgraded connection does with the messages it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebSocketRoute {
    /// Every message is sent back as it came: the conformance-testing route.
    Echo,
    /// The `tickfan.v1` pub/sub protocol.
    PubSub,
}

/// A plain HTTP route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRoute {
    /// `GET /healthz`: the process is alive and its event loops turn.
    Health,
    /// `GET /readyz`: ready for traffic; 503 once shutdown has begun.
    Ready,
    /// `GET <metrics_path>`: Prometheus text exposition.
    Metrics,
    /// `POST /publish`: publish one tick or an NDJSON batch.
    Publish,
    /// `GET /poll`: long-polling.
    Poll,
    /// `GET /sse`: Server-Sent Events.
    Sse,
    /// `GET <demo_path>` and the files below it: the demo page and the
    /// client bundle ([`super::demo`]).
    Demo,
}

/// A path that names no route, or a method the route does not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The route exists; `allow` lists the methods it takes.
    MethodNotAllowed {
        allow: &'static str,
    },
}

/// The WebSocket route for an upgrade request to `path`.
pub fn websocket_route(
    path: &str,
    pubsub_path: &str,
    echo_path: Option<&str>,
) -> Result<WebSocketRoute, RouteError> {
    if path == pubsub_path {
        return Ok(WebSocketRoute::PubSub);
    }
    match echo_path {
        Some(echo) if echo == path => Ok(WebSocketRoute::Echo),
        _ => Err(RouteError::NotFound),
    }
}

/// The routes whose paths are fixed, with the methods each takes.
///
/// The configurable paths (`websocket.path`, `websocket.echo_path`,
/// `http.metrics_path`) must differ from these and from each other, so that
/// no route shadows another; the config checks them against this list.
///
/// `HEAD` is taken where the answer is cheap and has a fixed length (RFC
/// 9110 §9.3.2: answered as `GET`, without the body); a long-poll or an SSE
/// stream has no such answer, so there `HEAD` is a 405.
pub const FIXED_ROUTES: [(&str, HttpRoute, &str); 5] = [
    (HEALTHZ_PATH, HttpRoute::Health, "GET, HEAD"),
    (READYZ_PATH, HttpRoute::Ready, "GET, HEAD"),
    (PUBLISH_PATH, HttpRoute::Publish, "POST"),
    (POLL_PATH, HttpRoute::Poll, "GET"),
    (SSE_PATH, HttpRoute::Sse, "GET"),
];

/// The configurable paths of plain HTTP routes; `None` where a route is off.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutePaths<'a> {
    /// `http.metrics_path`.
    pub metrics: Option<&'a str>,
    /// `http.demo_path`: the page, and its files below it.
    pub demo: Option<&'a str>,
}

/// The HTTP route for a plain (non-upgrade) request.
pub fn http_route(
    method: &str,
    path: &str,
    paths: RoutePaths<'_>,
) -> Result<HttpRoute, RouteError> {
    let fixed = FIXED_ROUTES.iter().find(|(p, _, _)| *p == path);
    let (route, allow) = match fixed {
        Some(&(_, route, allow)) => (route, allow),
        None if paths.metrics == Some(path) => (HttpRoute::Metrics, "GET, HEAD"),
        None if paths.demo.is_some_and(|demo| is_demo_path(path, demo)) => {
            (HttpRoute::Demo, "GET, HEAD")
        }
        None => return Err(RouteError::NotFound),
    };
    if allow.split(", ").any(|m| m == method) {
        Ok(route)
    } else {
        Err(RouteError::MethodNotAllowed { allow })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(path: &str) -> RoutePaths<'_> {
        RoutePaths {
            metrics: Some(path),
            demo: None,
        }
    }

    #[test]
    fn demo_route_owns_its_path_and_below() {
        let paths = RoutePaths {
            metrics: None,
            demo: Some("/demo"),
        };
        assert_eq!(http_route("GET", "/demo", paths), Ok(HttpRoute::Demo));
        assert_eq!(http_route("HEAD", "/demo/tickfan.js", paths), Ok(HttpRoute::Demo));
        assert_eq!(
            http_route("POST", "/demo", paths),
            Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(http_route("GET", "/demos", paths), Err(RouteError::NotFound));
        assert_eq!(
            http_route("GET", "/demo", RoutePaths::default()),
            Err(RouteError::NotFound)
        );
    }

    #[test]
    fn routes() {
        let route = |path| websocket_route(path, "/ws", Some("/echo"));
        assert_eq!(route("/echo"), Ok(WebSocketRoute::Echo));
        assert_eq!(route("/ws"), Ok(WebSocketRoute::PubSub));
        assert_eq!(route("/other"), Err(RouteError::NotFound));
        assert_eq!(
            websocket_route("/echo", "/ws", None),
            Err(RouteError::NotFound)
        );
        assert_eq!(http_route("GET", "/healthz", RoutePaths::default()), Ok(HttpRoute::Health));
        assert_eq!(
            http_route("POST", "/healthz", RoutePaths::default()),
            Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(http_route("HEAD", "/healthz", RoutePaths::default()), Ok(HttpRoute::Health));
        assert_eq!(http_route("HEAD", "/readyz", RoutePaths::default()), Ok(HttpRoute::Ready));
        assert_eq!(
            http_route("HEAD", "/metrics", metrics("/metrics")),
            Ok(HttpRoute::Metrics)
        );
        for path in ["/poll", "/sse"] {
            assert_eq!(
                http_route("HEAD", path, RoutePaths::default()),
                Err(RouteError::MethodNotAllowed { allow: "GET" })
            );
        }
        // Methods are case-sensitive (RFC 9110 §9.1).
        assert_eq!(
            http_route("head", "/healthz", RoutePaths::default()),
            Err(RouteError::MethodNotAllowed { allow: "GET, HEAD" })
        );
        assert_eq!(http_route("GET", "/nope", RoutePaths::default()), Err(RouteError::NotFound));
        assert_eq!(
            http_route("GET", "/metrics", metrics("/metrics")),
            Ok(HttpRoute::Metrics)
        );
        assert_eq!(
            http_route("GET", "/metrics", RoutePaths::default()),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            http_route("GET", "/publish", RoutePaths::default()),
            Err(RouteError::MethodNotAllowed { allow: "POST" })
        );
    }
}
