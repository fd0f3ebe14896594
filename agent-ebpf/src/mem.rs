//! Zeroing and word stores that stay inline.
//!
//! Through bpf-linker, LLVM lowers every zero-fill it sees (a `[0; 16]`, a
//! `..Default::default()`, adjacent zero stores it merges) to a call to
//! compiler-builtins' `memset`, which stores one byte per loop turn: about
//! five instructions a byte, 20 ns for a task name and 130 ns for a fresh
//! flow's sums. The stack must be accessed aligned, so a faster generic
//! `memset` cannot exist; volatile word stores are never merged back into
//! such a call.

use core::mem::{align_of, size_of};

use aya_ebpf::helpers::generated;

/// Zeroes `*dst` with 8-byte stores.
///
/// # Safety
/// `dst` must be valid for writes; `T` is 8-aligned and a multiple of 8
/// bytes (checked when compiled).
#[inline(always)]
pub(crate) unsafe fn zero<T>(dst: *mut T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let w = dst as *mut u64;
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        unsafe { w.add(i).write_volatile(0) };
        i += 1;
    }
}

/// Stores 16 bytes (an address, a task name) as four native-order words.
///
/// # Safety
/// `dst` must be valid for writes and 4-aligned: a field at a 4-aligned
/// offset of an 8-aligned record (ring records, `FlowKey`).
#[inline(always)]
pub(crate) unsafe fn store16(dst: *mut [u8; 16], w: [u32; 4]) {
    let d = dst as *mut u32;
    unsafe {
        d.write_volatile(w[0]);
        d.add(1).write_volatile(w[1]);
        d.add(2).write_volatile(w[2]);
        d.add(3).write_volatile(w[3]);
    }
}

/// 16 bytes as the four words [`store16`] stores.
///
/// # Safety
/// `src` must be 4-aligned, as for [`store16`].
#[inline(always)]
pub(crate) unsafe fn load16(src: *const [u8; 16]) -> [u32; 4] {
    unsafe { (src as *const [u32; 4]).read() }
}

/// Writes the current task's name into `dst`. The helper pads with zeros
/// and zeroes all 16 bytes when it fails, so nothing is zeroed first
/// (aya's wrapper zeroes its buffer with a `memset` call, then copies it).
///
/// # Safety
/// `dst` must be valid for 16 bytes of writes.
#[inline(always)]
pub(crate) unsafe fn comm_into(dst: *mut [u8; 16]) {
    unsafe { generated::bpf_get_current_comm(dst.cast(), 16) };
}
