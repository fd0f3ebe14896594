//! Wire records to typed events. Every read is length-checked and done with
//! `read_unaligned` (ring buffer records carry no alignment promise), and
//! kinds go through `TryFrom`, so a short, unknown or garbled record is a
//! clear error and never a panic.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common as wire;
use agent_common::EventKind;

use crate::pipeline::event::{
    AuthEvent, ClosedFlow, ConnEvent, ConnKind, Event, ExecEvent, ExitEvent, FileWriteEvent,
    ForkEvent,
};
use crate::record::FileId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte event header")]
    ShortHeader { got: usize, need: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("unsupported wire version {version} for {kind:?} (agent speaks {expected})")]
    Version {
        kind: EventKind,
        version: u16,
        expected: u16,
    },
    #[error("{kind:?} record truncated: {got} bytes, need {need}")]
    Truncated {
        kind: EventKind,
        got: usize,
        need: usize,
    },
    #[error("{kind:?} record declares size {declared}, expected {expected}")]
    SizeMismatch {
        kind: EventKind,
        declared: u32,
        expected: usize,
    },
    #[error("unknown address family {0}")]
    Family(u16),
    #[error(
        "closed flow with key protocol {proto} and IP version {ip_version} (TCP over 4 or 6 only)"
    )]
    FlowKey { proto: u8, ip_version: u8 },
}

/// Reads a `T` from the start of `data` after checking the length.
fn read<T: Copy>(data: &[u8]) -> Option<T> {
    if data.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked above; T is a plain repr(C) wire type for which
    // every bit pattern is valid; read_unaligned has no alignment demand.
    Some(unsafe { std::ptr::read_unaligned(data.as_ptr().cast::<T>()) })
}

pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn split_argv(bytes: &[u8]) -> Vec<String> {
    let mut args: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The buffer ends with the last argument's NUL.
    if args.last().is_some_and(|a| a.is_empty()) {
        args.pop();
    }
    args
}

fn addr(family: u16, raw: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        wire::AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        wire::AF_INET6 => {
            let v6 = Ipv6Addr::from(raw);
            // Dual-stack sockets talking IPv4 show as ::ffff:a.b.c.d.
            Ok(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        other => Err(DecodeError::Family(other)),
    }
}

/// A kernel file identity in the numbering `stat(2)` uses: the kernel
/// keeps `dev_t` as major << 20 | minor, userspace as glibc's makedev.
pub fn file_id(raw: wire::FileId) -> FileId {
    let (major, minor) = (raw.dev >> 20, raw.dev & 0xf_ffff);
    FileId {
        dev: libc::makedev(major, minor),
        ino: raw.ino,
        generation: Some(raw.generation),
    }
}

/// The kind of a record, checked, without decoding the body.
pub fn peek_kind(data: &[u8]) -> Result<EventKind, DecodeError> {
    let header: wire::EventHeader = read(data).ok_or(DecodeError::ShortHeader {
        got: data.len(),
        need: size_of::<wire::EventHeader>(),
    })?;
    EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)
}

pub fn decode(data: &[u8]) -> Result<Event, DecodeError> {
    let header: wire::EventHeader = read(data).ok_or(DecodeError::ShortHeader {
        got: data.len(),
        need: size_of::<wire::EventHeader>(),
    })?;
    let kind = EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
    if header.version != wire::WIRE_VERSION {
        return Err(DecodeError::Version {
            kind,
            version: header.version,
            expected: wire::WIRE_VERSION,
        });
    }
    let need = kind.record_size();
    if header.size as usize != need {
        return Err(DecodeError::SizeMismatch {
            kind,
            declared: header.size,
            expected: need,
        });
    }
    if data.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            got: data.len(),
            need,
        });
    }
    let h = header;
    Ok(match kind {
        EventKind::Exec => {
            let e: wire::ExecEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            let flen = (e.filename_len as usize).min(wire::PATH_LEN);
            let alen = (e.argv_len as usize).min(wire::ARGV_LEN);
            Event::Exec(ExecEvent {
                ktime_ns: h.ktime_ns,
                pid: h.tgid,
                tid: h.tid,
                ppid: (e.flags & wire::EXEC_PPID_UNKNOWN == 0).then_some(e.ppid),
                uid: e.uid,
                gid: e.gid,
                cgroup_id: e.cgroup_id,
                comm: cstr(&e.comm),
                filename: cstr(&e.filename[..flen]),
                argv: split_argv(&e.argv[..alen]),
                argv_truncated: e.flags & wire::EXEC_ARGV_TRUNCATED != 0,
                argv_unavailable: e.flags & wire::EXEC_ARGV_UNAVAILABLE != 0,
                start_boottime_ns: (e.flags & wire::EXEC_START_KNOWN != 0)
                    .then_some(e.start_boottime_ns),
                exe_file: (e.flags & wire::EXEC_FILE_KNOWN != 0).then(|| file_id(e.exe)),
                // (uid_t)-1 is "never logged in" (daemons, early boot).
                auid: (e.flags & wire::EXEC_AUID_KNOWN != 0 && e.auid != u32::MAX)
                    .then_some(e.auid),
                exe_links: (e.flags & wire::EXEC_NAME_KNOWN != 0).then_some(e.exe_links),
                exe_name: (e.flags & wire::EXEC_NAME_KNOWN != 0).then(|| {
                    cstr(&e.exe_name[..(e.exe_name_len as usize).min(wire::EXE_NAME_LEN)])
                }),
            })
        }
        EventKind::Exit => {
            let e: wire::ExitEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            Event::Exit(ExitEvent {
                ktime_ns: h.ktime_ns,
                pid: h.tgid,
                tid: h.tid,
                comm: cstr(&e.comm),
                raw_code: (e.flags & wire::EXIT_CODE_KNOWN != 0).then_some(e.exit_code),
            })
        }
        EventKind::Fork => {
            let e: wire::ForkEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            Event::Fork(ForkEvent {
                ktime_ns: h.ktime_ns,
                parent_pid: h.tgid,
                child_pid: e.child_tgid,
                maybe_thread: e.flags & wire::FORK_MAYBE_THREAD != 0,
                start_boottime_ns: (e.flags & wire::FORK_START_KNOWN != 0)
                    .then_some(e.child_start_boottime_ns),
            })
        }
        EventKind::Auth => {
            let e: wire::AuthEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            let known = e.flags & wire::AUTH_FIELDS_KNOWN != 0;
            let field = |b: &[u8]| Some(cstr(b)).filter(|s| known && !s.is_empty());
            Event::Auth(AuthEvent {
                ktime_ns: h.ktime_ns,
                pid: h.tgid,
                uid: e.uid,
                comm: cstr(&e.comm),
                retval: e.retval,
                service: field(&e.service),
                user: field(&e.user),
                rhost: field(&e.rhost),
            })
        }
        EventKind::FileWrite => {
            let e: wire::FileEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            let n = (e.path_len as usize).min(wire::PATH_LEN);
            Event::FileWrite(FileWriteEvent {
                ktime_ns: h.ktime_ns,
                pid: h.tgid,
                comm: cstr(&e.comm),
                path: cstr(&e.path[..n]),
                file: (e.flags & wire::FILE_ID_KNOWN != 0).then(|| file_id(e.file)),
            })
        }
        EventKind::Connect
        | EventKind::Accept
        | EventKind::Close
        | EventKind::ConnectFailed
        | EventKind::Refused => {
            let e: wire::ConnEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            let conn_kind = match kind {
                EventKind::Connect => ConnKind::Connect,
                EventKind::Accept => ConnKind::Accept,
                EventKind::Close => ConnKind::Close,
                EventKind::Refused => ConnKind::Refused,
                _ => ConnKind::ConnectFailed,
            };
            Event::Conn(conn_event(conn_kind, &h, &e)?)
        }
        EventKind::CloseFlow => {
            let e: wire::CloseFlowEvent = read(data).ok_or(DecodeError::Truncated {
                kind,
                got: data.len(),
                need,
            })?;
            let conn = conn_event(ConnKind::Close, &h, &e.conn)?;
            // Not in the map (accounting off, evicted): a plain close, and
            // the agent looks for the flow itself after the linger.
            if e.conn.flags & wire::CONN_NO_FLOW != 0 {
                return Ok(Event::Conn(conn));
            }
            if e.key.proto != wire::IPPROTO_TCP || !matches!(e.key.ip_version, 4 | 6) {
                return Err(DecodeError::FlowKey {
                    proto: e.key.proto,
                    ip_version: e.key.ip_version,
                });
            }
            Event::CloseFlow(Box::new(ClosedFlow {
                conn,
                key: e.key,
                stats: e.stats,
            }))
        }
    })
}

fn conn_event(
    kind: ConnKind,
    h: &wire::EventHeader,
    e: &wire::ConnEvent,
) -> Result<ConnEvent, DecodeError> {
    let owner_known = e.flags & wire::CONN_OWNER_UNKNOWN == 0 && h.tgid != 0;
    Ok(ConnEvent {
        kind,
        ktime_ns: h.ktime_ns,
        pid: owner_known.then_some(h.tgid),
        uid: e.uid,
        comm: if owner_known {
            cstr(&e.comm)
        } else {
            String::new()
        },
        proto: e.protocol as u8,
        src_ip: addr(e.family, e.saddr)?,
        src_port: e.sport,
        dst_ip: addr(e.family, e.daddr)?,
        dst_port: e.dport,
        old_state: e.old_state,
    })
}

/// Byte images of wire records, for tests and the benchmark's recorded input.
pub mod fixtures {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is a repr(C) wire type with explicit padding fields.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: EventKind, ktime_ns: u64, tgid: u32) -> wire::EventHeader {
        wire::EventHeader {
            kind: kind as u16,
            version: wire::WIRE_VERSION,
            size: kind.record_size() as u32,
            ktime_ns,
            tgid,
            tid: tgid,
        }
    }

    fn fill<const N: usize>(s: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        let n = s.len().min(N);
        out[..n].copy_from_slice(&s[..n]);
        out
    }

    pub fn exec(pid: u32, ppid: u32, path: &str, argv: &[&str]) -> Vec<u8> {
        exec_as(pid, ppid, 1000, path, argv, None)
    }

    /// An exec by `uid`, mapping the file `exe` (kernel dev numbering) when given.
    pub fn exec_as(
        pid: u32,
        ppid: u32,
        uid: u32,
        path: &str,
        argv: &[&str],
        exe: Option<wire::FileId>,
    ) -> Vec<u8> {
        let mut args = Vec::new();
        for a in argv {
            args.extend_from_slice(a.as_bytes());
            args.push(0);
        }
        let comm = path.rsplit('/').next().unwrap_or(path).as_bytes();
        let e = wire::ExecEvent {
            header: header(EventKind::Exec, 1_000, pid),
            ppid,
            uid,
            gid: uid,
            flags: wire::EXEC_START_KNOWN
                | wire::EXEC_AUID_KNOWN
                | if exe.is_some() {
                    wire::EXEC_FILE_KNOWN
                } else {
                    0
                },
            filename_len: path.len().min(wire::PATH_LEN) as u32,
            argv_len: args.len().min(wire::ARGV_LEN) as u32,
            // Logged in as the user it runs as.
            auid: uid,
            _pad: 0,
            cgroup_id: 1,
            // 12.34 s after boot: 1234 ticks at USER_HZ 100.
            start_boottime_ns: 12_340_000_000 + pid as u64 * 10_000_000,
            exe: exe.unwrap_or_default(),
            comm: fill(comm),
            filename: fill(path.as_bytes()),
            argv: fill(&args),
            exe_links: 0,
            exe_name_len: 0,
            exe_name: [0; wire::EXE_NAME_LEN],
        };
        bytes_of(&e)
    }

    /// An exec of a file the kernel names `name` with `links` links,
    /// handed to execve as `path` (`/proc/self/fd/3` for a memfd).
    pub fn exec_named(pid: u32, path: &str, name: &str, links: u32) -> Vec<u8> {
        let mut bytes = exec(pid, 1, path, &[path]);
        let off = std::mem::offset_of!(wire::ExecEvent, exe_links);
        bytes[off..off + 4].copy_from_slice(&links.to_ne_bytes());
        let len = name.len().min(wire::EXE_NAME_LEN - 1);
        bytes[off + 4..off + 8].copy_from_slice(&(len as u32).to_ne_bytes());
        let at = std::mem::offset_of!(wire::ExecEvent, exe_name);
        bytes[at..at + len].copy_from_slice(&name.as_bytes()[..len]);
        let flags = std::mem::offset_of!(wire::ExecEvent, flags);
        let f = u32::from_ne_bytes(bytes[flags..flags + 4].try_into().expect("4 bytes"));
        bytes[flags..flags + 4].copy_from_slice(&(f | wire::EXEC_NAME_KNOWN).to_ne_bytes());
        bytes
    }

    pub fn exit(pid: u32, raw_code: u32) -> Vec<u8> {
        let e = wire::ExitEvent {
            header: header(EventKind::Exit, 2_000, pid),
            exit_code: raw_code,
            flags: wire::EXIT_CODE_KNOWN,
            comm: fill(b"proc"),
        };
        bytes_of(&e)
    }

    pub fn auth(pid: u32, retval: i32, user: &str, rhost: &str) -> Vec<u8> {
        auth_as(pid, 0, retval, user, rhost)
    }

    /// A `pam_authenticate` result in a process running as `uid`.
    pub fn auth_as(pid: u32, uid: u32, retval: i32, user: &str, rhost: &str) -> Vec<u8> {
        let e = wire::AuthEvent {
            header: header(EventKind::Auth, 4_000, pid),
            retval,
            flags: wire::AUTH_FIELDS_KNOWN,
            uid,
            _pad: 0,
            comm: fill(b"sshd"),
            service: fill(b"sshd"),
            user: fill(user.as_bytes()),
            rhost: fill(rhost.as_bytes()),
        };
        bytes_of(&e)
    }

    pub fn fork(parent: u32, child: u32) -> Vec<u8> {
        let e = wire::ForkEvent {
            header: header(EventKind::Fork, 1_500, parent),
            child_tgid: child,
            child_tid: child,
            flags: wire::FORK_START_KNOWN,
            _pad: 0,
            // What the exec fixture says for the same pid.
            child_start_boottime_ns: 12_340_000_000 + u64::from(child) * 10_000_000,
        };
        bytes_of(&e)
    }

    pub fn conn(
        kind: EventKind,
        pid: u32,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
    ) -> Vec<u8> {
        let e = wire::ConnEvent {
            header: header(kind, 3_000, pid),
            family: wire::AF_INET,
            protocol: wire::IPPROTO_TCP as u16,
            sport,
            dport,
            uid: 0,
            flags: if pid == 0 {
                wire::CONN_OWNER_UNKNOWN
            } else {
                0
            },
            saddr: fill(&src),
            daddr: fill(&dst),
            comm: fill(b"curl"),
            old_state: 1,
            _pad: 0,
        };
        bytes_of(&e)
    }

    /// The close of `src:sport` → `dst:dport` carrying its flow: `bytes`
    /// each way in `packets` packets.
    pub fn close_flow(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        packets: u64,
        bytes: u64,
    ) -> Vec<u8> {
        let mut conn: wire::ConnEvent =
            read(&self::conn(EventKind::Close, 0, src, sport, dst, dport))
                .expect("a conn fixture is a whole record");
        conn.header = header(EventKind::CloseFlow, 3_000, 0);
        let e = wire::CloseFlowEvent {
            conn,
            key: wire::FlowKey {
                local_addr: fill(&src),
                remote_addr: fill(&dst),
                local_port: sport,
                remote_port: dport,
                proto: wire::IPPROTO_TCP,
                ip_version: 4,
                _pad: [0; 2],
            },
            stats: wire::FlowStats {
                t_first_ns: 1_000,
                t_last_ns: 3_000,
                n_out: packets,
                n_in: packets,
                bytes_out: bytes,
                bytes_in: bytes,
                syn: 2,
                fin: 2,
                flags: wire::FLOW_FIRST_OUT,
                ..Default::default()
            },
        };
        bytes_of(&e)
    }

    /// A successful open for writing of `path`, naming the file `id`.
    pub fn file_write(pid: u32, path: &str, id: Option<wire::FileId>) -> Vec<u8> {
        let e = wire::FileEvent {
            header: header(EventKind::FileWrite, 1_200, pid),
            open_flags: 0o1101,
            flags: if id.is_some() { wire::FILE_ID_KNOWN } else { 0 },
            path_len: path.len().min(wire::PATH_LEN) as u32,
            fd: 3,
            file: id.unwrap_or_default(),
            comm: fill(b"curl"),
            path: fill(path.as_bytes()),
        };
        bytes_of(&e)
    }

    /// sshd at work: the listener (pid 200) accepts `rhost`:5555 on
    /// 10.0.0.1:22 and forks its per-connection monitor (pid 300, root,
    /// re-executed as /usr/sbin/sshd), which then calls PAM; these are
    /// the records before the `pam_authenticate` results.
    pub fn sshd_session(rhost: [u8; 4]) -> Vec<Vec<u8>> {
        vec![
            exec_as(200, 1, 0, "/usr/sbin/sshd", &["sshd", "-D"], None),
            conn(EventKind::Accept, 200, [10, 0, 0, 1], 22, rhost, 5555),
            fork(200, 300),
            exec_as(300, 200, 0, "/usr/sbin/sshd", &["sshd", "-R"], None),
        ]
    }

    /// sshd (pid 200) starts and accepts 10.0.0.9:5555 on 10.0.0.1:22.
    pub fn sshd_accepts() -> [Vec<u8>; 2] {
        [
            exec(200, 1, "/usr/sbin/sshd", &["sshd"]),
            conn(
                EventKind::Accept,
                200,
                [10, 0, 0, 1],
                22,
                [10, 0, 0, 9],
                5555,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn decodes_exec_with_argv() {
        let ev = decode(&exec(42, 7, "/usr/bin/ls", &["ls", "-l", "/tmp"])).expect("decode");
        let Event::Exec(e) = ev else {
            panic!("not exec")
        };
        assert_eq!(e.pid, 42);
        assert_eq!(e.ppid, Some(7));
        assert_eq!(e.filename, "/usr/bin/ls");
        assert_eq!(e.comm, "ls");
        assert_eq!(e.argv, vec!["ls", "-l", "/tmp"]);
        assert!(!e.argv_truncated);
    }

    #[test]
    fn decodes_auth() {
        let Event::Auth(a) = decode(&auth(7, 7, "root", "192.0.2.9")).expect("decode") else {
            panic!()
        };
        assert_eq!(
            (a.retval, a.user.as_deref(), a.rhost.as_deref()),
            (7, Some("root"), Some("192.0.2.9"))
        );
        assert_eq!(a.service.as_deref(), Some("sshd"));
    }

    #[test]
    fn decodes_identities_in_stat_numbering() {
        let id = wire::FileId {
            ino: 12,
            dev: (259 << 20) | 3,
            generation: 9,
        };
        let Event::Exec(e) = decode(&exec_as(5, 1, 0, "/x", &["x"], Some(id))).expect("exec")
        else {
            panic!()
        };
        let want = FileId {
            dev: libc::makedev(259, 3),
            ino: 12,
            generation: Some(9),
        };
        assert_eq!(e.exe_file, Some(want));
        assert!(e.start_boottime_ns.is_some());
        let Event::FileWrite(w) = decode(&file_write(5, "/y", Some(id))).expect("write") else {
            panic!()
        };
        assert_eq!((w.path.as_str(), w.file), ("/y", Some(want)));
        let Event::Exec(e) = decode(&exec(5, 1, "/x", &["x"])).expect("exec") else {
            panic!()
        };
        assert_eq!(e.exe_file, None, "unknown stays unknown");
    }

    #[test]
    fn decodes_exit_status_and_signal() {
        let Event::Exit(e) = decode(&exit(9, 3 << 8)).expect("decode") else {
            panic!()
        };
        assert_eq!((e.exit_status(), e.signal()), (Some(3), None));
        let Event::Exit(e) = decode(&exit(9, 9)).expect("decode") else {
            panic!()
        };
        assert_eq!(e.signal(), Some(9));
    }

    #[test]
    fn decodes_connect_tuple() {
        let bytes = conn(
            EventKind::Connect,
            5,
            [10, 0, 0, 1],
            40000,
            [10, 0, 0, 2],
            80,
        );
        let Event::Conn(c) = decode(&bytes).expect("decode") else {
            panic!()
        };
        assert_eq!(c.kind, ConnKind::Connect);
        assert_eq!(c.pid, Some(5));
        assert_eq!(c.src_ip.to_string(), "10.0.0.1");
        assert_eq!((c.src_port, c.dst_port), (40000, 80));
        let unknown = conn(EventKind::Accept, 0, [1, 1, 1, 1], 1, [2, 2, 2, 2], 2);
        let Event::Conn(c) = decode(&unknown).expect("decode") else {
            panic!()
        };
        assert_eq!(c.pid, None);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for bytes in [
            exec(1, 1, "/bin/x", &["x"]),
            exit(1, 0),
            fork(1, 2),
            conn(EventKind::Close, 1, [1; 4], 1, [2; 4], 2),
            close_flow([1; 4], 1, [2; 4], 2, 5, 100),
            auth(1, 0, "u", "h"),
            file_write(1, "/x", None),
        ] {
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
            }
            assert!(decode(&bytes).is_ok());
        }
        assert_eq!(
            decode(&[1, 2, 3]),
            Err(DecodeError::ShortHeader { got: 3, need: 24 })
        );
    }

    #[test]
    fn unknown_kind_and_bad_size_are_errors() {
        let mut bytes = fork(1, 2);
        bytes[0] = 99;
        bytes[1] = 0;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownKind(99)));
        let mut bytes = fork(1, 2);
        bytes[4] = 200; // declared size
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::SizeMismatch { .. })
        ));
        let mut bytes = conn(EventKind::Close, 1, [1; 4], 1, [2; 4], 2);
        bytes[24] = 77; // family
        assert_eq!(decode(&bytes), Err(DecodeError::Family(77)));
    }

    #[test]
    fn a_close_carries_its_flow_and_a_forged_key_is_refused() {
        let bytes = close_flow([10, 0, 0, 1], 40000, [10, 0, 0, 2], 22, 7, 1500);
        let Event::CloseFlow(c) = decode(&bytes).expect("decode") else {
            panic!("not a closed flow")
        };
        assert_eq!(c.conn.kind, ConnKind::Close);
        assert_eq!(c.conn.pid, None);
        assert_eq!((c.conn.src_port, c.conn.dst_port), (40000, 22));
        assert_eq!((c.stats.n_out, c.stats.bytes_in), (7, 1500));
        assert_eq!(c.key.remote_port, 22);
        let key_at = std::mem::offset_of!(wire::CloseFlowEvent, key);
        let mut udp = bytes.clone();
        udp[key_at + 36] = wire::IPPROTO_UDP;
        assert_eq!(
            decode(&udp),
            Err(DecodeError::FlowKey {
                proto: wire::IPPROTO_UDP,
                ip_version: 4
            })
        );
        let mut v5 = bytes.clone();
        v5[key_at + 37] = 5;
        assert!(matches!(decode(&v5), Err(DecodeError::FlowKey { .. })));
        // No flow in the map: a plain close, whatever the key says.
        let flags_at = std::mem::offset_of!(wire::ConnEvent, flags);
        let mut none = udp;
        none[flags_at] |= wire::CONN_NO_FLOW as u8;
        let Event::Conn(c) = decode(&none).expect("decode") else {
            panic!("not a plain close")
        };
        assert_eq!(c.kind, ConnKind::Close);
    }

    #[test]
    fn unaligned_input_decodes() {
        let bytes = exec(3, 1, "/bin/sh", &["sh"]);
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        assert!(decode(&shifted[1..]).is_ok());
    }

    #[test]
    fn layout_sizes_match_the_kernel_side() {
        assert_eq!(EventKind::Exec.record_size(), 688);
        assert_eq!(EventKind::FileWrite.record_size(), 328);
        assert_eq!(EventKind::Exit.record_size(), 48);
        assert_eq!(EventKind::Fork.record_size(), 48);
        assert_eq!(EventKind::Connect.record_size(), 96);
        assert_eq!(EventKind::CloseFlow.record_size(), 264);
        assert_eq!(size_of::<wire::FlowKey>(), 40);
        assert_eq!(size_of::<wire::FlowStats>(), 128);
        assert_eq!(std::mem::offset_of!(wire::ExecEvent, filename), 104);
        assert_eq!(std::mem::offset_of!(wire::ConnEvent, saddr), 40);
    }
}
