//! `tracing` set-up for the binaries: logs on stderr, level from `RUST_LOG` (default info),
//! as text or as one JSON object per line (`--log-format json`, `INDEXFERRY_LOG_FORMAT`).
//!
//! In JSON mode every line a binary writes on stderr is such an object: the final error
//! ([`fatal`]) and the progress lines written with [`say`] included. Each object carries the
//! spans it was logged in (`span`, `spans`) with their fields.

use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown log format {other:?}: text or json")),
        }
    }
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// The format [`init`] set (text before it ran).
pub fn format() -> Format {
    FORMAT.get().copied().unwrap_or_default()
}

pub fn init(format: Format) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

/// The error a command ends with: `error: <msg>` on one line, or an `ERROR` JSON object.
pub fn fatal(msg: &str) {
    let msg = msg.replace('\n', " ");
    match format() {
        Format::Text => eprintln!("error: {msg}"),
        Format::Json => tracing::error!(exit_code = 1, "{msg}"),
    }
}

/// A progress line for the operator on stderr, `format!`-style: as written in text mode, an
/// `INFO` JSON object in JSON mode.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::logging::say(format_args!($($arg)*)) };
}

/// What [`say!`] expands to.
pub fn say(msg: std::fmt::Arguments<'_>) {
    match format() {
        Format::Text => eprintln!("{msg}"),
        Format::Json => tracing::info!("{msg}"),
    }
}
