//! Finding the netboot partition by filesystem label, mounting it
//! read-only, and noticing when it goes away.
//!
//! Labels come from `/dev/disk/by-label` where udev made it; otherwise (a
//! busybox system has no udev) from the superblocks of the block devices
//! listed in `/sys/class/block`: FAT's boot-sector label and ext2/3/4's
//! volume name. Everything read from a disk is untrusted: fixed offsets,
//! fixed lengths, no panics on short or garbled sectors.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::NetbootSpec;

/// How much of the start of a device we read: covers the FAT boot sector
/// and the ext superblock (bytes 1024..2048).
const PROBE_BYTES: usize = 2048;

/// A filesystem found on a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub device: PathBuf,
    pub fstype: &'static str,
    pub label: String,
}

/// Errors mounting the partition.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("no partition labelled {0:?} found")]
    NotFound(Vec<String>),
    #[error("cannot mount {0} on {1}: {2}")]
    Mount(PathBuf, PathBuf, String),
}

/// Reads the filesystem type and label from the first bytes of a device:
/// `("vfat", label)`, `("ext4", label)` or `None`.
pub fn probe_label(buf: &[u8]) -> Option<(&'static str, String)> {
    // ext2/3/4: magic 0xEF53 at 1080, 16-byte NUL-padded label at 1144.
    if buf.get(1080..1082) == Some(&[0x53, 0xEF]) {
        let raw = buf.get(1144..1160)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        return Some((
            "ext4",
            String::from_utf8_lossy(&raw[..end]).trim().to_string(),
        ));
    }
    // FAT: 0x55AA boot signature, a type string, an 11-byte space-padded label.
    if buf.get(510..512) != Some(&[0x55, 0xAA]) {
        return None;
    }
    let label_at = if buf.get(0x52..0x57) == Some(b"FAT32") {
        0x47
    } else if buf.get(0x36..0x39) == Some(b"FAT") {
        0x2B
    } else {
        return None;
    };
    let raw = buf.get(label_at..label_at + 11)?;
    let label = String::from_utf8_lossy(raw).trim_end().to_string();
    // mkfs writes "NO NAME" when no label was given.
    let label = if label == "NO NAME" {
        String::new()
    } else {
        label
    };
    Some(("vfat", label))
}

fn read_probe(dev: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(PROBE_BYTES);
    fs::File::open(dev)?
        .take(PROBE_BYTES as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Every labelled filesystem on the block devices under `sys_block`
/// (`/sys/class/block`), with device nodes under `dev` (`/dev`).
pub fn scan(sys_block: &Path, dev: &Path) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // RAM disks and zram never hold a netboot partition.
        .filter(|n| !n.starts_with("ram") && !n.starts_with("zram"))
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let node = dev.join(&name);
        match read_probe(&node) {
            Ok(buf) => {
                if let Some((fstype, label)) = probe_label(&buf) {
                    if !label.is_empty() {
                        found.push(Found {
                            device: node,
                            fstype,
                            label,
                        });
                    }
                }
            }
            Err(e) => log::debug!("cannot read {}: {e}", node.display()),
        }
    }
    found
}

/// Finds the first partition carrying one of `spec.labels` (in label
/// order): `/dev/disk/by-label` first, then a superblock scan.
pub fn find(spec: &NetbootSpec) -> Option<Found> {
    find_in(
        spec,
        Path::new("/dev/disk/by-label"),
        Path::new("/sys/class/block"),
        Path::new("/dev"),
    )
}

fn find_in(spec: &NetbootSpec, by_label: &Path, sys_block: &Path, dev: &Path) -> Option<Found> {
    for label in &spec.labels {
        let link = by_label.join(label);
        if let Ok(device) = fs::canonicalize(&link) {
            if let Ok(buf) = read_probe(&device) {
                if let Some((fstype, l)) = probe_label(&buf) {
                    if fstype_ok(spec, fstype) {
                        return Some(Found {
                            device,
                            fstype,
                            label: l,
                        });
                    }
                }
            }
        }
    }
    let all = scan(sys_block, dev);
    for label in &spec.labels {
        let matches: Vec<&Found> = all
            .iter()
            .filter(|f| &f.label == label && fstype_ok(spec, f.fstype))
            .collect();
        if matches.len() > 1 {
            log::warn!(
                "{} partitions are labelled {label:?} ({}); using {}",
                matches.len(),
                matches
                    .iter()
                    .map(|f| f.device.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                matches[0].device.display()
            );
        }
        if let Some(f) = matches.first() {
            return Some((*f).clone());
        }
    }
    None
}

fn fstype_ok(spec: &NetbootSpec, fstype: &str) -> bool {
    spec.fstype == "auto" || spec.fstype == fstype
}

/// Where `device` is mounted now, from `/proc/self/mounts`.
pub fn mount_point_of(device: &Path) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let dev = device.to_string_lossy();
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (src, dst) = (fields.next()?, fields.next()?);
        (src == dev).then(|| PathBuf::from(unescape_mount(dst)))
    })
}

/// `/proc/mounts` writes spaces and friends as octal escapes (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Uses the partition where it is already mounted, or mounts it read-only
/// (no exec, no devices, no setuid) at `spec.mount_point`. Returns the
/// mount point.
pub fn mount(found: &Found, spec: &NetbootSpec) -> Result<PathBuf, PartitionError> {
    if let Some(existing) = mount_point_of(&found.device) {
        return Ok(existing);
    }
    use nix::mount::MsFlags;
    let err = |e: String| PartitionError::Mount(found.device.clone(), spec.mount_point.clone(), e);
    fs::create_dir_all(&spec.mount_point).map_err(|e| err(e.to_string()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(
        Some(found.device.as_path()),
        spec.mount_point.as_path(),
        Some(found.fstype),
        flags,
        None::<&str>,
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(spec.mount_point.clone())
}

/// Detaches our own mount of a partition that went away, so a later
/// one can be mounted in its place.
pub fn release(mount_point: &Path, spec: &NetbootSpec) {
    if mount_point == spec.mount_point {
        if let Err(e) = nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH) {
            log::debug!("umount {}: {e}", mount_point.display());
        }
    }
}

/// How often the partition is looked for while missing, and checked while
/// present. Also catches hotplug: a USB stick labelled NETBOOT plugged in
/// is found within this long.
const PARTITION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps the catalog's artifacts root pointing at the netboot partition:
/// finds and mounts it (looking again every couple of seconds while it is
/// missing), and when it disappears clears the root so nothing is
/// advertised, until it comes back. Never fails: problems are logged.
pub async fn track(
    profile: super::BoardProfile,
    catalog: std::sync::Arc<crate::manifest::Catalog>,
    rescan: std::sync::Arc<tokio::sync::Notify>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let spec = profile.netboot.clone();
    let mounted = metrics
        .partition_mounted
        .get_or_create(&crate::metrics::PartitionLabels {
            fs_labels: spec.labels.join(","),
        })
        .clone();
    let mut current: Option<(Found, PathBuf)> = None;
    let mut last_miss: Option<String> = None;
    loop {
        match current.take() {
            None => {
                let s = spec.clone();
                let attempt = tokio::task::spawn_blocking(move || {
                    let found =
                        find(&s).ok_or_else(|| PartitionError::NotFound(s.labels.clone()))?;
                    let mount_point = mount(&found, &s)?;
                    Ok::<_, PartitionError>((found, mount_point))
                })
                .await;
                match attempt {
                    Ok(Ok((found, mount_point))) => {
                        let root = profile.artifacts_root(&mount_point);
                        log::info!(
                            "netboot partition {} (label {:?}, {}) at {}; artifacts root {}",
                            found.device.display(),
                            found.label,
                            found.fstype,
                            mount_point.display(),
                            root.display()
                        );
                        catalog.set_root(Some(root));
                        rescan.notify_one();
                        mounted.set(1);
                        current = Some((found, mount_point));
                        last_miss = None;
                    }
                    Ok(Err(e)) => {
                        let msg = e.to_string();
                        if last_miss.as_deref() != Some(msg.as_str()) {
                            log::warn!(
                                "{msg}; serving /healthz only and looking again every {}s",
                                PARTITION_POLL.as_secs()
                            );
                            last_miss = Some(msg);
                        }
                    }
                    Err(e) => log::error!("partition search failed: {e}"),
                }
            }
            Some((found, mount_point)) => {
                let (dev, mp) = (found.device.clone(), mount_point.clone());
                let present = tokio::task::spawn_blocking(move || {
                    dev.exists() && mount_point_of(&dev).as_deref() == Some(mp.as_path())
                })
                .await
                .unwrap_or(false);
                if present {
                    current = Some((found, mount_point));
                } else {
                    log::warn!(
                        "netboot partition {} is gone; advertising nothing until it is back",
                        found.device.display()
                    );
                    catalog.set_root(None);
                    rescan.notify_one();
                    mounted.set(0);
                    release(&mount_point, &spec);
                }
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(PARTITION_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat32(label: &[u8; 11]) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_BYTES];
        b[0x52..0x5A].copy_from_slice(b"FAT32   ");
        b[0x47..0x52].copy_from_slice(label);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn fat16(label: &[u8; 11]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0x36..0x3E].copy_from_slice(b"FAT16   ");
        b[0x2B..0x36].copy_from_slice(label);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn ext4(label: &str) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_BYTES];
        b[1080] = 0x53;
        b[1081] = 0xEF;
        b[1144..1144 + label.len()].copy_from_slice(label.as_bytes());
        b
    }

    #[test]
    fn labels_are_read_from_fat_and_ext_superblocks() {
        assert_eq!(
            probe_label(&fat32(b"NETBOOT    ")),
            Some(("vfat", "NETBOOT".into()))
        );
        assert_eq!(
            probe_label(&fat16(b"NETBOOT    ")),
            Some(("vfat", "NETBOOT".into()))
        );
        assert_eq!(
            probe_label(&fat16(b"NO NAME    ")),
            Some(("vfat", String::new()))
        );
        assert_eq!(
            probe_label(&ext4("netboot")),
            Some(("ext4", "netboot".into()))
        );
        assert_eq!(
            probe_label(&ext4(&"x".repeat(16))),
            Some(("ext4", "x".repeat(16)))
        );
    }

    #[test]
    fn garbage_and_short_sectors_are_not_filesystems() {
        assert_eq!(probe_label(&[]), None);
        assert_eq!(probe_label(&[0x55; 100]), None);
        assert_eq!(probe_label(&vec![0u8; PROBE_BYTES]), None);
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        assert_eq!(probe_label(&mbr), None);
        let mut ext_short = ext4("x");
        ext_short.truncate(1100);
        assert_eq!(probe_label(&ext_short), None);
        let mut invalid_utf8 = fat32(b"NETBOOT    ");
        invalid_utf8[0x47] = 0xff;
        assert!(probe_label(&invalid_utf8).is_some());
    }

    #[test]
    fn a_scan_of_sysfs_finds_the_labelled_device_and_prefers_label_order() {
        let dir = std::env::temp_dir().join(format!("plasmd-part-{}", std::process::id()));
        let (sys, dev) = (dir.join("sys"), dir.join("dev"));
        fs::create_dir_all(&sys).unwrap();
        fs::create_dir_all(&dev).unwrap();
        for (name, bytes) in [
            ("vda", vec![0u8; 4096]),
            ("vda1", fat32(b"BOOT       ")),
            ("vda2", ext4("netboot")),
            ("vdb1", fat32(b"NETBOOT    ")),
            ("ram0", fat32(b"NETBOOT    ")),
        ] {
            fs::create_dir_all(sys.join(name)).unwrap();
            fs::write(dev.join(name), bytes).unwrap();
        }
        let spec = |labels: &[&str], fstype: &str| NetbootSpec {
            labels: labels.iter().map(|s| s.to_string()).collect(),
            fstype: fstype.into(),
            artifacts_dir: "artifacts".into(),
            mount_point: "/run/x".into(),
        };
        let none = dir.join("no-by-label");
        let f = find_in(&spec(&["NETBOOT", "netboot"], "auto"), &none, &sys, &dev).unwrap();
        assert_eq!(f.device, dev.join("vdb1"));
        let f = find_in(&spec(&["netboot", "NETBOOT"], "auto"), &none, &sys, &dev).unwrap();
        assert_eq!((f.device, f.fstype), (dev.join("vda2"), "ext4"));
        assert!(find_in(&spec(&["netboot"], "vfat"), &none, &sys, &dev).is_none());
        assert!(find_in(&spec(&["MISSING"], "auto"), &none, &sys, &dev).is_none());
        // by-label wins when it exists.
        let by_label = dir.join("by-label");
        fs::create_dir_all(&by_label).unwrap();
        std::os::unix::fs::symlink(dev.join("vda2"), by_label.join("NETBOOT")).unwrap();
        let f = find_in(&spec(&["NETBOOT"], "auto"), &by_label, &sys, &dev).unwrap();
        assert_eq!(f.device, fs::canonicalize(dev.join("vda2")).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mount_table_escapes_are_decoded() {
        assert_eq!(unescape_mount("/media/my\\040disk"), "/media/my disk");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/trailing\\04"), "/trailing\\04");
    }
}
