//! Clients of tickfan's own HTTP routes, over [`super::http`]: one tick
//! published with `POST /publish?topic=`, and a long-poll (`GET /poll`)
//! answer taken apart.

use std::net::TcpStream;

use serde_json::Value;

use super::http::{http_post, HttpResponse};

/// Publishes `data` to `topic` with `POST /publish?topic=` on a kept-alive
/// connection; returns the seq the broker gave it.
pub fn publish(stream: &mut TcpStream, topic: &str, data: &str) -> u64 {
    let response = http_post(
        stream,
        &format!("/publish?topic={topic}"),
        "",
        data.as_bytes(),
    );
    assert_eq!(response.status, 202, "publish: {}", response.text());
    let body = response.json();
    assert_eq!(body["topic"], topic, "{body}");
    body["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq: {body}"))
}

/// A 200 long-poll answer.
#[derive(Debug)]
pub struct PollAnswer {
    pub ticks: Vec<Value>,
    pub gaps: Vec<Value>,
    pub cursor: String,
    /// The body as sent, for byte-for-byte checks of `data`.
    pub raw: String,
}

/// The parts of a 200 long-poll answer; fails the test on any other status.
pub fn poll_answer(response: &HttpResponse) -> PollAnswer {
    assert_eq!(response.status, 200, "poll: {}", response.text());
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    PollAnswer {
        ticks: body["ticks"].as_array().expect("ticks array").clone(),
        gaps: body["gaps"].as_array().expect("gaps array").clone(),
        cursor: body["cursor"].as_str().expect("cursor string").to_owned(),
        raw: response.text(),
    }
}

/// (topic, seq) of each tick of a poll answer.
pub fn topic_seqs(ticks: &[Value]) -> Vec<(String, u64)> {
    ticks
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().expect("topic").to_owned(),
                t["seq"].as_u64().expect("seq"),
            )
        })
        .collect()
}
