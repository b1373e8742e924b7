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
//! Settings come from the kernel command line (`cmdline`); finding,
//! choosing, downloading and remembering the floor is the client path's
//! (`discover::client`, the one `phase-discover` walks), loading the kernel
//! `kexec`'s.

pub mod cmdline;
mod kexec;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::discover::client::{self, ClientError, Failure, Note};
use crate::discover::share::Sharing;
use crate::discover::{Query, Session};
use crate::fetch::{self, Checked};
use crate::minisign::PublicKey;
use crate::release::ReleaseKeys;

/// Where the boot files are kept: a tmpfs (RAM), never the board's disks.
const WORK_DIR: &str = "/run/phase-boot";
/// Release keys baked into the stage-1 image.
const KEY_DIR: &str = "/etc/phase/release-keys";
/// Where the state partition is mounted.
const STATE_MOUNT: &str = "/run/phase-state";
/// Backoff between rounds that found nothing usable: 1, 2, 4 ... 30 s,
/// each with random jitter (see `jittered`).
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
    let mut query = Query {
        channel: settings.channel.clone(),
        arch: settings.arch.clone(),
        bootstrap: settings.bootstrap.clone(),
        mdns: settings.mdns,
        timeout: settings.round,
        trusted: Vec::new(),
        release_keys: keys,
        state: None,
        // A board never goes back: an operator replaces the floor file.
        allow_downgrade: false,
        trusted_time: crate::time::BUILD_TIME,
        limits: settings.limits,
    };
    say(&format!(
        "looking for {}/{} (mDNS {}, {} bootstrap peer(s), release keys {})",
        query.channel,
        query.arch,
        if query.mdns { "on" } else { "off" },
        query.bootstrap.len(),
        query.release_keys.ids()
    ));
    let mut pause = Duration::from_secs(1);
    let mut bad = BadReleases::default();
    let sharing = start_sharing(&settings);
    // One DHT session for every round: mDNS and the bootstrap peers are
    // found once, not again each time.
    let mut session: Option<Session> = None;
    let mut state_said = false;
    loop {
        // The state partition may show up late (USB, a slow card): look
        // again each round until it is there.
        if let (None, Some(label)) = (&query.state, &settings.state_label) {
            query.state = mount_state(label, !state_said);
            state_said = true;
        }
        let waiting_for_floor = settings.state_required && query.state.is_none();
        if waiting_for_floor {
            say("phase.state_required=1: not booting anything until the state partition is there");
        }
        if session.is_none() && !waiting_for_floor {
            match Session::start(&query) {
                Ok(s) => session = Some(s),
                Err(e) => say(&format!("cannot join the DHT: {e}")),
            }
        }
        if let (Some(s), false) = (&session, waiting_for_floor) {
            match one_round(s, &query, &mut bad, sharing.as_ref()) {
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
        let wait = jittered(pause);
        say(&format!("trying again in {:.1} s", wait.as_secs_f32()));
        match &session {
            Some(s) => s.pause(wait),
            None => std::thread::sleep(wait),
        }
        pause = (pause * 2).min(BACKOFF_MAX);
    }
}

/// The server that shares verified chunks with the rest of the rack while
/// this board downloads (`phase.share_port`); `None` when turned off or
/// the port cannot be had (said on the console: the board boots anyway).
fn start_sharing(settings: &cmdline::Settings) -> Option<Sharing> {
    if settings.share_port == 0 {
        return None;
    }
    let listen = std::net::SocketAddr::from(([0, 0, 0, 0], settings.share_port));
    match Sharing::start(listen, settings.linger, settings.share_rate) {
        Ok(s) => {
            say(&format!(
                "sharing what this board downloads on port {}",
                settings.share_port
            ));
            Some(s)
        }
        Err(e) => {
            say(&format!("not sharing with other boards: {e}"));
            None
        }
    }
}

/// `pause` scaled by a random factor between 1/2 and 1, so a rack that
/// lost its provider at once does not come back in lockstep.
fn jittered(pause: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A random number from std's randomly keyed hasher (no RNG crate).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    pause.mul_f64(0.5 + unit / 2.0)
}

/// Why a round did not boot.
enum Round {
    /// Said on the console; the next round tries again.
    NoBoot(String),
    /// The DHT session failed: the next round starts a new one.
    SessionLost(String),
}

/// One walk of the client path on `session` and, if a release's boot files
/// verified, the kexec into them (which does not return).
fn one_round(
    session: &Session,
    query: &Query,
    bad: &mut BadReleases,
    sharing: Option<&Sharing>,
) -> Result<std::convert::Infallible, Round> {
    let mut note = |n: Note| match n {
        Note::ClockBehind { .. } => {}
        Note::Found(records) => say(&format!("found {} provider(s)", records.len())),
        Note::Refused { url, why } => say(&format!("refusing {url}: {why}")),
        Note::Failed { url, why } => say(&format!("from {url}: {why}")),
        Note::Skipped { url, why } => say(&format!("skipping {url} for now: {why}")),
    };
    let take = |provider: &Checked| {
        let id = BadReleases::id(provider);
        if bad.skips(&id) {
            return Err(Failure::skip(
                "it served bytes that did not verify for this release".into(),
            ));
        }
        let fetch = |swarm: fetch::Swarm| fetch_boot_files(provider, &query.limits, swarm);
        match sharing {
            Some(s) => s.download(session, query, provider, fetch),
            None => fetch(fetch::Swarm::default()),
        }
        .inspect_err(|f| {
            if f.mismatch {
                bad.remember(id);
            }
        })
    };
    let (provider, files) = client::run(session, query, take, &mut note).map_err(|e| match e {
        ClientError::Lookup(e) => Round::SessionLost(e.to_string()),
        ClientError::Floor(e) => Round::NoBoot(format!(
            "{e} (a board cannot --allow-downgrade: replace or remove the state \
             partition's rollback-floor file)"
        )),
        ClientError::NotFound(..) => Round::NoBoot(format!(
            "no provider of {}/{} found yet",
            query.channel, query.arch
        )),
        ClientError::NoneDelivered { .. } => {
            Round::NoBoot("no provider delivered a bootable, verified release".into())
        }
        // The floor was raised but not written: boot anyway (it is saved
        // again on the next boot), as before.
        e => Round::NoBoot(e.to_string()),
    })?;
    let release = provider.release.as_ref().map_or_else(String::new, |r| {
        format!("version {} (release_seq {})", r.version, r.release_seq)
    });
    if let Some(s) = sharing {
        // The last boards of the rack still need sources.
        s.linger(session);
    }
    say(&format!(
        "kexec into {}/{} {release}",
        query.channel, query.arch
    ));
    // Only returns on failure.
    let e = kexec::boot(&files);
    Err(Round::NoBoot(format!("kexec failed: {e}")))
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

/// Downloads the release's `boot` files into the work directory under
/// `limits`. The failure says whether the bytes were wrong or the download
/// failed.
///
/// Each file goes to a directory named by its sha256, and only this
/// release's directories are kept: a download a slow provider cut off
/// resumes from the next provider (or round) instead of starting over,
/// and nothing of another release is ever mixed in (every file is verified
/// whole at the end in any case).
fn fetch_boot_files(
    p: &Checked,
    limits: &fetch::Limits,
    swarm: fetch::Swarm,
) -> Result<BootFiles, Failure> {
    let boot = p.boot.as_ref().ok_or_else(|| {
        Failure::failed(
            true,
            "its manifest names nothing to boot (no \"boot\" object)".to_string(),
        )
    })?;
    let names = [Some(&boot.kernel), boot.initrd.as_ref(), boot.dtb.as_ref()];
    let mut keep = Vec::new();
    for name in names.into_iter().flatten() {
        match p.artifacts.iter().find(|a| &a.name == name) {
            Some(a) if crate::text::is_sha256_hex(&a.sha256) => keep.push(a.sha256.clone()),
            _ => {
                return Err(Failure::failed(
                    true,
                    format!("boot file {name:?} is not listed with a sha256"),
                ))
            }
        }
    }
    let dir = Path::new(WORK_DIR);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if !keep.iter().any(|k| e.file_name() == k.as_str()) {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
    }
    let tally = std::cell::RefCell::new(fetch::Tally::default());
    let get = |name: &str| -> Result<PathBuf, Failure> {
        // Checked above: every boot file is listed with a hex sha256.
        let sha = p
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .map_or("unlisted", |a| a.sha256.as_str());
        let sub = dir.join(sha);
        fs::create_dir_all(&sub)
            .map_err(|e| Failure::failed(false, format!("{}: {e}", sub.display())))?;
        let out = sub.join(name);
        let got = fetch::fetch_artifact(&p.record, &p.artifacts, name, &out, limits, swarm)?;
        tally.borrow_mut().add(got);
        Ok(out)
    };
    let files = BootFiles {
        kernel: get(&boot.kernel)?,
        initrd: boot.initrd.as_deref().map(get).transpose()?,
        dtb: boot.dtb.as_deref().map(get).transpose()?,
        cmdline: boot.cmdline.clone().unwrap_or_default(),
    };
    // Where the bytes came from: the rack's share, on the console.
    say(&format!("verified ({})", tally.borrow()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_between_half_and_all_of_the_pause() {
        let pause = Duration::from_secs(8);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(pause)).collect();
        assert!(
            waits.iter().all(|w| *w >= pause / 2 && *w <= pause),
            "{waits:?}"
        );
        // Boards do not all pick the same wait.
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "{} distinct waits", distinct.len());
    }
}
