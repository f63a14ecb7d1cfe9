//! The verifier against tokens made here with the same crate's signer, and
//! against hand-made attacks (`alg: none`, HS256 keyed with the RSA
//! public key). Keys are the test-only fixtures in `tests/fixtures/jwt/`.
// Tests unwrap freely: a panic there is a failed test.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn config(algorithm: &str) -> JwtConfig {
    JwtConfig {
        algorithm: Some(algorithm.to_owned()),
        hmac_secret: None,
        public_key_file: None,
        jwks_file: None,
        issuer: None,
        audience: None,
        leeway_secs: 30,
        expiry_warning_secs: 30,
    }
}

fn hmac_config() -> JwtConfig {
    JwtConfig {
        hmac_secret: Some(SECRET.to_owned()),
        ..config("HS256")
    }
}

fn verifier(config: &JwtConfig) -> JwtVerifier {
    JwtVerifier::from_config(config).unwrap().unwrap()
}

fn now() -> u64 {
    get_current_timestamp()
}

/// Claims valid for an hour, with `extra` merged in.
fn claims(extra: Value) -> Value {
    let mut claims = json!({"sub": "alice", "exp": now() + 3600, "tf.sub": ["prices.>"]});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, private_pem: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(private_pem)).unwrap();
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

#[test]
fn a_valid_token_grants_its_patterns() {
    let grant = verifier(&hmac_config())
        .verify(&hs256(&claims(json!({"tf.pub": ["orders.alice"]}))))
        .unwrap();
    assert_eq!(&*grant.sub, "alice");
    assert!(grant.exp > now());
    assert!(grant.subscribe.allows("prices.AAPL") && !grant.subscribe.allows("news.AAPL"));
    assert!(grant.publish.allows("orders.alice") && !grant.publish.allows("orders.bob"));
    // No tf.pub: publishing nothing.
    let grant = verifier(&hmac_config()).verify(&hs256(&claims(json!({})))).unwrap();
    assert!(grant.publish.is_empty());
}

#[test]
fn expiry_is_checked_with_the_leeway() {
    let v = verifier(&hmac_config()); // leeway 30 s
    let at = |exp: u64| v.verify(&hs256(&claims(json!({"exp": exp}))));
    assert!(at(now() - 10).is_ok(), "expired 10 s ago, within the leeway");
    assert_eq!(at(now() - 60), Err(JwtError::Expired));
    let strict = verifier(&JwtConfig {
        leeway_secs: 0,
        ..hmac_config()
    });
    assert_eq!(
        strict.verify(&hs256(&claims(json!({"exp": now() - 2})))),
        Err(JwtError::Expired)
    );
    // exp is required.
    let mut no_exp = claims(json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(v.verify(&hs256(&no_exp)).unwrap_err().label(), "malformed");
    let mut no_sub = claims(json!({}));
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(v.verify(&hs256(&no_sub)).unwrap_err().label(), "malformed");
}

#[test]
fn nbf_in_the_future_is_refused() {
    let v = verifier(&hmac_config());
    assert_eq!(
        v.verify(&hs256(&claims(json!({"nbf": now() + 120})))),
        Err(JwtError::NotYetValid)
    );
    assert!(v.verify(&hs256(&claims(json!({"nbf": now() + 5})))).is_ok(), "within the leeway");
    assert!(v.verify(&hs256(&claims(json!({"nbf": now() - 5})))).is_ok());
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let v = verifier(&JwtConfig {
        issuer: Some("https://auth.example".to_owned()),
        audience: Some("tickfan".to_owned()),
        ..hmac_config()
    });
    let good = json!({"iss": "https://auth.example", "aud": "tickfan"});
    assert!(v.verify(&hs256(&claims(good))).is_ok());
    let wrong_aud = json!({"iss": "https://auth.example", "aud": "other"});
    assert_eq!(v.verify(&hs256(&claims(wrong_aud))), Err(JwtError::WrongAudience));
    let wrong_iss = json!({"iss": "https://evil.example", "aud": "tickfan"});
    assert_eq!(v.verify(&hs256(&claims(wrong_iss))), Err(JwtError::WrongIssuer));
    let missing = v.verify(&hs256(&claims(json!({"iss": "https://auth.example"}))));
    assert_eq!(missing.unwrap_err().label(), "malformed");
    // Unconfigured, an aud in the token is not checked.
    assert!(verifier(&hmac_config())
        .verify(&hs256(&claims(json!({"aud": "anything"}))))
        .is_ok());
}

#[test]
fn alg_none_is_refused() {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let body = b64(&claims(json!({})));
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.{body}.", b64(&json!({"alg": alg, "typ": "JWT"})));
        let error = verifier(&hmac_config()).verify(&token).unwrap_err();
        assert_eq!(error.label(), "malformed", "{alg}");
    }
    // A real HS256 token with its signature stripped.
    let token = hs256(&claims(json!({})));
    let stripped = &token[..token.rfind('.').unwrap() + 1];
    assert!(verifier(&hmac_config()).verify(stripped).is_err());
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let rsa = JwtConfig {
        public_key_file: Some(fixture("rsa_public.pem")),
        ..config("RS256")
    };
    let v = verifier(&rsa);
    let c = claims(json!({}));
    assert!(v.verify(&signed(Algorithm::RS256, None, "rsa_private.pem", &c)).is_ok());
    let public_pem = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    assert_eq!(v.verify(&forged), Err(JwtError::WrongAlgorithm));
    // Another RSA algorithm than the pinned one is refused too.
    let rs512 = signed(Algorithm::RS512, None, "rsa_private.pem", &c);
    assert_eq!(v.verify(&rs512), Err(JwtError::WrongAlgorithm));
}

#[test]
fn a_bad_signature_is_refused() {
    let other = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"another secret of at least 32 bytes!!"),
    )
    .unwrap();
    assert_eq!(verifier(&hmac_config()).verify(&other), Err(JwtError::BadSignature));
    // A tampered payload (wider topics) under the original signature.
    let token = hs256(&claims(json!({})));
    let mut parts: Vec<&str> = token.split('.').collect();
    let wider = URL_SAFE_NO_PAD.encode(claims(json!({"tf.sub": [">"]})).to_string());
    parts[1] = &wider;
    assert_eq!(
        verifier(&hmac_config()).verify(&parts.join(".")),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn jwks_keys_are_picked_by_kid() {
    let v = verifier(&JwtConfig {
        jwks_file: Some(fixture("jwks.json")),
        ..config("EdDSA")
    });
    let c = claims(json!({}));
    assert!(v.verify(&signed(Algorithm::EdDSA, Some("k1"), "ed25519_private.pem", &c)).is_ok());
    assert!(v
        .verify(&signed(Algorithm::EdDSA, Some("k2"), "ed25519_other_private.pem", &c))
        .is_ok());
    // Signed by k1's key but naming k2: the signature fails under k2.
    assert_eq!(
        v.verify(&signed(Algorithm::EdDSA, Some("k2"), "ed25519_private.pem", &c)),
        Err(JwtError::BadSignature)
    );
    assert_eq!(
        v.verify(&signed(Algorithm::EdDSA, Some("k9"), "ed25519_private.pem", &c)),
        Err(JwtError::UnknownKid)
    );
    assert_eq!(
        v.verify(&signed(Algorithm::EdDSA, None, "ed25519_private.pem", &c)),
        Err(JwtError::UnknownKid)
    );
}

#[test]
fn pem_public_keys_verify_eddsa() {
    let v = verifier(&JwtConfig {
        public_key_file: Some(fixture("ed25519_public.pem")),
        ..config("EdDSA")
    });
    let c = claims(json!({}));
    assert!(v.verify(&signed(Algorithm::EdDSA, None, "ed25519_private.pem", &c)).is_ok());
    assert_eq!(
        v.verify(&signed(Algorithm::EdDSA, None, "ed25519_other_private.pem", &c)),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn bad_key_files_name_their_key_and_reload_keeps_the_old_keys() {
    let missing = JwtVerifier::from_config(&JwtConfig {
        public_key_file: Some(fixture("no-such.pem")),
        ..config("RS256")
    });
    assert_eq!(missing.unwrap_err().key, "jwt.public_key_file");
    let wrong_family = JwtVerifier::from_config(&JwtConfig {
        jwks_file: Some(fixture("jwks.json")),
        ..config("RS256")
    });
    assert_eq!(wrong_family.unwrap_err().key, "jwt.jwks_file");

    let dir = std::env::temp_dir().join(format!("tickfan-jwt-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    let v = verifier(&JwtConfig {
        jwks_file: Some(jwks.clone()),
        ..config("EdDSA")
    });
    let token = signed(Algorithm::EdDSA, Some("k1"), "ed25519_private.pem", &claims(json!({})));
    std::fs::write(&jwks, "not json").unwrap();
    assert_eq!(v.reload().unwrap_err().key, "jwt.jwks_file");
    assert!(v.verify(&token).is_ok(), "a failed reload keeps the keys");
    // k1 rotated out: only k2 is left.
    let only_k2 = json!({"keys": [serde_json::from_str::<Value>(
        &std::fs::read_to_string(fixture("jwks.json")).unwrap()
    ).unwrap()["keys"][1]]});
    std::fs::write(&jwks, only_k2.to_string()).unwrap();
    v.reload().unwrap();
    assert_eq!(v.verify(&token), Err(JwtError::UnknownKid));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_patterns_and_oversized_tokens_are_refused() {
    let v = verifier(&hmac_config());
    let bad = v.verify(&hs256(&claims(json!({"tf.sub": ["prices..x"]}))));
    assert_eq!(bad, Err(JwtError::BadClaims(BadPattern::EmptySegment)));
    let wrong_type = v.verify(&hs256(&claims(json!({"tf.sub": "prices.>"}))));
    assert_eq!(wrong_type.unwrap_err().label(), "malformed");
    for sub in [String::new(), "u".repeat(MAX_SUB_BYTES + 1)] {
        let error = v.verify(&hs256(&claims(json!({"sub": sub}))));
        assert_eq!(error.unwrap_err().label(), "malformed");
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(v.verify(&huge).unwrap_err().label(), "malformed");
    assert_eq!(v.verify("garbage").unwrap_err().label(), "malformed");
    assert!(!format!("{v:?}").contains(SECRET));
}
