//! Manifests from disk (shipped manifest.json) and from providers (what
//! `phase-discover --fetch` parses), and the release signatures served next
//! to them: never a panic, bounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = plasmd::manifest::shipped_version(data);
    let _ = plasmd::manifest::read_fields(data);
    let _ = plasmd::minisign::Signature::parse(data);
    if let Ok(list) = plasmd::manifest::parse_manifest(data) {
        assert!(list.len() <= 4096);
    }
});
