//! The little of libvirt's domain XML the driver reads and writes: the `<interface>` elements
//! of `<devices>` (parsed with `roxmltree`), and a fresh `<interface type='bridge'>` for
//! `virDomainUpdateDeviceFlags` that keeps the elements libvirt must see unchanged.

/// Child elements of an `<interface>` copied verbatim into the rewritten interface. Live
/// updates refuse changes to most of them (model, driver, rom, boot, address), and the
/// persistent definition would lose whatever the new XML leaves out. `source`, `port`,
/// `virtualport`, `vlan` and the like describe the old connection and are replaced.
const KEPT_ELEMENTS: &[&str] = &[
    "model",
    "driver",
    "rom",
    "address",
    "boot",
    "link",
    "mtu",
    "target",
    "alias",
    "filterref",
    "bandwidth",
    "coalesce",
    "tune",
    "acpi",
    "backend",
];

/// Kept elements that name the device instance rather than its shape: they legitimately
/// differ between the live and the persistent definition (`vnet0`, `net0` exist only live).
const INSTANCE_ELEMENTS: &[&str] = &["target", "alias"];

/// One `<interface>` of a domain definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Nic {
    /// `type` attribute: `bridge`, `network`, `direct`, `user`, ...
    pub(crate) kind: String,
    /// Normalised MAC (lower case, colons).
    pub(crate) mac: String,
    /// `<source bridge=...>`: set for `type='bridge'`, and in the live XML of `type='network'`
    /// NICs (the network's bridge).
    pub(crate) source_bridge: Option<String>,
    /// `<source network=...>` for `type='network'`.
    pub(crate) source_network: Option<String>,
    /// `<target dev=...>`: the tap (live), or a fixed name the definition asks for.
    pub(crate) target_dev: Option<String>,
    /// `<model type=...>`.
    pub(crate) model: Option<String>,
    /// `<port isolated='yes'/>`.
    pub(crate) isolated: bool,
    /// `<link state='down'/>`.
    pub(crate) link_down: bool,
    /// `(element name, verbatim text)` of the [`KEPT_ELEMENTS`] present, in document order.
    pub(crate) kept: Vec<(String, String)>,
}

impl Nic {
    /// The kept elements that describe the device's shape (everything but target and alias),
    /// to compare a live NIC with its persistent definition.
    pub(crate) fn shape(&self) -> Vec<&str> {
        self.kept
            .iter()
            .filter(|(name, _)| !INSTANCE_ELEMENTS.contains(&name.as_str()))
            .map(|(_, text)| text.as_str())
            .collect()
    }
}

/// Every `<interface>` under `<domain><devices>`, with the MACs normalised. Interfaces without
/// a (valid) MAC are skipped: the driver addresses NICs by MAC only.
pub(crate) fn parse_nics(domain_xml: &str) -> Result<Vec<Nic>, String> {
    let document = roxmltree::Document::parse(domain_xml).map_err(|error| format!("unreadable domain XML: {error}"))?;
    let root = document.root_element();
    if !root.has_tag_name("domain") {
        return Err(format!("unexpected root element <{}> in the domain XML", root.tag_name().name()));
    }
    let mut nics = Vec::new();
    for devices in root.children().filter(|node| node.has_tag_name("devices")) {
        for interface in devices.children().filter(|node| node.has_tag_name("interface")) {
            if let Some(nic) = parse_interface(domain_xml, interface) {
                nics.push(nic);
            }
        }
    }
    Ok(nics)
}

fn parse_interface(text: &str, interface: roxmltree::Node<'_, '_>) -> Option<Nic> {
    let child = |name: &str| interface.children().find(|node| node.has_tag_name(name));
    let attribute = |name: &str, attr: &str| child(name).and_then(|node| node.attribute(attr)).map(str::to_string);
    let mac = normalize_mac(child("mac")?.attribute("address")?)?;
    let kept = interface
        .children()
        .filter(|node| node.is_element() && KEPT_ELEMENTS.contains(&node.tag_name().name()))
        .filter_map(|node| text.get(node.range()).map(|raw| (node.tag_name().name().to_string(), raw.to_string())))
        .collect();
    Some(Nic {
        kind: interface.attribute("type").unwrap_or("").to_string(),
        mac,
        source_bridge: attribute("source", "bridge"),
        source_network: attribute("source", "network"),
        target_dev: attribute("target", "dev"),
        model: attribute("model", "type"),
        isolated: attribute("port", "isolated").as_deref() == Some("yes"),
        link_down: attribute("link", "state").as_deref() == Some("down"),
        kept,
    })
}

/// `52:54:00:AB:cd:EF` or `52-54-00-ab-cd-ef` → `52:54:00:ab:cd:ef`; `None` if it is not six
/// hexadecimal octets.
pub(crate) fn normalize_mac(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.trim().split([':', '-']).collect();
    if octets.len() != 6 || octets.iter().any(|octet| octet.len() != 2 || !octet.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(octets.join(":").to_ascii_lowercase())
}

/// A fresh `<interface type='bridge'>` connecting the NIC `base` describes to `bridge`, with
/// `<port isolated='yes'/>` when `isolated`, keeping `base`'s [`KEPT_ELEMENTS`] verbatim.
/// `bridge` must already be a valid interface name; it is escaped all the same.
pub(crate) fn bridge_interface_xml(base: &Nic, bridge: &str, isolated: bool) -> String {
    let mut xml = String::from("<interface type='bridge'>\n");
    xml.push_str(&format!("  <mac address='{}'/>\n", escape(&base.mac)));
    xml.push_str(&format!("  <source bridge='{}'/>\n", escape(bridge)));
    if isolated {
        xml.push_str("  <port isolated='yes'/>\n");
    }
    // libvirt writes the model it chose into every definition it returns, so `kept` has it;
    // a definition without one gets the same default again.
    for (_, raw) in &base.kept {
        xml.push_str("  ");
        xml.push_str(raw);
        xml.push('\n');
    }
    xml.push_str("</interface>\n");
    xml
}

/// Escapes text for an XML attribute value in single or double quotes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"<domain type='qemu' id='1'>
  <name>vm1</name>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:11'/>
      <source bridge='br-office'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <rom enabled='no'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:00:00:12'/>
      <source network='office' portid='6b3c' bridge='br-office'/>
      <port isolated='yes'/>
      <target dev='vnet1'/>
      <model type='e1000'/>
      <link state='down'/>
      <alias name='net1'/>
    </interface>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>"#;

    #[test]
    fn parses_interfaces() {
        let nics = parse_nics(LIVE).unwrap();
        assert_eq!(nics.len(), 2, "the interface without a MAC is skipped");
        let first = &nics[0];
        assert_eq!(first.kind, "bridge");
        assert_eq!(first.mac, "52:54:00:00:00:11");
        assert_eq!(first.source_bridge.as_deref(), Some("br-office"));
        assert_eq!(first.source_network, None);
        assert_eq!(first.target_dev.as_deref(), Some("vnet0"));
        assert_eq!(first.model.as_deref(), Some("virtio"));
        assert!(!first.isolated);
        assert!(!first.link_down);
        let kept: Vec<&str> = first.kept.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(kept, ["target", "model", "alias", "rom", "address"]);
        assert_eq!(first.shape(), ["<model type='virtio'/>", "<rom enabled='no'/>", &first.kept[4].1]);

        let second = &nics[1];
        assert_eq!(second.kind, "network");
        assert_eq!(second.source_network.as_deref(), Some("office"));
        assert_eq!(second.source_bridge.as_deref(), Some("br-office"));
        assert!(second.isolated);
        assert!(second.link_down);
    }

    #[test]
    fn rejects_what_is_not_a_domain() {
        assert!(parse_nics("<network/>").is_err());
        assert!(parse_nics("not xml").is_err());
        assert_eq!(parse_nics("<domain><devices/></domain>").unwrap(), Vec::new());
    }

    #[test]
    fn builds_a_bridge_interface() {
        let nics = parse_nics(LIVE).unwrap();
        let xml = bridge_interface_xml(&nics[0], "br-quarantine", true);
        assert_eq!(
            xml,
            "<interface type='bridge'>
  <mac address='52:54:00:00:00:11'/>
  <source bridge='br-quarantine'/>
  <port isolated='yes'/>
  <target dev='vnet0'/>
  <model type='virtio'/>
  <alias name='net0'/>
  <rom enabled='no'/>
  <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>
</interface>
"
        );
        // A network NIC becomes a bridge NIC; the portid and the network are dropped.
        let xml = bridge_interface_xml(&nics[1], "br-office", false);
        assert!(xml.starts_with("<interface type='bridge'>"), "{xml}");
        assert!(!xml.contains("portid") && !xml.contains("network=") && !xml.contains("isolated"), "{xml}");
        assert!(xml.contains("<model type='e1000'/>") && xml.contains("<link state='down'/>"), "{xml}");
        // The result parses back to what was asked.
        let reparsed = parse_nics(&format!("<domain><devices>{xml}</devices></domain>")).unwrap();
        assert_eq!(reparsed[0].source_bridge.as_deref(), Some("br-office"));
        assert_eq!(reparsed[0].kind, "bridge");
    }

    #[test]
    fn macs() {
        assert_eq!(normalize_mac("52:54:00:AB:cd:EF").as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(normalize_mac("52-54-00-ab-cd-ef").as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(normalize_mac("52:54:00:ab:cd"), None);
        assert_eq!(normalize_mac("52:54:00:ab:cd:eg"), None);
        assert_eq!(normalize_mac("525:4:00:ab:cd:ef"), None);
        assert_eq!(normalize_mac("52:54:00:ab:cd:ef' x='"), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a'b\"c<d>&"), "a&apos;b&quot;c&lt;d&gt;&amp;");
    }
}
