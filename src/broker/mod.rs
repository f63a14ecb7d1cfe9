//! Topics: the only code that knows about them. The sharded topic table
//! assigns each publish its seq and hands the tick, encoded once, to the
//! workers with subscribers; each worker keeps its own subscriber lists.
//!
//! - [`topic_table`]: seq, epoch, history and the workers with subscribers,
//!   per topic, in shards; [`mailbox`]: a worker's inbox of ticks.
//! - [`client_op`]: the client's JSON operations; [`refused`]: the `error`
//!   event each refusal is answered with; [`events`]: the server's events.
//! - [`auth`]: the rights a token grants; [`jwt`]: verifying per-user
//!   tokens; [`topic_pattern`]: the topic patterns they grant;
//!   [`subscriptions`]: a worker's own subscriber lists and `max_hz` caps;
//!   [`pending_ticks`]: a topic's ticks held once per worker until its sweep.
//! - [`cluster_link`]: what the table needs of a cluster engine (cluster
//!   mode numbers ticks by the stream instead of here).
//! - [`demo_feed`]: the synthetic market `--demo-feed` publishes.
//!
//! Topic names, ops and publish data arrive from the network, so the whole
//! layer is held to the lints that rule out panics and silent wrapping
//! (tests are exempt); any `allow` says why its site is safe.

pub mod auth;
pub mod client_op;
pub mod cluster_link;
pub mod demo_feed;
pub mod events;
pub mod jwt;
pub mod mailbox;
pub mod pending_ticks;
pub mod refused;
pub mod subscriptions;
pub mod topic_pattern;
pub mod topic_table;
