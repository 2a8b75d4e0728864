//! A minimal OVSDB client (RFC 7047): JSON-RPC 1.0 over a Unix or TCP stream, blocking, with a
//! timeout on every read and write. Only what the `ovs` driver needs: `transact`, and answering
//! the server's `echo` (inactivity probe).
//!
//! JSON-RPC 1.0 messages on the stream are bare JSON objects, one after the other, with no
//! delimiter: [`Framer`] finds where each object ends (braces outside strings) before it is
//! parsed. Whatever the server sends, nothing here panics: a malformed answer is an error.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::OvsdbAddress;

/// Largest message accepted from the server; a bigger one is refused rather than buffered.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug)]
pub(super) enum OpError {
    /// The stream: connect, read, write, timeout, closed.
    Io(String),
    /// A `wait` operation failed (`timed out`): the rows were not as expected.
    WaitFailed(String),
    /// Any other error the server reported, or an answer that is not what RFC 7047 says.
    Db(String),
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub(super) struct Client {
    stream: Box<dyn Stream>,
    framer: Framer,
    next_id: u64,
    timeout: Duration,
}

impl Client {
    pub(super) fn connect(address: &OvsdbAddress, timeout: Duration) -> Result<Client, String> {
        let stream: Box<dyn Stream> = match address {
            OvsdbAddress::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
                stream.set_read_timeout(Some(timeout)).map_err(|e| format!("set timeout: {e}"))?;
                stream.set_write_timeout(Some(timeout)).map_err(|e| format!("set timeout: {e}"))?;
                Box::new(stream)
            }
            OvsdbAddress::Tcp { host, port } => {
                let addresses = (host.as_str(), *port).to_socket_addrs().map_err(|e| format!("resolve {host}: {e}"))?;
                let mut last = format!("no address for {host}");
                let mut connected = None;
                for address in addresses {
                    match TcpStream::connect_timeout(&address, timeout) {
                        Ok(stream) => {
                            connected = Some(stream);
                            break;
                        }
                        Err(e) => last = format!("connect {address}: {e}"),
                    }
                }
                let stream = connected.ok_or(last)?;
                stream.set_read_timeout(Some(timeout)).map_err(|e| format!("set timeout: {e}"))?;
                stream.set_write_timeout(Some(timeout)).map_err(|e| format!("set timeout: {e}"))?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
        };
        Ok(Client { stream, framer: Framer::default(), next_id: 1, timeout })
    }

    /// `transact` on the `Open_vSwitch` database: one result per operation, or the error of
    /// the first failed operation (a failed `wait` is [`OpError::WaitFailed`]).
    pub(super) fn transact(&mut self, ops: Vec<Value>) -> Result<Vec<Value>, OpError> {
        let count = ops.len();
        let mut params = vec![json!("Open_vSwitch")];
        params.extend(ops.iter().cloned());
        let result = self.call("transact", Value::Array(params))?;
        let results = result.as_array().ok_or_else(|| OpError::Db("transact: the result is not an array".into()))?;
        for (index, outcome) in results.iter().enumerate() {
            let Some(error) = outcome.get("error").filter(|e| !e.is_null()) else { continue };
            let error = error.as_str().unwrap_or("(not a string)");
            let details = outcome.get("details").and_then(Value::as_str).unwrap_or("");
            let op = ops.get(index).and_then(|op| op.get("op")).and_then(Value::as_str).unwrap_or("commit");
            let text = if details.is_empty() { format!("{op}: {error}") } else { format!("{op}: {error}: {details}") };
            return Err(if op == "wait" && error == "timed out" {
                OpError::WaitFailed(text)
            } else {
                OpError::Db(text)
            });
        }
        if results.len() < count {
            return Err(OpError::Db(format!("transact: {} results for {count} operations", results.len())));
        }
        Ok(results.clone())
    }

    /// Sends one request and reads until its answer, answering the server's echo requests.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, OpError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"method": method, "params": params, "id": id}))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let message = self.receive(deadline)?;
            if let Some(request) = message.get("method").and_then(Value::as_str) {
                // The server's inactivity probe; any other request or notification is ignored.
                if request == "echo" && message.get("id").is_some_and(|id| !id.is_null()) {
                    let reply = json!({"result": message.get("params").cloned().unwrap_or(json!([])),
                                       "error": null, "id": message.get("id")});
                    self.send(&reply)?;
                }
                continue;
            }
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error").filter(|e| !e.is_null()) {
                return Err(OpError::Db(format!("{method}: {error}")));
            }
            return message
                .get("result")
                .cloned()
                .ok_or_else(|| OpError::Db(format!("{method}: an answer without result")));
        }
    }

    fn send(&mut self, message: &Value) -> Result<(), OpError> {
        let bytes = serde_json::to_vec(message).map_err(|e| OpError::Db(format!("encode: {e}")))?;
        self.stream.write_all(&bytes).map_err(|e| OpError::Io(format!("send: {e}")))?;
        self.stream.flush().map_err(|e| OpError::Io(format!("send: {e}")))
    }

    fn receive(&mut self, deadline: Instant) -> Result<Value, OpError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.framer.next_message() {
                Ok(Some(bytes)) => {
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| OpError::Db(format!("the server sent invalid JSON: {e}")));
                }
                Ok(None) => {}
                Err(detail) => return Err(OpError::Db(detail)),
            }
            if Instant::now() >= deadline {
                return Err(OpError::Io(format!("no answer within {:.1} s", self.timeout.as_secs_f64())));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(OpError::Io("the server closed the connection".into())),
                Ok(n) => self.framer.push(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Err(OpError::Io(format!("no answer within {:.1} s", self.timeout.as_secs_f64())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(OpError::Io(format!("receive: {e}"))),
            }
        }
    }
}

/// Splits a byte stream into top-level JSON objects.
#[derive(Default)]
pub(super) struct Framer {
    buffer: Vec<u8>,
}

impl Framer {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete object, if the buffer holds one; an error for anything that is not an
    /// object or is too large.
    pub(super) fn next_message(&mut self) -> Result<Option<Vec<u8>>, String> {
        let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            self.buffer.clear();
            return Ok(None);
        };
        if self.buffer[start] != b'{' {
            return Err(format!(
                "the server sent something other than a JSON object (byte {:#04x})",
                self.buffer[start]
            ));
        }
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (offset, &byte) in self.buffer[start..].iter().enumerate() {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        let end = start + offset + 1;
                        let message = self.buffer[start..end].to_vec();
                        self.buffer.drain(..end);
                        return Ok(Some(message));
                    }
                }
                _ => {}
            }
        }
        if self.buffer.len() > MAX_MESSAGE {
            return Err(format!("the server sent a message larger than {MAX_MESSAGE} bytes"));
        }
        Ok(None)
    }
}

/// `["uuid", "…"]` → the UUID.
pub(super) fn uuid(value: Option<&Value>) -> Option<String> {
    match value?.as_array()?.as_slice() {
        [kind, id] if kind == "uuid" => id.as_str().map(str::to_string),
        _ => None,
    }
}

/// A set of UUIDs: a single `["uuid", …]` or `["set", [["uuid", …], …]]`.
pub(super) fn uuid_set(value: Option<&Value>) -> Option<Vec<String>> {
    let value = value?;
    match value.as_array()?.as_slice() {
        [kind, members] if kind == "set" => members.as_array()?.iter().map(|m| uuid(Some(m))).collect(),
        [kind, _] if kind == "uuid" => Some(vec![uuid(Some(value))?]),
        _ => None,
    }
}

/// An optional integer column: `N`, `["set", []]` (none) or `["set", [N]]`. `None` = malformed.
pub(super) fn optional_integer(value: &Value) -> Option<Option<i64>> {
    if let Some(n) = value.as_i64() {
        return Some(Some(n));
    }
    match value.as_array()?.as_slice() {
        [kind, members] if kind == "set" => match members.as_array()?.as_slice() {
            [] => Some(None),
            [n] => n.as_i64().map(Some),
            _ => None,
        },
        _ => None,
    }
}

/// An optional string column: `"s"` or `["set", []]`.
pub(super) fn optional_string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let mut framer = Framer::default();
        framer.push(br#" {"id":1,"result":["a}\"{"]}{"id":2"#);
        assert_eq!(framer.next_message().unwrap().unwrap(), br#"{"id":1,"result":["a}\"{"]}"#);
        assert_eq!(framer.next_message().unwrap(), None);
        framer.push(br#","result":{}}"#);
        assert_eq!(framer.next_message().unwrap().unwrap(), br#"{"id":2,"result":{}}"#);
        assert_eq!(framer.next_message().unwrap(), None);
        framer.push(b"[1]");
        assert!(framer.next_message().is_err());
        let mut unbalanced = Framer::default();
        unbalanced.push(b"}}}{");
        assert!(unbalanced.next_message().is_err());
    }

    /// Whatever bytes arrive, in whatever pieces, framing never panics and never loops.
    #[test]
    fn framing_arbitrary_bytes() {
        let alphabet = b"{}[]\\\" \n:,a1";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let mut framer = Framer::default();
            for _ in 0..8 {
                let mut piece = Vec::new();
                for _ in 0..(state % 17) {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let byte = if state >> 60 == 0 {
                        (state >> 32) as u8
                    } else {
                        alphabet[(state >> 33) as usize % alphabet.len()]
                    };
                    piece.push(byte);
                }
                framer.push(&piece);
                while let Ok(Some(message)) = framer.next_message() {
                    let _ = serde_json::from_slice::<Value>(&message);
                }
            }
        }
    }

    #[test]
    fn values() {
        assert_eq!(optional_integer(&json!(10)), Some(Some(10)));
        assert_eq!(optional_integer(&json!(["set", []])), Some(None));
        assert_eq!(optional_integer(&json!(["set", [7]])), Some(Some(7)));
        assert_eq!(optional_integer(&json!("x")), None);
        assert_eq!(uuid(Some(&json!(["uuid", "u1"]))), Some("u1".into()));
        assert_eq!(uuid_set(Some(&json!(["uuid", "u1"]))), Some(vec!["u1".into()]));
        assert_eq!(
            uuid_set(Some(&json!(["set", [["uuid", "u1"], ["uuid", "u2"]]]))),
            Some(vec!["u1".into(), "u2".into()])
        );
        assert_eq!(uuid_set(Some(&json!(["set", [1]]))), None);
        assert_eq!(uuid_set(Some(&json!({}))), None);
    }
}
