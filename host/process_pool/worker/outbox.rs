//! The worker's way out: every frame it sends (results, output lines, the greeting) is
//! appended to one buffer, and one writer thread moves that buffer to the channel.
//!
//! Writing each result on its own costs a `write` here, a `read` and a wake-up of the
//! pool's reader there, and a wake-up of this writer: several system calls per task, more
//! than a tiny task itself. So frames are appended under a lock (no allocation per frame,
//! no channel message per frame) and the writer is rung only when the buffer stops being
//! empty, or when the sender says the frames are [urgent](Outbox::push): the executor says
//! so when at most one task is left in hand (a lone task's result leaves at once), or when
//! the results it held back are as many as the tasks left (the pool then refills the
//! worker while those run; `worker.rs`). Frames that
//! are not urgent (a result with more tasks of its batch to follow, an output line) wait at
//! most [`COALESCE`] after the first of them, whatever the tasks after them do: a result is
//! never held up by a long task behind it, and the pool's deadline grace (seconds) is far
//! larger. Order is kept: one buffer, appended in order.

use std::io::{BufWriter, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};

use crate::sync::lock;

use super::super::framing::CHANNEL_BUFFER;

/// The longest a frame that is not urgent waits in the buffer before the writer sends it
/// (with everything appended meanwhile).
pub(crate) const COALESCE: Duration = Duration::from_micros(200);

/// The buffer and the writer's bell. Shared by every thread that sends frames.
pub(crate) struct Outbox {
    pending: Mutex<Pending>,
    /// Rings the writer; one ring in flight is enough (the writer reads the state anyway).
    bell: Sender<()>,
}

/// What waits to be written.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Write now, do not wait for more.
    urgent: bool,
    /// No more frames: the writer writes what is here and stops. Also set when a write
    /// failed (the pool is gone): frames appended afterwards are dropped.
    closed: bool,
}

impl Outbox {
    /// An outbox writing to `channel` on a thread of its own (named `name`).
    pub(crate) fn start(
        channel: impl Write + Send + 'static,
        name: &str,
    ) -> std::io::Result<(Arc<Outbox>, JoinHandle<()>)> {
        let (bell, rung) = bounded(1);
        let outbox = Arc::new(Outbox {
            pending: Mutex::new(Pending::default()),
            bell,
        });
        let writer = {
            let outbox = outbox.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || outbox.write_loop(channel, &rung))?
        };
        Ok((outbox, writer))
    }

    /// Appends frames with `append` (which must leave the buffer as it was when it fails)
    /// and rings the writer if it needs to know: the buffer was empty, or the frames are
    /// `urgent` (send them, and all before them, now). Frames pushed after the outbox
    /// closed are dropped (`append` is not called).
    pub(crate) fn push<E>(
        &self,
        urgent: bool,
        append: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ring = {
            let mut pending = lock(&self.pending);
            if pending.closed {
                return Ok(());
            }
            let was_empty = pending.bytes.is_empty();
            append(&mut pending.bytes)?;
            let newly_urgent = urgent && !pending.urgent;
            pending.urgent |= urgent;
            was_empty || newly_urgent
        };
        if ring {
            let _ = self.bell.try_send(());
        }
        Ok(())
    }

    /// [`push`](Self::push) of bytes already framed.
    pub(crate) fn push_bytes(&self, urgent: bool, bytes: &[u8]) {
        let _ = self.push(urgent, |out| {
            out.extend_from_slice(bytes);
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// No more frames: the writer sends what is pending and stops.
    pub(crate) fn close(&self) {
        lock(&self.pending).closed = true;
        let _ = self.bell.try_send(());
    }

    /// The writer: waits for a ring, lets frames gather for up to [`COALESCE`] unless they
    /// are urgent, then writes them all and flushes. Ends at [`close`](Self::close) or when
    /// a write fails.
    fn write_loop(&self, channel: impl Write, rung: &Receiver<()>) {
        let mut out = BufWriter::with_capacity(CHANNEL_BUFFER, channel);
        let mut sending = Vec::new();
        while crate::spin::recv(rung).is_some() {
            let first = Instant::now();
            loop {
                let pending = lock(&self.pending);
                if pending.urgent || pending.closed || pending.bytes.is_empty() {
                    break;
                }
                drop(pending);
                let left = (first + COALESCE).saturating_duration_since(Instant::now());
                match rung.recv_timeout(left) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            let closed = {
                let mut pending = lock(&self.pending);
                std::mem::swap(&mut pending.bytes, &mut sending);
                pending.urgent = false;
                pending.closed
            };
            let written = out.write_all(&sending).and_then(|()| out.flush());
            sending.clear();
            if written.is_err() {
                // The pool is gone: nobody reads; drop what comes.
                let mut pending = lock(&self.pending);
                pending.closed = true;
                pending.bytes = Vec::new();
                return;
            }
            if closed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One write: when, and what.
    type Written = (Instant, Vec<u8>);

    /// A channel that records what is written, and when.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Written>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).push((Instant::now(), buf.to_vec()));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn all(recorder: &Recorder) -> Vec<u8> {
        lock(&recorder.0)
            .iter()
            .flat_map(|(_, b)| b.clone())
            .collect()
    }

    #[test]
    fn frames_leave_in_order_and_close_sends_the_rest() {
        let recorder = Recorder::default();
        let (outbox, writer) = Outbox::start(recorder.clone(), "t").unwrap();
        for i in 0..100u8 {
            outbox.push_bytes(i % 7 == 0, &[i]);
        }
        outbox.close();
        writer.join().unwrap();
        assert_eq!(all(&recorder), (0..100u8).collect::<Vec<_>>());
        // After the close, nothing more is taken.
        outbox.push_bytes(true, &[1]);
        assert_eq!(all(&recorder).len(), 100);
    }

    #[test]
    fn a_frame_that_is_not_urgent_waits_at_most_the_coalescing_time() {
        let recorder = Recorder::default();
        let (outbox, writer) = Outbox::start(recorder.clone(), "t").unwrap();
        let pushed = Instant::now();
        outbox.push_bytes(false, b"x");
        // Written within the coalescing time (and a generous margin for a busy machine),
        // although nothing else comes and nobody flushes.
        let waited = Instant::now();
        while all(&recorder).is_empty() {
            assert!(waited.elapsed() < Duration::from_secs(5), "never written");
            std::thread::sleep(Duration::from_micros(50));
        }
        let written = lock(&recorder.0)[0].0;
        assert!(
            written >= pushed + COALESCE.mul_f32(0.9),
            "not held back at all"
        );
        outbox.close();
        writer.join().unwrap();
    }

    #[test]
    fn an_urgent_frame_is_written_at_once() {
        let recorder = Recorder::default();
        let (outbox, writer) = Outbox::start(recorder.clone(), "t").unwrap();
        outbox.push_bytes(false, b"a");
        // An urgent push of nothing sends what is there.
        outbox.push_bytes(true, b"");
        let waited = Instant::now();
        while all(&recorder).is_empty() {
            assert!(waited.elapsed() < Duration::from_secs(5), "never written");
            std::thread::yield_now();
        }
        assert_eq!(all(&recorder), b"a");
        outbox.close();
        writer.join().unwrap();
    }

    #[test]
    fn a_failed_append_leaves_nothing_and_a_failed_write_stops_the_writer() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (outbox, writer) = Outbox::start(Broken, "t").unwrap();
        assert_eq!(outbox.push(true, |_| Err("no")), Err("no"));
        outbox.push_bytes(true, b"lost");
        writer.join().unwrap();
        // Frames after the failure are dropped, not kept.
        outbox.push_bytes(true, b"more");
        assert!(lock(&outbox.pending).bytes.is_empty());
    }
}
