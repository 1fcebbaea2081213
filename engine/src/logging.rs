//! Logs: `tracing` events to stderr, as human text or JSON lines (`log_format`), at or
//! above `log_level`. Request logs are at debug, so the hot path stays quiet at the
//! default `info`: a disabled event costs one comparison with the level filter. Every
//! error event of a request carries `corr_id`, `shard` and `reason`.
//!
//! A leaf: the configuration's key table parses `log_format` and `log_level` into the
//! types here; nothing here reads the configuration.

use serde::{Deserialize, Serialize};
use tracing::level_filters::LevelFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The least severe events written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// Installs the process-wide subscriber (once; later calls keep the first).
pub fn init(format: LogFormat, level: LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level.filter())
        .with_thread_names(true)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
