//! The body of `POST /publish`: one JSON value for `?topic=…`, or NDJSON
//! lines `{"topic":…,"data":…}` for a batch. Pure: every line is checked
//! before anything is published, so a bad batch publishes nothing.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::topic::{BadTopic, TopicName};

/// One tick to publish: the topic and the JSON bytes, byte for byte.
#[derive(Debug, PartialEq, Eq)]
pub struct PublishItem<'a> {
    pub topic: TopicName<'a>,
    pub data: &'a str,
}

#[derive(Deserialize)]
struct BatchLine<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Why a publish body was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    NotUtf8,
    /// The `?topic=` of a single publish.
    BadTopic {
        topic: String,
        error: BadTopic,
    },
    /// The body of a single publish.
    NotJson(String),
    /// Line `line` (from 1) of a batch: not `{"topic":..,"data":..}`.
    BadLine {
        line: usize,
        error: String,
    },
    /// Line `line` of a batch names an invalid topic.
    BadLineTopic {
        line: usize,
        error: BadTopic,
    },
    NoTicks,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::NotUtf8 => f.write_str("body is not UTF-8"),
            PublishError::BadTopic { topic, error } => write!(f, "topic {topic:?}: {error}"),
            PublishError::NotJson(error) => write!(f, "body is not JSON: {error}"),
            PublishError::BadLine { line, error } => write!(f, "line {line}: {error}"),
            PublishError::BadLineTopic { line, error } => write!(f, "line {line}: {error}"),
            PublishError::NoTicks => f.write_str(
                "no ticks: give ?topic= with a JSON body, or NDJSON lines {\"topic\":..,\"data\":..}",
            ),
        }
    }
}

/// Parses a publish body; the error names the line for batches.
pub fn parse_publish_body<'a>(
    topic: Option<&'a str>,
    body: &'a [u8],
) -> Result<Vec<PublishItem<'a>>, PublishError> {
    let text = std::str::from_utf8(body).map_err(|_| PublishError::NotUtf8)?;
    if let Some(topic) = topic {
        let topic = TopicName::new(topic).map_err(|error| PublishError::BadTopic {
            topic: topic.to_owned(),
            error,
        })?;
        let data: &RawValue =
            serde_json::from_str(text).map_err(|e| PublishError::NotJson(e.to_string()))?;
        return Ok(vec![PublishItem {
            topic,
            data: data.get(),
        }]);
    }
    let mut items = Vec::new();
    for (line, number) in text.lines().zip(1usize..) {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: BatchLine<'a> =
            serde_json::from_str(line).map_err(|e| PublishError::BadLine {
                line: number,
                error: e.to_string(),
            })?;
        let topic = TopicName::new(parsed.topic).map_err(|error| PublishError::BadLineTopic {
            line: number,
            error,
        })?;
        items.push(PublishItem {
            topic,
            data: parsed.data.get(),
        });
    }
    if items.is_empty() {
        return Err(PublishError::NoTicks);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_batch() {
        let items = parse_publish_body(Some("AAPL"), br#" {"bid": 1.50} "#).unwrap();
        assert_eq!(
            items,
            vec![PublishItem {
                topic: TopicName::new("AAPL").unwrap(),
                data: r#"{"bid": 1.50}"#
            }]
        );
        let batch = b"{\"topic\":\"A\",\"data\":1}\n\n{\"topic\":\"B\",\"data\":[1, 2]}\n";
        let items = parse_publish_body(None, batch).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].data, "[1, 2]");
    }

    /// Regression (fuzz `publish_body`): a number beyond f64's range is still
    /// JSON and is forwarded byte for byte, not refused or rewritten.
    #[test]
    fn huge_numbers_pass_through_unchanged() {
        let huge = "2220000000000000000E00000000000000000000000001461167879102427";
        let items = parse_publish_body(Some("T"), huge.as_bytes()).unwrap();
        assert_eq!(items[0].data, huge);
    }

    #[test]
    fn errors_name_the_line() {
        let batch = b"{\"topic\":\"A\",\"data\":1}\n{\"topic\":\"B\"}\n";
        assert!(parse_publish_body(None, batch)
            .unwrap_err()
            .to_string()
            .starts_with("line 2:"));
        let batch = b"{\"topic\":\"A\",\"data\":1}\nnot json\n";
        assert!(parse_publish_body(None, batch)
            .unwrap_err()
            .to_string()
            .starts_with("line 2:"));
        let batch = b"{\"topic\":\"a b\",\"data\":1}\n";
        assert!(parse_publish_body(None, batch)
            .unwrap_err()
            .to_string()
            .starts_with("line 1:"));
        assert!(parse_publish_body(Some("A"), b"{")
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
        assert!(parse_publish_body(None, b"")
            .unwrap_err()
            .to_string()
            .contains("no ticks"));
    }
}
