//! One syslog message carrying CEF, both profiles; also the syslog and CEF parsers alone.
#![no_main]

use cordon_ingest::cef_syslog::{self, Profile};
use cordon_ingest::{Context, cef, syslog};
use cordon_model::Parsed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = Context { source: "fuzz", received_at_us: 1_773_057_504_000_000 };
    for profile in [Profile::Generic, Profile::DeepDiscovery] {
        if let Parsed::Detection(d) = cef_syslog::parse_message(data, profile, &ctx) {
            let named = [d.src_ip, d.dest_ip, d.target_ip];
            assert!(named.contains(&Some(d.subject)), "the subject is an address the event names");
        }
    }
    let _ = syslog::parse(data);
    let _ = syslog::parse_with_reference(data, i64::MAX);
    let _ = syslog::parse_with_reference(data, i64::MIN);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(event) = cef::parse(text) {
            for (key, _) in &event.extensions {
                assert!(!key.is_empty());
                assert!(event.extension(key).is_some());
            }
        }
    }
});
