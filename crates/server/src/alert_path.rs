//! The alert path's own threads.
//!
//! Every device connection is a task on the main runtime; at tens of
//! thousands of messages a second those tasks keep its workers busy, and
//! a task there waits its turn behind thousands of others. The tasks an
//! SOS passes through after the intake log (the ingest pipeline, the
//! alert desk, the gRPC server that streams alerts to the hotline) run on
//! a runtime of their own instead: the operating system shares the CPU
//! between its threads and the connections' threads, so an alarm never
//! queues behind device traffic inside one scheduler.
use tokio::runtime::{Handle, Runtime};

/// Threads of the alert path: the pipeline and the desk each keep one
/// busy under load; the gRPC server's calls share them.
const WORKERS: usize = 2;

/// Owns the alert path's runtime; stopping it never blocks the async
/// context it is dropped in.
pub struct AlertRuntime(Option<Runtime>);

impl AlertRuntime {
    pub fn start() -> std::io::Result<AlertRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("alert-path")
            .enable_all()
            .build()?;
        Ok(AlertRuntime(Some(rt)))
    }

    pub fn handle(&self) -> Handle {
        self.0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .expect("the alert runtime runs until dropped")
    }
}

impl Drop for AlertRuntime {
    fn drop(&mut self) {
        // Everything on it has been joined by then (or the server is
        // failing to start): nothing to wait for.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
