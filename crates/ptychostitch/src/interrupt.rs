//! A caller's way to stop a long run early (Ctrl-C in Python, a cancel button in a GUI).

use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;

/// A check that a run calls between small steps of work; when it returns `true` the run stops
/// with [`Error::Interrupted`] and its outputs are unspecified.
///
/// The reference path checks once per canvas row of every patch, so even a huge canvas notices
/// within milliseconds; the fast path finishes in milliseconds and does not check.
#[derive(Clone, Default)]
pub struct Interrupt(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl Interrupt {
    /// An interrupt that asks `stop` whether to stop.
    pub fn new(stop: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(stop)))
    }

    /// `Err(Interrupted)` when the caller asked to stop.
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        match &self.0 {
            Some(stop) if stop() => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Interrupt(set)"
        } else {
            "Interrupt(none)"
        })
    }
}
