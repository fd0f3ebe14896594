//! The native JSON line of a telemetry [`Record`], written straight into a
//! byte buffer. It is byte for byte what `serde_json::to_string(record)`
//! writes through the derived `Serialize` (the reference, docs/events.md):
//! `kind`, the body's fields, then `guid`, `parent_guid`, `ts`, `host`.
//! Writing it directly skips serde's flatten of the tagged body and the
//! escaping of constant keys; under a connection storm this is most of the
//! agent's output cost. The kinds such a storm makes (connections, flows,
//! execs) are written field by field, the destructuring naming every field
//! so a new one does not compile until it is written here; the others are
//! the body's own serialisation spliced in. Numbers, floats and strings
//! that need escaping still go through serde_json, so they cannot differ.

use std::net::IpAddr;

use serde::Serialize;

use crate::record::{Body, Conn, Flow, ProcessExec, Record};

/// `r`'s native line (no newline).
pub fn line(r: &Record) -> serde_json::Result<String> {
    // Most records fit, so the buffer grows at most once.
    let mut out = Vec::with_capacity(768);
    write(r, &mut out)?;
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.utf8_error()))
}

/// Appends `r`'s native line to `out`.
fn write(r: &Record, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut o = Object { out, empty: true };
    o.str("kind", r.body.kind());
    match &r.body {
        Body::NetConnect(c)
        | Body::NetAccept(c)
        | Body::NetClose(c)
        | Body::NetConnectFailed(c)
        | Body::NetRefused(c) => conn(&mut o, c)?,
        Body::Flow(f) => flow(&mut o, f)?,
        Body::ProcessExec(e) => exec(&mut o, e)?,
        Body::ProcessExit(b) => o.splice(b)?,
        Body::ProcessFork(b) => o.splice(b)?,
        Body::AuthAttempt(b) => o.splice(b)?,
        Body::FileWrite(b) => o.splice(b)?,
        Body::AgentStart(b) => o.splice(b)?,
        Body::AgentStats(b) | Body::AgentStop(b) => o.splice(b)?,
        Body::Inventory(b) => o.splice(b)?,
    }
    if let Some(g) = &r.guid {
        o.str("guid", g);
    }
    if let Some(g) = &r.parent_guid {
        o.str("parent_guid", g);
    }
    o.str("ts", &r.ts);
    o.str("host", &r.host);
    o.out.push(b'}');
    Ok(())
}

fn conn(o: &mut Object<'_>, c: &Conn) -> serde_json::Result<()> {
    let Conn {
        pid,
        comm,
        exe,
        uid,
        proto,
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        community_id,
        old_state,
    } = c;
    o.value("pid", pid)?;
    o.str("comm", comm);
    o.opt_str("exe", exe.as_deref());
    o.value("uid", uid)?;
    o.str("proto", proto);
    o.ip("src_ip", src_ip);
    o.value("src_port", src_port)?;
    o.ip("dst_ip", dst_ip);
    o.value("dst_port", dst_port)?;
    o.str("community_id", community_id);
    if let Some(s) = old_state {
        o.str("old_state", s);
    }
    Ok(())
}

fn flow(o: &mut Object<'_>, f: &Flow) -> serde_json::Result<()> {
    let Flow {
        community_id,
        proto,
        direction,
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        pid,
        comm,
        exe,
        packets_out,
        packets_in,
        bytes_out,
        bytes_in,
        duration_ms,
        syn,
        rst,
        fin,
        end_reason,
        features,
    } = f;
    o.str("community_id", community_id);
    o.str("proto", proto);
    o.str("direction", direction);
    o.ip("src_ip", src_ip);
    o.value("src_port", src_port)?;
    o.ip("dst_ip", dst_ip);
    o.value("dst_port", dst_port)?;
    o.value("pid", pid)?;
    o.opt_str("comm", comm.as_deref());
    o.opt_str("exe", exe.as_deref());
    o.value("packets_out", packets_out)?;
    o.value("packets_in", packets_in)?;
    o.value("bytes_out", bytes_out)?;
    o.value("bytes_in", bytes_in)?;
    o.value("duration_ms", duration_ms)?;
    o.value("syn", syn)?;
    o.value("rst", rst)?;
    o.value("fin", fin)?;
    o.str("end_reason", end_reason);
    o.value("features", features)
}

fn exec(o: &mut Object<'_>, e: &ProcessExec) -> serde_json::Result<()> {
    let ProcessExec {
        pid,
        ppid,
        uid,
        gid,
        comm,
        exe,
        argv,
        argv_truncated,
        cgroup_id,
        stdio_socket,
        parent_exe,
        parent_cmdline,
        cwd,
        auid,
        start_time,
        exe_file,
        script_file,
        file_owner,
        exe_arg,
    } = e;
    o.value("pid", pid)?;
    o.value("ppid", ppid)?;
    o.value("uid", uid)?;
    o.value("gid", gid)?;
    o.str("comm", comm);
    o.str("exe", exe);
    o.key("argv");
    o.out.push(b'[');
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            o.out.push(b',');
        }
        string(o.out, a);
    }
    o.out.push(b']');
    o.value("argv_truncated", argv_truncated)?;
    o.value("cgroup_id", cgroup_id)?;
    if stdio_socket.is_some() {
        o.value("stdio_socket", stdio_socket)?;
    }
    if let Some(s) = parent_exe {
        o.str("parent_exe", s);
    }
    if let Some(s) = parent_cmdline {
        o.str("parent_cmdline", s);
    }
    if let Some(s) = cwd {
        o.str("cwd", s);
    }
    if auid.is_some() {
        o.value("auid", auid)?;
    }
    o.value("start_time", start_time)?;
    o.value("exe_file", exe_file)?;
    if script_file.is_some() {
        o.value("script_file", script_file)?;
    }
    if file_owner.is_some() {
        o.value("file_owner", file_owner)?;
    }
    if let Some(s) = exe_arg {
        o.str("exe_arg", s);
    }
    Ok(())
}

/// The members of one JSON object being written, without the closing `}`.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl Object<'_> {
    /// `{` or `,`, then `"key":`. Keys are this file's literals, none of
    /// which needs escaping.
    // Inlined (as are the writers below): the key is then a literal of known
    // length and its copy needs no call; ~10 % of the record's cost.
    #[inline(always)]
    fn key(&mut self, key: &str) {
        self.out
            .extend_from_slice(if self.empty { b"{\"" } else { b",\"" });
        self.empty = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    #[inline(always)]
    fn str(&mut self, key: &str, v: &str) {
        self.key(key);
        string(self.out, v);
    }

    #[inline(always)]
    fn opt_str(&mut self, key: &str, v: Option<&str>) {
        self.key(key);
        match v {
            Some(s) => string(self.out, s),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// Any value as serde_json writes it (numbers, floats, nested structs).
    #[inline(always)]
    fn value<T: Serialize + ?Sized>(&mut self, key: &str, v: &T) -> serde_json::Result<()> {
        self.key(key);
        serde_json::to_writer(&mut *self.out, v)
    }

    /// An address as serde writes it: its text, quoted (never escaped).
    #[inline(always)]
    fn ip(&mut self, key: &str, ip: &IpAddr) {
        self.key(key);
        self.out.push(b'"');
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    decimal(self.out, octet);
                }
            }
            IpAddr::V6(v6) => {
                use std::io::Write;
                // Writing to a Vec cannot fail.
                let _ = write!(self.out, "{v6}");
            }
        }
        self.out.push(b'"');
    }

    /// A struct's own serialisation as further members of this object:
    /// its `{` becomes `,` and its `}` is left off.
    fn splice<T: Serialize>(&mut self, v: &T) -> serde_json::Result<()> {
        let start = self.out.len();
        serde_json::to_writer(&mut *self.out, v)?;
        match self.out[start..] {
            [b'{', b'}'] => self.out.truncate(start),
            [b'{', .., b'}'] => {
                self.out[start] = if self.empty { b'{' } else { b',' };
                self.empty = false;
                self.out.pop();
            }
            _ => return Err(serde::ser::Error::custom("a record body is not an object")),
        }
        Ok(())
    }
}

/// A JSON string: copied as is when nothing in it needs escaping (the
/// usual case), else escaped by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    // No early exit, so the check runs over whole words at a time.
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// `n` in decimal, without leading zeros.
fn decimal(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{self, FileId, FileOwner};
    use std::sync::Arc;

    /// The reference: serde_json through the derived `Serialize`.
    fn reference(r: &Record) -> String {
        serde_json::to_string(r).expect("reference")
    }

    fn same(r: &Record) {
        assert_eq!(line(r).expect("line"), reference(r), "{}", r.body.kind());
    }

    #[test]
    fn every_sample_record_is_byte_for_byte_the_derived_serialisation() {
        let s = super::super::samples::samples();
        let mut kinds = std::collections::BTreeSet::new();
        for r in &s.events {
            same(r);
            kinds.insert(r.body.kind());
        }
        assert!(kinds.len() >= 11, "{kinds:?}");
    }

    fn rec(body: Body) -> Record {
        Record {
            body,
            guid: None,
            parent_guid: None,
            ts: "2026-12-01T10:00:00.000001Z".into(),
            host: Arc::from("h"),
            wall_ns: 0,
        }
    }

    /// Strings an attacker controls: every ASCII control, quotes,
    /// backslashes, multi-byte UTF-8, and a long one.
    fn hostile() -> Vec<String> {
        let mut v: Vec<String> = (0u8..0x80).map(|b| format!("a{}b", b as char)).collect();
        v.extend(
            [
                "",
                "\"",
                "\\",
                "\u{7f}",
                "é ü \u{2028} \u{1F600}",
                "x\"y\\z\n\t\r",
                "/usr/bin/</script>",
            ]
            .map(String::from),
        );
        v.push("A".repeat(70_000));
        v
    }

    fn conn(comm: &str, src: IpAddr, dst: IpAddr, old: Option<&'static str>) -> record::Conn {
        record::Conn {
            pid: None,
            comm: comm.into(),
            exe: Some(Arc::from(comm)),
            uid: None,
            proto: "udp",
            src_ip: src,
            src_port: 0,
            dst_ip: dst,
            dst_port: u16::MAX,
            community_id: comm.into(),
            old_state: old,
        }
    }

    #[test]
    fn hostile_strings_and_every_address_shape_are_written_as_serde_writes_them() {
        let addrs: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.100.9",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "fe80::1:2:3:4",
            "2001:db8:0:0:1:0:0:1",
            "2001:db8:85a3:8d3:1319:8a2e:370:7348",
        ]
        .map(|a| a.parse().expect("address"))
        .to_vec();
        for s in hostile() {
            for (i, a) in addrs.iter().enumerate() {
                let b = addrs[(i + 1) % addrs.len()];
                same(&rec(Body::NetClose(conn(&s, *a, b, Some("fin_wait1")))));
                same(&rec(Body::NetAccept(conn(&s, b, *a, None))));
            }
            let mut r = rec(Body::ProcessExit(record::ProcessExit {
                pid: 1,
                exit_code: Some(0),
                signal: None,
                comm: s.clone(),
                exe: None,
            }));
            r.guid = Some(Arc::from(s.as_str()));
            r.host = Arc::from(s.as_str());
            r.ts = s.clone();
            same(&r);
        }
    }

    #[test]
    fn every_ipv4_octet_is_written_as_its_display() {
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 0, 255 - n, n / 3]);
            let mut out = Vec::new();
            Object {
                out: &mut out,
                empty: true,
            }
            .ip("a", &ip);
            assert_eq!(
                String::from_utf8(out).expect("utf8"),
                format!("{{\"a\":\"{ip}\"")
            );
        }
    }

    #[test]
    fn optional_fields_are_skipped_or_null_as_the_derive_does() {
        let full = record::ProcessExec {
            pid: 1,
            ppid: 0,
            uid: u32::MAX,
            gid: 0,
            comm: "a\u{1}".into(),
            exe: "/x y".into(),
            argv: Vec::new(),
            argv_truncated: true,
            cgroup_id: u64::MAX,
            stdio_socket: Some(true),
            parent_exe: Some(Arc::from("\\p")),
            parent_cmdline: Some(Arc::from("p \"q\"")),
            cwd: Some("/".into()),
            auid: Some(0),
            start_time: None,
            exe_file: None,
            script_file: Some(FileId {
                dev: 1,
                ino: 2,
                generation: None,
            }),
            file_owner: Some(FileOwner { uid: 0, links: 0 }),
            exe_arg: Some("/proc/self/fd/3".into()),
        };
        let mut bare = rec(Body::ProcessFork(record::ProcessFork {
            pid: 2,
            ppid: 1,
            maybe_thread: true,
        }));
        bare.parent_guid = Some(Arc::from("p"));
        same(&bare);
        let mut with_argv = rec(Body::ProcessExec(full));
        same(&with_argv);
        if let Body::ProcessExec(e) = &mut with_argv.body {
            e.argv = hostile().into_iter().take(40).collect();
        }
        same(&with_argv);
        let floats = [f64::NAN, f64::INFINITY, -0.0, 1e-300, 1e300, 0.1 + 0.2];
        let flow = record::Flow {
            community_id: String::new(),
            proto: "tcp",
            direction: "inbound",
            src_ip: "::1".parse().expect("v6"),
            src_port: 1,
            dst_ip: "::1".parse().expect("v6"),
            dst_port: 2,
            pid: None,
            comm: None,
            exe: None,
            packets_out: u64::MAX,
            packets_in: 0,
            bytes_out: 0,
            bytes_in: 0,
            duration_ms: f64::NAN,
            syn: 0,
            rst: 0,
            fin: 0,
            end_reason: "shutdown",
            features: std::array::from_fn(|i| floats[i % floats.len()] * i as f64),
        };
        same(&rec(Body::Flow(Box::new(flow))));
        same(&rec(Body::AgentStats(record::AgentStats::default())));
        same(&rec(Body::Inventory(record::Inventory {
            addresses: Vec::new(),
            roles: vec!["db".into()],
        })));
    }
}
