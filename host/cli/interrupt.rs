//! Ctrl-C (and SIGTERM, SIGHUP) during `map`: the first one asks the map to stop cleanly
//! (abort the running tasks, print and log what finished); a second one exits at once.
//!
//! Uses the `ctrlc` crate: its handler runs on an ordinary thread of its own, not inside
//! the signal handler, so it may send on a channel; the map's main loop waits on that
//! channel next to its others, so a signal is seen at once even while every worker is busy.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Receiver;

/// The exit status after an interruption: 128 + SIGINT, as a shell reports it.
pub const INTERRUPTED: u8 = 130;

/// Installs the handler; the receiver gets one message per signal.
pub fn install() -> anyhow::Result<Receiver<()>> {
    let (sender, receiver) = crossbeam_channel::unbounded();
    let seen = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("wasmpool: interrupted again; exiting now");
            std::process::exit(i32::from(INTERRUPTED));
        }
        let _ = sender.send(());
    })?;
    Ok(receiver)
}
