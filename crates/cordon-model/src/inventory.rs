//! The kinds of things Cordon manages.

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text used in configuration, the store and the API.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ParseError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::ParseError(format!(
                        concat!("`{}` is not a valid ", stringify!($name), " (expected one of: {})"),
                        text,
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}
pub(crate) use text_enum;

text_enum! {
    /// Whether a server is a VM on a hypervisor or a machine on a switch port.
    ServerKind { Physical = "physical", Virtual = "virtual" }
}

text_enum! {
    /// What a network is for.
    NetworkRole { Operational = "operational", Quarantine = "quarantine" }
}

text_enum! {
    /// Which driver speaks to a switch.
    SwitchDriverKind { LinuxBridge = "linux-bridge", Ovs = "ovs" }
}

text_enum! {
    /// Where a server stands, as Cordon last recorded it.
    ServerState {
        /// Every NIC is on its operational network with its operational address.
        Operational = "operational",
        /// A quarantine action is running.
        Quarantining = "quarantining",
        /// Every NIC is on its quarantine network with a quarantine address.
        Quarantined = "quarantined",
        /// An unquarantine action is running.
        Unquarantining = "unquarantining",
        /// A quarantine action ended without moving every NIC; see the action's messages.
        QuarantineFailed = "quarantine_failed",
        /// An unquarantine action ended without restoring every NIC.
        UnquarantineFailed = "unquarantine_failed",
        /// Some NICs are on their quarantine network and some on their operational one (an
        /// action failed half-way); `cordon servers show` names each NIC's network.
        Partial = "partial",
    }
}

text_enum! {
    /// What an API token or a console user may do.
    Role {
        /// Everything, including tokens, users and policy.
        Admin = "admin",
        /// Quarantine, unquarantine, reboot, check, retry, approve, reject.
        Operator = "operator",
        /// Read only.
        Viewer = "viewer",
        /// Post detections only.
        Sensor = "sensor",
    }
}

impl Role {
    /// Whether a holder of `self` may do what needs `needed`. Admin ⊇ operator ⊇ viewer;
    /// sensor is apart: it may only post detections (and an admin may do that too).
    pub fn allows(self, needed: Role) -> bool {
        matches!(
            (self, needed),
            (Role::Admin, _)
                | (Role::Operator, Role::Operator | Role::Viewer)
                | (Role::Viewer, Role::Viewer)
                | (Role::Sensor, Role::Sensor)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_sensor_stands_apart() {
        assert!(Role::Admin.allows(Role::Sensor));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Sensor.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Sensor));
    }
}
