//! Central reporting: the durable spool, the Kafka producer that drains it,
//! and the authenticated command and indicator feeds.

pub mod commands;
pub mod consumer;
pub mod kafka;
pub mod spool;
