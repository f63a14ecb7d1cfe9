//! The brokers the load generator can drive, and each one's dialect: where a
//! subscriber connects, how it subscribes, what a tick looks like on its
//! wire, how a tick is published and how a long-poll request is asked.
//!
//! Kept in one place so the event loops stay broker-neutral: they ask the
//! target for bytes to send and for a verdict on the bytes received. tickfan
//! numbers ticks itself (`seq`); the peers only pass the publisher's message
//! through, so for them the tick carries its own per-topic counter (`"n"`),
//! and the publisher's JSON (with the send time `t`) is the whole message.

use std::fmt;
use std::str::FromStr;

use crate::ws::{self, OpCode, Rng};

/// A broker to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// tickfan's own protocol: `/ws` with `sub`/`pub` ops, `/poll` long-poll.
    Tickfan,
    /// nginx + nchan: WS `/sub/<ch>`, pub/sub WS `/ws/<ch>`, long-poll `/lp/<ch>`.
    Nchan,
    /// nats-server over WebSocket: the NATS text protocol in binary frames.
    Nats,
    /// uWebSockets (npm `uwebsockets`): WS `/ws/<topic>`, a frame sent there is published.
    Uws,
    /// npm `ws` baseline: same protocol as `Uws`.
    NodeWs,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tickfan" => Ok(Target::Tickfan),
            "nchan" => Ok(Target::Nchan),
            "nats" => Ok(Target::Nats),
            "uws" => Ok(Target::Uws),
            "ws" => Ok(Target::NodeWs),
            _ => Err(format!(
                "unknown target {s:?}: tickfan, nchan, nats, uws or ws"
            )),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Tickfan => "tickfan",
            Target::Nchan => "nchan",
            Target::Nats => "nats",
            Target::Uws => "uws",
            Target::NodeWs => "ws",
        })
    }
}

impl Target {
    /// The WebSocket path a subscriber of `topics` opens (`base` is
    /// tickfan's `--path`). Peers other than NATS take one topic in the path.
    pub fn sub_path(self, base: &str, topics: &[&str]) -> String {
        let first = topics.first().copied().unwrap_or("");
        match self {
            Target::Tickfan => base.to_string(),
            Target::Nats => "/".to_string(),
            Target::Nchan => format!("/sub/{first}"),
            Target::Uws | Target::NodeWs => format!("/ws/{first}"),
        }
    }

    /// The WebSocket path the publisher's connection for `topic` opens.
    pub fn pub_path(self, base: &str, topic: &str) -> String {
        match self {
            Target::Tickfan => base.to_string(),
            Target::Nats => "/".to_string(),
            Target::Nchan | Target::Uws | Target::NodeWs => format!("/ws/{topic}"),
        }
    }

    /// The subprotocol offered in the opening handshake.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Target::Tickfan => Some("tickfan.v1"),
            _ => None,
        }
    }

    /// Whether one publisher connection carries every topic (tickfan, NATS)
    /// or each topic needs its own (the peers publish to the path's topic).
    pub fn one_publisher_connection(self) -> bool {
        matches!(self, Target::Tickfan | Target::Nats)
    }

    /// Whether a subscriber may hold several topics on one connection
    /// (the uWebSockets peer takes more with `{"op":"sub","topic":T}`).
    pub fn multi_topic(self) -> bool {
        matches!(self, Target::Tickfan | Target::Nats | Target::Uws)
    }

    /// Whether the target has a long-poll route the fleet can follow.
    pub fn has_longpoll(self) -> bool {
        matches!(self, Target::Tickfan | Target::Nchan)
    }

    /// What a subscriber sends right after the upgrade, and how many acks it
    /// then waits for before it counts as subscribed (0: subscribed at once).
    pub fn subscribe(self, topics: &[&str], out: &mut Vec<u8>, rng: &mut Rng) -> usize {
        match self {
            Target::Tickfan => {
                for topic in topics {
                    let op = format!("{{\"op\":\"sub\",\"topic\":\"{topic}\"}}");
                    ws::push_client_frame(out, OpCode::Text, op.as_bytes(), rng.mask());
                }
                topics.len()
            }
            Target::Nats => {
                // Subscriptions take effect in order; the PONG that answers
                // the trailing PING proves every SUB before it is in place.
                let mut text = String::from("CONNECT {\"verbose\":false,\"protocol\":1}\r\n");
                for (sid, topic) in topics.iter().enumerate() {
                    text.push_str(&format!("SUB {topic} {}\r\n", sid + 1));
                }
                text.push_str("PING\r\n");
                ws::push_client_frame(out, OpCode::Binary, text.as_bytes(), rng.mask());
                1
            }
            // The path's topic is subscribed as the upgrade completes; the
            // uWebSockets peer subscribes the rest in order, without an ack
            // (the fleet's settle time covers them, as for the path's one).
            Target::Uws => {
                for topic in topics.iter().skip(1) {
                    let op = format!("{{\"op\":\"sub\",\"topic\":\"{topic}\"}}");
                    ws::push_client_frame(out, OpCode::Text, op.as_bytes(), rng.mask());
                }
                0
            }
            Target::Nchan | Target::NodeWs => 0,
        }
    }

    /// Appends one published tick to `out`: the masked frame for `topic`
    /// carrying `data` (the tick JSON with `t` and `n`).
    pub fn push_publish(self, out: &mut Vec<u8>, topic: &str, data: &str, mask: [u8; 4]) {
        match self {
            Target::Tickfan => {
                let op = format!("{{\"op\":\"pub\",\"topic\":\"{topic}\",\"data\":{data}}}");
                ws::push_client_frame(out, OpCode::Text, op.as_bytes(), mask);
            }
            Target::Nats => {
                let op = format!("PUB {topic} {}\r\n{data}\r\n", data.len());
                ws::push_client_frame(out, OpCode::Binary, op.as_bytes(), mask);
            }
            Target::Nchan | Target::Uws | Target::NodeWs => {
                ws::push_client_frame(out, OpCode::Text, data.as_bytes(), mask);
            }
        }
    }

    /// What a publisher connection sends after the upgrade (NATS needs its
    /// CONNECT first).
    pub fn publisher_hello(self, out: &mut Vec<u8>, rng: &mut Rng) {
        if self == Target::Nats {
            let text = b"CONNECT {\"verbose\":false,\"protocol\":1}\r\n";
            ws::push_client_frame(out, OpCode::Binary, text, rng.mask());
        }
    }

    /// The request line and headers of one long-poll, without the blank line.
    /// tickfan follows its cursor; nchan follows `Last-Modified` / `Etag`.
    pub fn longpoll_request(self, host: &str, topic: &str, cursor: &PollCursor) -> String {
        match (self, cursor) {
            (Target::Nchan, PollCursor::Nchan { modified, etag }) => {
                let mut r = format!("GET /lp/{topic} HTTP/1.1\r\nHost: {host}\r\n");
                if let Some(m) = modified {
                    r.push_str(&format!("If-Modified-Since: {m}\r\n"));
                }
                if let Some(e) = etag {
                    r.push_str(&format!("If-None-Match: {e}\r\n"));
                }
                r.push_str("\r\n");
                r
            }
            (_, PollCursor::Seq(seq)) => format!(
                "GET /poll?topic={topic}&since={topic}:{seq}&timeout=25 HTTP/1.1\r\nHost: {host}\r\n\r\n"
            ),
            (_, PollCursor::Nchan { .. }) => format!(
                "GET /poll?topic={topic}&since={topic}:0&timeout=25 HTTP/1.1\r\nHost: {host}\r\n\r\n"
            ),
        }
    }

    /// A long-poll client's cursor before its first request.
    pub fn initial_cursor(self) -> PollCursor {
        match self {
            Target::Nchan => PollCursor::Nchan {
                modified: None,
                etag: None,
            },
            // A fresh topic: every tick after seq 0 is wanted.
            _ => PollCursor::Seq(0),
        }
    }
}

/// Where a long-poll client is in its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollCursor {
    /// tickfan: the newest seq received.
    Seq(u64),
    /// nchan: the validators of the last answer.
    Nchan {
        modified: Option<String>,
        etag: Option<String>,
    },
}

/// One NATS protocol item found in a subscriber's byte stream.
#[derive(Debug, PartialEq, Eq)]
pub enum NatsItem<'a> {
    /// `MSG <subject> <sid> [reply] <len>` and its payload.
    Msg(&'a [u8]),
    Ping,
    Pong,
    /// `-ERR ...`, with its text.
    Err(&'a [u8]),
    /// `INFO`, `+OK` and anything else not acted on.
    Other,
}

/// Reads the next NATS item from the front of `buf` (the protocol is a byte
/// stream: WebSocket frames may split or join items). Returns the item and
/// the bytes it used, or `None` until the item is complete.
pub fn nats_item(buf: &[u8]) -> Result<Option<(NatsItem<'_>, usize)>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("NATS protocol line over 64 KiB".into());
        }
        return Ok(None);
    };
    let line = &buf[..eol];
    let after = eol + 2;
    if line.starts_with(b"MSG ") {
        let len: usize = line
            .rsplit(|&b| b == b' ')
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(line)))?;
        let end = after + len + 2;
        if buf.len() < end {
            return Ok(None);
        }
        return Ok(Some((NatsItem::Msg(&buf[after..after + len]), end)));
    }
    let item = if line == b"PING" {
        NatsItem::Ping
    } else if line == b"PONG" {
        NatsItem::Pong
    } else if line.starts_with(b"-ERR") {
        NatsItem::Err(line)
    } else {
        NatsItem::Other
    };
    Ok(Some((item, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_items_across_splits() {
        let stream = b"INFO {}\r\nPONG\r\nMSG a.b 1 5\r\nhello\r\nPING\r\n";
        let mut items = Vec::new();
        let mut pos = 0;
        while let Some((item, used)) = nats_item(&stream[pos..]).unwrap() {
            items.push(format!("{item:?}"));
            pos += used;
        }
        assert_eq!(pos, stream.len());
        assert_eq!(items.len(), 4);
        assert!(items[2].contains("Msg"));
        // Every strict prefix of the MSG is "need more".
        let msg = b"MSG a.b 1 5\r\nhello\r\n";
        for cut in 0..msg.len() {
            assert_eq!(nats_item(&msg[..cut]).unwrap(), None);
        }
        assert_eq!(
            nats_item(msg).unwrap(),
            Some((NatsItem::Msg(b"hello"), msg.len()))
        );
    }

    #[test]
    fn longpoll_requests_follow_the_cursor() {
        let r = Target::Tickfan.longpoll_request("h", "T", &PollCursor::Seq(41));
        assert!(r.starts_with("GET /poll?topic=T&since=T:41&timeout=25 HTTP/1.1\r\n"));
        let c = PollCursor::Nchan {
            modified: Some("Mon".into()),
            etag: Some("7".into()),
        };
        let r = Target::Nchan.longpoll_request("h", "T", &c);
        assert!(r.contains("If-Modified-Since: Mon\r\n") && r.contains("If-None-Match: 7\r\n"));
    }
}
