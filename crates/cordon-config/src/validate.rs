//! The meaning of the configuration: every value parsed, every rule and cross-reference checked,
//! every problem recorded before giving up.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cordon_model::{AddressRange, MacAddr, NetworkRole, ServerKind, SwitchDriverKind};
use ipnet::IpNet;

use crate::document::{Document, Entry, Leaf};
use crate::{
    Config, DEFAULT_DATA_DIR, DEFAULT_LISTEN, MAX_INTERFACE_NAME, ManagerConfig, NetworkConfig, NicConfig, Problems,
    ServerConfig, SwitchConfig, TenantConfig,
};

/// Checks everything; returns the configuration only when nothing was wrong.
pub(crate) fn validate(path: &Path, document: &Document, problems: &mut Problems) -> Option<Config> {
    let mut v = Validator { problems };
    let manager = v.manager(path, document.manager.as_ref());
    let networks = v.networks(&document.networks);
    let switches = v.switches(&document.switches);
    let tenants = v.tenants(&document.tenants);
    let servers = v.servers(&document.servers, &networks, &switches, &tenants);
    v.bridges(&networks, &switches, &servers);

    if !v.problems.is_empty() {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        manager: manager?,
        networks: networks.iter().map(Net::build).collect::<Option<_>>()?,
        switches: switches.iter().map(Switch::build).collect::<Option<_>>()?,
        tenants: tenants.iter().map(Tenant::build).collect::<Option<_>>()?,
        servers: servers.iter().map(Server::build).collect::<Option<_>>()?,
    })
}

/// A network as far as it could be read.
struct Net<'e> {
    entry: &'e Entry,
    name: Option<String>,
    role: Option<NetworkRole>,
    subnet: Option<IpNet>,
    gateway: Option<IpAddr>,
    quarantine_network: Option<&'e Leaf>,
    pool: Option<AddressRange>,
    bridge: Option<String>,
}

impl Net<'_> {
    fn build(&self) -> Option<NetworkConfig> {
        Some(NetworkConfig {
            name: self.name.clone()?,
            role: self.role?,
            subnet: self.subnet?,
            gateway: self.gateway,
            quarantine_network: self.quarantine_network.map(|leaf| leaf.value.clone()),
            pool: self.pool,
            bridge: self.bridge.clone(),
        })
    }
}

struct Switch {
    name: Option<String>,
    driver: Option<SwitchDriverKind>,
    netns: Option<String>,
}

impl Switch {
    fn build(&self) -> Option<SwitchConfig> {
        Some(SwitchConfig { name: self.name.clone()?, driver: self.driver?, netns: self.netns.clone() })
    }
}

struct Tenant {
    name: Option<String>,
    admin_email: Option<String>,
}

impl Tenant {
    fn build(&self) -> Option<TenantConfig> {
        Some(TenantConfig { name: self.name.clone()?, admin_email: self.admin_email.clone()? })
    }
}

struct Server {
    name: Option<String>,
    kind: Option<ServerKind>,
    tenant: Option<String>,
    user_email: Option<String>,
    nics: Vec<Nic>,
}

impl Server {
    fn build(&self) -> Option<ServerConfig> {
        Some(ServerConfig {
            name: self.name.clone()?,
            kind: self.kind?,
            tenant: self.tenant.clone(),
            user_email: self.user_email.clone(),
            nics: self.nics.iter().map(Nic::build).collect::<Option<_>>()?,
        })
    }
}

struct Nic {
    key: String,
    mac: Option<MacAddr>,
    network: Option<String>,
    ip: Option<IpAddr>,
    switch: Option<String>,
    port: Option<String>,
}

impl Nic {
    fn build(&self) -> Option<NicConfig> {
        Some(NicConfig {
            mac: self.mac?,
            network: self.network.clone()?,
            ip: self.ip?,
            switch: self.switch.clone(),
            port: self.port.clone(),
        })
    }
}

struct Validator<'p> {
    problems: &'p mut Problems,
}

impl Validator<'_> {
    fn at(&mut self, offset: usize, key: impl Into<String>, detail: impl Into<String>) {
        self.problems.add(Some(offset), key, detail);
    }

    fn line(&self, offset: usize) -> usize {
        self.problems.line_of(offset)
    }

    /// A key that must be present; `hint` says what it is for.
    fn required<'e>(&mut self, entry: &'e Entry, field: &str, hint: &str) -> Option<&'e Leaf> {
        let leaf = entry.get(field);
        if leaf.is_none() && !entry.mistyped.contains(field) {
            self.at(entry.start, entry.key_of(field), format!("missing: {hint}"));
        }
        leaf
    }

    /// Parses `leaf` with `parse`, recording its error.
    fn parse_with<T, E: Display>(
        &mut self,
        entry: &Entry,
        field: &str,
        leaf: &Leaf,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(&leaf.value) {
            Ok(value) => Some(value),
            Err(error) => {
                self.at(leaf.span.start, entry.key_of(field), error.to_string());
                None
            }
        }
    }

    /// Parses `leaf` with its type's `FromStr`, whose errors already quote the value.
    fn parse<T>(&mut self, entry: &Entry, field: &str, leaf: &Leaf) -> Option<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(entry, field, leaf, T::from_str)
    }

    /// Parses one of a fixed set of words (`all`, as their `Display` writes them).
    fn choice<T: FromStr + Display>(&mut self, entry: &Entry, field: &str, leaf: &Leaf, all: &[T]) -> Option<T> {
        self.parse_with(entry, field, leaf, |text| {
            text.parse::<T>().map_err(|_| {
                let words: Vec<String> = all.iter().map(ToString::to_string).collect();
                format!("`{text}` is not a known {field} (expected one of: {})", words.join(", "))
            })
        })
    }

    /// Checks `leaf` with `check` (which returns what is wrong), giving back its text when fine.
    fn check(
        &mut self,
        entry: &Entry,
        field: &str,
        leaf: &Leaf,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<String> {
        let text = leaf.value.clone();
        self.parse_with(entry, field, leaf, |t| check(t).map(|()| text))
    }

    /// An entry's `name`: present, well formed and not used before by an entry of its kind.
    fn name(&mut self, entry: &Entry, kind: &str, seen: &mut HashMap<String, String>) -> Option<String> {
        let leaf = self.required(entry, "name", &format!("every {kind} needs a name"))?;
        // A malformed name is reported here, and still used so that references to it do not
        // report it again.
        let name = leaf.value.clone();
        if self.check(entry, "name", leaf, check_name).is_none() {
            return Some(name);
        }
        let here = format!("{} (line {})", entry.key, self.line(entry.start));
        if let Some(first) = seen.get(&name) {
            let detail = format!("{kind} `{name}` is defined twice; the first is {first}");
            self.at(leaf.span.start, entry.key_of("name"), detail);
        } else {
            seen.insert(name.clone(), here);
        }
        Some(name)
    }

    fn manager(&mut self, path: &Path, entry: Option<&Entry>) -> Option<ManagerConfig> {
        let field = |name: &str| entry.and_then(|e| e.get(name).map(|leaf| (e, leaf)));
        let listen = match field("listen") {
            Some((e, leaf)) => self.parse_with(e, "listen", leaf, |text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    format!("`{text}` is not a listen address (expected IP:port, like 127.0.0.1:8080 or [::1]:8080)")
                })
            }),
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let data_dir = match field("data_dir") {
            Some((e, leaf)) => self
                .check(e, "data_dir", leaf, |text| {
                    if text.is_empty() {
                        Err("must not be empty".to_string())
                    } else if text.contains('\0') {
                        Err("must not contain a NUL character".to_string())
                    } else {
                        Ok(())
                    }
                })
                .map(|text| resolve_data_dir(path, Path::new(&text))),
            None => Some(PathBuf::from(DEFAULT_DATA_DIR)),
        };
        let instance = match field("instance") {
            Some((e, leaf)) => self.check(e, "instance", leaf, check_name),
            None => Some(default_instance()),
        };
        Some(ManagerConfig { listen: listen?, data_dir: data_dir?, instance: instance? })
    }

    fn networks<'e>(&mut self, entries: &'e [Entry]) -> Vec<Net<'e>> {
        let mut seen = HashMap::new();
        let nets: Vec<Net<'e>> = entries.iter().map(|entry| self.network(entry, &mut seen)).collect();

        // Each operational network's quarantine network exists and is one.
        for net in &nets {
            let (Some(NetworkRole::Operational), Some(leaf)) = (net.role, net.quarantine_network) else {
                continue;
            };
            let key = net.entry.key_of("quarantine_network");
            match find(&nets, |n| n.name.as_deref() == Some(leaf.value.as_str())) {
                None => self.at(leaf.span.start, key, format!("no network is named `{}`", leaf.value)),
                Some(target) if target.role == Some(NetworkRole::Operational) => self.at(
                    leaf.span.start,
                    key,
                    format!(
                        "network `{}` is operational; quarantine_network must name a network with role \"quarantine\"",
                        leaf.value
                    ),
                ),
                Some(_) => {}
            }
        }

        // Pools of quarantine networks do not overlap.
        for (i, net) in nets.iter().enumerate() {
            let Some(pool) = net.pool.filter(|_| net.role == Some(NetworkRole::Quarantine)) else {
                continue;
            };
            let earlier = nets[..i].iter().find(|other| {
                other.role == Some(NetworkRole::Quarantine)
                    && other.pool.is_some_and(|o| o.contains(pool.first()) || pool.contains(o.first()))
            });
            if let Some(other) = earlier {
                let (Some(leaf), Some(other_pool)) = (net.entry.get("pool"), other.pool) else {
                    continue;
                };
                let detail = format!(
                    "`{pool}` overlaps the pool {other_pool} of {} (line {})",
                    other.entry.key,
                    self.line(other.entry.start)
                );
                self.at(leaf.span.start, net.entry.key_of("pool"), detail);
            }
        }

        // Each network has its own bridge: sharing one would join the networks.
        let mut bridges: HashMap<String, String> = HashMap::new();
        for net in &nets {
            let (Some(bridge), Some(leaf)) = (&net.bridge, net.entry.get("bridge")) else {
                continue;
            };
            if let Some(first) = bridges.get(bridge) {
                let detail =
                    format!("bridge `{bridge}` is already the bridge of {first}; each network needs its own bridge");
                self.at(leaf.span.start, net.entry.key_of("bridge"), detail);
            } else {
                bridges.insert(bridge.clone(), net.entry.key.clone());
            }
        }

        nets
    }

    fn network<'e>(&mut self, entry: &'e Entry, seen: &mut HashMap<String, String>) -> Net<'e> {
        let name = self.name(entry, "network", seen);
        let role = self
            .required(entry, "role", "every network needs a role (operational or quarantine)")
            .and_then(|leaf| self.choice(entry, "role", leaf, NetworkRole::ALL));
        let subnet = self
            .required(entry, "subnet", "every network needs a subnet, like 10.10.0.0/24")
            .and_then(|leaf| self.subnet(entry, leaf));
        let gateway = entry.get("gateway").and_then(|leaf| {
            let gateway = self.parse_with(entry, "gateway", leaf, parse_ip)?;
            if let Some(subnet) = subnet.filter(|s| !s.contains(&gateway)) {
                let detail = format!("`{gateway}` is outside the subnet {subnet}");
                self.at(leaf.span.start, entry.key_of("gateway"), detail);
            }
            Some(gateway)
        });
        let quarantine_network = entry.get("quarantine_network");
        let pool_leaf = entry.get("pool");
        let pool = pool_leaf.and_then(|leaf| self.parse::<AddressRange>(entry, "pool", leaf));
        let bridge = entry.get("bridge").and_then(|leaf| self.check(entry, "bridge", leaf, check_interface));

        match role {
            Some(NetworkRole::Operational) => {
                if entry.absent("quarantine_network") {
                    self.at(
                        entry.start,
                        entry.key_of("quarantine_network"),
                        "missing: an operational network must name the quarantine network its servers are moved to",
                    );
                }
                if let Some(leaf) = pool_leaf {
                    self.at(
                        leaf.span.start,
                        entry.key_of("pool"),
                        "only a quarantine network has a pool; remove it or set role = \"quarantine\"",
                    );
                }
            }
            Some(NetworkRole::Quarantine) => {
                if let Some(leaf) = quarantine_network {
                    self.at(
                        leaf.span.start,
                        entry.key_of("quarantine_network"),
                        "a quarantine network must not name a quarantine_network",
                    );
                }
                match (pool_leaf, pool) {
                    (None, _) if entry.absent("pool") => self.at(
                        entry.start,
                        entry.key_of("pool"),
                        "missing: a quarantine network needs a pool of addresses for quarantined servers, like 10.99.0.100-10.99.0.199",
                    ),
                    (Some(leaf), Some(pool)) => {
                        if let Some(subnet) = subnet.filter(|s| {
                            !(s.contains(&pool.first()) && s.contains(&pool.last()))
                        }) {
                            let detail = format!("`{pool}` is not inside the subnet {subnet}");
                            self.at(leaf.span.start, entry.key_of("pool"), detail);
                        }
                        if let (Some(gateway), Some(leaf)) = (gateway, entry.get("gateway"))
                            && pool.contains(gateway)
                        {
                            let detail = format!(
                                "`{gateway}` is inside the pool {pool}, which would hand the gateway's address to a server"
                            );
                            self.at(leaf.span.start, entry.key_of("gateway"), detail);
                        }
                    }
                    _ => {}
                }
            }
            None => {}
        }

        Net { entry, name, role, subnet, gateway, quarantine_network, pool, bridge }
    }

    fn subnet(&mut self, entry: &Entry, leaf: &Leaf) -> Option<IpNet> {
        self.parse_with(entry, "subnet", leaf, |text| {
            let subnet = text
                .parse::<IpNet>()
                .map_err(|_| format!("`{text}` is not a subnet (expected address/prefix, like 10.10.0.0/24)"))?;
            if subnet.trunc() != subnet {
                return Err(format!("`{text}` has host bits set; did you mean {}?", subnet.trunc()));
            }
            Ok(subnet)
        })
    }

    fn switches(&mut self, entries: &[Entry]) -> Vec<Switch> {
        let mut seen = HashMap::new();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "switch", &mut seen);
                let driver = self
                    .required(entry, "driver", "every switch needs a driver (linux-bridge)")
                    .and_then(|leaf| self.choice(entry, "driver", leaf, SwitchDriverKind::ALL));
                let netns = entry.get("netns").and_then(|leaf| self.check(entry, "netns", leaf, check_netns));
                Switch { name, driver, netns }
            })
            .collect()
    }

    fn tenants(&mut self, entries: &[Entry]) -> Vec<Tenant> {
        let mut seen = HashMap::new();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "tenant", &mut seen);
                let admin_email = self
                    .required(entry, "admin_email", "every tenant needs the e-mail address of its administrator")
                    .and_then(|leaf| self.check(entry, "admin_email", leaf, check_email));
                Tenant { name, admin_email }
            })
            .collect()
    }

    fn servers(
        &mut self,
        entries: &[Entry],
        networks: &[Net<'_>],
        switches: &[Switch],
        tenants: &[Tenant],
    ) -> Vec<Server> {
        let mut seen = HashMap::new();
        let mut nics = NicRegistry::default();
        let pools: Vec<(&Net<'_>, AddressRange)> = networks
            .iter()
            .filter(|n| n.role == Some(NetworkRole::Quarantine))
            .filter_map(|n| Some((n, n.pool?)))
            .collect();
        entries
            .iter()
            .map(|entry| {
                let name = self.name(entry, "server", &mut seen);
                let kind = self
                    .required(entry, "kind", "every server needs a kind (physical or virtual)")
                    .and_then(|leaf| self.choice(entry, "kind", leaf, ServerKind::ALL));
                let tenant = entry.get("tenant").map(|leaf| {
                    if !tenants.iter().any(|t| t.name.as_deref() == Some(leaf.value.as_str())) {
                        let detail = format!("no tenant is named `{}`", leaf.value);
                        self.at(leaf.span.start, entry.key_of("tenant"), detail);
                    }
                    leaf.value.clone()
                });
                let user_email =
                    entry.get("user_email").and_then(|leaf| self.check(entry, "user_email", leaf, check_email));
                if entry.children.is_empty() && entry.absent("nic") {
                    self.at(
                        entry.start,
                        entry.key_of("nic"),
                        "missing: every server needs at least one [[server.nic]]",
                    );
                }
                let nics = entry
                    .children
                    .iter()
                    .map(|nic| self.nic(nic, kind, networks, switches, &pools, &mut nics))
                    .collect();
                Server { name, kind, tenant, user_email, nics }
            })
            .collect()
    }

    fn nic(
        &mut self,
        entry: &Entry,
        kind: Option<ServerKind>,
        networks: &[Net<'_>],
        switches: &[Switch],
        pools: &[(&Net<'_>, AddressRange)],
        registry: &mut NicRegistry,
    ) -> Nic {
        let here = |v: &Self| format!("{} (line {})", entry.key, v.line(entry.start));

        let mac =
            self.required(entry, "mac", "every NIC needs its MAC address, like 02:00:00:00:01:01").and_then(|leaf| {
                let mac = self.parse_with(entry, "mac", leaf, |text| {
                    let mac = text.parse::<MacAddr>()?;
                    if mac.0 == [0; 6] || mac.0[0] & 1 == 1 {
                        return Err(cordon_model::ParseError(format!(
                            "`{text}` is a multicast or null address, not the address of a NIC"
                        )));
                    }
                    Ok(mac)
                })?;
                if let Some(first) = registry.macs.get(&mac) {
                    let detail = format!("MAC `{mac}` is already the MAC of {first}");
                    self.at(leaf.span.start, entry.key_of("mac"), detail);
                } else {
                    registry.macs.insert(mac, here(self));
                }
                Some(mac)
            });

        let network = self
            .required(entry, "network", "every NIC needs the operational network it is on")
            .and_then(|leaf| {
                let name = leaf.value.as_str();
                let Some(net) = find(networks, |n| n.name.as_deref() == Some(name)) else {
                    let detail = format!("no network is named `{name}`");
                    self.at(leaf.span.start, entry.key_of("network"), detail);
                    return None;
                };
                if net.role == Some(NetworkRole::Quarantine) {
                    let detail = format!(
                        "network `{name}` is a quarantine network; a NIC is configured on its operational network and quarantine moves it"
                    );
                    self.at(leaf.span.start, entry.key_of("network"), detail);
                }
                Some(net)
            });

        let ip = self.required(entry, "ip", "every NIC needs its address on its network").and_then(|leaf| {
            let ip = self.parse_with(entry, "ip", leaf, parse_ip)?;
            let key = entry.key_of("ip");
            if let Some(net) = network {
                if let Some(subnet) = net.subnet.filter(|s| !s.contains(&ip)) {
                    let detail =
                        format!("`{ip}` is outside the subnet {subnet} of network `{}`", leaf_value(net.entry, "name"));
                    self.at(leaf.span.start, key.clone(), detail);
                } else if net.gateway == Some(ip) {
                    let detail = format!("`{ip}` is the gateway of network `{}`", leaf_value(net.entry, "name"));
                    self.at(leaf.span.start, key.clone(), detail);
                }
            }
            for (pool_net, pool) in pools {
                if pool.contains(ip) {
                    let detail = format!("`{ip}` is inside the quarantine pool {pool} of {}", pool_net.entry.key);
                    self.at(leaf.span.start, key.clone(), detail);
                }
            }
            if let Some(first) = registry.ips.get(&ip) {
                let detail = format!("`{ip}` is already the address of {first}");
                self.at(leaf.span.start, key, detail);
            } else {
                registry.ips.insert(ip, here(self));
            }
            Some(ip)
        });

        let switch_leaf = entry.get("switch");
        let port_leaf = entry.get("port");
        let switch = switch_leaf.map(|leaf| {
            if find(switches, |s| s.name.as_deref() == Some(leaf.value.as_str())).is_none() {
                let detail = format!("no switch is named `{}`", leaf.value);
                self.at(leaf.span.start, entry.key_of("switch"), detail);
            }
            leaf.value.clone()
        });
        let port = port_leaf.and_then(|leaf| self.check(entry, "port", leaf, check_interface));
        match (switch_leaf, port_leaf) {
            (Some(leaf), None) if entry.absent("port") => self.at(
                leaf.span.start,
                entry.key_of("port"),
                "missing: a NIC with a switch needs its port on that switch",
            ),
            (None, Some(leaf)) if entry.absent("switch") => self.at(
                leaf.span.start,
                entry.key_of("switch"),
                "missing: a NIC with a port needs the switch that port is on",
            ),
            (None, None) if kind == Some(ServerKind::Physical) && entry.absent("switch") && entry.absent("port") => {
                self.at(
                    entry.start,
                    entry.key_of("switch"),
                    "missing: a NIC of a physical server needs its switch and port",
                )
            }
            _ => {}
        }
        if let (Some(switch), Some(port), Some(leaf)) = (&switch, &port, port_leaf) {
            let slot = (switch.clone(), port.clone());
            if let Some(first) = registry.ports.get(&slot) {
                let detail = format!("port `{port}` of switch `{switch}` is already the port of {first}");
                self.at(leaf.span.start, entry.key_of("port"), detail);
            } else {
                registry.ports.insert(slot, here(self));
            }
        }

        Nic { key: entry.key.clone(), mac, network: network.and_then(|n| n.name.clone()), ip, switch, port }
    }

    /// On a linux-bridge switch, a port is moved between the bridges of its operational network
    /// and of that network's quarantine network: both must have one.
    fn bridges(&mut self, networks: &[Net<'_>], switches: &[Switch], servers: &[Server]) {
        let mut reported: Vec<&str> = Vec::new();
        for nic in servers.iter().flat_map(|s| &s.nics) {
            let (Some(switch_name), Some(network_name)) = (&nic.switch, &nic.network) else {
                continue;
            };
            let Some(switch) = find(switches, |s| s.name.as_ref() == Some(switch_name)) else {
                continue;
            };
            if switch.driver != Some(SwitchDriverKind::LinuxBridge) {
                continue;
            }
            let Some(network) = find(networks, |n| n.name.as_ref() == Some(network_name)) else {
                continue;
            };
            let quarantine = network
                .quarantine_network
                .and_then(|leaf| find(networks, |n| n.name.as_deref() == Some(leaf.value.as_str())));
            let carries = "carries it on this network";
            let moves = "moves it to this network on quarantine";
            for (net, why) in [(Some(network), carries), (quarantine, moves)] {
                let Some(net) = net else { continue };
                if net.entry.get("bridge").is_some() || reported.contains(&net.entry.key.as_str()) {
                    continue;
                }
                reported.push(&net.entry.key);
                let detail = format!(
                    "missing: {} is on linux-bridge switch `{switch_name}`, which {why}, so the network needs a bridge",
                    nic.key
                );
                self.at(net.entry.start, net.entry.key_of("bridge"), detail);
            }
        }
    }
}

/// What NICs already claimed, and by whom (a readable key with its line).
#[derive(Default)]
struct NicRegistry {
    macs: HashMap<MacAddr, String>,
    ips: HashMap<IpAddr, String>,
    ports: HashMap<(String, String), String>,
}

/// The first item (in file order) matching `pred`.
fn find<T>(items: &[T], pred: impl Fn(&T) -> bool) -> Option<&T> {
    items.iter().find(|item| pred(item))
}

fn leaf_value<'e>(entry: &'e Entry, field: &str) -> &'e str {
    entry.get(field).map_or("", |leaf| leaf.value.as_str())
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| format!("`{text}` is not an IP address"))
}

/// Names of networks, switches, tenants, servers and instances.
fn check_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if !text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!("`{text}` is not a valid name (use only letters, digits, '.', '_' and '-')"));
    }
    Ok(())
}

/// Linux interface names (bridges, ports), as the kernel's `dev_valid_name` accepts them.
fn check_interface(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "`{text}` is {} bytes long; Linux interface names are at most {MAX_INTERFACE_NAME}",
            text.len()
        ));
    }
    if text == "." || text == ".." || text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{text}` is not a valid Linux interface name (no '/', ':', spaces or control characters; not . or ..)"
        ));
    }
    Ok(())
}

/// Network namespace names: a file name under /run/netns.
fn check_netns(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text == "." || text == ".." || text.contains('/') || text.contains('\0') {
        return Err(format!("`{text}` is not a valid network namespace name (no '/'; not . or ..)"));
    }
    Ok(())
}

/// A plausible e-mail address: `local@domain.tld`, nothing fancy.
fn check_email(text: &str) -> Result<(), String> {
    let bad = || Err(format!("`{text}` does not look like an e-mail address"));
    let Some((local, domain)) = text.split_once('@') else {
        return bad();
    };
    let local_ok = !local.is_empty()
        && local.chars().all(|c| {
            if c.is_ascii() {
                c.is_ascii_graphic() && !"@<>()[]\\,;:\"".contains(c)
            } else {
                !c.is_whitespace() && !c.is_control()
            }
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok { Ok(()) } else { bad() }
}

/// A relative `data_dir` is relative to the folder of the configuration file.
fn resolve_data_dir(config: &Path, data_dir: &Path) -> PathBuf {
    if data_dir.is_absolute() {
        return data_dir.to_path_buf();
    }
    let folder = config.parent().unwrap_or(Path::new(""));
    let joined = folder.join(data_dir);
    std::path::absolute(&joined).unwrap_or(joined)
}

/// This host's name, or `cordon` if it has none.
fn default_instance() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result == 0 {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        let name = String::from_utf8_lossy(&buffer[..end]).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    "cordon".to_string()
}
