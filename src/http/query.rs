//! The query of a long-poll or SSE request: which topics, from where, and
//! how long to hold. `GET /poll?topic=AAPL&topic=MSFT&since=AAPL:41,MSFT:7&timeout=25`.
//!
//! A cursor is `<topic>:<seq>`: the last seq the client has. `epoch=A:<epoch>,..`
//! names the numbering those seqs belong to (the `epoch` of a `subscribed`
//! event or a long-poll answer's `epochs`), so that after a broker restart
//! the client gets a gap and the snapshot instead of ticks of another
//! numbering, as `since` + `epoch` does on a WebSocket. Pure: bytes in,
//! a request or a reason for a 400 out.

use std::fmt;
use std::time::Duration;

use super::request::Request;
use crate::topic::{BadTopic, TopicName};
use crate::wire::checked_max_hz;

/// One topic of a request and where the client is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCursor {
    pub topic: TopicName<'static>,
    /// The last seq the client has; `None` means "the latest, then live".
    pub since: Option<u64>,
    /// The epoch `since` counts in, when the client gave one.
    pub epoch: Option<String>,
}

/// A parsed long-poll or SSE request.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRequest {
    pub topics: Vec<TopicCursor>,
    /// How long a long-poll may be held (already capped).
    pub timeout: Duration,
    /// `max_hz` (SSE): at most this many ticks per second per topic, the
    /// newest winning, as the WebSocket op's `max_hz`; `None` = no cap.
    pub max_hz: Option<f64>,
}

/// Limits that apply while parsing.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_topics: usize,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
}

/// Why a long-poll or SSE request was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    BadTopic {
        topic: String,
        error: BadTopic,
    },
    /// More topics (or cursors) than `http.max_request_topics`.
    TooManyTopics(usize),
    BadTimeout(String),
    NoTopic,
    /// A cursor for a topic the request does not ask for.
    CursorNotRequested(String),
    BadCursor {
        cursor: String,
        problem: CursorProblem,
    },
    /// An `epoch` entry that is not `<topic>:<epoch>` with a plausible epoch.
    BadEpoch(String),
    /// A `max_hz` that is not a number from 0.001 up.
    BadMaxHz(String),
}

/// Longest epoch accepted in a query; the broker's own are far shorter.
const MAX_EPOCH_BYTES: usize = 64;

/// What is wrong with a `<topic>:<seq>` cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorProblem {
    Shape,
    Topic(BadTopic),
    Seq,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::BadTopic { topic, error } => write!(f, "topic {topic:?}: {error}"),
            QueryError::TooManyTopics(max) => write!(f, "at most {max} topics per request"),
            QueryError::BadTimeout(value) => {
                write!(f, "timeout {value:?} is not a whole number of seconds")
            }
            QueryError::NoTopic => f.write_str("at least one topic parameter is required"),
            QueryError::CursorNotRequested(topic) => {
                write!(f, "cursor for {topic:?}, which is not a requested topic")
            }
            QueryError::BadMaxHz(value) => write!(
                f,
                "max_hz {value:?} is not a number from 0.001 (one tick per 1,000 s) up"
            ),
            QueryError::BadEpoch(entry) => write!(
                f,
                "epoch {entry:?} is not <topic>:<epoch> (epoch: 1 to {MAX_EPOCH_BYTES} of [A-Za-z0-9_-])"
            ),
            QueryError::BadCursor { cursor, problem } => match problem {
                CursorProblem::Shape => write!(f, "cursor {cursor:?} is not <topic>:<seq>"),
                CursorProblem::Topic(error) => write!(f, "cursor {cursor:?}: {error}"),
                CursorProblem::Seq => {
                    let seq = cursor.rsplit_once(':').map_or("", |(_, seq)| seq);
                    write!(f, "cursor {cursor:?}: {seq:?} is not a seq")
                }
            },
        }
    }
}

/// Parses the query; `last_event_id` (SSE's `Last-Event-ID`, one cursor)
/// fills in a cursor the query does not give.
pub fn parse_stream_request(
    request: &Request<'_>,
    last_event_id: Option<&str>,
    limits: QueryLimits,
) -> Result<StreamRequest, QueryError> {
    let mut topics: Vec<TopicCursor> = Vec::new();
    let mut cursors: Vec<(String, u64)> = Vec::new();
    let mut epochs: Vec<(String, String)> = Vec::new();
    let mut timeout = limits.default_timeout;
    let mut max_hz = None;
    for (key, value) in request.query_params() {
        match key.as_ref() {
            "topic" => {
                for name in value.split(',').filter(|n| !n.is_empty()) {
                    let topic = TopicName::new(name).map_err(|error| QueryError::BadTopic {
                        topic: name.to_owned(),
                        error,
                    })?;
                    if !topics.iter().any(|t| t.topic.as_str() == name) {
                        // Checked as the list grows, so a head of thousands
                        // of names costs no quadratic scan before the refusal.
                        if topics.len() == limits.max_topics {
                            return Err(QueryError::TooManyTopics(limits.max_topics));
                        }
                        topics.push(TopicCursor {
                            topic: topic.into_owned(),
                            since: None,
                            epoch: None,
                        });
                    }
                }
            }
            "since" => {
                for cursor in value.split(',').filter(|c| !c.is_empty()) {
                    // More cursors than topics cannot all name a topic.
                    if cursors.len() == limits.max_topics {
                        return Err(QueryError::TooManyTopics(limits.max_topics));
                    }
                    cursors.push(parse_cursor(cursor)?);
                }
            }
            "epoch" => {
                for entry in value.split(',').filter(|c| !c.is_empty()) {
                    if epochs.len() == limits.max_topics {
                        return Err(QueryError::TooManyTopics(limits.max_topics));
                    }
                    epochs.push(parse_epoch(entry)?);
                }
            }
            "max_hz" => {
                let bad = || QueryError::BadMaxHz(value.clone().into_owned());
                let hz: f64 = value.parse().map_err(|_| bad())?;
                max_hz = checked_max_hz(hz).map_err(|()| bad())?;
            }
            "timeout" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| QueryError::BadTimeout(value.clone().into_owned()))?;
                timeout = Duration::from_secs(secs).min(limits.max_timeout);
            }
            // Unknown parameters (cache busters such as `_=123`) are ignored.
            _ => {}
        }
    }
    if let Some(id) = last_event_id.map(str::trim).filter(|id| !id.is_empty()) {
        for cursor in id.split(',').take(limits.max_topics) {
            let (topic, seq) = parse_cursor(cursor)?;
            if !cursors.iter().any(|(t, _)| *t == topic) {
                cursors.push((topic, seq));
            }
        }
    }
    if topics.is_empty() {
        return Err(QueryError::NoTopic);
    }
    for (topic, seq) in cursors {
        match topics.iter_mut().find(|t| t.topic.as_str() == topic) {
            Some(entry) => entry.since = Some(seq),
            None => {
                return Err(QueryError::CursorNotRequested(topic));
            }
        }
    }
    for (topic, epoch) in epochs {
        match topics.iter_mut().find(|t| t.topic.as_str() == topic) {
            Some(entry) => entry.epoch = Some(epoch),
            None => return Err(QueryError::CursorNotRequested(topic)),
        }
    }
    Ok(StreamRequest {
        topics,
        timeout,
        max_hz,
    })
}

/// Parses `<topic>:<epoch>`; the topic may contain ':', an epoch cannot.
fn parse_epoch(entry: &str) -> Result<(String, String), QueryError> {
    let bad = || QueryError::BadEpoch(entry.to_owned());
    let (topic, epoch) = entry.rsplit_once(':').ok_or_else(bad)?;
    TopicName::new(topic).map_err(|_| bad())?;
    let plausible = !epoch.is_empty()
        && epoch.len() <= MAX_EPOCH_BYTES
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plausible {
        return Err(bad());
    }
    Ok((topic.to_owned(), epoch.to_owned()))
}

/// Parses `<topic>:<seq>`; the topic itself may contain ':'.
fn parse_cursor(cursor: &str) -> Result<(String, u64), QueryError> {
    let bad = |problem| QueryError::BadCursor {
        cursor: cursor.to_owned(),
        problem,
    };
    let (topic, seq) = cursor
        .rsplit_once(':')
        .ok_or_else(|| bad(CursorProblem::Shape))?;
    TopicName::new(topic).map_err(|error| bad(CursorProblem::Topic(error)))?;
    let seq = seq.parse().map_err(|_| bad(CursorProblem::Seq))?;
    Ok((topic.to_owned(), seq))
}

/// Formats cursors as the `since` parameter takes them: `A:42,B:7`.
pub fn format_cursor<'a>(cursors: impl Iterator<Item = (&'a str, u64)>) -> String {
    let mut out = String::new();
    for (topic, seq) in cursors {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(topic);
        out.push(':');
        out.push_str(itoa::Buffer::new().format(seq));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{parse_request, Parsed};

    const LIMITS: QueryLimits = QueryLimits {
        max_topics: 3,
        default_timeout: Duration::from_secs(25),
        max_timeout: Duration::from_secs(60),
    };

    fn parse(target: &str, last_event_id: Option<&str>) -> Result<StreamRequest, QueryError> {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let Ok(Parsed::Complete(request)) = parse_request(raw.as_bytes(), 8192) else {
            panic!("bad test request");
        };
        parse_stream_request(&request, last_event_id, LIMITS)
    }

    #[test]
    fn topics_cursors_and_timeout() {
        let r = parse(
            "/poll?topic=AAPL&topic=fx:EUR&since=AAPL:41,fx:EUR:7&timeout=5",
            None,
        )
        .unwrap();
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!(
            r.topics,
            vec![
                TopicCursor {
                    topic: TopicName::new("AAPL").unwrap(),
                    since: Some(41),
                    epoch: None,
                },
                TopicCursor {
                    topic: TopicName::new("fx:EUR").unwrap(),
                    since: Some(7),
                    epoch: None,
                },
            ]
        );
        let r = parse("/poll?topic=A,B&timeout=999", None).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(60));
        assert_eq!(r.topics.len(), 2);
        assert_eq!(
            parse("/sse?topic=A", Some("A:9")).unwrap().topics[0].since,
            Some(9)
        );
        assert_eq!(
            parse("/sse?topic=A&since=A:3", Some("A:9")).unwrap().topics[0].since,
            Some(3)
        );
    }

    #[test]
    fn epochs_go_with_their_topics() {
        let r = parse("/poll?topic=A,fx:EUR&since=A:4&epoch=A:1f-2,fx:EUR:9-a", None).unwrap();
        assert_eq!(r.topics[0].epoch.as_deref(), Some("1f-2"));
        assert_eq!(r.topics[1].epoch.as_deref(), Some("9-a"));
        assert_eq!(r.topics[1].since, None);
        for bad in ["A", "A:", "A:x%20y", "A:%00"] {
            let target = format!("/poll?topic=A&epoch={bad}");
            assert!(parse(&target, None).unwrap_err().to_string().contains("epoch"), "{bad}");
        }
        assert!(parse("/poll?topic=A&epoch=B:1", None)
            .unwrap_err()
            .to_string()
            .contains("not a requested topic"));
    }

    #[test]
    fn max_hz_is_checked_like_the_websocket_op() {
        assert_eq!(parse("/sse?topic=A&max_hz=2.5", None).unwrap().max_hz, Some(2.5));
        assert_eq!(parse("/sse?topic=A&max_hz=1e9", None).unwrap().max_hz, None);
        assert_eq!(parse("/sse?topic=A", None).unwrap().max_hz, None);
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            let e = parse(&format!("/sse?topic=A&max_hz={bad}"), None).unwrap_err();
            assert!(e.to_string().contains("max_hz"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse("/poll", None)
            .unwrap_err()
            .to_string()
            .contains("topic"));
        assert!(parse("/poll?topic=a%20b", None)
            .unwrap_err()
            .to_string()
            .contains("topic"));
        assert!(parse("/poll?topic=A&since=A", None)
            .unwrap_err()
            .to_string()
            .contains("cursor"));
        assert!(parse("/poll?topic=A&since=A:x", None)
            .unwrap_err()
            .to_string()
            .contains("seq"));
        assert!(parse("/poll?topic=A&since=B:1", None)
            .unwrap_err()
            .to_string()
            .contains("not a requested topic"));
        assert!(parse("/poll?topic=A&timeout=-1", None)
            .unwrap_err()
            .to_string()
            .contains("timeout"));
        assert!(parse("/poll?topic=A,B,C,D", None)
            .unwrap_err()
            .to_string()
            .contains("at most 3"));
    }

    #[test]
    fn cursor_format_round_trips() {
        let text = format_cursor([("A", 42), ("fx:EUR", 7)].into_iter());
        assert_eq!(text, "A:42,fx:EUR:7");
        assert_eq!(parse_cursor("fx:EUR:7").unwrap(), ("fx:EUR".to_owned(), 7));
    }
}
