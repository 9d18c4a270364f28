//! Outbound request guard (SSRF, security checklist item 9): owns which addresses wagate may contact for model and webhook calls, the URL pre-check, and a DNS resolver that enforces the same rules on every connection.
//!
//! Link-local and cloud metadata addresses, unspecified, multicast and broadcast addresses are
//! always refused. Loopback, private, shared (CGNAT) and other non-global ranges are refused unless
//! the operator lists them in `WAGATE_ALLOW_PRIVATE_NETWORKS`. Public addresses are allowed over
//! https; plain http is only allowed to the listed networks. IPv4-mapped (`::ffff:a.b.c.d`) and
//! NAT64 (`64:ff9b::a.b.c.d`) IPv6 addresses are judged by the IPv4 address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why an outbound target was refused. The Display text is meant for operators (logs, API
/// errors): it names the host or address and its class, never a URL path, query or credential.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum GuardError {
    #[error("the URL is not valid ({reason})")]
    InvalidUrl { reason: String },
    #[error("URL scheme {scheme:?} is not allowed; use https")]
    Scheme { scheme: String },
    #[error("the URL has no host")]
    NoHost,
    #[error("{ip} is a cloud metadata address and is never allowed")]
    Metadata { ip: IpAddr },
    #[error("{ip} is a link-local address and is never allowed")]
    LinkLocal { ip: IpAddr },
    #[error("{ip} is an unspecified address and is never allowed")]
    Unspecified { ip: IpAddr },
    #[error("{ip} is a multicast address and is never allowed")]
    Multicast { ip: IpAddr },
    #[error("{ip} is the broadcast address and is never allowed")]
    Broadcast { ip: IpAddr },
    #[error(
        "{ip} is a loopback address; to let wagate reach a local server (model or webhook receiver) set \
         WAGATE_ALLOW_PRIVATE_NETWORKS={allow_with}"
    )]
    Loopback { ip: IpAddr, allow_with: IpNet },
    #[error(
        "{ip} is a private network address; to let wagate reach it set \
         WAGATE_ALLOW_PRIVATE_NETWORKS={allow_with}"
    )]
    Private { ip: IpAddr, allow_with: IpNet },
    #[error(
        "{ip} is a shared (carrier-grade NAT) address; to let wagate reach it set \
         WAGATE_ALLOW_PRIVATE_NETWORKS={allow_with}"
    )]
    SharedNat { ip: IpAddr, allow_with: IpNet },
    #[error(
        "{ip} is a reserved, non-public address; to let wagate reach it set \
         WAGATE_ALLOW_PRIVATE_NETWORKS={allow_with}"
    )]
    Reserved { ip: IpAddr, allow_with: IpNet },
    #[error(
        "plain http is only allowed to networks in WAGATE_ALLOW_PRIVATE_NETWORKS; \
         {host} is not in them, use https"
    )]
    PlainHttp { host: String },
    #[error("could not resolve {host}")]
    Resolve { host: String },
}

impl GuardError {
    /// True when the target was refused by policy; false when it merely could not be resolved.
    pub fn is_policy(&self) -> bool {
        !matches!(self, GuardError::Resolve { .. })
    }
}

/// Decides which addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct OutboundGuard {
    allow: Vec<IpNet>,
}

enum Class {
    Public,
    /// Refused whatever the allow list says.
    Never(GuardError),
    /// Refused unless inside an allowed network.
    NonGlobal(GuardError),
}

const V4_LOOPBACK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
const V4_PRIVATE: [Ipv4Net; 3] = [
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
];
const V4_SHARED: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10);
const V4_LINK_LOCAL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16);
const V4_METADATA: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, ...
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const V4_RESERVED: [Ipv4Net; 8] = [
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8), // "this network"
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24), // TEST-NET-1
    Ipv4Net::new_assert(Ipv4Addr::new(192, 88, 99, 0), 24), // 6to4 relay anycast
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24), // TEST-NET-2
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24), // TEST-NET-3
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), // reserved (broadcast handled first)
];

const V6_LOOPBACK: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128);
const V6_METADATA: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254); // AWS
const V6_LINK_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);
const V6_UNIQUE_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7);
const V6_SITE_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10);
const V6_NAT64: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
const V6_GLOBAL_UNICAST: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);
const V6_RESERVED: [Ipv6Net; 6] = [
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments (Teredo, ...)
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4
    Ipv6Net::new_assert(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // SRv6 SIDs
    Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
];

/// The IPv4 address an IPv6 address stands for: IPv4-mapped or well-known-prefix NAT64.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if V6_NAT64.contains(&ip) {
        let o = ip.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    None
}

fn classify_v4(v4: Ipv4Addr) -> Class {
    let ip = IpAddr::V4(v4);
    if v4.is_unspecified() {
        return Class::Never(GuardError::Unspecified { ip });
    }
    if v4.is_broadcast() {
        return Class::Never(GuardError::Broadcast { ip });
    }
    if v4.is_multicast() {
        return Class::Never(GuardError::Multicast { ip });
    }
    if V4_METADATA.contains(&v4) {
        return Class::Never(GuardError::Metadata { ip });
    }
    if V4_LINK_LOCAL.contains(&v4) {
        return Class::Never(GuardError::LinkLocal { ip });
    }
    if V4_LOOPBACK.contains(&v4) {
        return Class::NonGlobal(GuardError::Loopback {
            ip,
            allow_with: V4_LOOPBACK.into(),
        });
    }
    if let Some(net) = V4_PRIVATE.iter().find(|n| n.contains(&v4)) {
        return Class::NonGlobal(GuardError::Private {
            ip,
            allow_with: (*net).into(),
        });
    }
    if V4_SHARED.contains(&v4) {
        return Class::NonGlobal(GuardError::SharedNat {
            ip,
            allow_with: V4_SHARED.into(),
        });
    }
    if let Some(net) = V4_RESERVED.iter().find(|n| n.contains(&v4)) {
        return Class::NonGlobal(GuardError::Reserved {
            ip,
            allow_with: (*net).into(),
        });
    }
    Class::Public
}

fn classify(ip: IpAddr) -> Class {
    let v6 = match ip {
        IpAddr::V4(v4) => return classify_v4(v4),
        IpAddr::V6(v6) => v6,
    };
    if v6.is_unspecified() {
        return Class::Never(GuardError::Unspecified { ip });
    }
    if let Some(v4) = embedded_v4(v6) {
        return classify_v4(v4);
    }
    if v6.is_loopback() {
        return Class::NonGlobal(GuardError::Loopback {
            ip,
            allow_with: V6_LOOPBACK.into(),
        });
    }
    if v6.is_multicast() {
        return Class::Never(GuardError::Multicast { ip });
    }
    if v6 == V6_METADATA {
        return Class::Never(GuardError::Metadata { ip });
    }
    if V6_LINK_LOCAL.contains(&v6) {
        return Class::Never(GuardError::LinkLocal { ip });
    }
    if V6_UNIQUE_LOCAL.contains(&v6) {
        return Class::NonGlobal(GuardError::Private {
            ip,
            allow_with: V6_UNIQUE_LOCAL.into(),
        });
    }
    if V6_SITE_LOCAL.contains(&v6) {
        return Class::NonGlobal(GuardError::Private {
            ip,
            allow_with: V6_SITE_LOCAL.into(),
        });
    }
    if let Some(net) = V6_RESERVED.iter().find(|n| n.contains(&v6)) {
        return Class::NonGlobal(GuardError::Reserved {
            ip,
            allow_with: (*net).into(),
        });
    }
    if !V6_GLOBAL_UNICAST.contains(&v6) {
        return Class::NonGlobal(GuardError::Reserved {
            ip,
            allow_with: IpNet::from(ip),
        });
    }
    Class::Public
}

impl OutboundGuard {
    /// A guard that additionally allows the given networks (`WAGATE_ALLOW_PRIVATE_NETWORKS`).
    /// Listing a network never unlocks the always-refused classes (link-local, metadata, ...).
    pub fn new(allow_private_networks: Vec<IpNet>) -> Self {
        Self {
            allow: allow_private_networks,
        }
    }

    /// The networks the operator allowed.
    pub fn allowed_networks(&self) -> &[IpNet] {
        &self.allow
    }

    /// True when the address (or the IPv4 address it embeds) lies in an allowed network.
    fn is_listed(&self, ip: IpAddr) -> bool {
        let listed = |ip: IpAddr| self.allow.iter().any(|net| net.contains(&ip));
        if listed(ip) {
            return true;
        }
        match ip {
            IpAddr::V6(v6) => embedded_v4(v6).is_some_and(|v4| listed(IpAddr::V4(v4))),
            IpAddr::V4(_) => false,
        }
    }

    /// Classifies one address: Ok if it may be contacted.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), GuardError> {
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Never(err) => Err(err),
            Class::NonGlobal(_) if self.is_listed(ip) => Ok(()),
            Class::NonGlobal(err) => Err(err),
        }
    }

    /// Parses and checks a URL before any request: scheme http/https only; a literal IP host is
    /// checked directly, a domain is resolved and checked; plain `http` is allowed only when the
    /// host is a literal IP inside an allowed network or resolves only into allowed networks.
    pub async fn check_url(&self, url: &Url) -> Result<(), GuardError> {
        self.checked_addrs(url).await.map(|_| ())
    }

    /// Like [`check_url`](Self::check_url), and returns the resolved addresses of a domain host
    /// that passed [`check_ip`](Self::check_ip) (empty for a literal IP host), so that a caller
    /// can pin its connection to exactly the addresses that were checked.
    pub async fn checked_addrs(&self, url: &Url) -> Result<Vec<SocketAddr>, GuardError> {
        let plain_http = match url.scheme() {
            "https" => false,
            "http" => true,
            other => {
                return Err(GuardError::Scheme {
                    scheme: other.to_owned(),
                })
            }
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let (ips, addrs) = match url.host() {
            None => return Err(GuardError::NoHost),
            Some(Host::Ipv4(v4)) => (vec![IpAddr::V4(v4)], Vec::new()),
            Some(Host::Ipv6(v6)) => (vec![IpAddr::V6(v6)], Vec::new()),
            Some(Host::Domain(domain)) => {
                let addrs = self.resolve_checked(domain, port).await?;
                (addrs.iter().map(SocketAddr::ip).collect(), addrs)
            }
        };
        for ip in &ips {
            self.check_ip(*ip)?;
        }
        if plain_http && !ips.iter().all(|ip| self.is_listed(*ip)) {
            return Err(GuardError::PlainHttp {
                host: url.host_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(addrs)
    }

    /// Resolves `host` and keeps only the addresses that pass `check_ip`. Fails with the first
    /// refusal when none pass, or with `Resolve` when the name does not resolve.
    async fn resolve_checked(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, GuardError> {
        let resolved =
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| GuardError::Resolve {
                    host: host.to_owned(),
                })?;
        let mut first_refusal = None;
        let mut usable = Vec::new();
        for addr in resolved {
            match self.check_ip(addr.ip()) {
                Ok(()) => usable.push(addr),
                Err(err) => {
                    tracing::debug!(host, address = %addr.ip(), reason = %err, "outbound guard dropped a resolved address");
                    first_refusal.get_or_insert(err);
                }
            }
        }
        if usable.is_empty() {
            return Err(first_refusal.unwrap_or(GuardError::Resolve {
                host: host.to_owned(),
            }));
        }
        Ok(usable)
    }

    /// A reqwest DNS resolver that resolves with `tokio::net::lookup_host` and drops addresses
    /// failing `check_ip` (refusing the name when none remain), so the check happens after DNS
    /// resolution and on the address actually connected to (no DNS-rebinding gap). Literal IP
    /// hosts never reach a resolver: check them with `check_url` before the request.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn Resolve> {
        Arc::new(GuardedResolver {
            guard: Arc::clone(self),
        })
    }
}

struct GuardedResolver {
    guard: Arc<OutboundGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0 is replaced by the URL's port (or the scheme default) by the connector.
            let addrs = guard.resolve_checked(&host, 0).await?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn strict() -> OutboundGuard {
        OutboundGuard::new(Vec::new())
    }

    /// A guard that lists every network: only the always-refused classes remain refused.
    fn allow_all() -> OutboundGuard {
        OutboundGuard::new(vec![net("0.0.0.0/0"), net("::/0")])
    }

    #[test]
    fn public_addresses_are_allowed() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "104.18.0.1",
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(strict().check_ip(ip(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn metadata_addresses_are_always_refused() {
        for a in [
            "169.254.169.254",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "::ffff:100.100.100.200",
            "64:ff9b::a9fe:a9fe",
        ] {
            for guard in [strict(), allow_all()] {
                let err = guard.check_ip(ip(a)).unwrap_err();
                assert!(matches!(err, GuardError::Metadata { .. }), "{a}: {err:?}");
                assert!(err.to_string().contains("metadata"), "{err}");
            }
        }
    }

    #[test]
    fn link_local_is_always_refused() {
        for a in ["169.254.1.1", "fe80::1", "febf::1", "::ffff:169.254.0.1"] {
            for guard in [
                strict(),
                allow_all(),
                OutboundGuard::new(vec![net("169.254.0.0/16"), net("fe80::/10")]),
            ] {
                let err = guard.check_ip(ip(a)).unwrap_err();
                assert!(matches!(err, GuardError::LinkLocal { .. }), "{a}: {err:?}");
                assert!(err.to_string().contains("link-local"));
            }
        }
    }

    #[test]
    fn unspecified_multicast_broadcast_are_always_refused() {
        for guard in [strict(), allow_all()] {
            for a in ["0.0.0.0", "::", "::ffff:0.0.0.0"] {
                let err = guard.check_ip(ip(a)).unwrap_err();
                assert!(
                    matches!(err, GuardError::Unspecified { .. }),
                    "{a}: {err:?}"
                );
            }
            for a in [
                "224.0.0.1",
                "239.255.255.250",
                "ff02::1",
                "ff0e::1",
                "::ffff:224.0.0.251",
            ] {
                let err = guard.check_ip(ip(a)).unwrap_err();
                assert!(matches!(err, GuardError::Multicast { .. }), "{a}: {err:?}");
            }
            for a in ["255.255.255.255", "::ffff:255.255.255.255"] {
                let err = guard.check_ip(ip(a)).unwrap_err();
                assert!(matches!(err, GuardError::Broadcast { .. }), "{a}: {err:?}");
            }
        }
    }

    #[test]
    fn loopback_is_refused_with_a_hint_unless_allowed() {
        let err = strict().check_ip(ip("127.0.0.1")).unwrap_err();
        assert!(matches!(err, GuardError::Loopback { .. }));
        assert_eq!(
            err.to_string(),
            "127.0.0.1 is a loopback address; to let wagate reach a local server (model or webhook receiver) set \
             WAGATE_ALLOW_PRIVATE_NETWORKS=127.0.0.0/8"
        );
        let err = strict().check_ip(ip("::1")).unwrap_err();
        assert!(
            err.to_string()
                .contains("WAGATE_ALLOW_PRIVATE_NETWORKS=::1/128"),
            "{err}"
        );
        let err = strict().check_ip(ip("::ffff:127.0.0.1")).unwrap_err();
        assert!(matches!(err, GuardError::Loopback { .. }));
        assert!(strict().check_ip(ip("127.255.0.9")).is_err());

        let guard = OutboundGuard::new(vec![net("127.0.0.0/8")]);
        assert_eq!(guard.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(guard.check_ip(ip("127.9.9.9")), Ok(()));
        assert_eq!(guard.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        assert!(
            guard.check_ip(ip("::1")).is_err(),
            "::1 is not in 127.0.0.0/8"
        );
        assert!(guard.check_ip(ip("10.0.0.1")).is_err());
        let guard = OutboundGuard::new(vec![net("::1/128")]);
        assert_eq!(guard.check_ip(ip("::1")), Ok(()));
    }

    #[test]
    fn private_ranges_are_refused_unless_allowed() {
        for (a, hint) in [
            ("10.1.2.3", "10.0.0.0/8"),
            ("172.16.0.1", "172.16.0.0/12"),
            ("172.31.255.255", "172.16.0.0/12"),
            ("192.168.1.10", "192.168.0.0/16"),
            ("::ffff:192.168.1.10", "192.168.0.0/16"),
            ("fc00::1", "fc00::/7"),
            ("fd12:3456::1", "fc00::/7"),
        ] {
            let err = strict().check_ip(ip(a)).unwrap_err();
            assert!(matches!(err, GuardError::Private { .. }), "{a}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("private"), "{msg}");
            assert!(
                msg.contains(&format!("WAGATE_ALLOW_PRIVATE_NETWORKS={hint}")),
                "{msg}"
            );
            assert_eq!(allow_all().check_ip(ip(a)), Ok(()), "{a}");
        }
        assert_eq!(
            strict().check_ip(ip("172.32.0.1")),
            Ok(()),
            "just outside 172.16/12"
        );

        let guard = OutboundGuard::new(vec![net("192.168.1.0/24")]);
        assert_eq!(guard.check_ip(ip("192.168.1.77")), Ok(()));
        assert!(guard.check_ip(ip("192.168.2.1")).is_err());
        let guard = OutboundGuard::new(vec![net("fd00::/8")]);
        assert_eq!(guard.check_ip(ip("fd12::1")), Ok(()));
        assert!(guard.check_ip(ip("fc00::1")).is_err());
        // The allow list never unlocks the metadata address inside fd00::/8.
        assert!(matches!(
            guard.check_ip(ip("fd00:ec2::254")),
            Err(GuardError::Metadata { .. })
        ));
    }

    #[test]
    fn shared_and_reserved_ranges_are_refused_unless_allowed() {
        let err = strict().check_ip(ip("100.64.0.1")).unwrap_err();
        assert!(matches!(err, GuardError::SharedNat { .. }), "{err:?}");
        assert!(err.to_string().contains("100.64.0.0/10"));
        assert_eq!(
            strict().check_ip(ip("100.128.0.1")),
            Ok(()),
            "just outside 100.64/10"
        );
        let guard = OutboundGuard::new(vec![net("100.64.0.0/10")]);
        assert_eq!(guard.check_ip(ip("100.64.0.1")), Ok(()));
        // The Alibaba metadata address lies inside 100.64/10 but stays refused.
        assert!(matches!(
            guard.check_ip(ip("100.100.100.200")),
            Err(GuardError::Metadata { .. })
        ));

        for a in [
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.1",
            "203.0.113.1",
            "240.0.0.1",
            "::ffff:198.18.0.1",
            "2001:db8::1",
            "2001::1",
            "2002:c000:0204::1",
            "100::1",
            "::1.2.3.4",
            "3fff::1",
            "64:ff9b:1::1",
        ] {
            let err = strict().check_ip(ip(a)).unwrap_err();
            assert!(matches!(err, GuardError::Reserved { .. }), "{a}: {err:?}");
            assert!(err.to_string().contains("WAGATE_ALLOW_PRIVATE_NETWORKS="));
            assert_eq!(allow_all().check_ip(ip(a)), Ok(()), "{a}");
        }
        let guard = OutboundGuard::new(vec![net("198.18.0.0/15")]);
        assert_eq!(guard.check_ip(ip("198.18.3.4")), Ok(()));
    }

    #[test]
    fn nat64_addresses_are_judged_by_their_ipv4_address() {
        let err = strict().check_ip(ip("64:ff9b::a00:1")).unwrap_err();
        assert!(matches!(err, GuardError::Private { .. }), "{err:?}");
        let guard = OutboundGuard::new(vec![net("10.0.0.0/8")]);
        assert_eq!(guard.check_ip(ip("64:ff9b::a00:1")), Ok(()));
    }

    #[test]
    fn guard_errors_are_policy_except_resolution() {
        assert!(GuardError::NoHost.is_policy());
        assert!(!GuardError::Resolve { host: "x".into() }.is_policy());
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[tokio::test]
    async fn check_url_scheme_and_literal_hosts() {
        let g = strict();
        assert!(matches!(
            g.check_url(&url("ftp://8.8.8.8/x")).await,
            Err(GuardError::Scheme { .. })
        ));
        assert!(matches!(
            g.check_url(&url("file:///etc/passwd")).await,
            Err(GuardError::Scheme { .. })
        ));
        assert_eq!(g.check_url(&url("https://8.8.8.8/v1")).await, Ok(()));
        assert_eq!(
            g.check_url(&url("https://[2606:4700:4700::1111]/v1")).await,
            Ok(())
        );
        let err = g.check_url(&url("http://8.8.8.8/v1")).await.unwrap_err();
        assert!(matches!(err, GuardError::PlainHttp { .. }), "{err:?}");
        assert!(err
            .to_string()
            .contains("plain http is only allowed to networks in WAGATE_ALLOW_PRIVATE_NETWORKS"));
        assert!(matches!(
            g.check_url(&url("https://169.254.169.254/latest/meta-data"))
                .await,
            Err(GuardError::Metadata { .. })
        ));
        assert!(matches!(
            g.check_url(&url("https://[::ffff:169.254.169.254]/")).await,
            Err(GuardError::Metadata { .. })
        ));
        // Alternative spellings of an IPv4 literal are normalised by the URL parser.
        assert!(matches!(
            g.check_url(&url("http://2130706433:8080/")).await,
            Err(GuardError::Loopback { .. })
        ));
        assert!(matches!(
            g.check_url(&url("http://0x7f.1/")).await,
            Err(GuardError::Loopback { .. })
        ));
    }

    #[tokio::test]
    async fn check_url_plain_http_only_to_allowed_networks() {
        let g = OutboundGuard::new(vec![net("127.0.0.0/8"), net("8.8.8.0/24")]);
        assert_eq!(g.check_url(&url("http://127.0.0.1:11434/v1")).await, Ok(()));
        assert_eq!(
            g.check_url(&url("https://127.0.0.1:11434/v1")).await,
            Ok(())
        );
        // A listed public network may be reached over plain http too.
        assert_eq!(g.check_url(&url("http://8.8.8.8/v1")).await, Ok(()));
        assert!(matches!(
            g.check_url(&url("http://1.1.1.1/v1")).await,
            Err(GuardError::PlainHttp { .. })
        ));
        assert!(matches!(
            g.check_url(&url("http://10.0.0.1/v1")).await,
            Err(GuardError::Private { .. })
        ));
    }

    #[tokio::test]
    async fn check_url_resolves_domains_and_pins_checked_addresses() {
        // `localhost` resolves locally (no network) to loopback addresses.
        let err = strict()
            .check_url(&url("https://localhost:8443/v1"))
            .await
            .unwrap_err();
        assert!(matches!(err, GuardError::Loopback { .. }), "{err:?}");

        let g = OutboundGuard::new(vec![net("127.0.0.0/8")]);
        let addrs = g
            .checked_addrs(&url("http://localhost:8080/v1"))
            .await
            .unwrap();
        assert!(!addrs.is_empty());
        for a in &addrs {
            assert!(a.ip().is_loopback() && a.is_ipv4(), "{a}");
            assert_eq!(a.port(), 8080);
        }
        assert!(g
            .checked_addrs(&url("http://127.0.0.1:8080/v1"))
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn resolver_drops_refused_addresses() {
        let name: Name = "localhost".parse().unwrap();
        let err = Arc::new(strict())
            .resolver()
            .resolve(name)
            .await
            .err()
            .unwrap();
        let err = err.downcast_ref::<GuardError>().unwrap();
        assert!(matches!(err, GuardError::Loopback { .. }), "{err:?}");

        let g = Arc::new(OutboundGuard::new(vec![net("127.0.0.0/8")]));
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = g.resolver().resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.is_ipv4()));
    }
}
