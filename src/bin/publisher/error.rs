//! Why the publisher cannot run (exit code 2).

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("aggregator at {0} did not become healthy in time")]
    NotReady(String),
    #[error("cannot read {url}/stats: {source}")]
    Stats { url: String, source: reqwest::Error },
    #[error("invalid argument: {0}")]
    Args(&'static str),
    #[error("cannot write {0}: {1}")]
    AckedOut(std::path::PathBuf, std::io::Error),
}
