//! The vsock device's worker thread: waits in `epoll` on the three queues' notifications,
//! the muxer's socket readiness, a stop eventfd and the muxer's nearest deadline, and moves
//! packets between the queues and the [`Muxer`].
//!
//! Work per wake-up is bounded by the queue sizes: the tx queue is drained at most one
//! queue's worth of chains per round, the rx queue filled at most one queue's worth of
//! packets; leftovers re-arm their queue's eventfd so other work (and stop) is not starved.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::worker_thread::WorkerThread;

use super::muxer::Muxer;
use super::packet::{self, RxBuffer};
use crate::dma::DmaGuard;
use crate::legacy::RateLimitedLog;
use crate::virtio::{chain_allowed, rings_allowed, Activation, GuestMemory, VirtioInterrupt};

/// Queue indices (§5.10.2).
pub const RX: u16 = 0;
pub const TX: u16 = 1;
pub const EVENT: u16 = 2;

const TOKEN_STOP: u64 = 100;
const TOKEN_MUXER: u64 = 101;
/// Socket events handled per wake-up.
const MUXER_BUDGET: usize = 128;

struct WorkerQueue {
    queue: Queue,
    kick: EventFd,
    broken: bool,
}

/// Everything an active vsock device works with.
pub struct VsockWorker {
    mem: GuestMemory,
    dma: DmaGuard,
    /// Indexed by queue number; `None` if the driver did not enable it.
    queues: [Option<WorkerQueue>; 3],
    interrupt: Arc<dyn VirtioInterrupt>,
    muxer: Muxer,
    log: RateLimitedLog,
    payload: Vec<u8>,
}

impl VsockWorker {
    pub fn new(activation: Activation, muxer: Muxer) -> Self {
        let mut queues: [Option<WorkerQueue>; 3] = [None, None, None];
        for q in activation.queues {
            if let Some(slot) = queues.get_mut(usize::from(q.index)) {
                *slot = Some(WorkerQueue {
                    queue: q.queue,
                    kick: q.kick,
                    broken: false,
                });
            }
        }
        Self {
            mem: activation.mem,
            dma: activation.dma,
            queues,
            interrupt: activation.interrupt,
            muxer,
            log: RateLimitedLog::default(),
            payload: Vec::new(),
        }
    }

    pub fn into_muxer(self) -> Muxer {
        self.muxer
    }

    #[cfg(test)]
    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    fn break_queue(&mut self, index: u16, error: &dyn std::fmt::Display) {
        if let Some(Some(wq)) = self.queues.get_mut(usize::from(index)) {
            wq.broken = true;
        }
        self.log.warn(format_args!(
            "virtio-vsock queue {index}: {error}; device needs reset"
        ));
        self.interrupt.needs_reset();
    }

    /// Moves up to one queue's worth of guest packets to the muxer; true if more wait.
    pub fn process_tx(&mut self) -> bool {
        let Some(Some(wq)) = self.queues.get_mut(usize::from(TX)) else {
            return false;
        };
        if wq.broken {
            return false;
        }
        if !rings_allowed(&self.dma, &wq.queue) {
            self.break_queue(TX, &"its rings are not in shared memory");
            return false;
        }
        let mut budget = wq.queue.size();
        let mut completed = 0u32;
        let mut more = false;
        let mut fault: Option<String> = None;
        loop {
            if budget == 0 {
                more = true;
                break;
            }
            let chain = match wq.queue.iter(&self.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    fault = Some(e.to_string());
                    break;
                }
            };
            let Some(chain) = chain else {
                match wq.queue.enable_notification(&self.mem) {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        fault = Some(e.to_string());
                        break;
                    }
                }
            };
            budget -= 1;
            let head = chain.head_index();
            if !chain_allowed(&self.dma, &self.mem, &wq.queue, &chain) {
                fault = Some(format!("chain {head} points into private memory"));
                break;
            }
            match packet::parse_tx(&self.mem, chain) {
                Ok(pkt) => self.muxer.on_guest_packet(&pkt),
                Err(e) => self
                    .log
                    .warn(format_args!("virtio-vsock: dropped a tx packet: {e}")),
            }
            if let Err(e) = wq.queue.add_used(&self.mem, head, 0) {
                fault = Some(e.to_string());
                break;
            }
            completed += 1;
        }
        if completed > 0 {
            self.notify(TX);
        }
        if let Some(e) = fault {
            self.break_queue(TX, &e);
            return false;
        }
        more
    }

    /// Fills up to one queue's worth of rx buffers with packets from the muxer; true if
    /// buffers ran out while packets were waiting and the budget is what stopped it.
    pub fn process_rx(&mut self) -> bool {
        let Some(Some(wq)) = self.queues.get_mut(usize::from(RX)) else {
            return false;
        };
        if wq.broken {
            return false;
        }
        if !rings_allowed(&self.dma, &wq.queue) {
            self.break_queue(RX, &"its rings are not in shared memory");
            return false;
        }
        let mut budget = wq.queue.size();
        let mut completed = 0u32;
        let mut more = false;
        let mut fault: Option<String> = None;
        while self.muxer.has_pending_rx() {
            if budget == 0 {
                more = true;
                break;
            }
            let chain = match wq.queue.iter(&self.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    fault = Some(e.to_string());
                    break;
                }
            };
            let Some(chain) = chain else {
                // No buffer: sleep until the guest adds one (or more socket data arrives).
                match wq.queue.enable_notification(&self.mem) {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        fault = Some(e.to_string());
                        break;
                    }
                }
            };
            budget -= 1;
            let head = chain.head_index();
            if !chain_allowed(&self.dma, &self.mem, &wq.queue, &chain) {
                fault = Some(format!("chain {head} points into private memory"));
                break;
            }
            let buf = match RxBuffer::new(chain) {
                Ok(b) => b,
                Err(e) => {
                    // Unusable buffer: hand it back empty so the guest can see its mistake.
                    self.log.warn(format_args!("virtio-vsock: rx buffer: {e}"));
                    if let Err(e) = wq.queue.add_used(&self.mem, head, 0) {
                        fault = Some(e.to_string());
                        break;
                    }
                    completed += 1;
                    continue;
                }
            };
            let Some(hdr) = self.muxer.next_rx(buf.max_payload(), &mut self.payload) else {
                wq.queue.go_to_previous_position();
                break;
            };
            let used = match buf.write(&self.mem, &hdr, &self.payload) {
                Ok(n) => n,
                Err(e) => {
                    self.log.warn(format_args!("virtio-vsock: rx write: {e}"));
                    0
                }
            };
            if let Err(e) = wq.queue.add_used(&self.mem, head, used) {
                fault = Some(e.to_string());
                break;
            }
            completed += 1;
        }
        if completed > 0 {
            self.notify(RX);
        }
        if let Some(e) = fault {
            self.break_queue(RX, &e);
            return false;
        }
        more
    }

    fn notify(&mut self, index: u16) {
        let Some(Some(wq)) = self.queues.get_mut(usize::from(index)) else {
            return;
        };
        match wq.queue.needs_notification(&self.mem) {
            Ok(false) => {}
            // A spurious interrupt is harmless, a lost one stalls the guest.
            Ok(true) | Err(_) => self.interrupt.notify_queue(index),
        }
    }

    fn rearm(&self, index: u16) {
        if let Some(Some(wq)) = self.queues.get(usize::from(index)) {
            if let Err(e) = wq.kick.write(1) {
                log::error!("virtio-vsock: cannot re-arm queue {index}: {e}");
            }
        }
    }

    /// One round of work after a wake-up.
    pub fn round(&mut self, kicked: &[u64], muxer_ready: bool) {
        for &t in kicked {
            if let Some(Some(wq)) = self.queues.get(t as usize) {
                let _ = wq.kick.read();
            }
        }
        if muxer_ready {
            self.muxer.handle_events(MUXER_BUDGET);
        }
        if kicked.contains(&u64::from(TX)) && self.process_tx() {
            self.rearm(TX);
        }
        if self.process_rx() {
            self.rearm(RX);
        }
    }

    fn run(mut self, epoll: Epoll, stop: EventFd) -> Self {
        let mut events = vec![EpollEvent::default(); 8];
        let mut next_deadline: Option<Instant> = None;
        loop {
            let timeout = next_deadline.map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                i32::try_from(ms.saturating_add(1)).unwrap_or(i32::MAX)
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("virtio-vsock worker epoll failed, stopping: {e}");
                    return self;
                }
            };
            let mut kicked = Vec::with_capacity(3);
            let mut muxer_ready = false;
            for ev in events.iter().take(n) {
                match ev.data() {
                    TOKEN_STOP => {
                        let _ = stop.read();
                        return self;
                    }
                    TOKEN_MUXER => muxer_ready = true,
                    t => kicked.push(t),
                }
            }
            self.round(&kicked, muxer_ready);
            next_deadline = self.muxer.sweep(Instant::now());
            // Sweeping may have queued resets for the guest.
            if self.process_rx() {
                self.rearm(RX);
            }
        }
    }
}

/// The running worker thread.
pub struct VsockWorkerHandle {
    stop: EventFd,
    thread: Option<WorkerThread<Option<VsockWorker>>>,
}

impl VsockWorkerHandle {
    /// Starts thread `name`; on failure the worker comes back with the error.
    pub fn spawn(name: String, worker: VsockWorker) -> Result<Self, Box<(io::Error, VsockWorker)>> {
        let setup = |w: &VsockWorker| -> io::Result<(EventFd, EventFd, Epoll)> {
            let stop = EventFd::new(libc::EFD_NONBLOCK)?;
            let epoll = Epoll::new()?;
            let add = |fd, token| {
                epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
            };
            add(stop.as_raw_fd(), TOKEN_STOP)?;
            add(w.muxer.epoll_fd(), TOKEN_MUXER)?;
            for (i, q) in w.queues.iter().enumerate() {
                if let Some(q) = q {
                    add(q.kick.as_raw_fd(), i as u64)?;
                }
            }
            Ok((stop.try_clone()?, stop, epoll))
        };
        let (stop, thread_stop, epoll) = match setup(&worker) {
            Ok(v) => v,
            Err(e) => return Err(Box::new((e, worker))),
        };
        let (tx, rx) = std::sync::mpsc::channel::<VsockWorker>();
        let spawned = crate::worker_thread::spawn(name, move || {
            let worker = rx.recv().ok()?;
            // Packets may have queued up (clients connected) before activation.
            Some(worker.run(epoll, thread_stop))
        });
        match spawned {
            Ok(thread) => match tx.send(worker) {
                Ok(()) => Ok(Self {
                    stop,
                    thread: Some(thread),
                }),
                Err(std::sync::mpsc::SendError(worker)) => {
                    let _ = thread.join();
                    Err(Box::new((
                        io::Error::other("vsock worker ended before it started"),
                        worker,
                    )))
                }
            },
            Err(e) => Err(Box::new((e, worker))),
        }
    }

    /// Stops the thread and returns the worker (`None` if the thread died).
    pub fn stop(&mut self) -> Option<VsockWorker> {
        let thread = self.thread.take()?;
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot signal the vsock worker to stop: {e}");
        }
        match thread.join() {
            Some(w) => w,
            None => {
                log::error!("the vsock worker thread panicked");
                None
            }
        }
    }
}

impl Drop for VsockWorkerHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

use std::os::fd::AsRawFd;
