//! Load driver for the memory figure: creates COUNT distinct UDP flows on
//! loopback (one datagram each, to 127.0.1.x on varying ports), bounded in
//! count, then exits.
//!
//!   flowload COUNT [SECONDS_BETWEEN_ROUNDS ROUNDS]

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: u32 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("usage: flowload COUNT"));
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let payload = [0u8; 32];
    let mut sent = 0u32;
    // 50,000 ports per address keeps clear of the ephemeral range's edges.
    for i in 0..count {
        let host = (i / 50_000) as u8;
        let port = 10_000 + (i % 50_000) as u16;
        let dst = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, host.wrapping_add(1)), port);
        if sock.send_to(&payload, dst).is_ok() {
            sent += 1;
        }
    }
    println!("{{\"sent\":{sent}}}");
}
