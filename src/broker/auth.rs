//! Who may publish and subscribe: tokens from the config, compared in
//! constant time so response timing reveals nothing about them.
//!
//! Tokens are hashed on load; a presented token is hashed and compared
//! against every known hash without an early exit, so neither its length
//! nor its common prefix with a real token shows in the time taken. Token
//! values are never logged or printed.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The rights a connection gets from the token it presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    pub publish: bool,
    pub subscribe: bool,
}

/// What a request is admitted for, which decides the right it must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `POST /publish`.
    Publish,
    /// A pub/sub WebSocket upgrade, `GET /poll` or `GET /sse`: a
    /// subscriber's connection. A pub/sub WebSocket may publish too when its
    /// rights allow, but it is admitted only as a subscriber: with
    /// `auth.subscribe_requires_token` a client without a valid token is
    /// refused at the upgrade even while publishing is open, and can still
    /// publish over `POST /publish`.
    Subscribe,
}

impl Rights {
    /// Whether these rights admit a request for `access`.
    pub fn admit(self, access: Access) -> bool {
        match access {
            Access::Publish => self.publish,
            Access::Subscribe => self.subscribe,
        }
    }
}

/// The configured tokens, as hashes.
pub struct Auth {
    publish: Vec<[u8; 20]>,
    subscribe: Vec<[u8; 20]>,
    publish_open: bool,
    subscribe_open: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("publish_tokens", &self.publish.len())
            .field("subscribe_tokens", &self.subscribe.len())
            .field("publish_open", &self.publish_open)
            .field("subscribe_open", &self.subscribe_open)
            .finish()
    }
}

impl Auth {
    /// No configured publish tokens means publishing is open to everyone;
    /// subscribing is open unless `subscribe_requires_token`.
    pub fn new(
        publish_tokens: &[String],
        subscribe_tokens: &[String],
        subscribe_requires_token: bool,
    ) -> Self {
        let hash_all = |tokens: &[String]| {
            tokens
                .iter()
                .map(|t| digest(t.as_bytes()))
                .collect::<Vec<_>>()
        };
        Auth {
            publish: hash_all(publish_tokens),
            subscribe: hash_all(subscribe_tokens),
            publish_open: publish_tokens.is_empty(),
            subscribe_open: !subscribe_requires_token,
        }
    }

    /// The rights `token` (if any) grants. Publisher tokens grant subscribing too.
    pub fn rights(&self, token: Option<&str>) -> Rights {
        let (publisher, subscriber) = match token {
            Some(token) => {
                let presented = digest(token.as_bytes());
                (
                    matches_any(&presented, &self.publish),
                    matches_any(&presented, &self.subscribe),
                )
            }
            None => (false, false),
        };
        Rights {
            publish: self.publish_open || publisher,
            subscribe: self.subscribe_open || publisher || subscriber,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 20] {
    Sha1::digest(bytes).into()
}

/// Compares against every hash, without stopping at the first match.
fn matches_any(presented: &[u8; 20], known: &[[u8; 20]]) -> bool {
    let mut found = subtle::Choice::from(0);
    for hash in known {
        found |= presented.ct_eq(hash);
    }
    found.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_from_tokens() {
        let auth = Auth::new(&["pubtok".into()], &["subtok".into()], true);
        assert_eq!(
            auth.rights(Some("pubtok")),
            Rights {
                publish: true,
                subscribe: true
            }
        );
        assert_eq!(
            auth.rights(Some("subtok")),
            Rights {
                publish: false,
                subscribe: true
            }
        );
        assert_eq!(auth.rights(Some("pubto")), Rights::default());
        assert_eq!(auth.rights(None), Rights::default());
        let open = Auth::new(&[], &[], false);
        assert_eq!(
            open.rights(None),
            Rights {
                publish: true,
                subscribe: true
            }
        );
        assert!(!format!("{auth:?}").contains("pubtok"));
    }

    #[test]
    fn subscribe_requirement_holds_while_publishing_is_open() {
        // No publish tokens: anyone may publish, but only token holders subscribe.
        let auth = Auth::new(&[], &["subtok".into()], true);
        let anonymous = auth.rights(None);
        assert!(anonymous.admit(Access::Publish));
        assert!(!anonymous.admit(Access::Subscribe));
        assert!(!auth.rights(Some("wrong")).admit(Access::Subscribe));
        let reader = auth.rights(Some("subtok"));
        assert!(reader.admit(Access::Subscribe) && reader.admit(Access::Publish));
        // Without the requirement every connection is admitted as a subscriber.
        let auth = Auth::new(&["pubtok".into()], &[], false);
        assert!(auth.rights(None).admit(Access::Subscribe));
        assert!(!auth.rights(None).admit(Access::Publish));
    }
}
