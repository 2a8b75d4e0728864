//! Addresses: MAC addresses, address ranges and the quarantine address pool.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Why a textual address could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A 48-bit Ethernet address, compared and printed in its canonical lower-case form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad =
            || ParseError(format!("`{text}` is not a MAC address (expected six hex pairs like 02:00:00:00:01:01)"));
        let mut bytes = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// An inclusive range of addresses of one family, written `first-last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    first: IpAddr,
    last: IpAddr,
}

impl AddressRange {
    /// Builds a range; both ends must be of one family and `first <= last`.
    pub fn new(first: IpAddr, last: IpAddr) -> Result<Self, ParseError> {
        if first.is_ipv4() != last.is_ipv4() {
            return Err(ParseError(format!("`{first}-{last}` mixes IPv4 and IPv6")));
        }
        if to_u128(first) > to_u128(last) {
            return Err(ParseError(format!("`{first}-{last}` ends before it starts")));
        }
        Ok(AddressRange { first, last })
    }

    pub fn first(&self) -> IpAddr {
        self.first
    }

    pub fn last(&self) -> IpAddr {
        self.last
    }

    /// How many addresses the range holds (saturating for absurd IPv6 ranges).
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    /// A range always holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        address.is_ipv4() == self.first.is_ipv4()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(address))
    }
}

impl FromStr for AddressRange {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (first, last) = text.split_once('-').ok_or_else(|| {
            ParseError(format!("`{text}` is not an address range (expected first-last, like 10.99.0.100-10.99.0.199)"))
        })?;
        let parse = |part: &str| {
            part.trim()
                .parse::<IpAddr>()
                .map_err(|_| ParseError(format!("`{}` in range `{text}` is not an IP address", part.trim())))
        };
        AddressRange::new(parse(first)?, parse(last)?)
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(value: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((value as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(value.into()),
    }
}

/// The addresses that quarantine hands out on one quarantine network.
///
/// The pool itself holds no state: the store passes the addresses already leased, inside the
/// transaction that records the new lease, so two servers can never be given one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    range: AddressRange,
    /// Addresses inside the range that are never handed out (the gateway, say).
    reserved: BTreeSet<IpAddr>,
}

impl AddressPool {
    pub fn new(range: AddressRange, reserved: impl IntoIterator<Item = IpAddr>) -> Self {
        AddressPool { range, reserved: reserved.into_iter().collect() }
    }

    pub fn range(&self) -> AddressRange {
        self.range
    }

    /// The lowest address of the pool that is neither reserved nor in `leased`, or `None` when
    /// the pool is exhausted. Lowest-first keeps addresses predictable for operators.
    pub fn allocate(&self, leased: &BTreeSet<IpAddr>) -> Option<IpAddr> {
        let first = to_u128(self.range.first);
        let last = to_u128(self.range.last);
        let mut candidate = first;
        loop {
            let address = from_u128(candidate, self.range.first);
            if !leased.contains(&address) && !self.reserved.contains(&address) {
                return Some(address);
            }
            if candidate == last {
                return None;
            }
            candidate += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_parses_and_prints_canonically() {
        let mac: MacAddr = "02:00:00:00:01:0A".parse().unwrap();
        assert_eq!(mac.to_string(), "02:00:00:00:01:0a");
        assert!("02:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:01:01:07".parse::<MacAddr>().is_err());
        assert!("zz:00:00:00:01:01".parse::<MacAddr>().is_err());
    }

    #[test]
    fn range_parses_and_rejects_nonsense() {
        let range: AddressRange = "10.99.0.100-10.99.0.199".parse().unwrap();
        assert_eq!(range.len(), 100);
        assert!(range.contains("10.99.0.150".parse().unwrap()));
        assert!(!range.contains("10.99.0.200".parse().unwrap()));
        assert!("10.99.0.199-10.99.0.100".parse::<AddressRange>().is_err());
        assert!("10.99.0.1-::1".parse::<AddressRange>().is_err());
        assert!("10.99.0.1".parse::<AddressRange>().is_err());
    }

    #[test]
    fn exhausted_pool_says_so() {
        let pool = AddressPool::new("10.99.0.1-10.99.0.2".parse().unwrap(), []);
        let mut leased = BTreeSet::new();
        leased.insert(pool.allocate(&leased).unwrap());
        leased.insert(pool.allocate(&leased).unwrap());
        assert_eq!(pool.allocate(&leased), None);
    }

    #[test]
    fn reserved_addresses_are_skipped() {
        let gateway: IpAddr = "10.99.0.1".parse().unwrap();
        let pool = AddressPool::new("10.99.0.1-10.99.0.3".parse().unwrap(), [gateway]);
        assert_eq!(pool.allocate(&BTreeSet::new()), Some("10.99.0.2".parse().unwrap()));
    }

    proptest! {
        /// Whatever the order of leases and releases, no address is ever handed out twice while
        /// it is leased, every address handed out is inside the range, and the pool only reports
        /// exhaustion when every address is taken.
        #[test]
        fn never_hands_out_an_address_twice(
            start in 0u32..u32::MAX - 300,
            size in 1u32..64,
            operations in proptest::collection::vec(any::<(bool, u8)>(), 1..300),
        ) {
            let first = IpAddr::V4(start.into());
            let last = IpAddr::V4((start + size - 1).into());
            let pool = AddressPool::new(AddressRange::new(first, last).unwrap(), []);
            let mut leased = BTreeSet::new();
            for (allocate, pick) in operations {
                if allocate || leased.is_empty() {
                    match pool.allocate(&leased) {
                        Some(address) => {
                            prop_assert!(pool.range().contains(address));
                            prop_assert!(leased.insert(address), "{address} handed out twice");
                        }
                        None => prop_assert_eq!(leased.len() as u32, size),
                    }
                } else {
                    let victim = *leased.iter().nth(pick as usize % leased.len()).unwrap();
                    leased.remove(&victim);
                }
            }
        }
    }
}
