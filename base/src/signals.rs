//! The signals a tokio service answers (cargo feature `signals`): SIGTERM (systemd's stop) and
//! SIGINT (Ctrl-C) shut it down; SIGHUP asks it to reload its configuration, for the services
//! that can.
//!
//! A service that cannot reload registers no SIGHUP handler, so SIGHUP keeps its default action
//! (the process ends) instead of being silently ignored.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// A watch that turns `true` on the first SIGTERM or SIGINT, for the service's tasks to stop on.
/// With `reload`, every SIGHUP until then asks for a reload on it (requests arriving while one is
/// pending are merged: give it a channel of capacity 1).
///
/// The handlers are in place when it returns; a task waits for the signals. Call it inside the
/// runtime.
pub fn shutdown_watch(reload: Option<mpsc::Sender<()>>) -> watch::Receiver<bool> {
    let handler = |kind: SignalKind, name: &str| signal(kind).unwrap_or_else(|e| panic!("{name} handler: {e}"));
    let mut term = handler(SignalKind::terminate(), "SIGTERM");
    let mut int = handler(SignalKind::interrupt(), "SIGINT");
    let hup = reload.map(|reload| (handler(SignalKind::hangup(), "SIGHUP"), reload));
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let Some((mut hup, reload)) = hup else {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop.send(true);
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    let _ = reload.try_send(());
                }
            }
        }
        let _ = stop.send(true);
    });
    shutdown
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("in time")
    }

    fn raise(signal: libc::c_int) {
        // SAFETY: kill(2) with this process's id and a signal it handles
        assert_eq!(unsafe { libc::kill(libc::getpid(), signal) }, 0);
    }

    /// (SIGTERM and SIGINT stay handled by tokio for the rest of the test process.)
    #[tokio::test]
    async fn sighup_asks_for_reloads_until_sigterm_stops() {
        let (tx, mut reload) = mpsc::channel(1);
        let mut shutdown = shutdown_watch(Some(tx));
        for _ in 0..2 {
            raise(libc::SIGHUP);
            within(reload.recv()).await.expect("a reload request");
        }
        assert!(!*shutdown.borrow());
        raise(libc::SIGTERM);
        within(shutdown.changed()).await.unwrap();
        assert!(*shutdown.borrow());
    }
}
