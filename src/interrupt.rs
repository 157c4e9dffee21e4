//! Ctrl-C: the first press asks the run to stop (no new node starts, a training
//! loop stops at its next step, finished nodes stay cached); the second exits at
//! once. Long loops poll [`requested`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// Whether the user asked to stop.
pub fn requested() -> bool {
    PRESSES.load(Ordering::Relaxed) > 0
}

/// Installs the handler (once per process). Failing to install one (another
/// handler owns the signal) only means Ctrl-C ends the process at once.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if PRESSES.fetch_add(1, Ordering::SeqCst) == 0 {
                eprintln!(
                    "\ninterrupted: finishing nothing new (press Ctrl-C again to exit at once)"
                );
            } else {
                std::process::exit(130);
            }
        });
    });
}
