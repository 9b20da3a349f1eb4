//! The fast path for links against the general parser, on arbitrary bytes:
//! `Envelope::parse` (fast path first) and `Envelope::parse_general` must
//! accept the same documents, with the same payload, signatures and signed
//! bytes, and refuse the same ones with the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use totogate::json::JsonLimits;
use totogate::model::Envelope;

fuzz_target!(|data: &[u8]| {
    let limits = JsonLimits::default();
    match (
        Envelope::parse(data, limits),
        Envelope::parse_general(data, limits),
    ) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.kind(), b.kind());
            assert_eq!(a.payload(), b.payload());
            assert_eq!(a.signatures(), b.signatures());
            assert_eq!(a.signed_bytes(), b.signed_bytes());
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!(
            "parse {} but parse_general {}",
            if a.is_ok() { "accepts" } else { "refuses" },
            if b.is_ok() { "accepts" } else { "refuses" },
        ),
    }
    // Owned bytes (freed early) give the same as borrowed ones.
    match (
        Envelope::parse(data, limits),
        Envelope::parse_owned(data.to_vec(), limits),
    ) {
        (Ok(a), Ok(b)) => assert_eq!(a.payload(), b.payload()),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("parse and parse_owned disagree"),
    }
});
