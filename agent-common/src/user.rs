//! Userspace-only glue: `aya::Pod` for every type that crosses a map.

use crate::enforce::{BlockValue, PrefixCacheCpu, PrefixSlot};
use crate::{AgentConfig, FlowKey, FlowStats, ListenKey, SockOwner};

// SAFETY: all of these are repr(C), contain only integers and byte arrays,
// and have explicit padding fields, so every bit pattern is valid.
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for FlowStats {}
unsafe impl aya::Pod for SockOwner {}
unsafe impl aya::Pod for ListenKey {}
unsafe impl aya::Pod for AgentConfig {}
unsafe impl aya::Pod for BlockValue {}
unsafe impl aya::Pod for PrefixSlot {}
unsafe impl aya::Pod for PrefixCacheCpu {}
