//! Process GUIDs: one name per process for its whole life, unique across
//! pid reuse, reboots and hosts, so a SIEM can join records and build the
//! process tree (`process.entity_id` in ECS, `process.uid` in OCSF).
//!
//! The GUID hashes the boot id (`/proc/sys/kernel/random/boot_id`, random
//! per boot, so per host too), the pid and the start time in clock ticks
//! since boot. The start time is the kernel's (`task->start_boottime`, read
//! at fork and exec, or `/proc/PID/stat` field 22 when seeding): a process
//! cannot choose it, and exec does not change it, so a process keeps its
//! GUID across exec and a pid reused later gets another one.

use std::sync::Arc;

use sha2::{Digest, Sha256};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Makes GUIDs for the processes of this boot.
#[derive(Debug, Clone)]
pub struct Guids {
    boot_id: String,
}

impl Guids {
    /// For this host's current boot. Without a readable boot id (no procfs)
    /// a random one stands in: GUIDs stay unique, but a restarted agent
    /// names the same process differently, which the log says.
    pub fn from_host() -> Guids {
        match std::fs::read_to_string(BOOT_ID) {
            Ok(id) if !id.trim().is_empty() => Guids::new(id.trim()),
            Ok(_) | Err(_) => {
                tracing::warn!(
                    "cannot read {BOOT_ID}: process GUIDs use a random boot id and change if the agent restarts"
                );
                Guids::new(&crate::util::id::new_id())
            }
        }
    }

    pub fn new(boot_id: &str) -> Guids {
        Guids {
            boot_id: boot_id.to_string(),
        }
    }

    /// The GUID of process `pid` started `start_ticks` clock ticks after
    /// boot: an RFC 9562 version 8 UUID (its bits are ours to define).
    pub fn guid(&self, pid: u32, start_ticks: u64) -> Arc<str> {
        let mut h = Sha256::new();
        h.update(b"vigil process guid v1\0");
        h.update(self.boot_id.as_bytes());
        h.update([0]);
        h.update(pid.to_le_bytes());
        h.update(start_ticks.to_le_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        b[6] = (b[6] & 0x0f) | 0x80; // version 8
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Arc::from(format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_process_same_guid_and_every_input_matters() {
        let g = Guids::new("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        let a = g.guid(4242, 123_456);
        assert_eq!(a, g.guid(4242, 123_456), "stable");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8: {a}");
        assert!("89ab".contains(&a[19..20]), "variant: {a}");
        assert_ne!(a, g.guid(4242, 123_457), "pid reused later");
        assert_ne!(a, g.guid(4243, 123_456), "another pid");
        let other_boot = Guids::new("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1");
        assert_ne!(a, other_boot.guid(4242, 123_456), "another boot or host");
    }

    #[test]
    fn this_host_has_a_boot_id() {
        let id = std::fs::read_to_string(BOOT_ID).expect("boot_id");
        let g = Guids::from_host();
        assert_eq!(g.boot_id, id.trim());
    }
}
