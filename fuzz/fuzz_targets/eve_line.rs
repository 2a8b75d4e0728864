//! One EVE line: never panics; a detection is consistent with its own addresses.
#![no_main]

use cordon_ingest::{Context, eve};
use cordon_model::Parsed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ctx = Context { source: "fuzz", received_at_us: 1_795_773_600_000_000 };
    match eve::parse_line(data, &ctx) {
        Parsed::Detection(d) => {
            assert!(d.src_ip.is_some(), "an alert always has src_ip");
            assert!(
                Some(d.subject) == d.target_ip || (d.target_ip.is_none() && Some(d.subject) == d.src_ip),
                "subject is the target, else the source"
            );
            assert_eq!(d.source, "fuzz");
            assert!(!d.raw.ends_with('\n') && !d.raw.ends_with('\r'));
        }
        Parsed::Skipped { kind } => assert!(!kind.is_empty() && kind.len() <= 32),
        Parsed::Malformed { reason } => assert!(!reason.is_empty() && reason.len() < 400),
    }
});
