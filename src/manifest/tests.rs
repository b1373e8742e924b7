//! The catalog and the manifest it writes, on real directories.

use super::*;
use crate::channel::ChannelArch;
use crate::testdir::TempDir;
use std::fs::{self, File};

fn tree() -> (TempDir, Catalog) {
    let dir = TempDir::new("unit");
    let a = dir.path().join("stable/arm64");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("vmlinuz"), b"kernel").unwrap();
    fs::write(a.join("initrd.img"), b"initramfs").unwrap();
    let cat = Catalog::new(Some(dir.path().to_path_buf()), vec![], vec![]);
    (dir, cat)
}

fn stable() -> ChannelArch {
    ChannelArch {
        channel: "stable".into(),
        arch: "arm64".into(),
    }
}

#[test]
fn same_files_same_version_and_changes_change_it() {
    let (dir, cat) = tree();
    let v1 = cat.rescan().unwrap()[&stable()].version.clone();
    assert_eq!(v1.len(), 16);
    assert_eq!(cat.rescan().unwrap()[&stable()].version, v1);
    fs::write(dir.path().join("stable/arm64/vmlinuz"), b"kernel 2").unwrap();
    let v2 = cat.rescan().unwrap()[&stable()].version.clone();
    assert_ne!(v1, v2);
    fs::write(dir.path().join("stable/arm64/vmlinuz"), b"kernel").unwrap();
    assert_eq!(cat.rescan().unwrap()[&stable()].version, v1);
}

#[test]
fn generated_manifest_lists_name_size_and_sha256() {
    let (_dir, cat) = tree();
    let m = cat.rescan().unwrap()[&stable()].clone();
    let text = String::from_utf8(m.json.clone()).unwrap();
    assert!(text.contains("\"name\": \"vmlinuz\", \"size\": 6"));
    let hash = crate::text::sha256_hex(b"kernel");
    assert_eq!(m.artifacts["vmlinuz"].sha256, hash);
    assert!(text.contains(&hash));
    assert_eq!(shipped_version(&m.json).unwrap(), m.version);
}

#[test]
fn shipped_manifest_is_served_as_is() {
    let (dir, cat) = tree();
    let body = br#"{"version": "2026.11.1", "files": []}"#;
    fs::write(dir.path().join("stable/arm64/manifest.json"), body).unwrap();
    let m = cat.rescan().unwrap()[&stable()].clone();
    assert_eq!(m.version, "2026.11.1");
    assert_eq!(m.json, body.to_vec());
    assert!(m.artifacts.contains_key("vmlinuz"));
}

#[test]
fn invalid_shipped_manifest_is_not_served() {
    let (dir, cat) = tree();
    fs::write(
        dir.path().join("stable/arm64/manifest.json"),
        b"{\"version\": 3}",
    )
    .unwrap();
    assert!(cat.rescan().unwrap().is_empty());
    let deep = format!(
        "{{\"a\":{}1{}, \"version\":\"x\"}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert!(shipped_version(deep.as_bytes()).is_err());
}

#[test]
fn symlinks_out_of_the_root_are_not_listed() {
    let (dir, cat) = tree();
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join("stable/arm64/leak")).unwrap();
    std::os::unix::fs::symlink("vmlinuz", dir.path().join("stable/arm64/current")).unwrap();
    let m = cat.rescan().unwrap()[&stable()].clone();
    assert!(!m.artifacts.contains_key("leak"));
    assert!(m.artifacts.contains_key("current"));
    assert!(cat.open(&stable(), "leak").is_err());
    assert!(cat.open(&stable(), "../../../etc/passwd").is_err());
    let open = cat.open(&stable(), "vmlinuz").unwrap();
    assert_eq!(open.size, 6);
    assert_eq!(
        open.sha256.as_deref(),
        Some(m.artifacts["vmlinuz"].sha256.as_str())
    );
}

#[test]
fn same_size_same_mtime_rewrite_is_rehashed() {
    // What `cp -p` or tar does to a file in place: new bytes, same size,
    // the old mtime put back. Only the ctime tells.
    let (dir, cat) = tree();
    let path = dir.path().join("stable/arm64/vmlinuz");
    let before = cat.rescan().unwrap()[&stable()].artifacts["vmlinuz"].clone();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&path, b"KERNEL").unwrap();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let after = cat.rescan().unwrap()[&stable()].artifacts["vmlinuz"].clone();
    assert_eq!(after.size, before.size);
    assert_eq!(after.sha256, crate::text::sha256_hex(b"KERNEL"));
}

#[test]
fn channel_and_arch_filters_apply() {
    let (dir, _) = tree();
    fs::create_dir_all(dir.path().join("testing/arm64")).unwrap();
    fs::create_dir_all(dir.path().join("Bad Name/arm64")).unwrap();
    let all = Catalog::new(Some(dir.path().to_path_buf()), vec![], vec![]);
    assert_eq!(all.channel_archs().unwrap().len(), 2);
    let one = Catalog::new(
        Some(dir.path().to_path_buf()),
        vec!["testing".into()],
        vec![],
    );
    assert_eq!(one.channel_archs().unwrap()[0].channel, "testing");
}

#[test]
fn chunk_hashes_cover_every_piece_of_a_file() {
    use sha2::{Digest, Sha256};
    let cs = CHUNK_SIZE as usize;
    for size in [0, 1, cs - 1, cs, cs + 1, 3 * cs + 17] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
        let (sha, chunks) = write::hash_reader(&mut &bytes[..]).unwrap();
        assert_eq!(sha, crate::text::sha256_hex(&bytes), "size {size}");
        let want: Vec<[u8; 32]> = bytes.chunks(cs).map(|c| Sha256::digest(c).into()).collect();
        assert_eq!(chunks, want, "size {size}");
        assert_eq!(chunks.len() as u64, chunk_count(size as u64, CHUNK_SIZE));
    }
}

#[test]
fn chunk_hashes_go_into_the_manifest_and_come_back_out() {
    let (dir, cat) = tree();
    let big = vec![9u8; CHUNK_SIZE as usize + 5];
    fs::write(dir.path().join("stable/arm64/rootfs.img"), &big).unwrap();
    let m = cat.rescan().unwrap()[&stable()].clone();
    let json = String::from_utf8(m.json.clone()).unwrap();
    assert!(
        json.contains(&format!("\"chunk_size\": {CHUNK_SIZE}")),
        "{json}"
    );
    let listed = parse_manifest(&m.json).unwrap();
    let rootfs = listed.iter().find(|a| a.name == "rootfs.img").unwrap();
    assert_eq!(rootfs.chunks.len(), 2);
    assert_eq!(rootfs.chunks, m.artifacts["rootfs.img"].chunks);
    let kernel = listed.iter().find(|a| a.name == "vmlinuz").unwrap();
    assert_eq!(kernel.chunks.len(), 1);

    // One hash too few: refused, not half trusted.
    let h = hex::encode(rootfs.chunks[1]);
    let short = json.replacen(&format!(", \"{h}\""), "", 1);
    let e = parse_manifest(short.as_bytes()).unwrap_err();
    assert!(e.contains("rootfs.img: 1 chunk hashes"), "{e}");
    // Not hex: refused.
    let bad = json.replacen(&h, &"z".repeat(64), 1);
    assert!(parse_manifest(bad.as_bytes()).is_err());
    // Another writer's chunk size: the hashes are dropped, the files are
    // still listed (and checked whole).
    let other = json.replacen(
        &format!("\"chunk_size\": {CHUNK_SIZE}"),
        "\"chunk_size\": 4194304",
        1,
    );
    let listed = parse_manifest(other.as_bytes()).unwrap();
    assert!(listed.iter().all(|a| a.chunks.is_empty()));
    assert_eq!(listed.len(), 3);
}
