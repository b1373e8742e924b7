//! TFTP packets (RFC 1350) with the option extension (RFC 2347) and the
//! options firmware asks for: `blksize` (RFC 2348), `tsize` and `timeout`
//! (RFC 2349), `windowsize` (RFC 7440). Read requests only: plasmd never
//! accepts a file over TFTP.
//!
//! Everything here comes from the network: a packet that does not parse is
//! an error, never a panic, and a request's size is bounded (RFC 2347: 512
//! octets). This module only reads and writes packets; the transfers
//! (sessions, retransmits, which files) are not its job.

/// Largest read request accepted (RFC 2347 keeps a request within 512
/// octets); anything larger is dropped unanswered.
pub const MAX_REQUEST: usize = 512;
/// The block size when none is negotiated (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// The largest block we grant: a 1500-byte Ethernet frame less the IP, UDP
/// and TFTP headers, what EDK2 asks for (so no block is ever fragmented).
pub const MAX_BLKSIZE: u16 = 1468;
/// The largest window we grant (RFC 7440): blocks sent before an ACK.
pub const MAX_WINDOWSIZE: u16 = 16;
/// The longest retransmit timeout granted, in seconds (RFC 2349 allows
/// 255: five tries of that is 21 minutes a block).
pub const MAX_TIMEOUT: u8 = 10;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// TFTP error codes we send (RFC 1350, 2347).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    NotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransfer = 5,
    OptionsRefused = 8,
}

/// Why a packet was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet shorter than its opcode")]
    Short,
    #[error("request larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("request field not terminated")]
    Unterminated,
    #[error("request field is not UTF-8")]
    NotText,
    #[error("empty file name")]
    NoFile,
    #[error("transfer mode {0:?} (only octet is served)")]
    Mode(String),
}

/// Options a read request asked for, as far as they are valid; an option
/// with a value out of its range is not negotiated (RFC 2347 lets a server
/// leave out what it does not accept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub blksize: Option<u16>,
    /// `tsize` was asked for (in a read request its value is 0).
    pub tsize: bool,
    pub timeout: Option<u8>,
    pub windowsize: Option<u16>,
}

/// A packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A read request: the file and its options.
    Read { file: &'a str, asked: Asked },
    /// A write request: always refused.
    Write,
    /// The client received the block with this number.
    Ack(u16),
    /// The client gives up (EDK2 does after a `tsize` probe).
    Error { code: u16, message: &'a str },
    /// DATA or OACK from a client, or an unknown opcode.
    Unexpected(u16),
}

/// Reads one packet from a client.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    let (op, rest) = match buf {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(PacketError::Short),
    };
    match op {
        RRQ => parse_read(buf, rest),
        WRQ => Ok(Packet::Write),
        ACK => match rest {
            [a, b, ..] => Ok(Packet::Ack(u16::from_be_bytes([*a, *b]))),
            _ => Err(PacketError::Short),
        },
        ERROR => match rest {
            [a, b, msg @ ..] => Ok(Packet::Error {
                code: u16::from_be_bytes([*a, *b]),
                message: fields(msg).next().and_then(|f| f.ok()).unwrap_or_default(),
            }),
            _ => Err(PacketError::Short),
        },
        other => Ok(Packet::Unexpected(other)),
    }
}

/// The NUL-terminated text fields of `buf`, each checked as UTF-8.
fn fields(buf: &[u8]) -> impl Iterator<Item = Result<&str, PacketError>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(end) = rest.iter().position(|b| *b == 0) else {
            rest = &[];
            return Some(Err(PacketError::Unterminated));
        };
        let field = std::str::from_utf8(&rest[..end]).map_err(|_| PacketError::NotText);
        rest = &rest[end + 1..];
        Some(field)
    })
}

fn parse_read<'a>(whole: &[u8], rest: &'a [u8]) -> Result<Packet<'a>, PacketError> {
    if whole.len() > MAX_REQUEST {
        return Err(PacketError::TooLarge);
    }
    let mut f = fields(rest);
    let file = f.next().ok_or(PacketError::Unterminated)??;
    let mode = f.next().ok_or(PacketError::Unterminated)??;
    if file.is_empty() {
        return Err(PacketError::NoFile);
    }
    if !mode.eq_ignore_ascii_case("octet") {
        return Err(PacketError::Mode(mode.chars().take(16).collect()));
    }
    let mut asked = Asked::default();
    // Name, value, name, value …: a trailing name without a value is
    // malformed; unknown names and out-of-range values are left out.
    while let Some(name) = f.next() {
        let name = name?;
        let value = f.next().ok_or(PacketError::Unterminated)??;
        let number = value.parse::<u64>().ok();
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "blksize" if asked.blksize.is_none() => {
                asked.blksize = number.filter(|n| (8..=65464).contains(n)).map(|n| n as u16);
            }
            "tsize" => asked.tsize = number == Some(0),
            "timeout" if asked.timeout.is_none() => {
                asked.timeout = number.filter(|n| (1..=255).contains(n)).map(|n| n as u8);
            }
            "windowsize" if asked.windowsize.is_none() => {
                asked.windowsize = number.filter(|n| (1..=65535).contains(n)).map(|n| n as u16);
            }
            _ => {}
        }
    }
    Ok(Packet::Read { file, asked })
}

/// What a transfer runs with, once the options are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub blksize: u16,
    pub windowsize: u16,
    /// Seconds before a block is sent again, if the client set it.
    pub timeout: Option<u8>,
    /// The file's size, when the client asked for it.
    pub tsize: Option<u64>,
    /// Whether an OACK must go first (any option was granted).
    pub oack: bool,
}

/// Settles the options a client asked for, for a file of `size` bytes: a
/// block or window larger than ours is granted at ours. Blocks smaller
/// than the default and timeouts longer than [`MAX_TIMEOUT`] are not
/// granted (the defaults stand): they would let one client hold a
/// transfer for hours. An OACK goes first only if it names something.
pub fn grant(asked: &Asked, size: u64) -> Granted {
    let blksize = asked
        .blksize
        .filter(|b| *b > DEFAULT_BLKSIZE)
        .map(|b| b.min(MAX_BLKSIZE));
    let windowsize = asked
        .windowsize
        .filter(|w| *w > 1)
        .map(|w| w.min(MAX_WINDOWSIZE));
    let timeout = asked.timeout.filter(|t| *t <= MAX_TIMEOUT);
    let tsize = asked.tsize.then_some(size);
    Granted {
        blksize: blksize.unwrap_or(DEFAULT_BLKSIZE),
        windowsize: windowsize.unwrap_or(1),
        timeout,
        tsize,
        oack: blksize.is_some() || windowsize.is_some() || timeout.is_some() || tsize.is_some(),
    }
}

/// An OACK naming every option granted.
pub fn oack(g: &Granted) -> Vec<u8> {
    let mut out = OACK.to_be_bytes().to_vec();
    let mut option = |name: &str, value: String| {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    };
    if g.blksize != DEFAULT_BLKSIZE {
        option("blksize", g.blksize.to_string());
    }
    if let Some(size) = g.tsize {
        option("tsize", size.to_string());
    }
    if let Some(t) = g.timeout {
        option("timeout", t.to_string());
    }
    if g.windowsize != 1 {
        option("windowsize", g.windowsize.to_string());
    }
    out
}

/// A DATA packet: block number `block` carrying `payload`, written into
/// `out` (cleared first, so one buffer serves a whole transfer).
pub fn data(block: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An ERROR packet; the message is clipped to keep replies small.
pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = ERROR.to_be_bytes().to_vec();
    out.extend_from_slice(&(code as u16).to_be_bytes());
    let clipped: String = message.chars().filter(|c| *c != '\0').take(100).collect();
    out.extend_from_slice(clipped.as_bytes());
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut p = vec![0, 1];
        for f in fields {
            p.extend_from_slice(f.as_bytes());
            p.push(0);
        }
        p
    }

    #[test]
    fn what_edk2_asks_is_read_and_granted() {
        // EDK2's size probe, then its download (firmware-netboot-notes).
        let probe = rrq(&[
            "uki.efi",
            "octet",
            "tsize",
            "0",
            "blksize",
            "1468",
            "windowsize",
            "4",
        ]);
        let Packet::Read { file, asked } = parse(&probe).unwrap() else {
            panic!("not a read");
        };
        assert_eq!(file, "uki.efi");
        let g = grant(&asked, 34_010_112);
        assert_eq!(
            (g.blksize, g.windowsize, g.tsize, g.oack),
            (1468, 4, Some(34_010_112), true)
        );
        let o = oack(&g);
        assert_eq!(
            o,
            b"\0\x06blksize\x001468\0tsize\x0034010112\0windowsize\x004\0".to_vec()
        );
        // Its abort of the probe.
        let abort = b"\0\x05\0\x08User aborted the transfer\0";
        assert_eq!(
            parse(abort).unwrap(),
            Packet::Error {
                code: 8,
                message: "User aborted the transfer"
            }
        );
        // Options asked beyond ours are granted at ours; a plain request
        // needs no OACK.
        let big = rrq(&["f", "OCTET", "BLKSIZE", "65464", "windowsize", "64"]);
        let Packet::Read { asked, .. } = parse(&big).unwrap() else {
            panic!()
        };
        let g = grant(&asked, 1);
        assert_eq!((g.blksize, g.windowsize), (MAX_BLKSIZE, MAX_WINDOWSIZE));
        let Packet::Read { asked, .. } = parse(&rrq(&["f", "octet"])).unwrap() else {
            panic!()
        };
        assert!(!grant(&asked, 1).oack);
        // What would let a client hold a transfer for hours is not granted,
        // and options that change nothing make no (empty) OACK.
        let slow = rrq(&["f", "octet", "blksize", "8", "timeout", "255"]);
        let Packet::Read { asked, .. } = parse(&slow).unwrap() else {
            panic!()
        };
        let g = grant(&asked, 1);
        assert_eq!(
            (g.blksize, g.timeout, g.oack),
            (DEFAULT_BLKSIZE, None, false)
        );
        let same = rrq(&["f", "octet", "blksize", "512", "windowsize", "1"]);
        let Packet::Read { asked, .. } = parse(&same).unwrap() else {
            panic!()
        };
        assert!(!grant(&asked, 1).oack);
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        assert_eq!(parse(&[]), Err(PacketError::Short));
        assert_eq!(parse(&[0]), Err(PacketError::Short));
        assert_eq!(parse(&[0, 4, 1]), Err(PacketError::Short));
        assert_eq!(parse(&[0, 1, b'f']), Err(PacketError::Unterminated));
        assert_eq!(parse(&rrq(&["f"])), Err(PacketError::Unterminated));
        assert_eq!(parse(&rrq(&["", "octet"])), Err(PacketError::NoFile));
        assert!(matches!(
            parse(&rrq(&["f", "netascii"])),
            Err(PacketError::Mode(_))
        ));
        assert_eq!(
            parse(&rrq(&["f", "octet", "blksize"])),
            Err(PacketError::Unterminated)
        );
        let mut huge = rrq(&["f", "octet"]);
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST));
        huge.push(0);
        assert_eq!(parse(&huge), Err(PacketError::TooLarge));
        assert_eq!(parse(&[0, 1, 0xff, 0, b'o', 0]), Err(PacketError::NotText));
        // Values out of range are not negotiated; the request still stands.
        let odd = rrq(&[
            "f",
            "octet",
            "blksize",
            "7",
            "windowsize",
            "0",
            "tsize",
            "9",
        ]);
        let Packet::Read { asked, .. } = parse(&odd).unwrap() else {
            panic!()
        };
        assert_eq!(asked, Asked::default());
        assert_eq!(parse(&[0, 2, b'f', 0]).unwrap(), Packet::Write);
        assert_eq!(parse(&[0, 9]).unwrap(), Packet::Unexpected(9));
        // Every prefix of a valid request parses or errs.
        let full = rrq(&["uki.efi", "octet", "blksize", "1468"]);
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
    }

    #[test]
    fn replies_have_their_wire_form() {
        let mut out = Vec::new();
        data(7, b"abc", &mut out);
        assert_eq!(out, b"\0\x03\0\x07abc");
        assert_eq!(
            error(ErrorCode::NotFound, "no such file"),
            b"\0\x05\0\x01no such file\0"
        );
    }
}
