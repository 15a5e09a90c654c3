//! The error type of the shared layer.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Recipe { path: PathBuf, message: String },
    #[error("invalid setting {field}: {message}")]
    Setting { field: String, message: String },
    #[error("{cluster} cluster: {message}")]
    Cluster { cluster: String, message: String },
    #[error("{cluster} cluster answered {status} to {method} {path}: {reason}")]
    ClusterStatus {
        cluster: String,
        method: String,
        path: String,
        status: u16,
        error_type: Option<String>,
        reason: String,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The Elasticsearch error `type` of a refused request, such as `index_not_found_exception`.
    pub fn error_type(&self) -> Option<&str> {
        match self {
            Error::ClusterStatus { error_type, .. } => error_type.as_deref(),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Error::ClusterStatus { status, .. } => Some(*status),
            _ => None,
        }
    }
}
