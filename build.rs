//! Stamps the build time into the binaries (`PLASMD_BUILD_TIME`, seconds
//! since the epoch): a board whose clock reads earlier knows its clock is
//! wrong (see `release::floor`). `SOURCE_DATE_EPOCH` wins, for
//! reproducible builds.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let t = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=PLASMD_BUILD_TIME={t}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
}
