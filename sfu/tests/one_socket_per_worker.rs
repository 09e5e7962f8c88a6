//! The SFU's promise to operators: a call uses exactly one
//! UDP socket per worker on the server, bound where `udp_addrs` says, and
//! clients are told the announced (public) address, not the bound one.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::*;
use hush_sfu::{Sfu, SfuConfig};

/// Inodes of the sockets this process holds open.
fn own_socket_inodes() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy().into_owned();
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Local ports of this process's IPv4 UDP sockets bound to 0.0.0.0.
fn own_udp_ports_on_any_address() -> Vec<u16> {
    let inodes = own_socket_inodes();
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = f.get(1)?.split_once(':')?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            (ip == "00000000" && inodes.contains(&inode))
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_party_call_uses_one_socket_per_worker_and_announces_the_public_ip() {
    // Bound to every interface, announced as 127.0.0.1 (what a cloud VM
    // does with its public IP): the clients (all on 127.0.0.1:0) only
    // reach the SFU if the announced address is the one in the SDP.
    let sfu = Sfu::new(SfuConfig {
        udp_addrs: vec![SocketAddr::from(([0, 0, 0, 0], 0))],
        public_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..SfuConfig::default()
    })
    .unwrap();
    let [bound] = sfu.udp_addrs() else {
        panic!("one worker, one address: {:?}", sfu.udp_addrs());
    };
    let port = bound.port();
    assert!(bound.ip().is_unspecified(), "{bound}");

    let a = Client::join(&sfu, "room", 1, AV, None).await;
    let b = Client::join(&sfu, "room", 2, AV, None).await;
    let c = Client::join(&sfu, "room", 3, AV, None).await;
    for x in [&a, &b, &c] {
        assert!(
            x.answer.contains(&format!(" 127.0.0.1 {port} typ host")),
            "{}",
            x.answer
        );
        assert!(!x.answer.contains("0.0.0.0 "), "{}", x.answer);
        assert!(x.answer.contains("a=ice-lite"), "{}", x.answer);
    }
    let clients = [(&a, 0u8, 0u8), (&b, 0, 1), (&c, 0, 2)];
    until_av_flows(&clients).await;
    // Media flows between all three, and the server side of it is one
    // socket: the only UDP socket this process has on 0.0.0.0 (the test
    // clients bind 127.0.0.1).
    assert_eq!(own_udp_ports_on_any_address(), vec![port]);
    sfu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_bind_without_a_public_ip_is_refused_with_a_reason() {
    let err = Sfu::new(SfuConfig {
        udp_addrs: vec![SocketAddr::from(([0, 0, 0, 0], 0))],
        ..SfuConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("public IP"), "{err}");
}
