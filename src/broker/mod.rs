//! Topics: the only code that knows about them. The sharded topic table
//! assigns each publish its seq and hands the tick, encoded once, to the
//! workers with subscribers; each worker keeps its own subscriber lists.

pub mod auth;
pub mod client_op;
pub mod events;
pub mod mailbox;
pub mod subscriptions;
pub mod tick;
pub mod topic_name;
pub mod topic_table;
