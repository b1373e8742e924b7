//! `plasmd serve --netboot` and its settings (`--netboot-dir`,
//! `--netboot-channel`, `--netboot-cmdline`; `[netboot]` with its
//! `[[netboot.group]]`s in the file), checked into a
//! [`NetbootConfig`]. Answering firmware is `netboot`'s; this module only
//! says what to answer with. Without the cargo feature `netboot` only the
//! flags are parsed, and any netboot setting is refused with the reason.

use std::path::PathBuf;

use super::ConfigError;
use crate::netboot::NetbootConfig;
use crate::release::ReleaseKeys;
#[cfg(feature = "netboot")]
use {
    super::channel_arch,
    crate::channel::{check_name, ChannelArch},
    crate::netboot::{DhcpListen, Group},
    serde::Deserialize,
    std::net::{Ipv4Addr, SocketAddr, SocketAddrV4},
};

/// The operator's netboot directory by default.
#[cfg(feature = "netboot")]
pub const DEFAULT_NETBOOT_DIR: &str = "/var/lib/plasmd/netboot";
/// Groups at most: each is a stage-1 prepared on disk.
#[cfg(feature = "netboot")]
const MAX_GROUPS: usize = 16;

/// `[netboot]` in the config file.
#[cfg(feature = "netboot")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetbootSection {
    pub(super) enabled: Option<bool>,
    pub(super) dir: Option<PathBuf>,
    pub(super) cache: Option<PathBuf>,
    pub(super) channel: Option<String>,
    pub(super) cmdline: Option<String>,
    /// Firmware uses 67, 4011 and 69; other ports are for tests.
    pub(super) dhcp_port: Option<u16>,
    pub(super) pxe_port: Option<u16>,
    pub(super) tftp_port: Option<u16>,
    #[serde(default)]
    pub(super) group: Vec<GroupSection>,
}

/// Without the `netboot` feature a `[netboot]` section is not read, only
/// noticed (and refused by [`build_netboot`]): parsing it would cost the
/// size the feature saves.
#[cfg(not(feature = "netboot"))]
pub(super) type NetbootSection = Option<serde::de::IgnoredAny>;

/// `[[netboot.group]]`: boards (by hardware address) that boot another
/// channel.
#[cfg(feature = "netboot")]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupSection {
    pub(super) name: String,
    pub(super) channel: String,
    pub(super) macs: Vec<String>,
}

/// The netboot flags, before merging with the file.
#[derive(Debug, Default)]
pub(super) struct NetbootFlags {
    pub(super) on: bool,
    pub(super) dir: Option<PathBuf>,
    pub(super) cache: Option<PathBuf>,
    pub(super) channel: Option<String>,
    pub(super) cmdline: Option<String>,
}

/// `--netboot` and friends merged with `[netboot]` (flags win); `None`
/// when netboot is off. `channels`/`archs` are the served ones (to default
/// the channel/arch when they name exactly one); `keys` the provider's
/// release keys.
#[cfg(feature = "netboot")]
pub(super) fn build_netboot(
    f: &NetbootFlags,
    section: &NetbootSection,
    channels: &[String],
    archs: &[String],
    keys: &ReleaseKeys,
) -> Result<Option<NetbootConfig>, ConfigError> {
    let on = f.on || section.enabled == Some(true);
    if !on {
        if f.dir.is_some() || f.cache.is_some() || f.channel.is_some() || f.cmdline.is_some() {
            return Err(ConfigError::Invalid(
                "--netboot-dir, --netboot-cache, --netboot-channel and --netboot-cmdline only go with --netboot"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let default = match f.channel.as_ref().or(section.channel.as_ref()) {
        Some(s) => channel_arch("--netboot-channel", s)?,
        None => match (channels, archs) {
            ([c], [a]) => ChannelArch {
                channel: c.clone(),
                arch: a.clone(),
            },
            _ => {
                return Err(ConfigError::Invalid(
                    "--netboot: say which channel/arch the stage-1 boots with --netboot-channel C/A (or serve exactly one --channel and --arch)".into(),
                ))
            }
        },
    };
    if keys.is_empty() {
        return Err(ConfigError::Invalid(
            "--netboot hands boards a stage-1 that boots only signed releases: give --release-key PUBFILE (the key it trusts)".into(),
        ));
    }
    let extra_words = f
        .cmdline
        .clone()
        .or(section.cmdline.clone())
        .unwrap_or_default();
    if extra_words.contains(['\n', '\r', '\0']) {
        return Err(ConfigError::Invalid(
            "--netboot-cmdline: one line of kernel command line words".into(),
        ));
    }
    if section.group.len() > MAX_GROUPS {
        return Err(ConfigError::Invalid(format!(
            "[netboot]: at most {MAX_GROUPS} groups"
        )));
    }
    let mut groups = Vec::new();
    for g in &section.group {
        let bad =
            |why: String| ConfigError::Invalid(format!("[[netboot.group]] {:?}: {why}", g.name));
        check_name("group name", &g.name).map_err(|e| bad(e.to_string()))?;
        check_name("channel", &g.channel).map_err(|e| bad(e.to_string()))?;
        let macs = g
            .macs
            .iter()
            .map(|m| {
                parse_mac(m).ok_or_else(|| {
                    bad(format!("{m:?} is not a MAC address like 52:54:00:12:34:56"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        groups.push(Group {
            channel: g.channel.clone(),
            macs,
        });
    }
    let dir = f
        .dir
        .clone()
        .or(section.dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_NETBOOT_DIR));
    let cache = f
        .cache
        .clone()
        .or(section.cache.clone())
        .unwrap_or_else(|| dir.join(".prepared"));
    let any = Ipv4Addr::UNSPECIFIED;
    let dhcp_port = section.dhcp_port.unwrap_or(67);
    // Answers go to the port above (67 → 68): there must be one.
    if !(1..u16::MAX).contains(&dhcp_port) {
        return Err(ConfigError::Invalid(format!(
            "[netboot] dhcp_port {dhcp_port}: use 1 to 65534"
        )));
    }
    let cfg = NetbootConfig {
        root: dir,
        cache,
        default,
        groups,
        release_keys: keys.base64_lines(),
        extra_words,
        dhcp: DhcpListen {
            dhcp: SocketAddrV4::new(any, dhcp_port),
            pxe: SocketAddrV4::new(any, section.pxe_port.unwrap_or(4011)),
            client_port: dhcp_port + 1,
        },
        tftp: SocketAddr::V4(SocketAddrV4::new(any, section.tftp_port.unwrap_or(69))),
    };
    // Said before start rather than found by firmware: every stage-1 must
    // hold its words (against the room `image/build-stage1` leaves;
    // `stage1::prepare` checks the actual file).
    for ca in cfg.prepared() {
        let need = cfg.words(&ca).len() + crate::netboot::TEMPLATE_WORD.len();
        if need > crate::netboot::CMDLINE_ROOM {
            return Err(ConfigError::Invalid(format!(
                "--netboot: the stage-1's command line for {ca} would be {need} bytes, over the kernel's {}",
                crate::netboot::CMDLINE_ROOM
            )));
        }
    }
    Ok(Some(cfg))
}

/// Without the `netboot` feature: any netboot setting, flag or section,
/// is refused with the reason.
#[cfg(not(feature = "netboot"))]
pub(super) fn build_netboot(
    f: &NetbootFlags,
    section: &NetbootSection,
    _: &[String],
    _: &[String],
    _: &ReleaseKeys,
) -> Result<Option<NetbootConfig>, ConfigError> {
    let asked = f.on || f.dir.is_some() || f.cache.is_some() || f.channel.is_some();
    if asked || f.cmdline.is_some() || section.is_some() {
        return Err(ConfigError::Invalid(
            crate::netboot::NetbootError::NotBuilt.to_string(),
        ));
    }
    Ok(None)
}

/// `52:54:00:12:34:56` (or with dashes) → its six bytes.
#[cfg(feature = "netboot")]
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next()?;
        // from_str_radix would take a sign ("+5").
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(all(test, feature = "netboot"))]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("52:54:00:12:34:0a"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x0a])
        );
        assert_eq!(parse_mac("dc-a6-32-01-36-c2").map(|m| m[0]), Some(0xdc));
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "+5:54:00:12:34:56",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
