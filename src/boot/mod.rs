//! `phase-boot`: the stage-1 program. A board's firmware loads a small
//! Linux once (see `image/build-stage1`); its `/init` brings the network up
//! and runs this, which finds providers (mDNS on the LAN and/or the DHT),
//! accepts only a release signed by a release key for the board's
//! channel/arch and not below its rollback floor, downloads the release's
//! `boot` files into RAM verified byte for byte, and kexecs into them.
//!
//! It never gives up: with no provider it keeps looking with backoff and
//! says so on the console; a provider that fails or serves bad bytes is
//! passed over for the next. Everything it says is one line starting
//! `phase-boot:`, for a person at a serial console.
//!
//! Settings come from the kernel command line (`cmdline`); finding is
//! `discover`'s, choosing `choose`'s, downloading `fetch`'s, loading the
//! kernel `kexec`'s.

pub mod cmdline;
mod kexec;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::choose;
use crate::config::DiscoverConfig;
use crate::discover::Session;
use crate::fetch::{self, Checked};
use crate::minisign::PublicKey;
use crate::release::floor::Floor;
use crate::release::ReleaseKeys;

/// Where the boot files are kept: a tmpfs (RAM), never the board's disks.
const WORK_DIR: &str = "/run/phase-boot";
/// Release keys baked into the stage-1 image.
const KEY_DIR: &str = "/etc/phase/release-keys";
/// Where the state partition is mounted.
const STATE_MOUNT: &str = "/run/phase-state";
/// Backoff between rounds that found nothing usable: 1, 2, 4 ... 30 s.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Prints one console line.
pub fn say(msg: &str) {
    println!("phase-boot: {msg}");
}

/// Runs the stage 1 with the kernel command line `cmdline`. Never returns:
/// it boots a release or keeps trying, saying why on the console.
pub fn run(cmdline: &str) -> ! {
    let settings = loop {
        match cmdline::parse(cmdline) {
            Ok(s) => break s,
            // Nobody can fix the command line from here but a person at
            // the console: say it, and say it again now and then.
            Err(e) => {
                say(&format!("{e}; fix the kernel command line"));
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    };
    let keys = loop {
        match load_keys(&settings.release_keys) {
            Ok(k) if !k.is_empty() => break k,
            Ok(_) => say(&format!(
                "no release key (phase.release_key= on the kernel command line, or {KEY_DIR}/*.pub): \
                 refusing to boot anything unverified"
            )),
            Err(e) => say(&e),
        }
        std::thread::sleep(Duration::from_secs(60));
    };
    let mut cfg = DiscoverConfig {
        channel: settings.channel.clone(),
        arch: settings.arch.clone(),
        bootstrap: settings.bootstrap.clone(),
        mdns: settings.mdns,
        timeout: settings.round,
        json: false,
        trusted: Vec::new(),
        // The boot files are fetched by `fetch_boot_files`, not by a
        // `--fetch` target.
        fetch: None,
        all: false,
        release_keys: keys,
        state: None,
        allow_downgrade: false,
        trusted_time: crate::time::BUILD_TIME,
        watch: None,
    };
    say(&format!(
        "looking for {}/{} (mDNS {}, {} bootstrap peer(s), release keys {})",
        cfg.channel,
        cfg.arch,
        if cfg.mdns { "on" } else { "off" },
        cfg.bootstrap.len(),
        cfg.release_keys.ids()
    ));
    let mut pause = Duration::from_secs(1);
    let mut bad = BadReleases::default();
    // One DHT session for every round: mDNS and the bootstrap peers are
    // found once, not again each time.
    let mut session: Option<Session> = None;
    let mut state_said = false;
    loop {
        // The state partition may show up late (USB, a slow card): look
        // again each round until it is there.
        if let (None, Some(label)) = (&cfg.state, &settings.state_label) {
            cfg.state = mount_state(label, !state_said);
            state_said = true;
        }
        if session.is_none() {
            match Session::start(&cfg) {
                Ok(s) => session = Some(s),
                Err(e) => say(&format!("cannot join the DHT: {e}")),
            }
        }
        if let Some(s) = &session {
            match one_round(s, &cfg, &mut bad) {
                Ok(never) => match never {},
                Err(Round::NoBoot(why)) => say(&why),
                Err(Round::SessionLost(why)) => {
                    say(&why);
                    if let Some(s) = session.take() {
                        s.stop();
                    }
                }
            }
        }
        say(&format!("trying again in {} s", pause.as_secs()));
        match &session {
            Some(s) => s.pause(pause),
            None => std::thread::sleep(pause),
        }
        pause = (pause * 2).min(BACKOFF_MAX);
    }
}

/// Why a round did not boot.
enum Round {
    /// Said on the console; the next round tries again.
    NoBoot(String),
    /// The DHT session failed: the next round starts a new one.
    SessionLost(String),
}

/// One lookup on `session` and, if a good release turns up, the kexec into
/// it (which does not return).
fn one_round(
    session: &Session,
    cfg: &DiscoverConfig,
    bad: &mut BadReleases,
) -> Result<std::convert::Infallible, Round> {
    let mut floor = match &cfg.state {
        Some(dir) => Some(Floor::load(dir, false).map_err(|e| {
            Round::NoBoot(format!(
                "{e} (a board cannot --allow-downgrade: replace or remove the state \
                 partition's rollback-floor file)"
            ))
        })?),
        None => None,
    };
    let mut cfg = cfg.clone();
    if let Some(f) = &floor {
        cfg.trusted_time = cfg.trusted_time.max(f.trusted_time());
    }
    let records = session
        .lookup(&cfg)
        .map_err(|e| Round::SessionLost(e.to_string()))?;
    if records.is_empty() {
        return Err(Round::NoBoot(format!(
            "no provider of {}/{} found yet",
            cfg.channel, cfg.arch
        )));
    }
    say(&format!("found {} provider(s)", records.len()));
    let choice = choose::releases(&records, &cfg, floor.as_ref());
    for (url, why) in &choice.refused {
        say(&format!("refusing {url}: {why}"));
    }
    for provider in &choice.accepted {
        let id = BadReleases::id(provider);
        if bad.skips(&id) {
            say(&format!(
                "skipping {} for now: it served bytes that did not verify for this release",
                provider.record.url
            ));
            continue;
        }
        match fetch_boot_files(provider) {
            Ok(files) => {
                if let Some(f) = floor.as_mut() {
                    choose::remember(f, &cfg, provider);
                    if let Err(e) = f.save() {
                        say(&format!("cannot save the rollback floor: {e}"));
                    }
                }
                let release = provider.release.as_ref().map_or_else(String::new, |r| {
                    format!("version {} (release_seq {})", r.version, r.release_seq)
                });
                say(&format!(
                    "kexec into {}/{} {release}",
                    cfg.channel, cfg.arch
                ));
                // Only returns on failure.
                let e = kexec::boot(&files);
                say(&format!("kexec failed: {e}"));
            }
            Err((mismatch, e)) => {
                say(&format!("from {}: {e}", provider.record.url));
                if mismatch {
                    bad.remember(id);
                }
            }
        }
    }
    Err(Round::NoBoot(
        "no provider delivered a bootable, verified release".into(),
    ))
}

/// The kernel, initrd and DTB a release names, downloaded and verified.
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub dtb: Option<PathBuf>,
    pub cmdline: String,
}

/// Providers that served bytes not matching their signed release, by
/// (URL, release_seq): not downloaded from again for that release for a
/// while (a board would otherwise fetch the same bad 30 MiB every round),
/// yet tried again later, in case their files were repaired. Bounded.
#[derive(Default)]
struct BadReleases(std::collections::HashMap<(String, u64), std::time::Instant>);

impl BadReleases {
    const MAX: usize = 256;
    const FOR: Duration = Duration::from_secs(300);

    fn skips(&self, id: &(String, u64)) -> bool {
        self.0.get(id).is_some_and(|t| t.elapsed() < Self::FOR)
    }

    fn id(p: &Checked) -> (String, u64) {
        let seq = p.release.as_ref().map_or(0, |r| r.release_seq);
        (p.record.url.clone(), seq)
    }

    fn remember(&mut self, id: (String, u64)) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(id, std::time::Instant::now());
    }
}

/// Downloads the release's `boot` files into the work directory. The error
/// says whether the bytes were wrong (`true`) or the download failed.
fn fetch_boot_files(p: &Checked) -> Result<BootFiles, (bool, String)> {
    let boot = p.boot.as_ref().ok_or((
        true,
        "its manifest names nothing to boot (no \"boot\" object)".to_string(),
    ))?;
    let dir = Path::new(WORK_DIR);
    // Nothing from an earlier attempt is trusted or kept.
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| (false, format!("{WORK_DIR}: {e}")))?;
    let get = |name: &str| -> Result<PathBuf, (bool, String)> {
        let out = dir.join(name);
        fetch::fetch_artifact(&p.record, &p.artifacts, name, &out)
            .map_err(|e| (e.is_mismatch(), e.to_string()))?;
        Ok(out)
    };
    let files = BootFiles {
        kernel: get(&boot.kernel)?,
        initrd: boot.initrd.as_deref().map(get).transpose()?,
        dtb: boot.dtb.as_deref().map(get).transpose()?,
        cmdline: boot.cmdline.clone().unwrap_or_default(),
    };
    say("verified");
    Ok(files)
}

/// Keys from the command line plus those baked into the image.
fn load_keys(inline: &[PublicKey]) -> Result<ReleaseKeys, String> {
    let mut paths = Vec::new();
    if let Ok(entries) = fs::read_dir(KEY_DIR) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pub") {
                paths.push(e.path());
            }
        }
    }
    paths.sort();
    let mut keys = ReleaseKeys::load(&paths).map_err(|e| e.to_string())?;
    keys.extend(inline.iter().cloned())
        .map_err(|e| e.to_string())?;
    Ok(keys)
}

/// Finds the partition labelled `label` and mounts it read-write at
/// `STATE_MOUNT`; `None` when it cannot be used (said on the console when
/// `say_missing`): the board then boots without a floor rather than not at
/// all, and looks for it again next round.
fn mount_state(label: &str, say_missing: bool) -> Option<PathBuf> {
    use crate::board::{partition, NetbootSpec};
    let spec = NetbootSpec {
        labels: vec![label.to_string()],
        fstype: "auto".into(),
        artifacts_dir: String::new(),
        mount_point: PathBuf::from(STATE_MOUNT),
    };
    let Some(found) = partition::find(&spec) else {
        if say_missing {
            say(&format!(
                "no partition labelled {label} (yet): no rollback floor until it appears"
            ));
        }
        return None;
    };
    use nix::mount::MsFlags;
    let _ = fs::create_dir_all(STATE_MOUNT);
    let flags =
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_SYNCHRONOUS;
    match nix::mount::mount(
        Some(found.device.as_path()),
        STATE_MOUNT,
        Some(found.fstype),
        flags,
        None::<&str>,
    ) {
        Ok(()) => {
            say(&format!(
                "rollback floor on {} ({label})",
                found.device.display()
            ));
            Some(PathBuf::from(STATE_MOUNT))
        }
        Err(e) => {
            say(&format!(
                "cannot mount {} ({label}): {e}; no rollback floor for now",
                found.device.display()
            ));
            None
        }
    }
}
