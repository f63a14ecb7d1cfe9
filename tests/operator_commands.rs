//! The operator commands of the binary: `tickfan check-config [FILE]`
//! (exit 0 and the effective config with secrets redacted, or exit 2 and
//! the key at fault) and `tickfan gen-token` (a token a broker with the
//! same secret accepts, with exactly the topics asked for). Running the
//! broker with no command is what every other test file does.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::json;

const SECRET: &str = "operator-test-secret-0123456789abcdefgh";

/// A config file in the temp dir holding `text`, removed on drop.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> TempConfig {
        let path =
            std::env::temp_dir().join(format!("tickfan-ops-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let file = TempConfig::new(
        "valid",
        &format!(
            "[auth]\npublish_tokens = [\"pub-secret-1\", \"pub-secret-2\"]\n\
             [jwt]\nalgorithm = \"HS256\"\nhmac_secret = \"{SECRET}\"\naudience = \"feeds\"\n"
        ),
    );
    let output = run_cli(&["--workers", "3", "check-config", file.path()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.status.code(), Some(0));
    // The effective values: the file's and the flag's.
    let effective: toml::Table = stdout.parse().expect("check-config prints TOML");
    assert_eq!(effective["server"]["workers"].as_integer(), Some(3));
    assert_eq!(effective["jwt"]["audience"].as_str(), Some("feeds"));
    assert_eq!(effective["jwt"]["hmac_secret"].as_str(), Some("<redacted>"));
    assert_eq!(
        effective["auth"]["publish_tokens"].as_array().map(Vec::len),
        Some(2),
        "the number of tokens shows"
    );
    for secret in [SECRET, "pub-secret-1", "pub-secret-2"] {
        assert!(!stdout.contains(secret) && !text(&output.stderr).contains(secret));
    }
}

#[test]
fn check_config_exits_2_naming_the_key_at_fault() {
    let bad_value = TempConfig::new("bad-value", "[jwt]\nalgorithm = \"none\"\n");
    let missing_key_file = TempConfig::new(
        "missing-key",
        "[jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"/nonexistent/key.pem\"\n",
    );
    let short_secret = TempConfig::new(
        "short-secret",
        "[jwt]\nalgorithm = \"HS256\"\nhmac_secret = \"too-short-secret\"\n",
    );
    for (file, key) in [
        (bad_value.path(), "jwt.algorithm"),
        (missing_key_file.path(), "jwt.public_key_file"),
        (short_secret.path(), "jwt.hmac_secret"),
        ("/nonexistent/tickfan.toml", "/nonexistent/tickfan.toml"),
    ] {
        let output = run_cli(&["check-config", file]);
        assert_eq!(output.status.code(), Some(2), "{file}: {output:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(key), "{file}: {stderr}");
        assert!(!stderr.contains("too-short-secret"), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing printed as if valid");
    }
    // --config is what is checked without FILE.
    let output = run_cli(&["--config", bad_value.path(), "check-config"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn gen_token_makes_a_token_the_broker_accepts_for_exactly_its_topics() {
    let secret = format!("jwt.hmac_secret={SECRET}");
    let jwt = ["--set", "jwt.algorithm=HS256", "--set", &secret];
    let mut args = jwt.to_vec();
    args.extend([
        "gen-token",
        "--sub",
        "alice",
        "--sub-topics",
        "prices.>,news.AAPL",
        "--ttl",
        "1h",
    ]);
    let output = run_cli(&args);
    assert!(output.status.success(), "{output:?}");
    let token = text(&output.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    let mut broker_args = jwt.to_vec();
    // A publish token closes publishing to everyone without a right to it.
    broker_args.extend([
        "--set",
        "auth.subscribe_requires_token=true",
        "--publish-token",
        "service",
    ]);
    let broker = Broker::start(&broker_args);
    let mut alice = broker.pubsub_with(&format!("{WS}?token={token}"), &[]);
    alice.subscribe("prices.AAPL.bid");
    alice.subscribe("news.AAPL");
    alice.send_text(&json!({"op": "sub", "topic": "news.MSFT"}).to_string());
    assert_eq!(alice.expect_event("error")["code"], "forbidden");
    // No tf.pub: publishing is refused.
    alice.publish("prices.AAPL.bid", "1");
    assert_eq!(alice.expect_event("error")["code"], "forbidden");

    // Without an HMAC secret there is nothing to sign with; a bad pattern
    // is refused before a token is printed.
    let output = run_cli(&["gen-token", "--sub", "alice"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(text(&output.stderr).contains("jwt.hmac_secret"));
    let mut bad = jwt.to_vec();
    bad.extend(["gen-token", "--sub", "a", "--sub-topics", "prices..x"]);
    let output = run_cli(&bad);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
}
