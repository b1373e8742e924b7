//! A TFTP client written here, for the tests that need one that can lose
//! an ACK, vanish, or probe a file and abort as firmware does.

use std::net::UdpSocket;
use std::time::Duration;

/// Sends a read request for `file` with `options` to 127.0.0.1:`port`;
/// returns the client's socket, the first packet back and the port of the
/// transfer that answered.
pub fn request(port: u16, file: &str, options: &[(&str, &str)]) -> (UdpSocket, Vec<u8>, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rrq = vec![0, 1];
    for f in [file, "octet"] {
        rrq.extend_from_slice(f.as_bytes());
        rrq.push(0);
    }
    for (k, v) in options {
        for f in [k, v] {
            rrq.extend_from_slice(f.as_bytes());
            rrq.push(0);
        }
    }
    s.send_to(&rrq, ("127.0.0.1", port)).unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    buf.truncate(n);
    (s, buf, from.port())
}

/// Acknowledges `block` to the transfer at `port`.
pub fn ack(s: &UdpSocket, port: u16, block: u16) {
    let b = block.to_be_bytes();
    s.send_to(&[0, 4, b[0], b[1]], ("127.0.0.1", port)).unwrap();
}

/// A whole file in lock-step with `blksize`, as the Raspberry Pi
/// bootloader asks (`tsize 0 blksize N`); `Err` with the server's error
/// message when it refuses.
pub fn get(port: u16, file: &str, blksize: usize) -> Result<Vec<u8>, String> {
    let size = blksize.to_string();
    let (s, first, tid) = request(port, file, &[("tsize", "0"), ("blksize", &size)]);
    match first.get(..2) {
        Some([0, 6]) => ack(&s, tid, 0),
        Some([0, 5]) => {
            return Err(String::from_utf8_lossy(&first[4..])
                .trim_end_matches('\0')
                .into())
        }
        _ => panic!("{file}: unexpected first packet {first:?}"),
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; blksize + 4];
    let mut expected: u16 = 1;
    loop {
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 3], "{file}: data");
        let block = u16::from_be_bytes([buf[2], buf[3]]);
        if block == expected {
            got.extend_from_slice(&buf[4..n]);
            expected = expected.wrapping_add(1);
        }
        ack(&s, tid, block);
        if block.wrapping_add(1) == expected && n - 4 < blksize {
            return Ok(got);
        }
    }
}

/// Starts a transfer of `file` for its size and aborts it (error 8), as
/// EDK2 and the Pi bootloader probe files; the size, or the refusal.
pub fn probe(port: u16, file: &str) -> Result<u64, String> {
    let (s, first, tid) = request(port, file, &[("tsize", "0"), ("blksize", "1024")]);
    if first.get(..2) == Some(&[0, 5]) {
        return Err(String::from_utf8_lossy(&first[4..])
            .trim_end_matches('\0')
            .into());
    }
    let text = String::from_utf8_lossy(&first[2..]).to_string();
    let mut fields = text.split('\0');
    let mut size = None;
    while let Some(k) = fields.next() {
        let v = fields.next().unwrap_or("");
        if k == "tsize" {
            size = v.parse().ok();
        }
    }
    let mut abort = vec![0, 5, 0, 8];
    abort.extend_from_slice(b"User aborted the transfer\0");
    s.send_to(&abort, ("127.0.0.1", tid)).unwrap();
    size.ok_or_else(|| format!("{file}: no tsize in {text:?}"))
}
