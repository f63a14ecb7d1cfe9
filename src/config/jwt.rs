//! The `[jwt]` section: per-user access with signed JSON Web Tokens
//! (RFC 7519), and the rules between its keys.
//!
//! Kept apart from the other sections because its rules (an algorithm
//! decides which key source is allowed) are its own; the files themselves
//! are read when the broker starts (and on SIGHUP), where an unusable one
//! is an error naming its key too.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::{int, off_if_empty, off_if_empty_path, ConfigError};

/// The algorithms `jwt.algorithm` takes, as JOSE (RFC 7518) names them.
pub const ALGORITHMS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// The shortest `jwt.hmac_secret`: RFC 7518 §3.2 wants a key at least as
/// long as the hash (32 bytes for HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The largest `jwt.leeway_secs`: clock skew beyond a minute is a broken
/// clock, and each second of leeway is a second a revoked token lives on.
pub const MAX_LEEWAY_SECS: u64 = 60;

/// The `[jwt]` section.
///
/// `hmac_secret` is a secret: `Debug` redacts it and no [`ConfigError`]
/// contains it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `jwt.algorithm`: the one algorithm tokens must be signed with
    /// (a token's own `alg` is only compared with it); `None` (`""`): JWTs off.
    #[serde(deserialize_with = "off_if_empty")]
    pub algorithm: Option<String>,
    /// `jwt.hmac_secret`: the HS256/384/512 key.
    #[serde(deserialize_with = "off_if_empty")]
    pub hmac_secret: Option<String>,
    /// `jwt.public_key_file`: the RS/PS/ES/EdDSA public key, PEM.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub public_key_file: Option<PathBuf>,
    /// `jwt.jwks_file`: a local JWK Set (RFC 7517); a token's `kid` picks the key.
    #[serde(deserialize_with = "off_if_empty_path")]
    pub jwks_file: Option<PathBuf>,
    /// `jwt.issuer`: the `iss` tokens must carry; `None`: not checked.
    #[serde(deserialize_with = "off_if_empty")]
    pub issuer: Option<String>,
    /// `jwt.audience`: the `aud` tokens must carry; `None`: not checked.
    #[serde(deserialize_with = "off_if_empty")]
    pub audience: Option<String>,
    /// `jwt.leeway_secs`: clock skew allowed on `exp` and `nbf`; 0 to 60.
    #[serde(deserialize_with = "int")]
    pub leeway_secs: u64,
    /// `jwt.expiry_warning_secs`: how long before a connection's token
    /// expires it is sent `token_expiring`; at least 1.
    #[serde(deserialize_with = "int")]
    pub expiry_warning_secs: u64,
}

impl JwtConfig {
    /// Whether JWTs are accepted at all.
    pub fn enabled(&self) -> bool {
        self.algorithm.is_some()
    }

    /// Checks the rules between the keys, naming the first key that breaks one.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| Err(ConfigError::invalid(key.to_owned(), reason));
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return invalid(
                "jwt.leeway_secs",
                format!("{} must be at most {MAX_LEEWAY_SECS}", self.leeway_secs),
            );
        }
        if !(1..=86_400).contains(&self.expiry_warning_secs) {
            return invalid(
                "jwt.expiry_warning_secs",
                format!("{} must be from 1 to 86400", self.expiry_warning_secs),
            );
        }
        let sources = [
            ("jwt.hmac_secret", self.hmac_secret.is_some()),
            ("jwt.public_key_file", self.public_key_file.is_some()),
            ("jwt.jwks_file", self.jwks_file.is_some()),
        ];
        let Some(algorithm) = &self.algorithm else {
            return match sources.iter().find(|(_, set)| *set) {
                Some((key, _)) => invalid(key, "is set but jwt.algorithm is empty".to_owned()),
                None => Ok(()),
            };
        };
        if !ALGORITHMS.contains(&algorithm.as_str()) {
            return invalid(
                "jwt.algorithm",
                format!("{algorithm:?} is not one of {}", ALGORITHMS.join(", ")),
            );
        }
        let hmac = algorithm.starts_with("HS");
        match (hmac, sources.iter().filter(|(_, set)| *set).count()) {
            (_, 0) => {
                let wanted = if hmac {
                    "jwt.hmac_secret"
                } else {
                    "jwt.public_key_file or jwt.jwks_file"
                };
                invalid(
                    "jwt.algorithm",
                    format!("{algorithm} needs {wanted} to be set"),
                )
            }
            (_, 2..) => invalid(
                "jwt.jwks_file",
                "set only one of jwt.hmac_secret, jwt.public_key_file and jwt.jwks_file".into(),
            ),
            (true, _) if self.hmac_secret.is_none() => invalid(
                "jwt.hmac_secret",
                format!("{algorithm} is an HMAC algorithm: it needs jwt.hmac_secret, not a public key"),
            ),
            (false, _) if self.hmac_secret.is_some() => invalid(
                "jwt.hmac_secret",
                format!("{algorithm} verifies with a public key: set jwt.public_key_file or jwt.jwks_file instead"),
            ),
            _ => match &self.hmac_secret {
                Some(secret) if secret.len() < MIN_HMAC_SECRET_BYTES => invalid(
                    "jwt.hmac_secret",
                    format!(
                        "must be at least {MIN_HMAC_SECRET_BYTES} bytes (value not shown)"
                    ),
                ),
                _ => Ok(()),
            },
        }
    }
}

/// Prints whether the secret is set, never the secret: configs get logged.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("expiry_warning_secs", &self.expiry_warning_secs)
            .finish()
    }
}

#[cfg(test)]
// Tests unwrap freely: a panic there is a failed test.
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::Config;

    fn err(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn off_by_default_and_hmac_on() {
        assert!(!Config::embedded_default().jwt.enabled());
        let c = Config::from_toml_str(&format!(
            "[jwt]\nalgorithm = \"HS256\"\nhmac_secret = \"{SECRET}\"\naudience = \"feeds\""
        ))
        .unwrap();
        assert!(c.jwt.enabled());
        assert_eq!(c.jwt.audience.as_deref(), Some("feeds"));
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn rules_between_keys_name_the_key() {
        let cases = [
            ("algorithm = \"none\"", "jwt.algorithm"),
            ("algorithm = \"HS256\"", "jwt.algorithm"),
            ("hmac_secret = \"x\"", "jwt.hmac_secret"),
            (
                "algorithm = \"HS256\"\nhmac_secret = \"short\"",
                "jwt.hmac_secret",
            ),
            (
                "algorithm = \"RS256\"\nhmac_secret = \"0123456789abcdef0123456789abcdef\"",
                "jwt.hmac_secret",
            ),
            (
                "algorithm = \"HS256\"\npublic_key_file = \"k.pem\"",
                "jwt.hmac_secret",
            ),
            (
                "algorithm = \"RS256\"\npublic_key_file = \"k.pem\"\njwks_file = \"k.json\"",
                "jwt.jwks_file",
            ),
            ("leeway_secs = 61", "jwt.leeway_secs"),
            ("expiry_warning_secs = 0", "jwt.expiry_warning_secs"),
        ];
        for (text, key) in cases {
            let e = err(&format!("[jwt]\n{text}\n"));
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
            assert!(!e.contains("short") && !e.contains("0123456789"), "{e}");
        }
        Config::from_toml_str("[jwt]\nalgorithm = \"EdDSA\"\njwks_file = \"k.json\"").unwrap();
    }
}
