//! Signed approval links: `<public_url>/approve/<token>`.
//!
//! A token is `base64url(payload ‖ HMAC-SHA256(key, "cordon-link-v1" ‖ payload))`, where the
//! payload is the version, the action id, the choice (approve as quarantine, as reboot, as
//! quarantine + reboot, or ignore), the expiry (Unix seconds), a random nonce and the
//! recipient's address. The key comes from `[notify] link_secret_file` and never leaves the
//! process; whoever holds a link can make that one decision, so a link is a credential, sent
//! only by e-mail to the tenant's administrator.
//!
//! **Single use.** A link acts only while its action is `awaiting_approval`: approving or
//! rejecting moves the action out of that state for good (the state machine has no way back), so
//! a second use of any link of that action is refused (409, message 60072) by the engine's
//! compare-and-swap — durably, across restarts, without a table of used links. On top of that,
//! [`LinkSigner::claim`] keeps the nonces used since start in memory, so that two concurrent
//! posts of one link are told apart before reaching the engine. Expired links are refused (410,
//! 60071) before anything is looked up; links with a bad signature (403, 60070) likewise.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cordon_model::ActionKind;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Signed links need at least this many bytes of key.
pub const MIN_SECRET_LEN: usize = 32;

const VERSION: u8 = 1;
/// Binds the MAC to this use of the key.
const DOMAIN: &[u8] = b"cordon-link-v1";
const NONCE_LEN: usize = 16;
const MAC_LEN: usize = 32;
/// version, action, choice, expiry, nonce.
const FIXED_LEN: usize = 1 + 8 + 1 + 8 + NONCE_LEN;
/// Addresses are at most 254 bytes (RFC 5321); anything longer is not one of ours.
const MAX_RECIPIENT_LEN: usize = 254;

/// What following a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    ApproveQuarantine,
    ApproveReboot,
    ApproveQuarantineReboot,
    /// Reject the action: nothing is done to the server.
    Ignore,
}

impl Choice {
    pub const ALL: &'static [Choice] =
        &[Choice::ApproveQuarantine, Choice::ApproveReboot, Choice::ApproveQuarantineReboot, Choice::Ignore];

    /// The kind an approval runs as; `None` for [`Choice::Ignore`].
    pub fn kind(self) -> Option<ActionKind> {
        match self {
            Choice::ApproveQuarantine => Some(ActionKind::Quarantine),
            Choice::ApproveReboot => Some(ActionKind::Reboot),
            Choice::ApproveQuarantineReboot => Some(ActionKind::QuarantineReboot),
            Choice::Ignore => None,
        }
    }

    /// What a person reads: `approve quarantine`, ..., `ignore`.
    pub fn label(self) -> &'static str {
        match self {
            Choice::ApproveQuarantine => "approve quarantine",
            Choice::ApproveReboot => "approve reboot",
            Choice::ApproveQuarantineReboot => "approve quarantine and reboot",
            Choice::Ignore => "ignore (reject the action)",
        }
    }

    fn code(self) -> u8 {
        match self {
            Choice::ApproveQuarantine => 1,
            Choice::ApproveReboot => 2,
            Choice::ApproveQuarantineReboot => 3,
            Choice::Ignore => 4,
        }
    }

    fn from_code(code: u8) -> Option<Choice> {
        Choice::ALL.iter().copied().find(|c| c.code() == code)
    }

    /// The links an e-mail offers for an action of `kind`: quarantine, reboot, ignore, and
    /// quarantine + reboot when that is what the policy proposed.
    pub fn offered(kind: ActionKind) -> Vec<Choice> {
        let mut choices = vec![Choice::ApproveQuarantine, Choice::ApproveReboot];
        if kind == ActionKind::QuarantineReboot {
            choices.push(Choice::ApproveQuarantineReboot);
        }
        choices.push(Choice::Ignore);
        choices
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub action: i64,
    pub choice: Choice,
    /// Unix seconds after which the link is refused.
    pub expires: i64,
    pub nonce: [u8; NONCE_LEN],
    /// Whom the link was sent to: the decision is recorded as `link:<recipient>`.
    pub recipient: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Not a token at all (bad encoding, wrong length or version).
    Malformed(&'static str),
    /// Well formed, but not signed with this Cordon's key (or altered).
    BadSignature,
    /// Signed by us, but too late.
    Expired { action: i64, expires: i64 },
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Malformed(why) => write!(f, "the link is malformed ({why})"),
            LinkError::BadSignature => f.write_str("the link's signature does not match"),
            LinkError::Expired { action, expires } => {
                write!(f, "the link for action {action} expired at {}", format_time(*expires))
            }
        }
    }
}

impl std::error::Error for LinkError {}

/// Signs and verifies approval links, and remembers the nonces used since start.
pub struct LinkSigner {
    key: Vec<u8>,
    public_url: String,
    ttl: Duration,
    /// nonce → expiry of links used since start (pruned once expired).
    used: Mutex<HashMap<[u8; NONCE_LEN], i64>>,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("LinkSigner").field("public_url", &self.public_url).field("ttl", &self.ttl).finish()
    }
}

impl LinkSigner {
    /// `key` must hold at least [`MIN_SECRET_LEN`] bytes; `public_url` is how administrators
    /// reach the API (a trailing `/` is dropped).
    pub fn new(key: Vec<u8>, public_url: &str, ttl: Duration) -> Result<LinkSigner, String> {
        if key.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the link secret has {} bytes; at least {MIN_SECRET_LEN} are needed (for example the output of \
                 `head -c 32 /dev/urandom | base64`)",
                key.len()
            ));
        }
        Ok(LinkSigner {
            key,
            public_url: public_url.trim_end_matches('/').to_string(),
            ttl,
            used: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the key from `path` (a trailing line break is not part of it).
    pub fn from_file(path: &Path, public_url: &str, ttl: Duration) -> Result<LinkSigner, String> {
        let mut key =
            std::fs::read(path).map_err(|e| format!("cannot read the link secret file {}: {e}", path.display()))?;
        while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            key.pop();
        }
        LinkSigner::new(key, public_url, ttl).map_err(|e| format!("link secret file {}: {e}", path.display()))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// A new link for `recipient`, valid for the configured time from `now` (Unix seconds).
    pub fn issue(&self, action: i64, choice: Choice, recipient: &str, now: i64) -> Link {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        Link { action, choice, expires: now.saturating_add(ttl), nonce, recipient: recipient.to_string() }
    }

    /// The token of a link.
    pub fn sign(&self, link: &Link) -> String {
        let recipient = link.recipient.as_bytes();
        let recipient = &recipient[..recipient.len().min(MAX_RECIPIENT_LEN)];
        let mut bytes = Vec::with_capacity(FIXED_LEN + recipient.len() + MAC_LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(&link.action.to_be_bytes());
        bytes.push(link.choice.code());
        bytes.extend_from_slice(&link.expires.to_be_bytes());
        bytes.extend_from_slice(&link.nonce);
        bytes.extend_from_slice(recipient);
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The URL the administrator follows.
    pub fn url(&self, token: &str) -> String {
        format!("{}/approve/{token}", self.public_url)
    }

    /// Checks a token's signature, then its expiry against `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Link, LinkError> {
        if token.len() > 2 * (FIXED_LEN + MAX_RECIPIENT_LEN + MAC_LEN) {
            return Err(LinkError::Malformed("too long"));
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| LinkError::Malformed("not base64url"))?;
        if bytes.len() < FIXED_LEN + MAC_LEN {
            return Err(LinkError::Malformed("too short"));
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        // Constant-time comparison, before anything in the payload is trusted.
        self.mac(payload).verify_slice(tag).map_err(|_| LinkError::BadSignature)?;
        if payload[0] != VERSION {
            return Err(LinkError::Malformed("unknown version"));
        }
        let action = i64::from_be_bytes(payload[1..9].try_into().unwrap_or_default());
        let choice = Choice::from_code(payload[9]).ok_or(LinkError::Malformed("unknown choice"))?;
        let expires = i64::from_be_bytes(payload[10..18].try_into().unwrap_or_default());
        let nonce: [u8; NONCE_LEN] = payload[18..FIXED_LEN].try_into().unwrap_or_default();
        let recipient =
            String::from_utf8(payload[FIXED_LEN..].to_vec()).map_err(|_| LinkError::Malformed("recipient"))?;
        if now > expires {
            return Err(LinkError::Expired { action, expires });
        }
        Ok(Link { action, choice, expires, nonce, recipient })
    }

    /// Marks a verified link as being used; false when it was already (the first use wins).
    pub fn claim(&self, link: &Link, now: i64) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        // Expired links are refused anyway: forget their nonces.
        used.retain(|_, expires| *expires >= now);
        match used.entry(link.nonce) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(link.expires);
                true
            }
        }
    }

    /// Whether a link was used since start (for the confirmation page).
    pub fn is_used(&self, link: &Link) -> bool {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&link.nonce)
    }

    /// Gives a claimed link back when the decision could not be made for a passing reason
    /// (the store failed), so that the administrator can try again.
    pub fn release(&self, link: &Link) {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).remove(&link.nonce);
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }
}

/// `2026-11-28 03:30:00 UTC`.
pub fn format_time(unix: i64) -> String {
    match chrono::DateTime::from_timestamp(unix, 0) {
        Some(time) => time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{unix} (Unix time)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn signer() -> LinkSigner {
        LinkSigner::new(vec![7u8; 32], "https://cordon.example:8080/", Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn a_signed_link_verifies_and_says_what_it_was_made_for() {
        let signer = signer();
        let link = signer.issue(42, Choice::ApproveReboot, "admin@example.com", NOW);
        assert_eq!(link.expires, NOW + 3600);
        let token = signer.sign(&link);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert_eq!(signer.verify(&token, NOW), Ok(link.clone()));
        assert_eq!(signer.verify(&token, NOW + 3600), Ok(link), "valid up to and including its expiry");
        assert_eq!(signer.url(&token), format!("https://cordon.example:8080/approve/{token}"));
    }

    #[test]
    fn every_choice_round_trips_and_nonces_differ() {
        let signer = signer();
        for &choice in Choice::ALL {
            let a = signer.issue(1, choice, "a@example.com", NOW);
            let b = signer.issue(1, choice, "a@example.com", NOW);
            assert_ne!(a.nonce, b.nonce);
            assert_ne!(signer.sign(&a), signer.sign(&b));
            assert_eq!(signer.verify(&signer.sign(&a), NOW).unwrap().choice, choice);
        }
    }

    #[test]
    fn an_expired_link_is_refused_with_its_action() {
        let signer = signer();
        let token = signer.sign(&signer.issue(9, Choice::ApproveQuarantine, "a@example.com", NOW));
        assert_eq!(signer.verify(&token, NOW + 3601), Err(LinkError::Expired { action: 9, expires: NOW + 3600 }));
        // A link made with a past expiry, as the end-to-end test does.
        let past = Link { expires: NOW - 1, ..signer.issue(9, Choice::Ignore, "a@example.com", NOW) };
        assert!(matches!(signer.verify(&signer.sign(&past), NOW), Err(LinkError::Expired { .. })));
    }

    #[test]
    fn any_altered_byte_breaks_the_signature() {
        let signer = signer();
        let token = signer.sign(&signer.issue(5, Choice::ApproveQuarantine, "a@example.com", NOW));
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let altered = URL_SAFE_NO_PAD.encode(altered);
            assert_eq!(signer.verify(&altered, NOW), Err(LinkError::BadSignature), "byte {i}");
        }
        // The action id changed to another one, re-encoded: still refused.
        let mut other = bytes.clone();
        other[8] = 6;
        assert_eq!(signer.verify(&URL_SAFE_NO_PAD.encode(other), NOW), Err(LinkError::BadSignature));
        // Truncated or extended.
        assert!(signer.verify(&URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1]), NOW).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(signer.verify(&URL_SAFE_NO_PAD.encode(longer), NOW), Err(LinkError::BadSignature));
    }

    #[test]
    fn another_key_does_not_verify() {
        let signer = signer();
        let other = LinkSigner::new(vec![8u8; 32], "https://x.example", Duration::from_secs(3600)).unwrap();
        let token = other.sign(&other.issue(5, Choice::ApproveQuarantine, "a@example.com", NOW));
        assert_eq!(signer.verify(&token, NOW), Err(LinkError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        let signer = signer();
        for token in ["", "a", "!!!!", "AAAA", &"A".repeat(10_000), "é"] {
            assert!(matches!(signer.verify(token, NOW), Err(LinkError::Malformed(_))), "{token:?}");
        }
        // Well signed but an unknown version or choice.
        let mut payload = vec![2u8];
        payload.extend_from_slice(&[0u8; FIXED_LEN - 1]);
        let tag = signer.mac(&payload).finalize().into_bytes();
        payload.extend_from_slice(&tag);
        assert_eq!(signer.verify(&URL_SAFE_NO_PAD.encode(&payload), NOW), Err(LinkError::Malformed("unknown version")));
    }

    #[test]
    fn a_link_is_claimed_once_until_released() {
        let signer = signer();
        let link = signer.issue(5, Choice::ApproveQuarantine, "a@example.com", NOW);
        assert!(!signer.is_used(&link));
        assert!(signer.claim(&link, NOW));
        assert!(signer.is_used(&link));
        assert!(!signer.claim(&link, NOW), "a second use is refused");
        let other = signer.issue(5, Choice::Ignore, "a@example.com", NOW);
        assert!(signer.claim(&other, NOW), "another link of the same action is its own");
        signer.release(&link);
        assert!(signer.claim(&link, NOW));
        // Nonces of expired links are forgotten.
        assert!(signer.claim(&signer.issue(6, Choice::Ignore, "a@example.com", NOW), NOW + 7200));
        assert_eq!(signer.used.lock().unwrap().len(), 1);
    }

    #[test]
    fn short_keys_are_refused_and_files_are_trimmed() {
        assert!(LinkSigner::new(vec![1u8; 31], "https://x.example", Duration::from_secs(1)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.secret");
        std::fs::write(&path, format!("{}\n", "k".repeat(32))).unwrap();
        let signer = LinkSigner::from_file(&path, "https://x.example", Duration::from_secs(60)).unwrap();
        assert_eq!(signer.key.len(), 32);
        std::fs::write(&path, "short\n").unwrap();
        let error = LinkSigner::from_file(&path, "https://x.example", Duration::from_secs(60)).unwrap_err();
        assert!(error.contains("5 bytes") && error.contains("link.secret"), "{error}");
        let missing = LinkSigner::from_file(&dir.path().join("nope"), "https://x.example", Duration::from_secs(60));
        assert!(missing.unwrap_err().contains("cannot read the link secret file"));
        assert!(!format!("{signer:?}").contains("kkkk"), "Debug never shows the key");
    }

    #[test]
    fn offered_choices_follow_the_proposed_kind() {
        assert_eq!(
            Choice::offered(ActionKind::Notify),
            vec![Choice::ApproveQuarantine, Choice::ApproveReboot, Choice::Ignore]
        );
        assert_eq!(Choice::offered(ActionKind::QuarantineReboot).len(), 4);
    }
}
