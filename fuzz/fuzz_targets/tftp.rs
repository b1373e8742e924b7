//! TFTP packets from the network (firmware network boot): parsing must
//! never panic, and whatever read request parses must be granted options
//! within our bounds and an OACK that parses as one.
#![no_main]
use libfuzzer_sys::fuzz_target;
use plasmd::netboot::tftp::packet::{self, Packet, MAX_BLKSIZE, MAX_WINDOWSIZE};

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Read { asked, .. }) = packet::parse(data) {
        let g = packet::grant(&asked, u64::MAX);
        assert!((8..=MAX_BLKSIZE).contains(&g.blksize));
        assert!((1..=MAX_WINDOWSIZE).contains(&g.windowsize));
        let oack = packet::oack(&g);
        assert_eq!(&oack[..2], &[0, 6]);
    }
});
