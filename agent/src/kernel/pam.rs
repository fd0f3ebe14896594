//! Finds the installed libpam and verifies, against that very build, where
//! its private `struct pam_handle` keeps service, user and rhost (the
//! layout is not ABI). The check opens a real PAM handle in this process
//! with marker values and reads them back at the candidate offsets (x86-64
//! Linux-PAM: 40, 48, 56, as pamspy documents). Reads go through
//! process_vm_readv, so a wrong guess is an error, not a crash. If anything
//! disagrees, the uprobes still report results, without user and rhost.

use std::ffi::{c_char, c_int, c_void, CStr, CString, NulError};
use std::path::{Path, PathBuf};

/// Why the offsets could not be verified (the uprobes still report results).
#[derive(Debug, thiserror::Error)]
pub enum PamError {
    #[error("libpam.so.0 not installed")]
    NotInstalled,
    #[error("{0}")]
    Path(#[from] NulError),
    #[error("dlopen {} failed", .0.display())]
    Dlopen(PathBuf),
    #[error("no {0}")]
    MissingSymbol(&'static str),
    #[error("pam_start returned {0}")]
    Start(c_int),
    /// What was read at the known offsets (service, user, rhost).
    #[error("libpam layout differs from the known one (read {0})")]
    LayoutDiffers(String),
}

const CANDIDATES: [&str; 4] = [
    "/lib/x86_64-linux-gnu/libpam.so.0",
    "/usr/lib/x86_64-linux-gnu/libpam.so.0",
    "/usr/lib64/libpam.so.0",
    "/lib64/libpam.so.0",
];

pub fn find_libpam() -> Option<PathBuf> {
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PamOffsets {
    pub service: u32,
    pub user: u32,
    pub rhost: u32,
}

#[repr(C)]
struct PamConv {
    conv: *const c_void,
    appdata: *mut c_void,
}

type PamStart =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type PamSetItem = unsafe extern "C" fn(*mut c_void, c_int, *const c_void) -> c_int;
type PamEnd = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;

const PAM_RHOST: c_int = 4;

/// Reads `len` bytes at `addr` of our own memory without faulting.
fn safe_read(addr: usize, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut c_void,
        iov_len: len,
    };
    // SAFETY: reading our own address space through the kernel, which
    // reports EFAULT instead of faulting on a bad address.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(buf)
}

fn string_at(pamh: usize, off: u32) -> Option<String> {
    let ptr = safe_read(pamh + off as usize, 8)?;
    let p = usize::from_ne_bytes(ptr.try_into().ok()?);
    if p == 0 {
        return None;
    }
    let bytes = safe_read(p, 64)?;
    let end = bytes.iter().position(|&b| b == 0)?;
    String::from_utf8(bytes[..end].to_vec()).ok()
}

fn sym<T>(lib: *mut c_void, name: &CStr) -> Option<T> {
    // SAFETY: dlsym on a handle we opened; the caller names the right type.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    (!p.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

/// Verifies the candidate offsets against `lib`; Err says why not.
pub fn verify_offsets(lib: &Path) -> Result<PamOffsets, PamError> {
    let path = CString::new(lib.to_string_lossy().as_bytes())?;
    // SAFETY: dlopen with a valid path; the handle is closed below.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(PamError::Dlopen(lib.to_path_buf()));
    }
    let result = (|| {
        let missing = PamError::MissingSymbol;
        let start: PamStart = sym(handle, c"pam_start").ok_or(missing("pam_start"))?;
        let set_item: PamSetItem = sym(handle, c"pam_set_item").ok_or(missing("pam_set_item"))?;
        let end: PamEnd = sym(handle, c"pam_end").ok_or(missing("pam_end"))?;
        let (service, user, rhost) = (c"vigil-offset-check", c"vigil-probe-user", c"192.0.2.123");
        let conv = PamConv {
            conv: std::ptr::null(),
            appdata: std::ptr::null_mut(),
        };
        let mut pamh: *mut c_void = std::ptr::null_mut();
        // SAFETY: documented libpam calls with valid arguments.
        let rc = unsafe { start(service.as_ptr(), user.as_ptr(), &conv, &mut pamh) };
        if rc != 0 || pamh.is_null() {
            return Err(PamError::Start(rc));
        }
        unsafe { set_item(pamh, PAM_RHOST, rhost.as_ptr().cast()) };
        let h = pamh as usize;
        let offsets = PamOffsets {
            service: 40,
            user: 48,
            rhost: 56,
        };
        let got = (
            string_at(h, offsets.service),
            string_at(h, offsets.user),
            string_at(h, offsets.rhost),
        );
        unsafe { end(pamh, 0) };
        let want = (
            Some("vigil-offset-check".to_string()),
            Some("vigil-probe-user".to_string()),
            Some("192.0.2.123".to_string()),
        );
        if got == want {
            Ok(offsets)
        } else {
            Err(PamError::LayoutDiffers(format!("{got:?}")))
        }
    })();
    // SAFETY: closing the handle opened above.
    unsafe { libc::dlclose(handle) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ignored by a plain `cargo test`, so a machine without libpam reports
    /// it as not run instead of passed; `cargo xtask test` runs it.
    #[test]
    #[ignore = "needs libpam.so.0 installed; cargo xtask test runs it"]
    fn installed_libpam_offsets_verify() {
        let lib = find_libpam().expect("this test needs libpam.so.0 in a standard library path");
        let o = verify_offsets(&lib).expect("offsets verify against the installed libpam");
        assert_eq!((o.service, o.user, o.rhost), (40, 48, 56));
    }
}
