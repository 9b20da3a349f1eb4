//! Metadata parsing and signature checking on arbitrary bytes: must never
//! panic, and a parsed envelope must re-serialise and re-parse to the same payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use totogate::json::JsonLimits;
use totogate::model::Envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::parse(data, JsonLimits::default()) else {
        return;
    };
    // A fixed key: checking never panics whatever the signatures hold.
    let key = totogate::crypto::PublicKey::from_pem(
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let _ = env.check_signature(&key);
    let again = Envelope::parse(&env.to_file_bytes(), JsonLimits::default()).unwrap();
    assert_eq!(again.payload(), env.payload());
});
