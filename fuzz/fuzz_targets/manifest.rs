//! Manifests from disk (shipped manifest.json) and from providers (what
//! `phase-discover --fetch` parses): never a panic, bounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = plasmd::manifest::shipped_version(data);
    if let Ok(list) = plasmd::fetch::parse_manifest(data) {
        assert!(list.len() <= 4096);
    }
});
