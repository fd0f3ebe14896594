//! A small, deterministic network peer for the integration tests, run inside
//! network namespaces with `ip netns exec`. It prints one JSON line of what
//! it did so tests can compare the agent's view with the socket's own.
//!
//!   netpeer tcp-server ADDR:PORT REPLY_BYTES
//!   netpeer tcp-client ADDR:PORT SEND_BYTES [abort|dstopts]  abort: send, then close with a
//!                                                reset; dstopts: an IPv6 destination-options
//!                                                header on every packet after the handshake
//!   netpeer udp-echo ADDR:PORT COUNT
//!   netpeer udp-client ADDR:PORT COUNT SIZE
//!   netpeer serve ADDR:PORT                      TCP line echo + UDP echo, until killed
//!   netpeer tcp-probe ADDR:PORT TIMEOUT_MS [SRC] exit 0 if a round trip works
//!   netpeer block-watch ADDR:PORT INTERVAL_MS MAX_S  connect every interval until one
//!                                                times out; print when that attempt began
//!   netpeer udp-probe ADDR:PORT TIMEOUT_MS [SRC] exit 0 if an echo comes back
//!   netpeer tcp-hold ADDR:PORT ROUNDS INTERVAL_MS one session, a round trip per interval
//!   netpeer udp-flood ADDR:PORT INTERVAL_US COUNT  paced datagrams, bounded by COUNT
//!   netpeer udp-count ADDR:PORT WAIT_MS          count datagrams that arrive within WAIT_MS
//!   netpeer beacon ADDR:PORT PERIOD_MS JITTER_PCT COUNT  periodic short connections
//!   netpeer send-file ADDR:PORT FILE             serve one file to one client
//!   netpeer fetch ADDR:PORT PATH                 download to PATH and make it executable
//!   netpeer raw-short-ihl IFACE SRC DST COUNT    COUNT IPv4 packets claiming TCP whose header
//!                                                length field says 16 bytes (invalid), 40
//!                                                bytes after the 20-byte header, broadcast on
//!                                                IFACE from a packet socket (an IP raw socket
//!                                                refuses them on recent kernels)
//!   netpeer raw-short-l4 SRC DST COUNT           COUNT IPv4 packets claiming TCP with 8 bytes
//!                                                after the header (a TCP header needs 20),
//!                                                from an IP raw socket

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn tcp_segs(s: &TcpStream) -> (u32, u32) {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for len bytes; TCP_INFO fills at most len.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 || len < 144 {
        return (0, 0);
    }
    // struct tcp_info: tcpi_segs_out at 136, tcpi_segs_in at 140.
    let out = u32::from_ne_bytes([buf[136], buf[137], buf[138], buf[139]]);
    let inn = u32::from_ne_bytes([buf[140], buf[141], buf[142], buf[143]]);
    (out, inn)
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// A TCP connect from a chosen source address (libc: std cannot bind first).
fn bound_tcp(
    domain: i32,
    src: &str,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let bind: SocketAddr = format!("{}:0", bracket(src))
        .parse()
        .map_err(std::io::Error::other)?;
    // SAFETY: standard socket/bind calls on a fresh fd we own.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let (sa, len) = sockaddr(&bind);
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_write_timeout(Some(timeout))?;
        let (da, dlen) = sockaddr(&dst);
        // Blocking connect bounded by SO_SNDTIMEO.
        if libc::connect(fd, &da as *const _ as *const libc::sockaddr, dlen) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we fill the matching variant.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = &mut ss as *mut _ as *mut libc::sockaddr_in;
            unsafe {
                (*sin).sin_family = libc::AF_INET as u16;
                (*sin).sin_port = v4.port().to_be();
                (*sin).sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            }
            (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = &mut ss as *mut _ as *mut libc::sockaddr_in6;
            unsafe {
                (*sin6).sin6_family = libc::AF_INET6 as u16;
                (*sin6).sin6_port = v6.port().to_be();
                (*sin6).sin6_addr.s6_addr = v6.ip().octets();
            }
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

fn round_trip(mut s: TcpStream, timeout: Duration) -> std::io::Result<()> {
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"probe\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    if line.trim() == "probe" {
        Ok(())
    } else {
        Err(std::io::Error::other("bad echo"))
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

fn num(s: &str) -> usize {
    s.parse().unwrap_or_else(|e| panic!("bad number {s}: {e}"))
}

fn ipv4(a: &str) -> std::net::Ipv4Addr {
    a.parse().expect("IPv4 address")
}

/// An IPv4 packet claiming TCP: `first` is the version/IHL byte, `after`
/// starts at byte 20, zeros up to `total` bytes.
fn ipv4_packet(
    first: u8,
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    after: &[u8],
    total: usize,
) -> Vec<u8> {
    let mut pkt = vec![0u8; total];
    pkt[0] = first;
    pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    pkt[8] = 64; // TTL
    pkt[9] = 6; // TCP
    pkt[12..16].copy_from_slice(&src.octets());
    pkt[16..20].copy_from_slice(&dst.octets());
    pkt[20..20 + after.len()].copy_from_slice(after);
    pkt
}

/// Sends `pkt` `count` times from a fresh socket of the given kind to
/// `to`; how many sends took the whole packet.
fn send_raw<A>(family: i32, kind: i32, proto: i32, pkt: &[u8], to: &A, count: usize) -> usize {
    // SAFETY: plain socket call.
    let fd = unsafe { libc::socket(family, kind, proto) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    let mut sent = 0;
    for _ in 0..count {
        // SAFETY: pkt and to are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (to as *const A).cast(),
                std::mem::size_of::<A>() as libc::socklen_t,
            )
        };
        if n == pkt.len() as isize {
            sent += 1;
        }
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    sent
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pid = std::process::id();
    match args.get(1).map(String::as_str) {
        Some("tcp-server") => {
            let l = TcpListener::bind(addr(&args[2])).expect("bind");
            println!("{{\"ready\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            let (mut s, peer) = l.accept().expect("accept");
            let mut got = 0usize;
            let mut buf = vec![0u8; 65536];
            loop {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got += n;
            }
            s.write_all(&vec![b'r'; num(&args[3])]).expect("write");
            s.shutdown(Shutdown::Write).expect("shutdown");
            // Wait for the client's close so our socket goes through LAST_ACK.
            let _ = s.read(&mut buf);
            let (so, si) = tcp_segs(&s);
            println!(
                "{{\"pid\":{pid},\"received\":{got},\"peer\":\"{peer}\",\"segs_out\":{so},\"segs_in\":{si}}}"
            );
        }
        Some("tcp-client") => {
            let mut s = TcpStream::connect_timeout(&addr(&args[2]), Duration::from_secs(5))
                .expect("connect");
            let local = s.local_addr().expect("local addr");
            if args.get(4).map(String::as_str) == Some("dstopts") {
                // Next header (the kernel fills it), length 0 (8 bytes), PadN of 4.
                let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
                // SAFETY: a valid socket and a buffer of the size given.
                let rc = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::IPPROTO_IPV6,
                        libc::IPV6_DSTOPTS,
                        opts.as_ptr().cast(),
                        opts.len() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
            }
            s.write_all(&vec![b's'; num(&args[3])]).expect("write");
            if args.get(4).map(String::as_str) == Some("abort") {
                // Close the established socket with a reset (SO_LINGER 0):
                // the kernel sends it after the socket's TCP_CLOSE.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid socket and a linger struct of the size given.
                let rc = unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0, "SO_LINGER");
                println!("{{\"pid\":{pid},\"local\":\"{local}\"}}");
                return;
            }
            s.shutdown(Shutdown::Write).expect("shutdown");
            let mut got = 0usize;
            let mut buf = vec![0u8; 65536];
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            loop {
                let n = s.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got += n;
            }
            let (so, si) = tcp_segs(&s);
            println!(
                "{{\"pid\":{pid},\"local\":\"{local}\",\"received\":{got},\"segs_out\":{so},\"segs_in\":{si}}}"
            );
        }
        Some("udp-echo") => {
            let s = UdpSocket::bind(addr(&args[2])).expect("bind");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            println!("{{\"ready\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            let mut buf = vec![0u8; 65536];
            for _ in 0..num(&args[3]) {
                let (n, peer) = s.recv_from(&mut buf).expect("recv");
                s.send_to(&buf[..n], peer).expect("send");
            }
            println!("{{\"pid\":{pid},\"done\":true}}");
        }
        Some("udp-client") => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            s.connect(addr(&args[2])).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let size = num(&args[4]);
            let mut buf = vec![0u8; 65536];
            let mut echoed = 0;
            for _ in 0..num(&args[3]) {
                s.send(&vec![b'u'; size]).expect("send");
                echoed += s.recv(&mut buf).expect("recv");
            }
            let local = s.local_addr().expect("local addr");
            println!("{{\"pid\":{pid},\"local\":\"{local}\",\"echoed\":{echoed}}}");
        }
        Some("serve") => {
            let a = addr(&args[2]);
            let u = UdpSocket::bind(a).expect("bind udp");
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, peer)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(&buf[..n], peer);
                }
            });
            let l = TcpListener::bind(a).expect("bind tcp");
            println!("{{\"ready\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut w = match s.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    for line in BufReader::new(s).lines().map_while(Result::ok) {
                        if writeln!(w, "{line}").is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Some("block-watch") => {
            let dst = addr(&args[2]);
            let every = Duration::from_millis(num(&args[3]) as u64);
            let limit = Duration::from_secs(num(&args[4]) as u64);
            let wall_ns = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
            };
            println!("{{\"ready\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            let start = std::time::Instant::now();
            let mut probes = 0u64;
            let mut blocked: Option<u64> = None;
            while start.elapsed() < limit {
                let began = wall_ns();
                probes += 1;
                // A dropped SYN never completes; 200 ms is far above a veth round trip.
                match TcpStream::connect_timeout(&dst, Duration::from_millis(200)) {
                    Ok(s) => drop(s),
                    Err(_) => {
                        blocked = Some(began);
                        break;
                    }
                }
                std::thread::sleep(every);
            }
            let at = blocked
                .map(|b| b.to_string())
                .unwrap_or_else(|| "null".into());
            println!("{{\"blocked_at_ns\":{at},\"probes\":{probes}}}");
        }
        Some("tcp-probe") => {
            let timeout = Duration::from_millis(num(&args[3]) as u64);
            let ok = (|| -> std::io::Result<()> {
                let dst = addr(&args[2]);
                let sock = match args.get(4) {
                    Some(src) => {
                        let domain = if dst.is_ipv4() {
                            libc::AF_INET
                        } else {
                            libc::AF_INET6
                        };
                        bound_tcp(domain, src, dst, timeout)?
                    }
                    None => TcpStream::connect_timeout(&dst, timeout)?,
                };
                round_trip(sock, timeout)
            })();
            std::process::exit(if ok.is_ok() { 0 } else { 1 });
        }
        Some("udp-probe") => {
            let timeout = Duration::from_millis(num(&args[3]) as u64);
            let dst = addr(&args[2]);
            let src = args.get(4).cloned().unwrap_or_else(|| {
                if dst.is_ipv4() {
                    "0.0.0.0".into()
                } else {
                    "::".into()
                }
            });
            let ok = (|| -> std::io::Result<()> {
                let s = UdpSocket::bind(format!("{}:0", bracket(&src)))?;
                s.set_read_timeout(Some(timeout))?;
                s.send_to(b"probe", dst)?;
                let mut buf = [0u8; 64];
                let (n, _) = s.recv_from(&mut buf)?;
                if &buf[..n] == b"probe" {
                    Ok(())
                } else {
                    Err(std::io::Error::other("bad echo"))
                }
            })();
            std::process::exit(if ok.is_ok() { 0 } else { 1 });
        }
        Some("send-file") => {
            let l = TcpListener::bind(addr(&args[2])).expect("bind");
            println!("{{\"ready\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            let (mut s, _) = l.accept().expect("accept");
            let data = std::fs::read(&args[3]).expect("read file");
            s.write_all(&data).expect("write");
        }
        Some("fetch") => {
            let mut s = TcpStream::connect_timeout(&addr(&args[2]), Duration::from_secs(5))
                .expect("connect");
            let mut data = Vec::new();
            s.read_to_end(&mut data).expect("read");
            std::fs::write(&args[3], &data).expect("write file");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&args[3], std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            println!("{{\"pid\":{pid},\"bytes\":{}}}", data.len());
        }
        Some("beacon") => {
            let dst = addr(&args[2]);
            let (period, jitter, count) = (
                num(&args[3]) as f64,
                num(&args[4]) as f64 / 100.0,
                num(&args[5]),
            );
            // Deterministic uniform jitter in [-j, +j] of the period.
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut ok = 0;
            for _ in 0..count {
                if let Ok(s) = TcpStream::connect_timeout(&dst, Duration::from_secs(2)) {
                    if round_trip(s, Duration::from_secs(2)).is_ok() {
                        ok += 1;
                    }
                }
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
                let wait = period * (1.0 + jitter * (2.0 * u - 1.0));
                std::thread::sleep(Duration::from_millis(wait as u64));
            }
            println!("{{\"pid\":{pid},\"connections\":{ok}}}");
        }
        Some("udp-flood") => {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let dst = addr(&args[2]);
            let gap = Duration::from_micros(num(&args[3]) as u64);
            for _ in 0..num(&args[4]) {
                let _ = s.send_to(b"flood", dst);
                std::thread::sleep(gap);
            }
        }
        Some("udp-count") => {
            let s = UdpSocket::bind(addr(&args[2])).expect("bind");
            let wait = Duration::from_millis(num(&args[3]) as u64);
            println!("{{\"ready\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            let start = std::time::Instant::now();
            let mut buf = [0u8; 2048];
            let mut received = 0;
            while let Some(left) = wait.checked_sub(start.elapsed()).filter(|l| !l.is_zero()) {
                s.set_read_timeout(Some(left)).expect("timeout");
                if s.recv_from(&mut buf).is_ok() {
                    received += 1;
                }
            }
            println!("{{\"pid\":{pid},\"received\":{received}}}");
        }
        Some("tcp-hold") => {
            let s = TcpStream::connect_timeout(&addr(&args[2]), Duration::from_secs(5))
                .expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .expect("timeout");
            println!("{{\"connected\":true,\"pid\":{pid}}}");
            std::io::stdout().flush().expect("flush");
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            let (rounds, interval) = (num(&args[3]), num(&args[4]) as u64);
            let mut ok = 0;
            for i in 0..rounds {
                let mut line = String::new();
                if writeln!(w, "round {i}").is_ok()
                    && r.read_line(&mut line).is_ok()
                    && line.trim() == format!("round {i}")
                {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_millis(interval));
            }
            println!("{{\"rounds\":{rounds},\"ok\":{ok}}}");
        }
        Some("raw-short-ihl") => {
            let (src, dst) = (ipv4(&args[3]), ipv4(&args[4]));
            // IHL 4: 16 bytes, below the minimum of 20; "ports" 7000, 7001 after 20.
            let pkt = ipv4_packet(0x44, src, dst, &[0x1b, 0x58, 0x1b, 0x59], 60);
            let iface = std::ffi::CString::new(args[2].as_str()).expect("interface name");
            // SAFETY: plain libc call on a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
            assert!(ifindex > 0, "no interface {}", args[2]);
            let proto = (libc::ETH_P_IP as u16).to_be();
            // SAFETY: all-zero is a valid sockaddr_ll; the fields are set below.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_protocol = proto;
            to.sll_ifindex = ifindex as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            let sent = send_raw(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                proto as i32,
                &pkt,
                &to,
                num(&args[5]),
            );
            println!("{{\"pid\":{pid},\"sent\":{sent}}}");
        }
        Some("raw-short-l4") => {
            let (src, dst) = (ipv4(&args[2]), ipv4(&args[3]));
            // IHL 5, then 8 bytes: ports and a sequence number, no more.
            let pkt = ipv4_packet(0x45, src, dst, &[0x1b, 0x58, 0x1b, 0x59, 0, 0, 0, 1], 28);
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.octets()),
                },
                sin_zero: [0; 8],
            };
            let sent = send_raw(
                libc::AF_INET,
                libc::SOCK_RAW,
                libc::IPPROTO_RAW,
                &pkt,
                &to,
                num(&args[4]),
            );
            println!("{{\"pid\":{pid},\"sent\":{sent}}}");
        }
        _ => {
            eprintln!("usage: netpeer tcp-server|tcp-client|udp-echo|udp-client ...");
            std::process::exit(2);
        }
    }
}
