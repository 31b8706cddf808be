//! The fleet's own network namespace, for labs behind a bastion.
//!
//! In bastion mode nothing may listen on the hosts' addresses where clients
//! run, yet everything stays on loopback. So the hosts' listeners are bound
//! in a private network namespace that holds nothing but `lo`: a socket stays
//! in the namespace it was created in, whichever thread later accepts on it.
//! The bastion's `sshd -i` is accepted in the machine's namespace and joins
//! the fleet's between fork and exec, so the connections it opens for its
//! clients (`direct-tcpip`) land on the hosts' listeners. The namespace lives
//! as long as the daemon holds its descriptor (or anything holds a socket in
//! it), so it goes away with the lab.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use crate::error::{IoContext, LabError};

struct BindRequest {
    addr: SocketAddr,
    reply: mpsc::SyncSender<io::Result<TcpListener>>,
}

/// A private network namespace with `lo` up, and a thread living in it that
/// binds listeners there on request.
#[derive(Debug)]
pub(crate) struct FleetNet {
    ns: OwnedFd,
    binder: mpsc::Sender<BindRequest>,
}

impl FleetNet {
    /// Creates the namespace. Works inside any network namespace, including
    /// one a test runner made (`unshare -n`): namespaces do not nest, a new
    /// one is simply empty.
    pub(crate) fn create() -> Result<FleetNet, LabError> {
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<OwnedFd>>();
        let (binder, requests) = mpsc::channel::<BindRequest>();
        std::thread::Builder::new()
            .name("fleetroll-lab-net".into())
            .spawn(move || {
                // unshare(CLONE_NEWNET) moves only this thread: the rest of
                // the process stays in the machine's namespace.
                let ns = match enter_new_namespace() {
                    Ok(ns) => ns,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(ns));
                // Ends when the FleetNet (the only sender) is dropped.
                for req in requests {
                    let _ = req.reply.send(TcpListener::bind(req.addr));
                }
            })
            .ctx(|| "spawn the fleet network thread".to_string())?;
        let ns = ready_rx
            .recv()
            .map_err(|_| LabError::Daemon("the fleet network thread died".into()))?
            .ctx(|| "create the fleet's network namespace (unshare -n)".to_string())?;
        Ok(FleetNet { ns, binder })
    }

    /// Binds a non-blocking listener inside the namespace.
    pub(crate) fn bind(&self, addr: SocketAddr) -> Result<TcpListener, LabError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let gone = || LabError::Daemon("the fleet network thread is gone".into());
        self.binder
            .send(BindRequest { addr, reply })
            .map_err(|_| gone())?;
        let l = answer
            .recv()
            .map_err(|_| gone())?
            .ctx(|| format!("listen on {addr} in the fleet's network"))?;
        l.set_nonblocking(true)
            .ctx(|| format!("set {addr} non-blocking"))?;
        Ok(l)
    }

    /// The namespace's descriptor, for [`join`] in a child process.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.ns.as_raw_fd()
    }
}

/// Moves the calling process into the network namespace `ns`.
///
/// Meant for between fork and exec: one raw syscall, no allocation.
pub(crate) fn join(ns: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor the parent keeps open until the
    // child has exec'd (it is close-on-exec, so sshd does not inherit it).
    if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unshares the calling thread's network namespace, brings `lo` up (the
/// kernel then gives it 127.0.0.1/8, so every 127.x.y.z is local) and
/// returns a descriptor of the new namespace.
fn enter_new_namespace() -> io::Result<OwnedFd> {
    // SAFETY: unshare affects only this thread, which exists for this.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    loopback_up()?;
    // SAFETY: a plain open of a NUL-terminated path; the result is checked
    // and owned below.
    let fd = unsafe {
        libc::open(
            c"/proc/thread-self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ip link set lo up`, with the SIOCSIFFLAGS ioctl (no iproute2 needed).
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2); checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the ioctls read and write `ifr`, which lives across the calls;
    // ifru_flags is the member SIOC[GS]IFFLAGS use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
