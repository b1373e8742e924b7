//! What UEFI firmware loads over the network: the stage-1 as one EFI
//! executable (a unified kernel image: the systemd EFI stub with the
//! kernel, initramfs and command line as PE sections, made by
//! `image/build-stage1 --uki`), its command line filled in from this
//! provider's configuration.
//!
//! Firmware that boots over the network passes no command line, so the
//! stage-1's settings (channel, arch, release keys) must be inside the
//! file. `image/build-stage1` leaves the `.cmdline` section padded with
//! spaces to [`CMDLINE_ROOM`] bytes around the word [`TEMPLATE_WORD`];
//! here that word is replaced with this provider's settings, the section
//! keeping its size, and the result is written once to the netboot cache,
//! from where TFTP and HTTP serve it. A UKI without the word (one an
//! operator signed for Secure Boot, whose signature a change would break)
//! is served as it is.
//!
//! The PE headers are read only as far as the section table (bounded,
//! every offset checked); this module does not verify the image.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use super::{CMDLINE_ROOM, TEMPLATE_WORD};
/// Sections a PE file may list before we call it malformed (UKIs have
/// about ten; the format allows 96 in practice).
const MAX_SECTIONS: usize = 96;

/// Why a stage-1 could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: not a unified kernel image: {1}")]
    NotUki(PathBuf, &'static str),
    #[error("{path}: the command line needs {need} bytes; the .cmdline section holds {room}")]
    TooLong {
        path: PathBuf,
        need: usize,
        room: usize,
    },
}

/// Where a PE file keeps its `.cmdline` section: `(file offset, size)`.
fn cmdline_section(head: &[u8]) -> Result<(u64, usize), &'static str> {
    let u16_at = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if head.get(..2) != Some(b"MZ") {
        return Err("no MZ header");
    }
    let pe = u32_at(0x3c).ok_or("truncated")?;
    if head.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err("no PE header");
    }
    let coff = pe + 4;
    let sections = u16_at(coff + 2).ok_or("truncated")?;
    let optional = u16_at(coff + 16).ok_or("truncated")?;
    if sections > MAX_SECTIONS {
        return Err("too many sections");
    }
    let table = coff + 20 + optional;
    for i in 0..sections {
        let s = table + i * 40;
        let name = head.get(s..s + 8).ok_or("section table truncated")?;
        if name == b".cmdline" {
            let virtual_size = u32_at(s + 8).ok_or("truncated")?;
            let raw_size = u32_at(s + 16).ok_or("truncated")?;
            let offset = u32_at(s + 20).ok_or("truncated")?;
            return Ok((offset as u64, virtual_size.min(raw_size)));
        }
    }
    Err("no .cmdline section")
}

/// How much of a PE file's start is read for its headers: the section
/// table of any sane image lies within it.
const HEAD: usize = 64 * 1024;

/// Reads the `.cmdline` of the UKI at `path`: its offset, and its bytes
/// (the section's whole size).
pub fn read_cmdline(path: &Path) -> Result<(u64, Vec<u8>), Stage1Error> {
    let io = |e| Stage1Error::Io(path.to_path_buf(), e);
    let mut f = File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(HEAD);
    (&mut f)
        .take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let (offset, size) =
        cmdline_section(&head).map_err(|why| Stage1Error::NotUki(path.to_path_buf(), why))?;
    if size > 64 * 1024 {
        return Err(Stage1Error::NotUki(
            path.to_path_buf(),
            ".cmdline too large",
        ));
    }
    let mut text = vec![0; size];
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.read_exact(&mut text).map_err(io)?;
    Ok((offset, text))
}

/// The command line `template` with [`TEMPLATE_WORD`] replaced by
/// `words` (and trailing padding gone); `None` when the word is absent.
pub fn fill(template: &str, words: &str) -> Option<String> {
    let text = template.trim_end_matches([' ', '\0', '\n']);
    if !text.split_ascii_whitespace().any(|w| w == TEMPLATE_WORD) {
        return None;
    }
    Some(
        text.split_ascii_whitespace()
            .map(|w| if w == TEMPLATE_WORD { words } else { w })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Makes `out` the stage-1 at `source` with `words` in its command line
/// (see the module header), unless `out` already is exactly that. Returns
/// whether the command line was filled in (false: served as it is).
pub fn prepare(source: &Path, out: &Path, words: &str) -> Result<bool, Stage1Error> {
    let (offset, template) = read_cmdline(source)?;
    // Counted and padded in bytes, with spaces, to the section's size: the
    // file keeps its layout. (A template that is not UTF-8 has no word to
    // replace.)
    let room = template.len();
    let filled = match std::str::from_utf8(&template)
        .ok()
        .and_then(|t| fill(t, words))
    {
        None => None,
        Some(text) if text.len() > room => {
            return Err(Stage1Error::TooLong {
                path: source.to_path_buf(),
                need: text.len(),
                room,
            })
        }
        Some(text) => {
            let mut bytes = text.into_bytes();
            bytes.resize(room, b' ');
            Some(bytes)
        }
    };
    if up_to_date(source, out, offset, filled.as_deref().unwrap_or(&template)) {
        return Ok(filled.is_some());
    }
    // Written beside the target and renamed over it: a transfer already
    // under way keeps reading the old file.
    let mut from = File::open(source).map_err(|e| Stage1Error::Io(source.to_path_buf(), e))?;
    crate::statefile::write_atomic_with(out, 0o644, |to| {
        io::copy(&mut from, to)?;
        if let Some(text) = &filled {
            to.seek(SeekFrom::Start(offset))?;
            to.write_all(text)?;
        }
        Ok(())
    })
    .map_err(|e| Stage1Error::Io(out.to_path_buf(), e))?;
    Ok(filled.is_some())
}

/// Whether `out` is already `source` with `cmdline` at `offset`: same
/// size, made after the source last changed, the same command line. The
/// change time (`ctime`), not the modification time: a new stage-1 copied
/// in with its old mtime kept (`cp -p`, `rsync -t`) still counts as new.
fn up_to_date(source: &Path, out: &Path, offset: u64, cmdline: &[u8]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(s), Ok(o)) = (std::fs::metadata(source), std::fs::metadata(out)) else {
        return false;
    };
    // Strictly newer: change times are kept at the kernel's tick, so a tie
    // may hide a change made in the same tick (and costs only a copy).
    let newer = (o.ctime(), o.ctime_nsec()) > (s.ctime(), s.ctime_nsec());
    if s.len() != o.len() || !newer {
        return false;
    }
    matches!(read_cmdline(out), Ok((at, text)) if at == offset && text == cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE file: MZ, PE header, an empty optional header, and
    /// `.text` and `.cmdline` sections, the latter holding `cmdline`.
    pub(crate) fn tiny_pe(cmdline: &str) -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        f[0x80..0x84].copy_from_slice(b"PE\0\0");
        f[0x84..0x86].copy_from_slice(&0xaa64u16.to_le_bytes());
        f[0x86..0x88].copy_from_slice(&2u16.to_le_bytes());
        // Optional header size 0: the table starts right after COFF.
        let table = 0x80 + 4 + 20;
        let mut section = |i: usize, name: &[u8], size: usize, at: usize| {
            let s = table + i * 40;
            f[s..s + name.len()].copy_from_slice(name);
            f[s + 8..s + 12].copy_from_slice(&(size as u32).to_le_bytes());
            f[s + 16..s + 20].copy_from_slice(&(size.next_multiple_of(512) as u32).to_le_bytes());
            f[s + 20..s + 24].copy_from_slice(&(at as u32).to_le_bytes());
        };
        section(0, b".text", 16, 0x200);
        section(1, b".cmdline", cmdline.len(), 0x400);
        f.resize(0x400, 0xcc);
        f.extend_from_slice(cmdline.as_bytes());
        f.resize(0x400 + cmdline.len().next_multiple_of(512), 0);
        f
    }

    #[test]
    fn the_template_word_is_replaced_and_the_size_kept() {
        let dir = crate::testdir::TempDir::new("stage1");
        let template = format!("console=ttyAMA0 {TEMPLATE_WORD} panic=-1");
        let template = format!("{template:CMDLINE_ROOM$}");
        let src = dir.path().join("stage1.efi");
        std::fs::write(&src, tiny_pe(&template)).unwrap();
        // Change times tick coarsely: the copy must come a tick later.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let out = dir.path().join("cache/stable/arm64/stage1.efi");
        let words = "phase.channel=stable phase.arch=arm64";
        assert!(prepare(&src, &out, words).unwrap());
        let (at, text) = read_cmdline(&out).unwrap();
        assert_eq!(at, 0x400);
        assert_eq!(text.len(), CMDLINE_ROOM);
        assert_eq!(
            String::from_utf8(text).unwrap().trim_end(),
            "console=ttyAMA0 phase.channel=stable phase.arch=arm64 panic=-1"
        );
        // Everything else is the source's, byte for byte.
        let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&out).unwrap());
        assert_eq!(a.len(), b.len());
        assert_eq!(a[..0x400], b[..0x400]);
        // Prepared again with the same words: left alone; other words: redone.
        let before = std::fs::metadata(&out).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        prepare(&src, &out, words).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().modified().unwrap(), before);
        let cmdline = |path: &Path| String::from_utf8(read_cmdline(path).unwrap().1).unwrap();
        prepare(&src, &out, "phase.channel=testing").unwrap();
        assert!(cmdline(&out).contains("phase.channel=testing"));
        // Words of several bytes a character still fill exactly the room.
        prepare(&src, &out, "plasmd.site=zürich").unwrap();
        assert_eq!(read_cmdline(&out).unwrap().1.len(), CMDLINE_ROOM);
        assert!(cmdline(&out).contains("zürich panic=-1"));
        assert_eq!(std::fs::read(&out).unwrap().len(), a.len());
        // A new source of the same size whose modification time was kept
        // (`cp -p`) is still seen as new.
        let mut other = tiny_pe(&template);
        other[0x300] = 0x42;
        let mtime = std::fs::metadata(&src).unwrap().modified().unwrap();
        std::fs::write(&src, &other).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&src)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        prepare(&src, &out, "plasmd.site=zürich").unwrap();
        assert_eq!(std::fs::read(&out).unwrap()[0x300], 0x42);
        // Too many words for the room.
        let long = "x".repeat(CMDLINE_ROOM);
        assert!(matches!(
            prepare(&src, &out, &long),
            Err(Stage1Error::TooLong { .. })
        ));
    }

    #[test]
    fn a_uki_without_the_word_is_served_as_it_is() {
        let dir = crate::testdir::TempDir::new("stage1-signed");
        let src = dir.path().join("stage1.efi");
        std::fs::write(&src, tiny_pe("console=ttyAMA0 phase.channel=lab")).unwrap();
        let out = dir.path().join("out.efi");
        assert!(!prepare(&src, &out, "phase.channel=stable").unwrap());
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&out).unwrap());
    }

    #[test]
    fn malformed_files_are_refused_without_panic() {
        let good = tiny_pe(TEMPLATE_WORD);
        assert!(cmdline_section(&good).is_ok());
        // Cut anywhere before the last field read (the .cmdline entry's
        // file offset, in the table's second entry): refused, never read
        // past.
        let last_field_end = 0x80 + 4 + 20 + 40 + 24;
        for n in 0..last_field_end {
            assert!(cmdline_section(&good[..n]).is_err(), "{n}");
        }
        let mut lie = good.clone();
        lie[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(cmdline_section(&lie).is_err());
        let mut many = good.clone();
        many[0x86..0x88].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(cmdline_section(&many).is_err());
        let mut big_optional = good;
        big_optional[0x94..0x96].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(cmdline_section(&big_optional).is_err());
    }
}
