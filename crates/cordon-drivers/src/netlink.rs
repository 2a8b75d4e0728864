//! A small blocking rtnetlink client: one `NETLINK_ROUTE` socket, optionally
//! created inside a named network namespace, and the handful of link
//! requests the `linux-bridge` driver needs. Every request is one round trip
//! (request out, one answer or ACK back), matched by sequence number.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlasIterator,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader,
    LinkInfo, LinkMessage, LinkProtoInfoBridge,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::DriverError;

/// Where named network namespaces live (`ip netns add` bind-mounts them here).
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// `IFLA_BRPORT_ISOLATED` from `include/uapi/linux/if_link.h`.
const IFLA_BRPORT_ISOLATED: u16 = 33;
/// `NLMSGERR_ATTR_MSG` from `include/uapi/linux/netlink.h` (extended ACK text).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// How long a single answer may take before the socket is considered dead.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer: one link message without statistics is ~2 KiB.
const RECV_BUFFER: usize = 64 * 1024;
/// Datagrams with a foreign sequence number tolerated while waiting for ours.
const MAX_STALE_DATAGRAMS: usize = 64;

/// A failed request.
#[derive(Debug)]
pub(crate) enum NlError {
    /// The kernel refused the request with `errno` (positive), possibly with
    /// an extended-ACK message.
    Kernel { errno: i32, message: Option<String> },
    /// The socket failed or the answer made no sense. When the socket
    /// itself is in doubt the connection is also marked broken (see
    /// [`Connection::is_broken`]) and is not reused.
    Transport(String),
}

impl NlError {
    /// The kernel errno, if the kernel answered with one.
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { errno, .. } => Some(*errno),
            NlError::Transport(_) => None,
        }
    }

    /// A human-readable detail: `"Device or resource busy (EBUSY, errno 16):
    /// kernel says: ..."`.
    pub(crate) fn detail(&self) -> String {
        match self {
            NlError::Kernel { errno, message } => {
                let text = io::Error::from_raw_os_error(*errno);
                // `io::Error` renders as "<text> (os error N)"; keep the text.
                let text = text.to_string();
                let text = text.split(" (os error").next().unwrap_or(text.as_str()).to_string();
                let name = errno_name(*errno);
                let mut detail = format!("{text} ({name}errno {errno})");
                if let Some(message) = message {
                    detail.push_str(": kernel says: ");
                    detail.push_str(message);
                }
                detail
            }
            NlError::Transport(detail) => format!("netlink socket: {detail}"),
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::ENODEV => "ENODEV, ",
        libc::ENOENT => "ENOENT, ",
        libc::EINVAL => "EINVAL, ",
        libc::EBUSY => "EBUSY, ",
        libc::EPERM => "EPERM, ",
        libc::EACCES => "EACCES, ",
        libc::EOPNOTSUPP => "EOPNOTSUPP, ",
        libc::ELOOP => "ELOOP, ",
        libc::EEXIST => "EEXIST, ",
        libc::ENOSPC => "ENOSPC, ",
        libc::EXFULL => "EXFULL, ",
        _ => "",
    }
}

/// What the driver needs to know about one link.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    /// `IFF_UP`.
    pub(crate) up: bool,
    /// `IFLA_MASTER`, if any.
    pub(crate) master: Option<u32>,
    /// `IFLA_INFO_KIND`, e.g. "bridge", "veth".
    pub(crate) kind: Option<String>,
    /// `IFLA_INFO_KIND` is "bridge".
    pub(crate) is_bridge: bool,
    /// `IFLA_INFO_SLAVE_KIND` is "bridge": the link is a bridge port.
    pub(crate) is_bridge_port: bool,
    /// `IFLA_BRPORT_ISOLATED` from `IFLA_INFO_SLAVE_DATA`, if reported.
    pub(crate) isolated: Option<bool>,
}

impl Link {
    fn from_message(message: LinkMessage) -> Self {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            up: message.header.flags.contains(LinkFlags::Up),
            master: None,
            kind: None,
            is_bridge: false,
            is_bridge_port: false,
            isolated: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Controller(index) if index != 0 => link.master = Some(index),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => {
                                link.is_bridge = matches!(kind, InfoKind::Bridge);
                                link.kind = Some(kind.to_string());
                            }
                            LinkInfo::PortKind(kind) => {
                                link.is_bridge_port = matches!(kind, InfoPortKind::Bridge);
                            }
                            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                for item in port {
                                    if let InfoBridgePort::Isolated(isolated) = item {
                                        link.isolated = Some(isolated);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// Identity of a named namespace at the time its socket was opened: the
/// path and the (device, inode) of the nsfs file mounted there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamespaceIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

/// The answer to one request: the reply message, `None` for a positive ACK,
/// or the kernel's (or decoder's) error.
type Answer = Result<Option<RouteNetlinkMessage>, NlError>;

/// One rtnetlink socket with its sequence counter and receive buffer.
#[derive(Debug)]
pub(crate) struct Connection {
    socket: Socket,
    namespace: Option<NamespaceIdentity>,
    sequence: u32,
    buffer: Vec<u8>,
    broken: bool,
}

impl Connection {
    /// Opens a `NETLINK_ROUTE` socket in the current network namespace
    /// (`netns = None`) or in `/run/netns/<netns>`.
    pub(crate) fn open(netns: Option<&str>) -> Result<Self, DriverError> {
        let (socket, namespace) = match netns {
            None => (
                new_socket().map_err(|error| DriverError::Netlink {
                    operation: "open netlink socket".to_string(),
                    detail: error.to_string(),
                })?,
                None,
            ),
            Some(name) => {
                let (socket, identity) = socket_in_namespace(name)?;
                (socket, Some(identity))
            }
        };
        Ok(Connection { socket, namespace, sequence: 0, buffer: Vec::with_capacity(RECV_BUFFER), broken: false })
    }

    /// The socket failed; the connection must be dropped and reopened.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// False if the named namespace this socket lives in is no longer the
    /// one mounted at `/run/netns/<name>` (deleted, or deleted and created
    /// again). A socket keeps its namespace alive, so without this check the
    /// driver would go on talking to an orphaned namespace. One `stat`.
    pub(crate) fn namespace_is_current(&self) -> bool {
        match &self.namespace {
            None => true,
            Some(identity) => std::fs::metadata(&identity.path)
                .map(|meta| meta.dev() == identity.device && meta.ino() == identity.inode)
                .unwrap_or(false),
        }
    }

    /// `RTM_GETLINK` by name.
    pub(crate) fn link_by_name(&mut self, name: &str) -> Result<Link, NlError> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(message)
    }

    /// `RTM_GETLINK` by interface index.
    pub(crate) fn link_by_index(&mut self, index: u32) -> Result<Link, NlError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        self.get_link(message)
    }

    fn get_link(&mut self, message: LinkMessage) -> Result<Link, NlError> {
        match self.request(RouteNetlinkMessage::GetLink(message), 0)? {
            Some(RouteNetlinkMessage::NewLink(link)) => Ok(Link::from_message(link)),
            Some(other) => {
                Err(self.garbled(format!("unexpected answer to RTM_GETLINK (message type {})", other.message_type())))
            }
            None => Err(self.garbled("RTM_GETLINK answered with a bare ACK".to_string())),
        }
    }

    /// `RTM_SETLINK` on `index` with `IFLA_MASTER = master` and `IFF_UP` set,
    /// in one message.
    pub(crate) fn set_master_and_up(&mut self, index: u32, master: u32) -> Result<(), NlError> {
        let mut message = LinkMessage::default();
        message.header = LinkHeader {
            interface_family: AddressFamily::Unspec,
            index,
            flags: LinkFlags::Up,
            change_mask: LinkFlags::Up,
            ..LinkHeader::default()
        };
        message.attributes.push(LinkAttribute::Controller(master));
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK).map(|_| ())
    }

    /// `RTM_SETLINK`, family `AF_BRIDGE`, with `IFLA_PROTINFO` (nested)
    /// holding `IFLA_BRPORT_ISOLATED` — what `bridge link set dev P isolated
    /// on|off` sends. The port's bridge applies it.
    pub(crate) fn set_bridge_port_isolated(&mut self, index: u32, isolated: bool) -> Result<(), NlError> {
        let mut message = LinkMessage::default();
        message.header = LinkHeader { interface_family: AddressFamily::Bridge, index, ..LinkHeader::default() };
        message.attributes.push(LinkAttribute::ProtoInfoBridge(vec![LinkProtoInfoBridge::Other(DefaultNla::new(
            IFLA_BRPORT_ISOLATED,
            vec![u8::from(isolated)],
        ))]));
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK).map(|_| ())
    }

    /// Marks the connection broken and builds a transport error.
    fn garbled(&mut self, detail: String) -> NlError {
        self.broken = true;
        NlError::Transport(detail)
    }

    /// Sends one request and waits for its answer: the reply message, or
    /// `None` for a positive ACK. Kernel errors become [`NlError::Kernel`].
    fn request(&mut self, payload: RouteNetlinkMessage, extra_flags: u16) -> Answer {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;

        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | extra_flags;
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        message.finalize();
        let mut out = vec![0u8; message.buffer_len()];
        message.serialize(&mut out);

        match self.socket.send(&out, 0) {
            Ok(sent) if sent == out.len() => {}
            Ok(sent) => {
                return Err(self.garbled(format!("short send: {sent} of {} bytes", out.len())));
            }
            Err(error) => return Err(self.garbled(format!("send: {error}"))),
        }

        for _ in 0..MAX_STALE_DATAGRAMS {
            self.buffer.clear();
            let received = match self.socket.recv(&mut self.buffer, libc::MSG_TRUNC) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Err(self.garbled(format!("no answer from the kernel within {} s", RECV_TIMEOUT.as_secs())));
                }
                Err(error) => return Err(self.garbled(format!("recv: {error}"))),
            };
            if received > self.buffer.len() {
                return Err(self.garbled(format!(
                    "answer of {received} bytes does not fit the {} byte buffer",
                    self.buffer.len()
                )));
            }
            if let Some(answer) = self.find_answer(received, sequence)? {
                return answer;
            }
        }
        Err(self.garbled(format!("no answer with sequence number {sequence} among {MAX_STALE_DATAGRAMS} datagrams")))
    }

    /// Walks the messages of one received datagram; returns the answer for
    /// the message carrying `sequence`, or `None` if the datagram holds only
    /// stale messages. The outer error is a transport failure.
    fn find_answer(&mut self, received: usize, sequence: u32) -> Result<Option<Answer>, NlError> {
        let mut offset = 0;
        while offset + NLMSG_HDRLEN <= received {
            let bytes = &self.buffer[offset..received];
            let (length, message_sequence) = match NetlinkBuffer::new_checked(bytes) {
                Ok(buffer) => (buffer.length() as usize, buffer.sequence_number()),
                Err(error) => return Err(self.garbled(format!("malformed answer: {error}"))),
            };
            let this = &self.buffer[offset..offset + length];
            offset += align4(length);
            if message_sequence != sequence {
                continue;
            }
            let parsed = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                Ok(parsed) => parsed,
                // The datagram was consumed whole: the socket stays usable.
                Err(error) => {
                    return Ok(Some(Err(NlError::Transport(format!("cannot decode the kernel's answer: {error}")))));
                }
            };
            let flags = parsed.header.flags;
            return Ok(Some(match parsed.payload {
                NetlinkPayload::Error(error) => match error.code {
                    None => Ok(None),
                    Some(code) => Err(NlError::Kernel {
                        errno: code.get().saturating_abs(),
                        message: extended_ack_message(flags, &error.header),
                    }),
                },
                NetlinkPayload::InnerMessage(inner) => Ok(Some(inner)),
                NetlinkPayload::Done(_) => Err(NlError::Transport("unexpected NLMSG_DONE in answer".to_string())),
                NetlinkPayload::Overrun(_) => Err(NlError::Transport("the kernel reported NLMSG_OVERRUN".to_string())),
                _ => Err(NlError::Transport("unexpected netlink message in answer".to_string())),
            }));
        }
        Ok(None)
    }
}

fn align4(length: usize) -> usize {
    (length + 3) & !3
}

/// The `NLMSGERR_ATTR_MSG` text of an extended ACK. `payload` is what
/// follows the error code: the original request (only its header when the
/// ACK is capped), then the TLVs if `NLM_F_ACK_TLVS` is set.
fn extended_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let request_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let raw: [u8; 4] = payload.get(0..4)?.try_into().ok()?;
        u32::from_ne_bytes(raw) as usize
    };
    let tlvs = payload.get(align4(request_len)..)?;
    for nla in NlasIterator::new(tlvs) {
        let Ok(nla) = nla else { break };
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let text = String::from_utf8_lossy(nla.value());
            let text = text.trim_end_matches('\0').trim();
            if !text.is_empty() {
                return Some(text.to_string());
            }
        }
    }
    None
}

/// A bound `NETLINK_ROUTE` socket in the calling thread's network namespace,
/// with extended ACKs, capped ACKs and a receive timeout.
fn new_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    // Best effort: without them errors are still reported, just less clearly.
    let _ = socket.set_ext_ack(true);
    let _ = socket.set_cap_ack(true);
    set_receive_timeout(&socket, RECV_TIMEOUT)?;
    Ok(socket)
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let value =
        libc::timeval { tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX), tv_usec: 0 };
    let size = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>())
        .map_err(|_| io::Error::other("timeval size"))?;
    // SAFETY: the fd is a valid open socket owned by `socket`; `value` is a
    // properly initialised timeval that lives for the duration of the call and
    // `size` is its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const value).cast::<libc::c_void>(),
            size,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Creates the socket inside `/run/netns/<name>`: a short-lived thread joins
/// the namespace (`setns(CLONE_NEWNET)` only affects that thread), creates
/// and binds the socket, and hands it back. A socket stays in the namespace
/// it was created in, so it keeps working after the thread has ended.
fn socket_in_namespace(name: &str) -> Result<(Socket, NamespaceIdentity), DriverError> {
    let namespace_error = |detail: String| DriverError::Namespace { netns: name.to_string(), detail };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(namespace_error("not a valid namespace name".to_string()));
    }
    let path: PathBuf = [NETNS_DIR, name].iter().collect();
    let file = File::open(&path).map_err(|error| namespace_error(format!("{}: {error}", path.display())))?;
    let meta = file.metadata().map_err(|error| namespace_error(format!("{}: {error}", path.display())))?;
    let identity = NamespaceIdentity { path: path.clone(), device: meta.dev(), inode: meta.ino() };

    let worker = std::thread::Builder::new()
        .name("cordon-netns".to_string())
        .spawn(move || -> Result<Socket, String> {
            // SAFETY: `file` is an open descriptor kept alive for the call;
            // setns only changes the network namespace of this thread, which
            // ends right after creating the socket.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(format!("setns({}): {}", path.display(), io::Error::last_os_error()));
            }
            new_socket().map_err(|error| format!("netlink socket in the namespace: {error}"))
        })
        .map_err(|error| namespace_error(format!("cannot start a thread: {error}")))?;
    match worker.join() {
        Ok(Ok(socket)) => Ok((socket, identity)),
        Ok(Err(detail)) => Err(namespace_error(detail)),
        Err(_) => Err(namespace_error("the namespace thread ended abnormally".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align() {
        assert_eq!(align4(0), 0);
        assert_eq!(align4(1), 4);
        assert_eq!(align4(16), 16);
        assert_eq!(align4(17), 20);
    }

    #[test]
    fn extended_ack_text_is_found() {
        // Capped ACK: 16-byte original header, then one NLMSGERR_ATTR_MSG TLV.
        let mut payload = vec![0u8; NLMSG_HDRLEN];
        let text = b"Device is not a bridge\0";
        let nla_len = 4 + text.len();
        payload.extend_from_slice(&(nla_len as u16).to_ne_bytes());
        payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        payload.extend_from_slice(text);
        while !payload.len().is_multiple_of(4) {
            payload.push(0);
        }
        assert_eq!(
            extended_ack_message(NLM_F_ACK_TLVS | NLM_F_CAPPED, &payload).as_deref(),
            Some("Device is not a bridge")
        );
        assert_eq!(extended_ack_message(0, &payload), None);
    }

    #[test]
    fn kernel_error_detail() {
        let error = NlError::Kernel { errno: libc::ENODEV, message: None };
        assert_eq!(error.errno(), Some(libc::ENODEV));
        assert_eq!(error.detail(), "No such device (ENODEV, errno 19)");
        let error = NlError::Kernel { errno: libc::EINVAL, message: Some("bad thing".to_string()) };
        assert!(error.detail().ends_with(": kernel says: bad thing"));
    }

    #[test]
    fn invalid_namespace_names_are_refused() {
        for name in ["", ".", "..", "a/b"] {
            let error = socket_in_namespace(name).err();
            assert!(matches!(error, Some(DriverError::Namespace { .. })), "{name:?}: {error:?}");
        }
    }
}
