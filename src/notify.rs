//! systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING datagrams to
//! `$NOTIFY_SOCKET`.
//!
//! Fifty lines instead of a crate: one `sendto` on a Unix datagram socket. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing. Failures are logged
//! once and otherwise ignored: a service must not die because its supervisor is
//! gone.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, path))
        });
        Notifier { socket }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    pub fn send(&self, state: &str) {
        let Some((sock, path)) = &self.socket else {
            return;
        };
        let result = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        } else {
            sock.send_to(state.as_bytes(), path)
        };
        if let Err(e) = result {
            tracing::debug!("cannot notify systemd: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading configuration");
    }
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`), if it is meant for
/// this process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
