//! Wire types shared by Vigil's kernel programs and its userspace agent.
//!
//! Every type here is `repr(C)` with explicit padding fields and a size
//! assertion, so both targets agree on the layout byte for byte. No `bool`,
//! `usize`, pointers or enums cross the boundary: kinds are `u16` and are
//! turned into [`EventKind`] with `TryFrom`, never by transmuting.
#![no_std]

pub mod enforce;
pub mod event;
pub mod flow;
pub mod maps;
pub mod offsets;

#[cfg(feature = "user")]
mod user;

pub use event::*;
pub use flow::*;
pub use offsets::*;
