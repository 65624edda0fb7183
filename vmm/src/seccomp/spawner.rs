//! The `vmm-spawner` thread: starts device workers on behalf of the vCPU threads.
//!
//! A worker created by the vCPU that activated its device would inherit the vCPU filter and
//! could not reach its backend. The spawner is created by the main thread, runs under the
//! `vmm` role (its own install, or the main thread's it inherits), and starts each worker,
//! which then adds the `device` filter before running its body. The vCPU waits for the answer over a channel,
//! so activation stays synchronous.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use devices::worker_thread::{Launcher, WorkerBody, WorkerOutput};

use super::{enter, Role, SeccompError};

struct Request {
    name: String,
    body: WorkerBody,
    reply: mpsc::SyncSender<io::Result<JoinHandle<WorkerOutput>>>,
}

struct Spawner {
    requests: mpsc::Sender<Request>,
}

impl Launcher for Spawner {
    fn launch(&self, name: String, body: WorkerBody) -> io::Result<JoinHandle<WorkerOutput>> {
        let gone = || io::Error::other("the vmm-spawner thread has stopped");
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .send(Request { name, body, reply })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

/// Starts the spawner and makes it the devices' launcher; with `install_own` it confines itself
/// to the `vmm` role (otherwise it inherits that filter from its creator).
pub(super) fn start(install_own: bool) -> Result<(), SeccompError> {
    let (requests, incoming) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("vmm-spawner".into())
        .spawn(move || {
            if install_own {
                enter(Role::Vmm);
            }
            for request in incoming {
                let body = request.body;
                let started = std::thread::Builder::new()
                    .name(request.name)
                    .spawn(move || {
                        // Landlock first: the device filter has no Landlock calls.
                        crate::landlock::confine_worker();
                        enter(Role::Device);
                        body()
                    });
                // If the requester is gone, so is the channel the worker's body waits on
                // for its device state: the worker ends at once.
                let _ = request.reply.send(started);
            }
        })
        .map_err(SeccompError::Spawner)?;
    if !devices::worker_thread::set_launcher(Box::new(Spawner { requests })) {
        return Err(SeccompError::AlreadySetUp);
    }
    Ok(())
}
