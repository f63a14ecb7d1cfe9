//! Who may publish and subscribe: static tokens from the config, compared
//! in constant time so response timing reveals nothing about them, and
//! per-user JWTs ([`super::jwt`]) whose topic patterns limit each op.
//!
//! Tokens are hashed on load; a presented token is hashed and compared
//! against every known hash without an early exit, so neither its length
//! nor its common prefix with a real token shows in the time taken. Token
//! values are never logged or printed.

use std::sync::Arc;

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::jwt::{Grant, JwtError, JwtVerifier};

/// The rights a connection gets from the token it presented.
///
/// What is open to everyone or granted by a static token holds on every
/// topic; a JWT's [`Grant`] adds its patterns. Checking a topic
/// ([`Rights::may_subscribe`], [`Rights::may_publish`]) reads only these
/// fields and the compiled patterns: no allocation, no lock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rights {
    /// Publishing to every topic.
    pub publish: bool,
    /// Subscribing to every topic.
    pub subscribe: bool,
    /// A verified JWT's user, expiry and topic patterns.
    pub grant: Option<Arc<Grant>>,
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
    /// Whether these rights admit a request for `access`: a JWT admits a
    /// subscriber connection (its patterns then decide each topic), and a
    /// publish request if it grants any topic.
    pub fn admit(&self, access: Access) -> bool {
        match access {
            Access::Publish => self.publish || self.grant.as_ref().is_some_and(|g| !g.publish.is_empty()),
            Access::Subscribe => self.subscribe || self.grant.is_some(),
        }
    }

    /// Whether `topic` may be subscribed to.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe || self.grant.as_ref().is_some_and(|g| g.subscribe.allows(topic))
    }

    /// Whether `topic` may be published to.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish || self.grant.as_ref().is_some_and(|g| g.publish.allows(topic))
    }

    /// The JWT's user, if a JWT granted these rights.
    pub fn user(&self) -> Option<&str> {
        self.grant.as_deref().map(|g| &*g.sub)
    }
}

/// What presenting a token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenResult {
    /// No token was presented.
    None,
    /// A static token from the config.
    Static,
    /// A token that is no static token, while JWTs are off.
    Unknown,
    /// A verified JWT.
    Jwt,
    /// A refused JWT.
    Refused(JwtError),
}

impl TokenResult {
    /// The `result` label of `tickfan_authentications_total`; `None` when
    /// no token was presented (nothing to count).
    pub fn label(&self) -> Option<&'static str> {
        match self {
            TokenResult::None => None,
            TokenResult::Static | TokenResult::Jwt => Some("ok"),
            TokenResult::Unknown => Some("unknown_token"),
            TokenResult::Refused(error) => Some(error.label()),
        }
    }
}

/// The rights a presented token grants, and what became of the token.
#[derive(Debug, Clone)]
pub struct Authentication {
    pub rights: Rights,
    pub result: TokenResult,
}

/// The configured tokens, as hashes.
pub struct Auth {
    publish: Vec<[u8; 20]>,
    subscribe: Vec<[u8; 20]>,
    publish_open: bool,
    subscribe_open: bool,
    jwt: Option<JwtVerifier>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("publish_tokens", &self.publish.len())
            .field("subscribe_tokens", &self.subscribe.len())
            .field("publish_open", &self.publish_open)
            .field("subscribe_open", &self.subscribe_open)
            .field("jwt", &self.jwt)
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
            jwt: None,
        }
    }

    /// These tokens, and JWTs verified by `jwt`.
    pub fn with_jwt(mut self, jwt: Option<JwtVerifier>) -> Self {
        self.jwt = jwt;
        self
    }

    /// The JWT verifier, when JWTs are on (for reloading its keys).
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The rights `token` (if any) grants. Publisher tokens grant subscribing too.
    pub fn rights(&self, token: Option<&str>) -> Rights {
        self.authenticate(token).rights
    }

    /// The rights `token` (if any) grants, and what became of it. A token
    /// is compared with the static ones first, then verified as a JWT when
    /// JWTs are on; a refused token grants only what is open to everyone.
    pub fn authenticate(&self, token: Option<&str>) -> Authentication {
        let open = Rights {
            publish: self.publish_open,
            subscribe: self.subscribe_open,
            grant: None,
        };
        let Some(token) = token else {
            return Authentication {
                rights: open,
                result: TokenResult::None,
            };
        };
        let presented = digest(token.as_bytes());
        let publisher = matches_any(&presented, &self.publish);
        let subscriber = matches_any(&presented, &self.subscribe);
        if publisher || subscriber {
            return Authentication {
                rights: Rights {
                    publish: open.publish || publisher,
                    subscribe: true,
                    grant: None,
                },
                result: TokenResult::Static,
            };
        }
        let Some(jwt) = &self.jwt else {
            return Authentication {
                rights: open,
                result: TokenResult::Unknown,
            };
        };
        match jwt.verify(token) {
            Ok(grant) => Authentication {
                rights: Rights {
                    grant: Some(Arc::new(grant)),
                    ..open
                },
                result: TokenResult::Jwt,
            },
            Err(error) => Authentication {
                rights: open,
                result: TokenResult::Refused(error),
            },
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
                subscribe: true,
                grant: None
            }
        );
        assert_eq!(
            auth.rights(Some("subtok")),
            Rights {
                publish: false,
                subscribe: true,
                grant: None
            }
        );
        assert_eq!(auth.rights(Some("pubto")), Rights::default());
        assert_eq!(auth.rights(None), Rights::default());
        let open = Auth::new(&[], &[], false);
        assert_eq!(
            open.rights(None),
            Rights {
                publish: true,
                subscribe: true,
                grant: None
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

    #[test]
    fn a_jwt_grants_its_patterns_on_top_of_what_is_open() {
        use crate::config::JwtConfig;
        use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
        let secret = "0123456789abcdef0123456789abcdef";
        let config = JwtConfig {
            algorithm: Some("HS256".into()),
            hmac_secret: Some(secret.into()),
            public_key_file: None,
            jwks_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 0,
            expiry_warning_secs: 30,
        };
        let jwt = JwtVerifier::from_config(&config).unwrap();
        let auth = Auth::new(&["pubtok".into()], &[], true).with_jwt(jwt);
        let claims = serde_json::json!({
            "sub": "alice",
            "exp": get_current_timestamp() + 60,
            "tf.sub": ["prices.>"],
            "tf.pub": ["orders.alice"],
        });
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let alice = auth.authenticate(Some(&token));
        assert_eq!(alice.result, TokenResult::Jwt);
        let rights = alice.rights;
        assert_eq!(rights.user(), Some("alice"));
        assert!(rights.admit(Access::Subscribe) && rights.admit(Access::Publish));
        assert!(rights.may_subscribe("prices.AAPL") && !rights.may_subscribe("news.AAPL"));
        assert!(rights.may_publish("orders.alice") && !rights.may_publish("orders.bob"));
        // A static token still holds on every topic.
        let service = auth.rights(Some("pubtok"));
        assert!(service.may_publish("anything") && service.may_subscribe("anything"));
        // A refused JWT grants what is open: here, nothing.
        let (body, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        let forged = format!("{body}.{flipped}{}", &signature[1..]);
        let refused = auth.authenticate(Some(&forged));
        assert_eq!(refused.result.label(), Some("bad_signature"));
        assert!(!refused.rights.admit(Access::Subscribe));
        assert!(!refused.rights.may_subscribe("prices.AAPL"));
        assert_eq!(auth.authenticate(None).result.label(), None);
        assert_eq!(
            Auth::new(&[], &[], false).authenticate(Some(&token)).result,
            TokenResult::Unknown
        );
    }
}
