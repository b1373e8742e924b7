//! `plasmd release`'s command line: making a fleet key, signing a release,
//! checking one. The flags follow minisign's own (`-p` public key file,
//! `-s` secret key file), so an operator who knows one knows the other.

use std::path::PathBuf;

use super::{string, version_line, ConfigError};
use crate::release::command::ReleaseCommand;
use crate::release::sign::SignOptions;

const RELEASE_HELP: &str = "\
plasmd release: sign what boards may boot, offline, with a fleet key (minisign format)

Usage:
  plasmd release keygen -p PUBFILE -s SECFILE
      make a key pair: PUBFILE is a minisign public key (flash it into boards), SECFILE
      the secret key, UNENCRYPTED, mode 0600 (keep it offline). Never overwrites.
  plasmd release sign -s SECFILE [--version V] [--release-seq N]
                    [--kernel NAME [--initrd NAME] [--dtb NAME] [--cmdline STRING]]
                    <artifacts>/<channel>/<arch>
      write a canonical manifest.json of the files there (name, size, sha256, version,
      release_seq, channel, arch, created, and with --kernel what phase-boot boots)
      and manifest.json.minisig next to it.
      release_seq defaults to max(previous + 1, current Unix time): it only grows.
  plasmd release verify -p PUBFILE <artifacts>/<channel>/<arch>
      check manifest.json against manifest.json.minisig and the files, as a board would

Keys and signatures interoperate with the minisign CLI: `minisign -V -p PUBFILE -m
manifest.json` verifies what plasmd signs; `minisign -S -s KEY -m manifest.json` signs
a manifest boards accept (it must carry channel, arch, release_seq and created).
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input, 3 verification failed.
";

/// Parses what follows `plasmd release`.
pub fn parse(p: &mut lexopt::Parser) -> Result<ReleaseCommand, ConfigError> {
    use lexopt::prelude::*;
    let sub = match p.next()? {
        Some(Value(v)) => v.into_string().unwrap_or_default(),
        Some(Short('h') | Long("help")) | None => {
            return Ok(ReleaseCommand::Print(RELEASE_HELP.into()))
        }
        Some(Short('V') | Long("version")) => {
            return Ok(ReleaseCommand::Print(version_line("plasmd")))
        }
        Some(other) => return Err(other.unexpected().into()),
    };
    if !matches!(sub.as_str(), "keygen" | "sign" | "verify") {
        return Err(ConfigError::Args(format!(
            "unknown command `plasmd release {sub}`; expected keygen, sign or verify (see plasmd release --help)"
        )));
    }
    let (mut public, mut secret, mut dir) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut opts = SignOptions::default();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(ReleaseCommand::Print(RELEASE_HELP.into())),
            Short('p') | Long("public-key") if sub != "sign" => public = Some(p.value()?.into()),
            Short('s') | Long("secret-key") if sub != "verify" => secret = Some(p.value()?.into()),
            Long("version") if sub == "sign" => {
                let v = string(p, "--version")?;
                if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                    return Err(ConfigError::Invalid(format!(
                        "--version {v:?}: must be 1 to 128 printable bytes"
                    )));
                }
                opts.version = Some(v);
            }
            Long("release-seq") if sub == "sign" => {
                let v = string(p, "--release-seq")?;
                opts.release_seq = Some(v.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "--release-seq {v:?}: not a whole number from 0 to {}",
                        u64::MAX
                    ))
                })?);
            }
            Long(name @ ("kernel" | "initrd" | "dtb")) if sub == "sign" => {
                let name = name.to_string();
                let v = string(p, &format!("--{name}"))?;
                if !crate::channel::is_safe_file_name(&v) {
                    return Err(ConfigError::Invalid(format!(
                        "--{name} {v:?}: not a file name"
                    )));
                }
                let b = opts.boot.get_or_insert_with(Default::default);
                match name.as_str() {
                    "kernel" => b.kernel = v,
                    "initrd" => b.initrd = Some(v),
                    _ => b.dtb = Some(v),
                }
            }
            Long("cmdline") if sub == "sign" => {
                let v = string(p, "--cmdline")?;
                if v.len() > crate::manifest::MAX_BOOT_CMDLINE || v.chars().any(char::is_control) {
                    return Err(ConfigError::Invalid(format!(
                        "--cmdline: at most {} printable bytes",
                        crate::manifest::MAX_BOOT_CMDLINE
                    )));
                }
                opts.boot.get_or_insert_with(Default::default).cmdline = Some(v);
            }
            Value(v) if sub != "keygen" && dir.is_none() => dir = Some(v.into()),
            other => {
                return Err(ConfigError::Args(format!(
                    "{} (see plasmd release --help)",
                    other.unexpected()
                )))
            }
        }
    }
    if opts.boot.as_ref().is_some_and(|b| b.kernel.is_empty()) {
        return Err(ConfigError::Args(
            "--initrd, --dtb and --cmdline describe a boot: give --kernel NAME too".into(),
        ));
    }
    let need = |v: Option<PathBuf>, what: &str| {
        v.ok_or_else(|| ConfigError::Args(format!("plasmd release {sub} needs {what}")))
    };
    Ok(match sub.as_str() {
        "keygen" => ReleaseCommand::Keygen {
            public: need(public, "-p PUBFILE")?,
            secret: need(secret, "-s SECFILE")?,
        },
        "sign" => ReleaseCommand::Sign {
            secret: need(secret, "-s SECFILE")?,
            dir: need(dir, "the <artifacts>/<channel>/<arch> directory")?,
            opts,
        },
        _ => ReleaseCommand::Verify {
            public: need(public, "-p PUBFILE")?,
            dir: need(dir, "the <artifacts>/<channel>/<arch> directory")?,
        },
    })
}
