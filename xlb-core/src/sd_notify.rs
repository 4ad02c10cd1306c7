//! systemd's service notification protocol (sd_notify(3)): newline-separated
//! `KEY=VALUE` assignments in one datagram to the Unix socket named by `$NOTIFY_SOCKET`.
//! A unit with `Type=notify` counts as started only once `READY=1` arrives.
//!
//! Hand-written rather than a crate: it is one `sendto` on a datagram socket. Child
//! processes (notify scripts, MISC_CHECK) inherit `$NOTIFY_SOCKET`, but systemd's default
//! `NotifyAccess=main` ignores every sender but the daemon itself.
use std::{
    io,
    os::{
        linux::net::SocketAddrExt,
        unix::{
            ffi::OsStrExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
};

/// The variable systemd sets for services of `Type=notify`.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (for example `"READY=1"`, `"STOPPING=1"`) to the service manager.
///
/// Returns `Ok(false)` when `$NOTIFY_SOCKET` is unset (not started by systemd, or not as
/// `Type=notify`), `Ok(true)` once sent. Errors: the socket cannot be reached, or the
/// address is neither a path nor an abstract name (`@name`); sd_notify(3)'s `vsock:`
/// addresses (VMs) are refused as unsupported.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else { return Ok(false) };
    let address = match socket.as_bytes() {
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
        [b'/', ..] => SocketAddr::from_pathname(&socket)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("${NOTIFY_SOCKET}={}: only a socket path or an @abstract name is supported", socket.to_string_lossy()),
            ));
        }
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}
