//! Spin, then park: how every worker-side loop waits for its next message.
//!
//! Parking a thread and waking it costs two system calls and a trip through the scheduler
//! (5–30 µs on a virtual machine), paid on every task when tasks come one at a time. A
//! thread that has just finished its work usually gets the next message within a few
//! microseconds (a submit right after a result, the next frame of a stream), so it first
//! polls its channel for up to [`SPIN`], yielding the CPU between polls so that it never
//! holds a core another runnable thread needs, and parks only when nothing came.
//! While work is queued the channel is never empty and nothing spins or parks at all.
//! A thread blocked in `TaskFuture::result` does the same before it sleeps ([`until`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

/// How long a thread polls before it parks, by default. Long enough to cover a
/// submit→result→submit turn-around, short enough to cost nothing noticeable when the pool
/// goes idle.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// The environment variable that sets the spin in microseconds (`0`: park at once, for
/// machines where every CPU cycle is spoken for). Read once per process; worker processes
/// inherit it.
pub const SPIN_ENV: &str = "WASMPOOL_SPIN_US";

fn spin() -> Duration {
    static SPIN_TIME: OnceLock<Duration> = OnceLock::new();
    *SPIN_TIME.get_or_init(|| {
        std::env::var(SPIN_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(SPIN, Duration::from_micros)
    })
}

/// The next message, or `None` once the channel is closed and empty.
pub(crate) fn recv<T>(rx: &Receiver<T>) -> Option<T> {
    recv_for(rx, spin())
}

/// [`recv`], polling for `spin` before parking.
fn recv_for<T>(rx: &Receiver<T>, spin: Duration) -> Option<T> {
    poll_for(rx, spin).unwrap_or_else(|| rx.recv().ok())
}

/// [`recv`], and if nothing came during the spin and the channel is still open, `idle` runs
/// once before the thread parks: work worth doing only when there is nothing else to do
/// (a worker's spare instance). A channel closed meanwhile skips it.
pub(crate) fn recv_or_idle<T>(rx: &Receiver<T>, idle: impl FnOnce()) -> Option<T> {
    poll_for(rx, spin()).unwrap_or_else(|| {
        idle();
        rx.recv().ok()
    })
}

/// Polls `rx` for up to `spin`, yielding between polls: `Some(Some(message))`,
/// `Some(None)` once it is closed and empty, `None` if nothing came.
fn poll_for<T>(rx: &Receiver<T>, spin: Duration) -> Option<Option<T>> {
    let mut deadline = None;
    loop {
        match rx.try_recv() {
            Ok(message) => return Some(Some(message)),
            Err(TryRecvError::Disconnected) => return Some(None),
            Err(TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= *deadline.get_or_insert(now + spin) {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Polls `ready` (yielding between polls) for up to the spin time; whether it became true.
/// (The loom build of the futures never spins: loom models the wait, not the clock.)
#[cfg_attr(all(test, feature = "loom"), allow(dead_code))]
pub(crate) fn until(ready: impl FnMut() -> bool) -> bool {
    until_for(spin(), ready)
}

/// [`until`], polling for `spin`.
fn until_for(spin: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + spin;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recv_gets_every_message_then_none_when_closed() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let sender = std::thread::spawn(move || {
            for n in 0..100 {
                tx.send(n).expect("the receiver is alive");
            }
        });
        let got: Vec<i32> = std::iter::from_fn(|| recv(&rx)).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        sender.join().expect("the sender finishes");
        assert_eq!(recv(&rx), None);
    }

    /// The scheduler state of thread `tid` of this process, from
    /// `/proc/self/task/{tid}/stat`: `R` running or runnable (a thread that spins and yields
    /// stays `R`), `S` asleep (a parked thread).
    #[cfg(target_os = "linux")]
    fn thread_state(tid: &str) -> char {
        let path = format!("/proc/self/task/{tid}/stat");
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // `tid (comm) state ...`; comm may hold spaces and parentheses.
        let after_comm = &stat[stat.rfind(')').expect("(comm)") + 1..];
        after_comm.trim_start().chars().next().expect("a state")
    }

    #[test]
    fn idle_work_runs_only_when_nothing_came_and_the_channel_is_open() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(1).expect("open");
        let mut idled = 0;
        // A message waiting: no idle work.
        assert_eq!(recv_or_idle(&rx, || idled += 1), Some(1));
        assert_eq!(idled, 0);
        // Nothing for the whole spin: the idle work runs, then the message sent meanwhile
        // (here: by the idle work itself) is received.
        let got = recv_or_idle(&rx, || {
            idled += 1;
            tx.send(2).expect("open");
        });
        assert_eq!((got, idled), (Some(2), 1));
        // Closed and empty: no idle work.
        drop(tx);
        assert_eq!(recv_or_idle(&rx, || idled += 1), None);
        assert_eq!(idled, 1);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn recv_parks_when_nothing_comes_within_the_spin() {
        let (tx, rx) = crossbeam_channel::bounded(0);
        let (tid_tx, tid_rx) = crossbeam_channel::unbounded();
        let receiver = std::thread::spawn(move || {
            // `/proc/thread-self` links to `<pid>/task/<tid>`.
            let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
            let tid = link
                .file_name()
                .expect("a tid")
                .to_string_lossy()
                .into_owned();
            // Unbounded: telling does not block (a blocked send would be asleep too).
            tid_tx.send(tid).expect("the test waits");
            recv_for(&rx, Duration::from_millis(1))
        });
        let tid = tid_rx.recv().expect("the receiver starts");
        // Nothing is sent: once its millisecond of spinning is over, the receiver must go
        // to sleep. A receiver that kept polling would stay runnable and fail here.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = thread_state(&tid);
            if state == 'S' {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver never parked (state {state})"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Parked, it still gets the message: a rendezvous send completes only once the
        // receiver has taken it.
        tx.send(7).expect("the receiver is alive");
        assert_eq!(receiver.join().expect("the receiver finishes"), Some(7));
    }

    #[test]
    fn recv_with_no_spin_gets_a_message_sent_later_or_none_when_closed() {
        let (tx, rx) = crossbeam_channel::bounded(0);
        let receiver = std::thread::spawn(move || recv_for(&rx, Duration::ZERO));
        // A rendezvous send completes only once the receiver takes the message.
        tx.send(7).expect("the receiver is alive");
        assert_eq!(receiver.join().expect("the receiver finishes"), Some(7));
        // And a closed channel ends it without a message.
        let (tx, rx) = crossbeam_channel::bounded::<i32>(0);
        let receiver = std::thread::spawn(move || recv_for(&rx, Duration::ZERO));
        drop(tx);
        assert_eq!(receiver.join().expect("the receiver finishes"), None);
    }

    #[test]
    fn until_says_whether_the_condition_came_true() {
        assert!(until_for(Duration::ZERO, || true));
        let mut polls = 0;
        assert!(until_for(Duration::from_secs(30), || {
            polls += 1;
            polls == 3
        }));
        assert!(!until_for(Duration::from_millis(1), || false));
    }
}
