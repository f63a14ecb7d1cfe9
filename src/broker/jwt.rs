//! Verifying a JSON Web Token (RFC 7519) into the [`Grant`] it carries:
//! the user (`sub`), its expiry and its topic patterns (`tf.sub`, `tf.pub`).
//!
//! The algorithm is `jwt.algorithm`, never the token's: a token's `alg`
//! header is only compared with it, so `alg: none` and a token signed
//! HS256 with an RSA public key as its secret are refused by construction.
//! Signatures are checked by the `jsonwebtoken` crate on its pure-Rust
//! (RustCrypto) backend. The key is the HMAC secret, a PEM public key, or
//! the key of a local JWK Set the token's `kid` names; [`JwtVerifier::reload`]
//! (SIGHUP) reads the files again and keeps the old keys when they are bad.
//!
//! Verification runs once per token (at a request, an upgrade or an
//! in-band `auth`), never per op: the patterns it compiles are what the
//! op path checks.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::topic_pattern::{BadPattern, PatternSet};
use crate::config::JwtConfig;

/// The longest token verified, in bytes: a header value or a query
/// parameter can be long, and a token is parsed before it is trusted.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The longest `sub` taken: it is named in log lines, so it is kept short.
pub const MAX_SUB_BYTES: usize = 256;

/// What a verified token grants.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    /// The user: named in log lines about the connection, never a metrics label.
    pub sub: Box<str>,
    /// `exp`, seconds since the Unix epoch.
    pub exp: u64,
    /// `tf.sub`: the topics it may subscribe to.
    pub subscribe: PatternSet,
    /// `tf.pub`: the topics it may publish to.
    pub publish: PatternSet,
}

/// Why a token was refused; [`JwtError::label`] is its metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not a JWT: bad shape, base64, JSON, or a missing or mistyped claim.
    Malformed(String),
    /// Its `alg` is not `jwt.algorithm` (including `none`).
    WrongAlgorithm,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// Its `kid` names no key of the JWK Set.
    UnknownKid,
    /// `exp` (plus the leeway) has passed.
    Expired,
    /// `nbf` (less the leeway) is still to come.
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// `tf.sub` or `tf.pub` holds a bad pattern.
    BadClaims(BadPattern),
}

impl JwtError {
    /// The `result` label of `tickfan_authentications_total`.
    pub fn label(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::WrongAlgorithm => "wrong_algorithm",
            JwtError::BadSignature => "bad_signature",
            JwtError::UnknownKid => "unknown_kid",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::BadClaims(_) => "bad_claims",
        }
    }
}

/// Says why without quoting the token (these messages reach clients and logs).
impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Malformed(why) => write!(f, "not a valid token: {why}"),
            JwtError::WrongAlgorithm => f.write_str("the token is not signed with the algorithm this broker accepts"),
            JwtError::BadSignature => f.write_str("the token's signature does not verify"),
            JwtError::UnknownKid => f.write_str("the token's kid names no known key"),
            JwtError::Expired => f.write_str("the token has expired"),
            JwtError::NotYetValid => f.write_str("the token is not valid yet (nbf)"),
            JwtError::WrongIssuer => f.write_str("the token's issuer is not accepted"),
            JwtError::WrongAudience => f.write_str("the token's audience is not this broker"),
            JwtError::BadClaims(bad) => write!(f, "the token's topic claims are invalid: {bad}"),
        }
    }
}

/// Why the keys cannot be used; names the config key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The dotted config key, e.g. `jwt.jwks_file`.
    pub key: &'static str,
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for KeyError {}

/// Where the verifying keys come from.
#[derive(Clone)]
enum KeySource {
    Secret(Vec<u8>),
    PemFile(PathBuf),
    JwksFile(PathBuf),
}

/// The keys in use.
#[derive(Clone)]
enum Keys {
    One(DecodingKey),
    ByKid(HashMap<String, DecodingKey>),
}

/// The claims read from a token; `exp` and `sub` are also required by the
/// validation, which checks `exp` (and `nbf`, `iss`, `aud`).
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(rename = "tf.sub", default)]
    subscribe: Vec<String>,
    #[serde(rename = "tf.pub", default)]
    publish: Vec<String>,
}

/// Verifies tokens with the configured algorithm and keys.
pub struct JwtVerifier {
    algorithm: Algorithm,
    source: KeySource,
    validation: Validation,
    keys: Mutex<Arc<Keys>>,
}

/// Names the source, never a secret.
impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            KeySource::Secret(_) => "hmac_secret".to_owned(),
            KeySource::PemFile(path) | KeySource::JwksFile(path) => path.display().to_string(),
        };
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("keys", &source)
            .finish()
    }
}

impl JwtVerifier {
    /// The verifier `[jwt]` configures (reading its key files), or `None`
    /// when JWTs are off.
    pub fn from_config(config: &JwtConfig) -> Result<Option<JwtVerifier>, KeyError> {
        let Some(name) = &config.algorithm else {
            return Ok(None);
        };
        let algorithm = Algorithm::from_str(name).map_err(|_| KeyError {
            key: "jwt.algorithm",
            reason: format!("{name:?} is not a supported algorithm"),
        })?;
        let source = match (&config.hmac_secret, &config.public_key_file, &config.jwks_file) {
            (Some(secret), _, _) => KeySource::Secret(secret.as_bytes().to_vec()),
            (None, Some(pem), _) => KeySource::PemFile(pem.clone()),
            (None, None, Some(jwks)) => KeySource::JwksFile(jwks.clone()),
            (None, None, None) => {
                return Err(KeyError {
                    key: "jwt.algorithm",
                    reason: "no key is configured".to_owned(),
                })
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let keys = load_keys(algorithm, &source)?;
        Ok(Some(JwtVerifier {
            algorithm,
            source,
            validation,
            keys: Mutex::new(Arc::new(keys)),
        }))
    }

    /// Reads the key file again; on failure the keys in use stay.
    /// A no-op for an HMAC secret (it lives in the config).
    pub fn reload(&self) -> Result<(), KeyError> {
        let keys = load_keys(self.algorithm, &self.source)?;
        *self.keys.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        Ok(())
    }

    /// Whether the keys come from a file (and so SIGHUP rereads them).
    pub fn has_key_file(&self) -> bool {
        !matches!(self.source, KeySource::Secret(_))
    }

    /// Verifies `token` and compiles what it grants.
    pub fn verify(&self, token: &str) -> Result<Grant, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("too long".to_owned()));
        }
        let keys = Arc::clone(&self.keys.lock().unwrap_or_else(PoisonError::into_inner));
        let key = match &*keys {
            Keys::One(key) => key,
            Keys::ByKid(by_kid) => {
                let header = decode_header(token).map_err(classify)?;
                let kid = header.kid.ok_or(JwtError::UnknownKid)?;
                by_kid.get(&kid).ok_or(JwtError::UnknownKid)?
            }
        };
        let claims = decode::<Claims>(token, key, &self.validation)
            .map_err(classify)?
            .claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_SUB_BYTES {
            return Err(JwtError::Malformed(format!(
                "sub must be 1 to {MAX_SUB_BYTES} bytes"
            )));
        }
        let subscribe = PatternSet::new(claims.subscribe.iter().map(String::as_str))
            .map_err(JwtError::BadClaims)?;
        let publish = PatternSet::new(claims.publish.iter().map(String::as_str))
            .map_err(JwtError::BadClaims)?;
        Ok(Grant {
            sub: claims.sub.into(),
            exp: claims.exp,
            subscribe,
            publish,
        })
    }
}

/// The broker's reason for the crate's error.
fn classify(error: jsonwebtoken::errors::Error) -> JwtError {
    match error.kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::WrongAlgorithm,
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtError::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) => {
            JwtError::Malformed(format!("the {claim:?} claim is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            JwtError::Malformed(format!("the {claim:?} claim has the wrong type"))
        }
        // An unknown `alg` (such as `none`) fails to parse as a header.
        ErrorKind::Json(_) => JwtError::Malformed("bad JSON, or an unknown alg".to_owned()),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            JwtError::Malformed("not three base64url parts".to_owned())
        }
        _ => JwtError::Malformed("cannot be verified".to_owned()),
    }
}

/// The family of keys `algorithm` verifies with.
fn family(algorithm: Algorithm) -> jsonwebtoken::AlgorithmFamily {
    use jsonwebtoken::AlgorithmFamily as F;
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => F::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => F::Ec,
        Algorithm::EdDSA => F::Ed,
        _ => F::Rsa,
    }
}

fn load_keys(algorithm: Algorithm, source: &KeySource) -> Result<Keys, KeyError> {
    match source {
        KeySource::Secret(secret) => Ok(Keys::One(DecodingKey::from_secret(secret))),
        KeySource::PemFile(path) => load_pem(algorithm, path).map(Keys::One),
        KeySource::JwksFile(path) => load_jwks(algorithm, path).map(Keys::ByKid),
    }
}

fn load_pem(algorithm: Algorithm, path: &Path) -> Result<DecodingKey, KeyError> {
    let failed = |reason: String| KeyError {
        key: "jwt.public_key_file",
        reason: format!("{}: {reason}", path.display()),
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    use jsonwebtoken::AlgorithmFamily as F;
    let key = match family(algorithm) {
        F::Rsa => DecodingKey::from_rsa_pem(&pem),
        F::Ec => DecodingKey::from_ec_pem(&pem),
        F::Ed => DecodingKey::from_ed_pem(&pem),
        F::Hmac => return Err(failed("an HMAC algorithm takes jwt.hmac_secret".to_owned())),
    };
    key.map_err(|e| failed(format!("no usable {algorithm:?} public key: {e}")))
}

/// The keys of a JWK Set that fit `algorithm`, by `kid`; a key of another
/// family, or naming another `alg`, is left out, and a set left empty is refused.
fn load_jwks(algorithm: Algorithm, path: &Path) -> Result<HashMap<String, DecodingKey>, KeyError> {
    let failed = |reason: String| KeyError {
        key: "jwt.jwks_file",
        reason: format!("{}: {reason}", path.display()),
    };
    let text = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let set: JwkSet =
        serde_json::from_slice(&text).map_err(|e| failed(format!("not a JWK Set: {e}")))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else {
            continue;
        };
        let names_other_alg = jwk
            .common
            .key_algorithm
            .is_some_and(|alg| format!("{alg:?}") != format!("{algorithm:?}"));
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        if names_other_alg || key.family() != family(algorithm) {
            continue;
        }
        keys.insert(kid.clone(), key);
    }
    if keys.is_empty() {
        return Err(failed(format!(
            "no key with a kid fits {algorithm:?}"
        )));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
