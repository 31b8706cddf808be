//! The few facts about this machine OpenSSH's expansions use: the host
//! name (`%l`, `%L`), the uid (`%i`, and who may own an included file), and
//! other users' home directories (`~user`).

use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// gethostname(2); empty when it fails.
pub(super) fn hostname() -> String {
    let mut buf = vec![0u8; 1025];
    // SAFETY: the buffer is valid for `len` bytes; gethostname writes at
    // most that many and we terminate it ourselves.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// getuid(2).
pub(super) fn uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory of ours.
    unsafe { libc::getuid() }
}

/// A passwd entry's name and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Passwd {
    pub name: String,
    pub home: PathBuf,
}

/// The passwd entry of `user` (getpwnam_r).
pub(super) fn user_by_name(user: &str) -> Option<Passwd> {
    let name = CString::new(user).ok()?;
    lookup(|pwd, buf, len, result| {
        // SAFETY: every pointer is valid for the call; see `lookup`.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result) }
    })
}

/// The passwd entry of the real uid, as OpenSSH takes its `pw` (getpwuid_r).
pub(super) fn current_user() -> Option<Passwd> {
    let uid = uid();
    lookup(|pwd, buf, len, result| {
        // SAFETY: every pointer is valid for the call; see `lookup`.
        unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
    })
}

/// Calls a getpw*_r function with a buffer grown until it fits, and copies
/// the name and home directory out.
fn lookup(
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
) -> Option<Passwd> {
    let mut len = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: an all-zero passwd is a valid value (null pointers and
        // zero ids); it is only read after the call filled it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let r = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if r == libc::ERANGE && len < 1 << 20 {
            len *= 4;
            continue;
        }
        if r != 0 || result.is_null() || pwd.pw_name.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        // SAFETY: on success the strings point into `buf`, NUL-terminated,
        // and `buf` is still alive.
        let (name, home) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
        return Some(Passwd {
            name: name.to_string_lossy().into_owned(),
            home: PathBuf::from(home.to_string_lossy().into_owned()),
        });
    }
}
