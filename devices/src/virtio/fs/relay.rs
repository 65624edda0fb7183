//! The thread a virtio-fs device runs while active. The backend processes the queues in its
//! own process; what is left here is to turn its "used buffers" eventfds into the
//! transport's interrupts (MSI-X vectors the driver may move or mask, hence not a direct
//! irqfd) and to notice the backend going away.
//!
//! A hang-up on the vhost-user socket means the backend exited or closed the connection: the
//! thread logs it once, marks the device failed and sets `DEVICE_NEEDS_RESET`, so the driver
//! stops waiting for answers that will never come while the rest of the VM carries on.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::super::VirtioInterrupt;
use crate::worker_thread::WorkerThread;

/// What the relay serves: per call eventfd, the queue index it reports to the transport.
pub struct RelayPlan {
    pub calls: Vec<(u16, EventFd)>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    pub socket: UnixStream,
    pub failed: Arc<AtomicBool>,
    /// Names the device in the one line logged on a hang-up.
    pub label: String,
}

/// A running relay; dropping it stops the thread.
pub struct Relay {
    stop: EventFd,
    thread: Option<WorkerThread<()>>,
}

const STOP: u64 = u64::MAX;
const SOCKET: u64 = u64::MAX - 1;

impl Relay {
    pub fn spawn(name: String, plan: RelayPlan) -> io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            plan.socket.as_raw_fd(),
            EpollEvent::new(EventSet::HANG_UP | EventSet::READ_HANG_UP, SOCKET),
        )?;
        for (i, (_, call)) in plan.calls.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                call.as_raw_fd(),
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        let thread_stop = stop.try_clone()?;
        let thread = crate::worker_thread::spawn(name, move || run(&epoll, &thread_stop, &plan))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if let Err(e) = self.stop.write(1) {
                log::error!("cannot signal a virtio-fs relay to stop: {e}");
            }
            if thread.join().is_none() {
                log::error!("a virtio-fs relay thread panicked");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(epoll: &Epoll, stop: &EventFd, plan: &RelayPlan) {
    let mut events = vec![EpollEvent::default(); plan.calls.len() + 2];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("{}: relay epoll failed, stopping: {e}", plan.label);
                return;
            }
        };
        for event in events.iter().take(n) {
            match event.data() {
                STOP => {
                    let _ = stop.read();
                    return;
                }
                SOCKET => {
                    log::error!(
                        "{}: the vhost-user backend closed its socket; the device has failed \
                         (the rest of the VM carries on)",
                        plan.label
                    );
                    plan.failed.store(true, Ordering::Release);
                    // Level-triggered: stop watching, or the hang-up would wake us forever.
                    let _ = epoll.ctl(
                        ControlOperation::Delete,
                        plan.socket.as_raw_fd(),
                        EpollEvent::default(),
                    );
                    plan.interrupt.needs_reset();
                }
                token => {
                    let entry = usize::try_from(token).ok().and_then(|i| plan.calls.get(i));
                    if let Some((queue, call)) = entry {
                        let _ = call.read();
                        plan.interrupt.notify_queue(*queue);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
        tx: Mutex<Option<mpsc::Sender<()>>>,
    }

    impl Recorder {
        fn push(&self, what: String) {
            self.events.lock().unwrap().push(what);
            if let Some(tx) = &*self.tx.lock().unwrap() {
                let _ = tx.send(());
            }
        }
    }

    impl VirtioInterrupt for Recorder {
        fn notify_queue(&self, queue: u16) {
            self.push(format!("queue {queue}"));
        }
        fn notify_config(&self) {
            self.push("config".into());
        }
        fn needs_reset(&self) {
            self.push("needs-reset".into());
        }
    }

    #[test]
    fn calls_become_queue_interrupts_and_a_hang_up_fails_the_device() {
        let (tx, rx) = mpsc::channel();
        let recorder = Arc::new(Recorder::default());
        *recorder.tx.lock().unwrap() = Some(tx);
        let (ours, theirs) = UnixStream::pair().unwrap();
        let call0 = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let call1 = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let trigger1 = call1.try_clone().unwrap();
        let failed = Arc::new(AtomicBool::new(false));
        let mut relay = Relay::spawn(
            "fs-relay-test".into(),
            RelayPlan {
                calls: vec![(0, call0), (1, call1)],
                interrupt: recorder.clone(),
                socket: ours,
                failed: failed.clone(),
                label: "fs test".into(),
            },
        )
        .unwrap();
        trigger1.write(1).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(*recorder.events.lock().unwrap(), vec!["queue 1"]);
        assert!(!failed.load(Ordering::Acquire));
        drop(theirs);
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(failed.load(Ordering::Acquire));
        assert_eq!(
            *recorder.events.lock().unwrap(),
            vec!["queue 1", "needs-reset"]
        );
        // Still relaying after the hang-up, and stopping is prompt.
        trigger1.write(1).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        relay.stop();
        relay.stop();
    }
}
