//! Counting writes of each host's override file.
//!
//! fleetroll writes overrides over SSH (temp file + rename in the same
//! directory), so nothing in the session path sees them; the daemon watches
//! every host's override directory with inotify instead. Each rename onto
//! `ronin_settings`, or close after writing it, is one write; unlink or rename
//! away is one removal. If the kernel's event queue overflows, counts are no
//! longer exact and the API says so rather than return a wrong number.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::runtime::{OverrideEvent, OverrideEventKind, Shared};

const OVERRIDE_NAME: &[u8] = b"ronin_settings";

/// Starts watching every host's override directory. The watches are in
/// place when this returns (so no write right after a lab starts is
/// missed); events are read by a thread that ends when the lab stops.
pub(crate) fn spawn(shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
    let watches = add_watches(&shared);
    let fallback = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("fleetroll-lab-inotify".into())
        .spawn(move || {
            if let Some((fd, by_wd)) = watches {
                read_events(shared, fd, by_wd);
            }
        })
        .unwrap_or_else(|e| {
            fail_all(&fallback, &format!("cannot start the inotify thread: {e}"));
            std::thread::spawn(|| {})
        })
}

fn fail_all(shared: &Shared, why: &str) {
    for host in &shared.hosts {
        host.lock().override_tracking = Err(why.to_string());
    }
}

fn add_watches(shared: &Shared) -> Option<(i32, HashMap<i32, usize>)> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        fail_all(
            shared,
            &format!("inotify unavailable: {}", std::io::Error::last_os_error()),
        );
        return None;
    }
    let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_DELETE | libc::IN_MOVED_FROM;
    let mut by_wd: HashMap<i32, usize> = HashMap::new();
    for host in &shared.hosts {
        let dir = host
            .layout
            .on_host(host.os.override_path())
            .and_then(|p| p.parent().map(|d| d.to_path_buf()));
        let Some(dir) = dir else { continue };
        let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
        if wd < 0 {
            host.lock().override_tracking = Err(format!(
                "cannot watch {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        } else {
            by_wd.insert(wd, host.index);
        }
    }
    Some((fd, by_wd))
}

fn read_events(shared: Arc<Shared>, fd: i32, by_wd: HashMap<i32, usize>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    while !shared.stopping.load(Ordering::SeqCst) {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 200) };
        if r <= 0 {
            continue;
        }
        // SAFETY: reading into our own buffer of the given length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let now = SystemTime::now();
        let mut off = 0usize;
        let header = std::mem::size_of::<libc::inotify_event>();
        while off + header <= n as usize {
            // SAFETY: the kernel wrote whole events; read_unaligned copes
            // with the byte buffer's alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_start = off + header;
            let name_end = (name_start + ev.len as usize).min(n as usize);
            let raw = &buf[name_start..name_end];
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            off = name_end;
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                fail_all(&shared, "inotify queue overflowed");
                continue;
            }
            if name != OVERRIDE_NAME {
                continue;
            }
            let Some(&index) = by_wd.get(&ev.wd) else {
                continue;
            };
            let kind = if ev.mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0 {
                OverrideEventKind::Written
            } else {
                OverrideEventKind::Removed
            };
            shared.hosts[index]
                .lock()
                .override_events
                .push(OverrideEvent { at: now, kind });
            // The host works where its override now says.
            crate::taskcluster::refresh_pool(&shared, &shared.hosts[index]);
        }
    }
    // SAFETY: closing our own fd once.
    unsafe {
        libc::close(fd);
    }
}
