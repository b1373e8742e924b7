//! TFTP packets from the network (firmware network boot): parsing must
//! never panic, and whatever read request parses must be granted options
//! within our bounds and an OACK that parses as one (and is sent only when
//! it names something).
#![no_main]
use libfuzzer_sys::fuzz_target;
use plasmd::netboot::tftp::packet::{
    self, Packet, DEFAULT_BLKSIZE, MAX_BLKSIZE, MAX_TIMEOUT, MAX_WINDOWSIZE,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Read { asked, .. }) = packet::parse(data) {
        let g = packet::grant(&asked, u64::MAX);
        assert!((DEFAULT_BLKSIZE..=MAX_BLKSIZE).contains(&g.blksize));
        assert!((1..=MAX_WINDOWSIZE).contains(&g.windowsize));
        assert!(g.timeout.is_none_or(|t| t <= MAX_TIMEOUT));
        let oack = packet::oack(&g);
        assert_eq!(&oack[..2], &[0, 6]);
        // An OACK is sent only when it names an option.
        assert_eq!(g.oack, oack.len() > 2);
    }
});
