//! The worker thread a virtio device runs while active: it sleeps in `epoll` on the queues'
//! notification eventfds and a stop eventfd, and hands each notification to the device's
//! [`QueueHandler`].
//!
//! Work per wake-up is bounded by the handler (it reports when it left chains in the queue);
//! the worker then re-arms that queue's eventfd itself, so a guest that keeps a queue full
//! cannot starve the other queues or delay a stop request.

use std::io;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::worker_thread::WorkerThread;

/// The device side of a worker.
pub trait QueueHandler: Send + 'static {
    /// The guest notified queue `queue` (position in the worker's eventfd list). Returns
    /// `true` if chains were left for a later round because the budget ran out.
    fn process(&mut self, queue: usize) -> bool;
}

/// A running worker; stopping it returns the handler (and what it owns) to the device.
/// Dropping it stops the thread too.
pub struct WorkerHandle<H: QueueHandler> {
    stop: EventFd,
    thread: Option<WorkerThread<Option<H>>>,
}

impl<H: QueueHandler> WorkerHandle<H> {
    /// Starts thread `name` serving `kicks` (one eventfd per queue) with `handler`. On
    /// failure the handler comes back with the error.
    pub fn spawn(name: String, kicks: Vec<EventFd>, handler: H) -> Result<Self, (io::Error, H)> {
        let setup = || -> io::Result<(EventFd, EventFd, Epoll)> {
            let stop = EventFd::new(libc::EFD_NONBLOCK)?;
            let epoll = Epoll::new()?;
            epoll.ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, kicks.len() as u64),
            )?;
            for (i, kick) in kicks.iter().enumerate() {
                epoll.ctl(
                    ControlOperation::Add,
                    kick.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, i as u64),
                )?;
            }
            let thread_stop = stop.try_clone()?;
            Ok((stop, thread_stop, epoll))
        };
        let (stop, thread_stop, epoll) = match setup() {
            Ok(v) => v,
            Err(e) => return Err((e, handler)),
        };
        // The handler travels through a channel so that it can be recovered if the thread
        // cannot be created.
        let (tx, rx) = std::sync::mpsc::channel::<H>();
        let spawned = crate::worker_thread::spawn(name, move || {
            let handler = rx.recv().ok()?;
            Some(run(epoll, thread_stop, kicks, handler))
        });
        match spawned {
            Ok(thread) => match tx.send(handler) {
                Ok(()) => Ok(Self {
                    stop,
                    thread: Some(thread),
                }),
                Err(std::sync::mpsc::SendError(handler)) => {
                    let _ = thread.join();
                    Err((
                        io::Error::other("worker thread ended before it started"),
                        handler,
                    ))
                }
            },
            // The closure (and the receiver) died with the failed spawn; the handler was
            // never sent, so it is still ours.
            Err(e) => Err((e, handler)),
        }
    }

    /// Asks the thread to stop, waits for it and returns its handler (`None` if it was
    /// already stopped or the thread died).
    pub fn stop(&mut self) -> Option<H> {
        let thread = self.thread.take()?;
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot signal a virtio worker to stop: {e}");
        }
        match thread.join() {
            Some(handler) => handler,
            None => {
                log::error!("a virtio worker thread panicked");
                None
            }
        }
    }
}

impl<H: QueueHandler> Drop for WorkerHandle<H> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

use std::os::fd::AsRawFd;

fn run<H: QueueHandler>(epoll: Epoll, stop: EventFd, kicks: Vec<EventFd>, mut handler: H) -> H {
    let stop_token = kicks.len() as u64;
    let mut events = vec![EpollEvent::default(); kicks.len() + 1];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("virtio worker epoll failed, stopping: {e}");
                return handler;
            }
        };
        for event in events.iter().take(n) {
            let token = event.data();
            if token == stop_token {
                let _ = stop.read();
                return handler;
            }
            let Some(kick) = usize::try_from(token).ok().and_then(|i| kicks.get(i)) else {
                continue;
            };
            // Non-blocking: a spurious wake-up (EAGAIN) still processes the queue, harmlessly.
            let _ = kick.read();
            if handler.process(token as usize) {
                if let Err(e) = kick.write(1) {
                    log::error!("cannot re-arm a virtio queue notification: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    struct Recorder {
        tx: mpsc::Sender<usize>,
        /// Rounds that claim leftover work before finishing.
        rounds_left: u32,
    }

    impl QueueHandler for Recorder {
        fn process(&mut self, queue: usize) -> bool {
            let _ = self.tx.send(queue);
            if self.rounds_left > 0 {
                self.rounds_left -= 1;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn kicks_reach_the_handler_and_leftover_work_is_rescheduled() {
        let (tx, rx) = mpsc::channel();
        let kicks = vec![
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        ];
        let kick1 = kicks[1].try_clone().unwrap();
        let Ok(mut worker) =
            WorkerHandle::spawn("test-worker".into(), kicks, Recorder { tx, rounds_left: 2 })
        else {
            panic!("cannot start the worker");
        };
        kick1.write(1).unwrap();
        for _ in 0..3 {
            assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(1));
        }
        let handler = worker.stop().unwrap();
        assert_eq!(
            handler.rounds_left, 0,
            "the handler comes back with its state"
        );
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        // Stopping twice (and dropping) is harmless.
        assert!(worker.stop().is_none());
    }
}
