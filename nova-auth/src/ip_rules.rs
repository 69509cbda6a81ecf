//! Network rules: CIDR allow and deny lists for IPv4 and IPv6 with a default action (deny
//! wins), and the client address taken only through a configured chain of trusted proxies.
//!
//! `X-Forwarded-For` is attacker-controlled except for the entries appended by proxies you
//! run. The client is found by walking the header from the right, past trusted proxies, to the
//! first address a trusted proxy vouched for; a peer that is not a trusted proxy is the client
//! whatever the header says. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are compared as
//! IPv4, so a mapped form cannot slip past an IPv4 deny rule.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Most entries in one CIDR list.
pub const MAX_CIDRS: usize = 4096;
/// Most addresses read from one `X-Forwarded-For` header.
pub const MAX_FORWARDED_HOPS: usize = 32;

/// Why a CIDR list or a forwarded header was refused. Never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpRuleError {
    /// Entry `index` (from 0) is not a network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`)
    /// or a single address.
    #[error("entry {index} is not a CIDR network or an address")]
    Syntax {
        /// Which entry.
        index: usize,
    },
    /// Entry `index` has bits set below its prefix (`10.0.0.1/8`): probably a typo.
    #[error("entry {index} has host bits set below its prefix length")]
    HostBits {
        /// Which entry.
        index: usize,
    },
    /// More than [`MAX_CIDRS`] entries.
    #[error("more than {MAX_CIDRS} networks")]
    TooMany,
    /// An `X-Forwarded-For` hop from a trusted proxy is not an address, or there are more
    /// than [`MAX_FORWARDED_HOPS`].
    #[error("malformed X-Forwarded-For")]
    Forwarded,
}

/// A parsed list of networks.
///
/// ```
/// use nova_auth::ip_rules::CidrList;
/// let list: CidrList = "10.0.0.0/8, 2001:db8::/32, 192.0.2.7".parse()?;
/// assert!(list.contains("10.1.2.3".parse().unwrap()));
/// assert!(list.contains("::ffff:10.9.9.9".parse().unwrap()));
/// assert!(!list.contains("192.0.2.8".parse().unwrap()));
/// # Ok::<(), nova_auth::ip_rules::IpRuleError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CidrList(Vec<IpNet>);

impl fmt::Debug for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 as IPv4; everything else unchanged.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl CidrList {
    /// Parses entries (networks or single addresses).
    ///
    /// # Errors
    /// [`IpRuleError`] naming the first bad entry by position.
    pub fn parse_entries<'a>(
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, IpRuleError> {
        let mut out = Vec::new();
        for (index, raw) in entries.into_iter().enumerate() {
            if out.len() >= MAX_CIDRS {
                return Err(IpRuleError::TooMany);
            }
            let s = raw.trim();
            let net = if s.contains('/') {
                let net = IpNet::from_str(s).map_err(|_| IpRuleError::Syntax { index })?;
                if net.trunc() != net {
                    return Err(IpRuleError::HostBits { index });
                }
                net
            } else {
                IpNet::from(IpAddr::from_str(s).map_err(|_| IpRuleError::Syntax { index })?)
            };
            // A mapped IPv6 network is stored as its IPv4 equivalent so lookups agree.
            let net = match net {
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                    Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                        .map_err(|_| IpRuleError::Syntax { index })?,
                    None => net,
                },
                other => other,
            };
            out.push(net);
        }
        Ok(Self(out))
    }

    /// Whether `ip` is in any of the networks.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, single addresses as /32 or /128.
    #[must_use]
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

/// Configuration gives a list of networks or addresses (`["10.0.0.0/8", "192.0.2.7"]`),
/// parsed as [`CidrList::parse_entries`] does.
impl<'de> serde::Deserialize<'de> for CidrList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = <Vec<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        Self::parse_entries(entries.iter().map(AsRef::as_ref)).map_err(serde::de::Error::custom)
    }
}

impl FromStr for CidrList {
    type Err = IpRuleError;

    /// A comma-separated list; empty text is the empty list.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        Self::parse_entries(s.split(','))
    }
}

/// What to do with an address no list names (`"allow"` or `"deny"` in configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Admit it.
    Allow,
    /// Refuse it.
    Deny,
}

/// Allow and deny lists with a default; deny wins over allow.
///
/// ```
/// use nova_auth::ip_rules::{DefaultAction, IpRules};
/// let rules = IpRules::new(DefaultAction::Deny)
///     .allow("10.0.0.0/8".parse()?)
///     .deny("10.66.0.0/16".parse()?);
/// assert!(rules.permits("10.1.2.3".parse().unwrap()));
/// assert!(!rules.permits("10.66.1.1".parse().unwrap())); // deny wins
/// assert!(!rules.permits("192.0.2.1".parse().unwrap())); // default
/// # Ok::<(), nova_auth::ip_rules::IpRuleError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRules {
    allow: CidrList,
    deny: CidrList,
    default: DefaultAction,
}

impl IpRules {
    /// No lists yet; addresses get `default`.
    #[must_use]
    pub fn new(default: DefaultAction) -> Self {
        Self {
            allow: CidrList::default(),
            deny: CidrList::default(),
            default,
        }
    }

    /// Sets the allow list.
    #[must_use]
    pub fn allow(mut self, list: CidrList) -> Self {
        self.allow = list;
        self
    }

    /// Sets the deny list.
    #[must_use]
    pub fn deny(mut self, list: CidrList) -> Self {
        self.deny = list;
        self
    }

    /// Whether `ip` may connect.
    #[must_use]
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.contains(ip) {
            return false;
        }
        if self.allow.contains(ip) {
            return true;
        }
        self.default == DefaultAction::Allow
    }
}

/// The proxies whose `X-Forwarded-For` entries are believed.
///
/// ```
/// use nova_auth::ip_rules::TrustedProxies;
/// let proxies: TrustedProxies = "10.0.0.0/8".parse()?;
/// let peer = "10.0.0.5".parse().unwrap();
/// // The right-most entry not from a trusted proxy is the client; the spoofed one is ignored.
/// let client = proxies.client_ip(peer, Some("6.6.6.6, 203.0.113.9, 10.0.0.7"))?;
/// assert_eq!(client, "203.0.113.9".parse::<std::net::IpAddr>().unwrap());
/// // An untrusted peer is the client, whatever it claims.
/// let direct = proxies.client_ip("198.51.100.1".parse().unwrap(), Some("10.0.0.1"))?;
/// assert_eq!(direct, "198.51.100.1".parse::<std::net::IpAddr>().unwrap());
/// # Ok::<(), nova_auth::ip_rules::IpRuleError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(CidrList);

impl FromStr for TrustedProxies {
    type Err = IpRuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl TrustedProxies {
    /// No proxy is trusted: the TCP peer is always the client.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts these networks.
    #[must_use]
    pub fn new(list: CidrList) -> Self {
        Self(list)
    }

    /// The client address for a connection from `peer` carrying `forwarded_for` (the
    /// `X-Forwarded-For` values joined with `,`, if any).
    ///
    /// # Errors
    /// [`IpRuleError::Forwarded`] when a trusted proxy passed on a hop that is not an address
    /// or too many hops: the request should be refused rather than guessed about.
    pub fn client_ip(
        &self,
        peer: IpAddr,
        forwarded_for: Option<&str>,
    ) -> Result<IpAddr, IpRuleError> {
        let peer = canonical(peer);
        if !self.0.contains(peer) {
            return Ok(peer);
        }
        let Some(header) = forwarded_for else {
            return Ok(peer);
        };
        let mut current = peer;
        for (hops, raw) in header.rsplit(',').enumerate() {
            if hops >= MAX_FORWARDED_HOPS {
                return Err(IpRuleError::Forwarded);
            }
            let hop = parse_hop(raw.trim()).ok_or(IpRuleError::Forwarded)?;
            current = hop;
            if !self.0.contains(hop) {
                return Ok(hop);
            }
        }
        // Every hop was a trusted proxy: the left-most one is as far as the chain goes.
        Ok(current)
    }
}

/// One `X-Forwarded-For` hop: an address, possibly bracketed IPv6 or with a port.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, _) = rest.split_once(']')?;
        return IpAddr::from_str(addr).ok().map(canonical);
    }
    let (addr, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    std::net::Ipv4Addr::from_str(addr).ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn deny_wins_over_allow_for_v4_v6_and_mapped_addresses() {
        let rules = IpRules::new(DefaultAction::Allow)
            .allow("10.0.0.0/8, 2001:db8::/32".parse().unwrap_or_default())
            .deny(
                "10.66.0.0/16, 2001:db8:bad::/48"
                    .parse()
                    .unwrap_or_default(),
            );
        assert!(rules.permits(ip("10.1.1.1")));
        assert!(!rules.permits(ip("10.66.1.1")));
        assert!(
            !rules.permits(ip("::ffff:10.66.1.1")),
            "mapped form of a denied address"
        );
        assert!(!rules.permits(ip("2001:db8:bad::1")));
        assert!(rules.permits(ip("2001:db8:1::1")));
        assert!(rules.permits(ip("192.0.2.1")), "default allow");
        let closed =
            IpRules::new(DefaultAction::Deny).allow("10.0.0.0/8".parse().unwrap_or_default());
        assert!(!closed.permits(ip("192.0.2.1")));
        assert!(closed.permits(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn cidr_lists_refuse_malformed_entries_by_position() {
        assert_eq!(
            "10.0.0.0/8, nope".parse::<CidrList>(),
            Err(IpRuleError::Syntax { index: 1 })
        );
        assert_eq!(
            "10.0.0.1/8".parse::<CidrList>(),
            Err(IpRuleError::HostBits { index: 0 })
        );
        assert_eq!(
            "10.0.0.0/33".parse::<CidrList>(),
            Err(IpRuleError::Syntax { index: 0 })
        );
        assert_eq!(
            "::/129".parse::<CidrList>(),
            Err(IpRuleError::Syntax { index: 0 })
        );
        assert_eq!(
            "10.0.0.0/8,".parse::<CidrList>(),
            Err(IpRuleError::Syntax { index: 1 })
        );
        assert!("".parse::<CidrList>().is_ok_and(|l| l.is_empty()));
        let mapped: CidrList = "::ffff:10.0.0.0/104".parse().unwrap_or_default();
        assert!(mapped.contains(ip("10.200.0.1")));
        let many = vec!["10.0.0.0/8"; MAX_CIDRS + 1].join(",");
        assert_eq!(many.parse::<CidrList>(), Err(IpRuleError::TooMany));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: TrustedProxies = "10.0.0.0/8, fd00::/8".parse().unwrap_or_default();
        // Untrusted peer: the header is ignored.
        assert_eq!(
            proxies.client_ip(ip("203.0.113.5"), Some("1.2.3.4")),
            Ok(ip("203.0.113.5"))
        );
        // Trusted peer, no header: the peer.
        assert_eq!(proxies.client_ip(ip("10.0.0.2"), None), Ok(ip("10.0.0.2")));
        // Two trusted hops, then the client; the left-most (spoofable) entry is ignored.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), Some("9.9.9.9, 198.51.100.4, 10.1.1.1")),
            Ok(ip("198.51.100.4"))
        );
        // IPv6 hops, bracketed with a port, and an IPv4 hop with a port.
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), Some("[2001:db8::7]:443")),
            Ok(ip("2001:db8::7"))
        );
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), Some("198.51.100.4:5555")),
            Ok(ip("198.51.100.4"))
        );
        // Garbage from a trusted proxy is refused, not guessed about.
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), Some("unknown")),
            Err(IpRuleError::Forwarded)
        );
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), Some("1.2.3.4,,")),
            Err(IpRuleError::Forwarded)
        );
        let long = vec!["10.0.0.1"; MAX_FORWARDED_HOPS + 1].join(",");
        assert_eq!(
            proxies.client_ip(ip("10.0.0.2"), Some(&long)),
            Err(IpRuleError::Forwarded)
        );
        // No proxy trusted at all: always the peer.
        assert_eq!(
            TrustedProxies::none().client_ip(ip("10.0.0.2"), Some("1.2.3.4")),
            Ok(ip("10.0.0.2"))
        );
    }
}
