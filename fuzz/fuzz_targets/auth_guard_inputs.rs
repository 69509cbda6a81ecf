//! The guard's untrusted text: CIDR lists, `X-Forwarded-For` chains and TOML configuration
//! files. No panics; a CIDR list that parses prints back to one that parses equal; a client
//! address is only ever the peer or an address from the header.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use nova_auth::config::AuthConfig;
use nova_auth::ip_rules::{CidrList, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = text.parse::<CidrList>() {
        let again: CidrList = list.to_string().parse().expect("a printed list parses");
        assert_eq!(again, list);
    }
    let proxies: TrustedProxies = "10.0.0.0/8, ::1, fd00::/8".parse().expect("fixed list");
    for peer in ["10.1.2.3", "203.0.113.9", "::1"] {
        let peer: IpAddr = peer.parse().expect("fixed address");
        if let Ok(client) = proxies.client_ip(peer, Some(text)) {
            let named = text.split(',').any(|hop| hop_addresses(hop.trim()).contains(&client));
            assert!(client == peer || named, "{client}");
        }
    }
    let _ = AuthConfig::from_toml(text);
});

/// Every address a hop could be read as (plain, bracketed with a port, IPv4 with a port,
/// IPv4-mapped IPv6 as IPv4).
fn hop_addresses(hop: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut push = |ip: IpAddr| {
        out.push(ip);
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            out.push(IpAddr::V4(v4));
        }
    };
    if let Ok(ip) = hop.parse() {
        push(ip);
    }
    if let Some((addr, _)) = hop.strip_prefix('[').and_then(|r| r.split_once(']'))
        && let Ok(ip) = addr.parse()
    {
        push(ip);
    }
    if let Some((addr, _)) = hop.rsplit_once(':')
        && let Ok(ip) = addr.parse::<std::net::Ipv4Addr>()
    {
        push(IpAddr::V4(ip));
    }
    out
}
