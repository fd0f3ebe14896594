//! Where records go: JSON lines and Kafka.

pub mod jsonl;
pub mod kafka;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open output {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    #[error("serializing a record: {0}")]
    Json(#[from] serde_json::Error),
}
