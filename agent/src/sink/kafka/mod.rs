//! Kafka: the durable spool, the producer that drains it, and the
//! authenticated command and indicator feeds the agent consumes.

pub mod commands;
pub mod consumer;
pub mod producer;
pub mod spool;
