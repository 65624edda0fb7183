//! Where device worker threads come from.
//!
//! Workers are started when the guest activates a device, which happens on a vCPU thread.
//! A thread inherits its creator's system-call filters, so a worker created there could never
//! do more than a vCPU may. The VMM therefore installs a [`Launcher`] once per process that
//! creates workers from a thread of its choosing and confines each one to the device role
//! (see `vmm::seccomp`). Without a launcher (unit tests, `--seccomp false`) workers are
//! plain threads of the caller.

use std::any::Any;
use std::io;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::thread::JoinHandle;

/// What a worker returns, type-erased so one launcher serves every device kind.
pub type WorkerOutput = Box<dyn Any + Send>;
/// The body of a worker thread.
pub type WorkerBody = Box<dyn FnOnce() -> WorkerOutput + Send>;

/// Creates worker threads on behalf of the devices.
pub trait Launcher: Send + Sync {
    /// Starts a thread named `name` running `body`.
    fn launch(&self, name: String, body: WorkerBody) -> io::Result<JoinHandle<WorkerOutput>>;
}

static LAUNCHER: OnceLock<Box<dyn Launcher>> = OnceLock::new();

/// Routes every later worker start through `launcher`. Only the first call counts; returns
/// `false` if a launcher was already installed.
pub fn set_launcher(launcher: Box<dyn Launcher>) -> bool {
    LAUNCHER.set(launcher).is_ok()
}

/// A running worker thread whose body returns `T`.
pub struct WorkerThread<T> {
    handle: JoinHandle<WorkerOutput>,
    output: PhantomData<fn() -> T>,
}

impl<T: Send + 'static> WorkerThread<T> {
    /// Waits for the thread; `None` if it panicked.
    pub fn join(self) -> Option<T> {
        let output = self.handle.join().ok()?;
        output.downcast::<T>().ok().map(|boxed| *boxed)
    }
}

/// Starts worker thread `name` running `body`, through the installed launcher if any.
pub fn spawn<T, F>(name: String, body: F) -> io::Result<WorkerThread<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let body: WorkerBody = Box::new(move || Box::new(body()) as WorkerOutput);
    let handle = match LAUNCHER.get() {
        Some(launcher) => launcher.launch(name, body)?,
        None => std::thread::Builder::new().name(name).spawn(body)?,
    };
    Ok(WorkerThread {
        handle,
        output: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_result_comes_back_typed() {
        let thread = spawn("wt-test".into(), || {
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
        assert_eq!(thread.join(), Some(Some("wt-test".to_owned())));
    }
}
