//! One webhook body (`POST /api/v1/detections`): never panics; an accepted post is consistent.
#![no_main]

use cordon_ingest::webhook;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = 1_795_773_600_000_000;
    let _ = webhook::source_of(data);
    match webhook::parse(data, now) {
        Ok(d) => {
            assert_eq!(d.src_ip, Some(d.subject), "the subject is the source address");
            assert_eq!(d.dest_ip, d.peer);
            assert_eq!(d.received_at_us, now);
            assert!(!d.signature.trim().is_empty());
            // What is stored as raw reads back as the same post.
            let again = webhook::parse(d.raw.as_bytes(), now).expect("the stored raw form parses again");
            assert_eq!(again.subject, d.subject);
            assert_eq!(again.observed_at_us, d.observed_at_us);
        }
        Err(reason) => assert!(!reason.is_empty() && reason.len() < 600, "{reason}"),
    }
});
