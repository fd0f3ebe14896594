//! A small, deterministic network peer for the integration tests, run inside
//! network namespaces with `ip netns exec`. It prints one JSON line of what
//! it did so tests can compare the agent's view with the socket's own.
//!
//!   netpeer tcp-server ADDR:PORT REPLY_BYTES
//!   netpeer tcp-client ADDR:PORT SEND_BYTES
//!   netpeer udp-echo ADDR:PORT COUNT
//!   netpeer udp-client ADDR:PORT COUNT SIZE

use std::io::{Read, Write};
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

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

fn num(s: &str) -> usize {
    s.parse().unwrap_or_else(|e| panic!("bad number {s}: {e}"))
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
            s.write_all(&vec![b's'; num(&args[3])]).expect("write");
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
        _ => {
            eprintln!("usage: netpeer tcp-server|tcp-client|udp-echo|udp-client ...");
            std::process::exit(2);
        }
    }
}
