// This file exists to enable the library target, which lets the userspace
// crate name this one as a build dependency for cache invalidation.
#![no_std]
