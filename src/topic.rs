//! Topic names as clients send them: 1–128 bytes of `[A-Za-z0-9._:-]`.
//!
//! The restricted alphabet is what lets the envelope embed a name in JSON,
//! a URL query or an SSE id without escaping it. [`TopicName`] is a name
//! checked when it was made; the tick envelope, the server's events and the
//! topic table take only that type, so "the topic needs no escaping" is
//! the compiler's to enforce.
//!
//! Names come from the network: held to the panic-class lints (tests exempt).

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// The longest topic name accepted, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;

/// Why a topic name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTopic {
    Empty,
    TooLong,
    BadByte(u8),
}

impl fmt::Display for BadTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// A valid topic name, borrowed from the message it came in or owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName<'a>(Cow<'a, str>);

impl<'a> TopicName<'a> {
    /// Checks `name`; borrowed input stays borrowed.
    pub fn new(name: impl Into<Cow<'a, str>>) -> Result<Self, BadTopic> {
        let name = name.into();
        validate_topic(&name)?;
        Ok(TopicName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same name, owning its bytes.
    pub fn into_owned(self) -> TopicName<'static> {
        TopicName(Cow::Owned(self.0.into_owned()))
    }

    /// An owned copy.
    pub fn to_owned_name(&self) -> TopicName<'static> {
        TopicName(Cow::Owned(self.0.clone().into_owned()))
    }
}

impl Deref for TopicName<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
