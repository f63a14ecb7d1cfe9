//! Topic names as NATS subjects, and back.
//!
//! A topic is 1–128 bytes of `[A-Za-z0-9._:-]`; a NATS subject is tokens
//! separated by `.`, none of them empty, and `*` and `>` are wildcards.
//! Mapping a topic's dots to subject dots would make `a..b` or `.a`
//! invalid subjects and let one topic's tokens look like another's, so the
//! whole topic becomes one token: `.` is written `_2E` and `_` (the escape
//! itself) `_5F`; every other topic byte is a valid subject byte as it is.
//! The mapping is a bijection between topic names and the tokens it makes,
//! so a subject read back from the stream names exactly one topic.

use crate::topic::TopicName;

/// The subject of `topic` under `prefix` (`<prefix>.t.<token>`).
pub fn subject_of(prefix: &str, topic: &TopicName<'_>) -> String {
    let name = topic.as_str();
    let mut subject = String::with_capacity(prefix.len() + 3 + name.len() + 8);
    subject.push_str(prefix);
    subject.push_str(".t.");
    for c in name.chars() {
        match c {
            '.' => subject.push_str("_2E"),
            '_' => subject.push_str("_5F"),
            c => subject.push(c),
        }
    }
    subject
}

/// The subjects of every topic under `prefix`: the stream's subject filter.
pub fn all_topics(prefix: &str) -> String {
    format!("{prefix}.t.>")
}

/// The topic a subject under `prefix` names, or `None` for a subject this
/// mapping never makes (another writer's message in the stream).
pub fn topic_of(prefix: &str, subject: &str) -> Option<String> {
    let token = subject.strip_prefix(prefix)?.strip_prefix(".t.")?;
    if token.contains('.') {
        return None; // more than one token: never made by `subject_of`
    }
    let mut topic = String::with_capacity(token.len());
    let mut rest = token;
    while let Some(at) = rest.find('_') {
        let (plain, escaped) = rest.split_at(at);
        topic.push_str(plain);
        let code = escaped.get(1..3)?;
        topic.push(match code {
            "2E" => '.',
            "5F" => '_',
            _ => return None,
        });
        rest = escaped.get(3..)?;
    }
    topic.push_str(rest);
    // The result must be a topic the mapping could have come from; this
    // also refuses what no topic holds (`*`, `>`, a further `.`).
    TopicName::new(topic.as_str()).ok()?;
    Some(topic)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subject(topic: &str) -> String {
        subject_of("tf", &TopicName::new(topic).unwrap())
    }

    #[test]
    fn escapes_what_nats_forbids() {
        assert_eq!(subject("AAPL"), "tf.t.AAPL");
        assert_eq!(subject("a.b"), "tf.t.a_2Eb");
        assert_eq!(subject(".."), "tf.t._2E_2E");
        assert_eq!(subject("x_2E"), "tf.t.x_5F2E");
        assert_eq!(subject("fx:EUR-USD"), "tf.t.fx:EUR-USD");
        assert_eq!(topic_of("tf", "tf.t.x_5F2E").as_deref(), Some("x_2E"));
        assert_eq!(topic_of("tf", "tf.t._2E_2E").as_deref(), Some(".."));
    }

    #[test]
    fn foreign_subjects_name_no_topic() {
        for subject in [
            "tf.t.",
            "tf.t.a.b",
            "tf.t.a_",
            "tf.t.a_2",
            "tf.t.a_41",
            "tf.t.*",
            "tf.x.a",
            "other.t.a",
        ] {
            assert_eq!(topic_of("tf", subject), None, "{subject}");
        }
        assert_eq!(topic_of("a.b", "a.b.t.X").as_deref(), Some("X"));
    }

    proptest! {
        #[test]
        fn round_trips(topic in "[A-Za-z0-9._:-]{1,128}") {
            let name = TopicName::new(topic.as_str()).unwrap();
            let subject = subject_of("tickfan.p", &name);
            // One token after the prefix, none of them empty, no wildcard.
            let token = subject.strip_prefix("tickfan.p.t.").unwrap();
            prop_assert!(!token.is_empty() && !token.contains(['.', '*', '>', ' ']));
            prop_assert_eq!(topic_of("tickfan.p", &subject), Some(topic));
        }

        #[test]
        fn distinct_topics_get_distinct_subjects(
            a in "[A-Za-z0-9._:-]{1,12}",
            b in "[A-Za-z0-9._:-]{1,12}",
        ) {
            let sa = subject_of("p", &TopicName::new(a.as_str()).unwrap());
            let sb = subject_of("p", &TopicName::new(b.as_str()).unwrap());
            prop_assert_eq!(a == b, sa == sb);
        }
    }
}
