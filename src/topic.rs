//! Topic names as clients send them: 1–128 bytes of `[A-Za-z0-9._:-]`.
//!
//! The restricted alphabet is what lets the envelope embed a name in JSON,
//! a URL query or an SSE id without escaping it.

/// The longest topic name accepted, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;

/// Why a topic name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTopic {
    Empty,
    TooLong,
    BadByte(u8),
}

impl std::fmt::Display for BadTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTopic::Empty => f.write_str("topic name is empty"),
            BadTopic::TooLong => write!(f, "topic name is longer than {MAX_TOPIC_BYTES} bytes"),
            BadTopic::BadByte(b) => write!(
                f,
                "topic name contains byte {b:#04x}; allowed are A-Z a-z 0-9 . _ : -"
            ),
        }
    }
}

/// Checks that `name` is a valid topic name.
pub fn validate_topic(name: &str) -> Result<(), BadTopic> {
    if name.is_empty() {
        return Err(BadTopic::Empty);
    }
    if name.len() > MAX_TOPIC_BYTES {
        return Err(BadTopic::TooLong);
    }
    match name.bytes().find(|b| !is_topic_byte(*b)) {
        Some(bad) => Err(BadTopic::BadByte(bad)),
        None => Ok(()),
    }
}

fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_topic("AAPL"), Ok(()));
        assert_eq!(validate_topic("fx:EUR-USD.spot_1"), Ok(()));
        assert_eq!(validate_topic(""), Err(BadTopic::Empty));
        assert_eq!(validate_topic(&"a".repeat(128)), Ok(()));
        assert_eq!(validate_topic(&"a".repeat(129)), Err(BadTopic::TooLong));
        assert_eq!(validate_topic("a b"), Err(BadTopic::BadByte(b' ')));
        assert_eq!(validate_topic("a\"b"), Err(BadTopic::BadByte(b'"')));
        assert_eq!(validate_topic("é"), Err(BadTopic::BadByte(0xC3)));
    }
}
