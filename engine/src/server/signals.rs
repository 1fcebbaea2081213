//! The process-wide flags the signal handlers set: SIGINT and SIGTERM ask for a stop,
//! SIGHUP for a reload.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::server::error::StartError;

/// The process-wide flags the signal handlers set.
pub(super) struct Signals {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) hangup: Arc<AtomicBool>,
}

pub(super) fn install_signals() -> Result<Signals, StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let signals = Signals {
        stop: Arc::new(AtomicBool::new(false)),
        hangup: Arc::new(AtomicBool::new(false)),
    };
    let flags = [
        (SIGINT, "SIGINT", &signals.stop),
        (SIGTERM, "SIGTERM", &signals.stop),
        (SIGHUP, "SIGHUP", &signals.hangup),
    ];
    for (number, signal, flag) in flags {
        signal_hook::flag::register(number, Arc::clone(flag))
            .map_err(|source| StartError::Signal { signal, source })?;
    }
    Ok(signals)
}
