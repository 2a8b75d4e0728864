//! The addresses Cordon must never cut off (issue: "safety of the network itself"): its own
//! addresses, and the hosts its drivers talk to. A server holding one is never quarantined.

use std::net::{IpAddr, ToSocketAddrs};

use cordon_config::Config;

/// Every address of this host (read from `/proc`: IPv4 local routes, IPv6 interface addresses),
/// the listen address, and the hosts of the hypervisor URIs, the BMC endpoints and the PostgreSQL
/// database (names resolved now; a name that does not resolve is skipped with a warning).
pub fn addresses(config: &Config) -> Vec<(IpAddr, String)> {
    let mut found: Vec<(IpAddr, String)> = Vec::new();
    let mut add = |address: IpAddr, what: String| {
        if !address.is_unspecified() && !found.iter().any(|(a, _)| *a == address) {
            found.push((address, what));
        }
    };
    for address in local_addresses() {
        add(address, "an address of the host Cordon runs on".to_string());
    }
    add(config.manager.listen.ip(), "the address Cordon's API listens on".to_string());
    for hypervisor in &config.hypervisors {
        if let Some(host) = url_host(&hypervisor.uri) {
            for address in resolve(&host, &format!("hypervisor {}", hypervisor.name)) {
                add(address, format!("the endpoint of hypervisor {}", hypervisor.name));
            }
        }
    }
    if let Some(host) = config.manager.database.as_deref().and_then(url_host) {
        for address in resolve(&host, "the database") {
            add(address, "the database host".to_string());
        }
    }
    for server in &config.servers {
        if let Some(bmc) = &server.bmc
            && let Some(host) = url_host(&bmc.endpoint)
        {
            for address in resolve(&host, &format!("the BMC of {}", server.name)) {
                add(address, format!("the BMC endpoint of server {}", server.name));
            }
        }
    }
    found
}

/// The host of `scheme://[user@]host[:port]/...`, without IPv6 brackets; `None` for a local URI
/// such as `qemu:///system`.
fn url_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split_once(']')?.0
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

fn resolve(host: &str, what: &str) -> Vec<IpAddr> {
    if let Ok(address) = host.parse::<IpAddr>() {
        return vec![address];
    }
    match (host, 0).to_socket_addrs() {
        Ok(addresses) => addresses.map(|a| a.ip()).collect(),
        Err(error) => {
            tracing::warn!(%host, %error, "cannot resolve {what}: servers holding its address are not protected from quarantine");
            Vec::new()
        }
    }
}

/// IPv4 addresses from the kernel's local routing table, IPv6 ones from `if_inet6`.
fn local_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // /proc/net/fib_trie lists each local address on the line before "/32 host LOCAL".
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut previous: Option<&str> = None;
        for line in trie.lines() {
            if line.contains("/32 host LOCAL")
                && let Some(address) = previous.and_then(|p| p.trim().trim_start_matches("|-- ").parse::<IpAddr>().ok())
                && !out.contains(&address)
            {
                out.push(address);
            }
            previous = Some(line);
        }
    }
    if let Ok(inet6) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in inet6.lines() {
            let Some(hex) = line.split_whitespace().next() else { continue };
            if hex.len() != 32 {
                continue;
            }
            let mut bytes = [0u8; 16];
            let ok = (0..16).all(|i| match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                Ok(byte) => {
                    bytes[i] = byte;
                    true
                }
                Err(_) => false,
            });
            if ok {
                out.push(IpAddr::from(bytes));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_uris_and_endpoints() {
        assert_eq!(url_host("qemu:///system"), None);
        assert_eq!(url_host("qemu+ssh://root@10.0.0.5/system").as_deref(), Some("10.0.0.5"));
        assert_eq!(url_host("qemu+tcp://kvm-1.example:16509/system").as_deref(), Some("kvm-1.example"));
        assert_eq!(url_host("https://[2001:db8::5]:8443").as_deref(), Some("2001:db8::5"));
        assert_eq!(url_host("https://10.0.0.7").as_deref(), Some("10.0.0.7"));
        assert_eq!(url_host("qemu:///system?socket=/tmp/x/libvirt-sock"), None);
        assert_eq!(url_host("postgres://cordon@10.0.0.9:5432/cordon").as_deref(), Some("10.0.0.9"));
    }

    #[test]
    fn this_host_has_its_loopback_address() {
        let addresses = local_addresses();
        assert!(addresses.contains(&"127.0.0.1".parse().unwrap()), "{addresses:?}");
    }
}
