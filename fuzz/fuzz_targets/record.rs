//! DHT record values and keys from the network: decoding, validation and
//! signature checks must never panic, and whatever passes must re-encode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use plasmd::record::{decode_for_key, ManifestRecord};

fuzz_target!(|data: &[u8]| {
    // First byte picks how much of the input is the key.
    let (split, rest) = match data.split_first() {
        Some((n, rest)) => ((*n as usize).min(rest.len()), rest),
        None => return,
    };
    let (key, value) = rest.split_at(split);
    for key in [key, b"/phase/stable/arm64/manifest".as_slice()] {
        if let Ok(r) = decode_for_key(key, value, plasmd::time::Now::At(1_795_345_200)) {
            let bytes = r.to_bytes().expect("a valid record re-encodes");
            assert_eq!(ManifestRecord::from_bytes(&bytes).expect("and decodes"), r);
        }
    }
    let _ = ManifestRecord::from_bytes(value);
});
