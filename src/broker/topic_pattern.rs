//! The topic patterns a JWT grants (`tf.sub`, `tf.pub`): NATS-style
//! patterns over `.`-separated segments — an exact segment, `*` for exactly
//! one segment, `>` (last only) for one or more segments to the end.
//!
//! A pattern is compiled once, when its token is verified, into segments
//! that matching walks alongside `topic.split('.')`: a rights check per
//! `sub` or `pub` allocates nothing and takes no lock, so it can sit on the
//! op path (`tests/rights_alloc.rs` counts the allocations of a check).
//! Empty segments never match: `a..b` is a valid topic name, but no pattern
//! can name its empty segment (as in NATS), and a pattern with one is refused.

use std::fmt;

use crate::topic::MAX_TOPIC_BYTES;

/// The most patterns one claim may list: a token is network input, and
/// each pattern costs a check per op.
pub const MAX_PATTERNS: usize = 64;

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// The topic's segment must be exactly this.
    Exact(Box<str>),
    /// `*`: any one non-empty segment.
    One,
    /// `>`: one or more non-empty segments, to the end of the topic.
    Rest,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPattern {
    /// Empty, or a segment between two dots (or at an end) is empty.
    EmptySegment,
    /// `>` is allowed only as the last segment.
    RestNotLast,
    /// `*` or `>` inside a segment (`ab*`), or a byte no topic name has.
    BadSegment,
    /// Longer than a topic name may be.
    TooLong,
    /// More than [`MAX_PATTERNS`] patterns in one claim.
    TooMany,
}

impl fmt::Display for BadPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadPattern::EmptySegment => "a topic pattern has an empty segment",
            BadPattern::RestNotLast => "'>' may only be a topic pattern's last segment",
            BadPattern::BadSegment => {
                "a topic pattern segment is '*', '>' or made of A-Z a-z 0-9 _ : -"
            }
            BadPattern::TooLong => "a topic pattern is longer than a topic name may be",
            BadPattern::TooMany => "a claim lists too many topic patterns",
        })
    }
}

/// A compiled topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    /// Never empty; `Rest` only last.
    segments: Box<[Segment]>,
}

impl TopicPattern {
    /// Compiles `pattern`, e.g. `prices.>`, `prices.*.bid` or `AAPL`.
    pub fn new(pattern: &str) -> Result<TopicPattern, BadPattern> {
        if pattern.len() > MAX_TOPIC_BYTES {
            return Err(BadPattern::TooLong);
        }
        let mut segments = Vec::new();
        let mut parts = pattern.split('.').peekable();
        while let Some(part) = parts.next() {
            let segment = match part {
                "" => return Err(BadPattern::EmptySegment),
                "*" => Segment::One,
                ">" if parts.peek().is_some() => return Err(BadPattern::RestNotLast),
                ">" => Segment::Rest,
                exact if exact.bytes().all(is_segment_byte) => Segment::Exact(exact.into()),
                _ => return Err(BadPattern::BadSegment),
            };
            segments.push(segment);
        }
        Ok(TopicPattern {
            segments: segments.into_boxed_slice(),
        })
    }

    /// Whether `topic` (a valid topic name) matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        for segment in self.segments.iter() {
            let Some(part) = parts.next() else {
                return false; // the topic has fewer segments
            };
            if part.is_empty() {
                return false;
            }
            match segment {
                Segment::Exact(exact) if **exact == *part => {}
                Segment::Exact(_) => return false,
                Segment::One => {}
                // What follows must be non-empty segments too.
                Segment::Rest => return parts.all(|part| !part.is_empty()),
            }
        }
        parts.next().is_none()
    }
}

/// A topic name's bytes except the separator.
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-')
}

/// The patterns of one claim: a topic is allowed if any matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternSet {
    patterns: Box<[TopicPattern]>,
}

impl PatternSet {
    /// Compiles every pattern, refusing the set if one is bad or there are
    /// more than [`MAX_PATTERNS`].
    pub fn new<'a>(
        patterns: impl IntoIterator<Item = &'a str>,
    ) -> Result<PatternSet, BadPattern> {
        let mut compiled = Vec::new();
        for pattern in patterns {
            if compiled.len() == MAX_PATTERNS {
                return Err(BadPattern::TooMany);
            }
            compiled.push(TopicPattern::new(pattern)?);
        }
        Ok(PatternSet {
            patterns: compiled.into_boxed_slice(),
        })
    }

    /// Whether any pattern matches `topic`.
    pub fn allows(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    /// Whether the set allows nothing.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
// Tests unwrap freely: a panic there is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        TopicPattern::new(pattern).unwrap().matches(topic)
    }

    #[test]
    fn exact_patterns_match_only_the_same_topic() {
        assert!(matches("AAPL", "AAPL"));
        assert!(matches("prices.AAPL", "prices.AAPL"));
        assert!(!matches("AAPL", "aapl"));
        assert!(!matches("AAPL", "AAPL.bid"));
        assert!(!matches("prices.AAPL", "prices"));
        assert!(!matches("prices.AAPL", "prices.MSFT"));
        assert!(!matches("prices.AAPL", "prices.AAPLX"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(matches("prices.*", "prices.AAPL"));
        assert!(matches("prices.*.bid", "prices.MSFT.bid"));
        assert!(matches("*", "AAPL"));
        assert!(!matches("prices.*", "prices"));
        assert!(!matches("prices.*", "prices.AAPL.bid"));
        assert!(!matches("prices.*.bid", "prices.MSFT.ask"));
        assert!(!matches("*", "a.b"));
    }

    #[test]
    fn rest_matches_one_or_more_segments_to_the_end() {
        assert!(matches("prices.>", "prices.AAPL"));
        assert!(matches("prices.>", "prices.AAPL.bid.l2"));
        assert!(matches(">", "anything.at.all"));
        assert!(matches("*.AAPL.>", "nasdaq.AAPL.bid"));
        assert!(!matches("prices.>", "prices"));
        assert!(!matches("prices.>", "trades.AAPL"));
        assert!(!matches("*.AAPL.>", "nasdaq.AAPL"));
    }

    #[test]
    fn empty_segments_never_match_and_are_refused_in_patterns() {
        assert!(!matches("*", ""));
        assert!(!matches("prices.*", "prices."));
        assert!(!matches("prices.>", "prices."));
        assert!(!matches("prices.>", "prices.a..b"));
        assert!(!matches("*.b", ".b"));
        assert!(!matches(">", "a..b"));
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert_eq!(TopicPattern::new(bad), Err(BadPattern::EmptySegment), "{bad}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert_eq!(TopicPattern::new(">.a"), Err(BadPattern::RestNotLast));
        assert_eq!(TopicPattern::new("a.>.b"), Err(BadPattern::RestNotLast));
        assert_eq!(TopicPattern::new("ab*"), Err(BadPattern::BadSegment));
        assert_eq!(TopicPattern::new("a.b>"), Err(BadPattern::BadSegment));
        assert_eq!(TopicPattern::new("a b"), Err(BadPattern::BadSegment));
        assert_eq!(TopicPattern::new("é"), Err(BadPattern::BadSegment));
        assert_eq!(
            TopicPattern::new(&"a".repeat(MAX_TOPIC_BYTES + 1)),
            Err(BadPattern::TooLong)
        );
        let many = vec!["a"; MAX_PATTERNS + 1];
        assert_eq!(PatternSet::new(many), Err(BadPattern::TooMany));
    }

    #[test]
    fn a_set_allows_what_any_pattern_matches() {
        let set = PatternSet::new(["AAPL", "prices.>"]).unwrap();
        assert!(set.allows("AAPL"));
        assert!(set.allows("prices.MSFT"));
        assert!(!set.allows("MSFT"));
        let none = PatternSet::new([]).unwrap();
        assert!(none.is_empty() && !none.allows("AAPL"));
    }

    /// The rules as plainly as they can be said, on vectors of segments:
    /// the reference the compiled matcher is checked against.
    fn reference(pattern: &str, topic: &str) -> bool {
        let p: Vec<&str> = pattern.split('.').collect();
        let t: Vec<&str> = topic.split('.').collect();
        if t.iter().any(|s| s.is_empty()) {
            return false;
        }
        match p.last() {
            Some(&">") => {
                let fixed = &p[..p.len() - 1];
                t.len() > fixed.len()
                    && fixed.iter().zip(&t).all(|(p, t)| *p == "*" || p == t)
            }
            _ => p.len() == t.len() && p.iter().zip(&t).all(|(p, t)| *p == "*" || p == t),
        }
    }

    proptest::proptest! {
        #[test]
        fn the_matcher_agrees_with_the_reference(
            pattern in proptest::collection::vec(
                proptest::prop_oneof!["a", "b", "ab", "\\*"], 1..5
            ),
            rest in proptest::bool::ANY,
            topic in proptest::collection::vec(proptest::prop_oneof!["a", "b", "ab", ""], 1..6),
        ) {
            let mut pattern = pattern.join(".");
            if rest {
                pattern.push_str(".>");
            }
            let topic = topic.join(".");
            let compiled = TopicPattern::new(&pattern).unwrap();
            proptest::prop_assert_eq!(
                compiled.matches(&topic),
                reference(&pattern, &topic),
                "pattern {} topic {}", pattern, topic
            );
        }
    }
}
