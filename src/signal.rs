//! Ctrl-C and SIGTERM, for every subcommand. The handler can be set once
//! per process, so it lives here: it raises a flag that loops check and
//! fires a channel that blocking waits select on.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, bounded};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHANNEL: OnceLock<Receiver<()>> = OnceLock::new();

/// Installs the handler; later calls do nothing.
pub fn install() {
    CHANNEL.get_or_init(|| {
        // Capacity 1 and try_send: a second Ctrl-C while the first is being
        // handled must not block inside the signal thread.
        let (tx, rx) = bounded(1);
        if let Err(e) = ctrlc::set_handler(move || {
            INTERRUPTED.store(true, Ordering::Release);
            let _ = tx.try_send(());
        }) {
            log::warn!("cannot handle Ctrl-C: {e}");
        }
        rx
    });
}

/// Whether Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Acquire)
}

/// Fires once per signal; select on it next to other channels.
pub fn channel() -> Receiver<()> {
    install();
    CHANNEL.get().expect("installed just above").clone()
}

/// Blocks until Ctrl-C or SIGTERM.
pub fn wait() {
    if interrupted() {
        return;
    }
    let _ = channel().recv();
}
