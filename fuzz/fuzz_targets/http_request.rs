//! HTTP request heads, paths and Range headers from any machine on the LAN.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    plasmd::http::fuzz_request(data);
});
