//! Vigil's kernel programs. One file per domain; everything is counted,
//! nothing is sent per packet, and the agent's own process is filtered here.
#![no_std]
#![no_main]
// Atomic adds on the flow counters: core's AtomicU64 has no fetch_add on
// the BPF target, the intrinsic lowers to BPF's atomic add.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod auth;
mod config;
mod events;
mod file;
mod flow;
mod mem;
mod network;
mod process;
mod scope;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: bpf_probe_read_* and the ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
