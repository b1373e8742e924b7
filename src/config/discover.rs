//! `phase-discover`: its flags and the `[discover]` section of the file,
//! checked and merged (flags win) into a [`DiscoverConfig`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{load_file, DiscoverSection};
use super::{
    bytes_per_sec, in_range, parse_bootstrap, parse_peer_ids, secs, string, version_line,
    ConfigError, DEFAULT_DISCOVER_TIMEOUT, DEFAULT_WATCH_INTERVAL, MAX_DISCOVER_TIMEOUT,
    MAX_MIN_RATE, MAX_RATE_WINDOW,
};
use crate::channel::check_name;
pub use crate::discover::share::ShareConfig;
use crate::discover::Query;
pub use crate::fetch::FetchTarget;
use crate::release::ReleaseKeys;

/// Everything `phase-discover` needs: what to look for (the [`Query`])
/// and what to do with what is found.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    pub query: Query,
    /// Print whole records as JSON instead of URLs.
    pub json: bool,
    /// Download and verify artifacts after finding the record.
    pub fetch: Option<FetchTarget>,
    /// List every valid provider instead of picking one.
    pub all: bool,
    /// `--watch`: keep looking, and print every provider again after each
    /// pause of this long.
    pub watch: Option<Duration>,
    /// `--peer`, `--seed`, `--seed-linger`: how a download shares.
    pub share: ShareConfig,
}

/// What `phase-discover` was asked to do.
#[derive(Debug)]
pub enum DiscoverCommand {
    Run(Box<DiscoverConfig>),
    Print(String),
}

const DISCOVER_HELP: &str = "\
phase-discover: find a netboot provider for a channel/arch through the DHT

Usage: phase-discover --channel C --arch A (--bootstrap MULTIADDR... | --mdns) [OPTIONS]

Options:
  --channel C            channel to look up, e.g. stable
  --arch A               architecture to look up, e.g. arm64
  --config FILE          TOML file; its [discover] section sets bootstrap, mdns, timeout,
                         trusted_providers (flags win)
  --bootstrap MULTIADDR  a DHT peer to ask, repeatable (/ip4/ADDR/tcp/PORT/p2p/PEER_ID)
  --trust PEER_ID        accept records only from this publisher, repeatable (default: any
                         validly signed record; its publisher is then printed on stderr)
  --mdns                 find DHT peers on the local network with mDNS (no --bootstrap needed)
  --timeout SECS         give up after this long (default 30, at most 86400)
  --json                 print the whole record as JSON instead of the URL
  --all                  list every valid provider (one URL per line; a JSON array with --json)
                         instead of picking one (newest last_updated, ties at random)
  --fetch NAME           download artifact NAME, verified against the signed record and the
                         manifest, to ./NAME or -o FILE|DIR (resumes a partial .NAME.part)
  -o, --output FILE      where --fetch writes
  --fetch-all DIR        download and verify every artifact of the manifest into DIR
  --peer URL             the manifest URL of another holder of the release (a provider, a
                         mirror, a booting board), asked for chunks besides the provider;
                         repeatable. Each chunk is verified against the signed manifest; a
                         holder that sends a bad one is dropped       (needs --fetch/--fetch-all)
  --seed ADDR:PORT       while downloading, serve the chunks that verified to other boards from
                         this address (e.g. 0.0.0.0:8090) and announce them in the DHT; other
                         holders found there are asked for chunks too (needs --fetch/--fetch-all)
  --seed-linger SECS     after the download, keep serving until no chunk was asked for 5 s, at
                         most SECS (default 60; 0 stops at once)          (needs --seed)
  --seed-rate BYTES      send at most this many bytes per second to other boards in all
                         (default 0: no cap)                              (needs --seed)
  --release-key PUBFILE  accept only providers whose manifest is a release signed by this
                         minisign public key, for this channel/arch; repeatable (key rotation);
                         then any provider will do, pinned or not   [discover] release_keys
  --state DIR            keep the rollback floor in DIR (highest release_seq accepted per
                         channel/arch, newest time seen) and refuse older releases; needs
                         --release-key                                  [discover] state
  --allow-downgrade      accept a release older than the floor (and lower the floor to it)
  --watch                keep looking and show every provider (implies --all) with its
                         publisher, version, release_seq, record age and whether its manifest
                         verifies (against --release-key when given); a live table on a
                         terminal, plain lines otherwise (a JSON array per round with --json);
                         runs until interrupted
  --interval SECS        pause between --watch rounds (default 5, 1 to 3600)
  --min-rate BYTES       a provider sending slower than this many bytes/s, averaged over the
                         window, is passed over for the next one (default 65536; 0 turns the
                         rule off); heads must arrive within 10 s     [discover] min_rate
  --rate-window SECS     the window the minimum rate is judged over (default 10, 1 to 3600)
                                                                      [discover] rate_window
  -h, --help             print this help
  -V, --version          print the version

Prints the manifest URL of the newest valid record on stdout.
Exit codes: 0 found (and fetched), 2 nothing found before the timeout (or bad usage),
3 a download or release did not verify, or is older than the floor (nothing written),
1 other errors.
";

/// Parses `phase-discover`'s arguments (without the program name).
pub fn parse_discover<I>(args: I) -> Result<DiscoverCommand, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut channel, mut arch, mut bootstrap) = (None, None, Vec::new());
    let (mut timeout, mut json, mut mdns, mut all) = (None, false, false, false);
    let (mut config, mut trust) = (None::<PathBuf>, Vec::new());
    let (mut release_keys, mut state, mut allow_downgrade) =
        (Vec::<PathBuf>::new(), None::<PathBuf>, false);
    let (mut fetch, mut output, mut fetch_all) = (None, None::<PathBuf>, None::<PathBuf>);
    let (mut watch, mut interval) = (false, None);
    let (mut min_rate, mut rate_window) = (None::<u64>, None::<u64>);
    let (mut peers, mut seed, mut linger) = (Vec::new(), None::<String>, None);
    let mut seed_rate = None;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(DiscoverCommand::Print(DISCOVER_HELP.into())),
            Short('V') | Long("version") => {
                return Ok(DiscoverCommand::Print(version_line("phase-discover")))
            }
            Long("channel") => channel = Some(string(&mut p, "--channel")?),
            Long("arch") => arch = Some(string(&mut p, "--arch")?),
            Long("bootstrap") => bootstrap.push(string(&mut p, "--bootstrap")?),
            Long("timeout") => timeout = Some(secs(&mut p, "--timeout")?),
            Long("config") => config = Some(p.value()?.into()),
            Long("trust") => trust.push(string(&mut p, "--trust")?),
            Long("fetch") => fetch = Some(string(&mut p, "--fetch")?),
            Short('o') | Long("output") => output = Some(p.value()?.into()),
            Long("fetch-all") => fetch_all = Some(p.value()?.into()),
            Long("peer") => peers.push(string(&mut p, "--peer")?),
            Long("seed") => seed = Some(string(&mut p, "--seed")?),
            Long("seed-linger") => linger = Some(secs(&mut p, "--seed-linger")?),
            Long("seed-rate") => seed_rate = Some(bytes_per_sec(&mut p, "--seed-rate")?),
            Long("json") => json = true,
            Long("mdns") => mdns = true,
            Long("all") => all = true,
            Long("release-key") => release_keys.push(p.value()?.into()),
            Long("state") => state = Some(p.value()?.into()),
            Long("allow-downgrade") => allow_downgrade = true,
            Long("watch") => watch = true,
            Long("interval") => interval = Some(secs(&mut p, "--interval")?),
            Long("min-rate") => min_rate = Some(bytes_per_sec(&mut p, "--min-rate")?),
            Long("rate-window") => rate_window = Some(secs(&mut p, "--rate-window")?),
            other => {
                return Err(ConfigError::Args(format!(
                    "{} (see phase-discover --help)",
                    other.unexpected()
                )))
            }
        }
    }
    let file = match &config {
        Some(path) => load_file(path)?.discover,
        None => DiscoverSection::default(),
    };
    if bootstrap.is_empty() {
        bootstrap = file.bootstrap.unwrap_or_default();
    }
    let mdns = mdns || file.mdns.unwrap_or(false);
    let timeout = timeout.or(file.timeout).unwrap_or(DEFAULT_DISCOVER_TIMEOUT);
    if trust.is_empty() {
        trust = file.trusted_providers.unwrap_or_default();
    }
    if release_keys.is_empty() {
        release_keys = file.release_keys.unwrap_or_default();
    }
    let release_keys = ReleaseKeys::load(&release_keys).map_err(|e| {
        ConfigError::Invalid(format!("--release-key / [discover] release_keys: {e}"))
    })?;
    // --watch only looks: a board's config file may name its state
    // directory, which a watch leaves alone (an explicit --state is refused
    // below).
    let state = match (watch, state) {
        (true, None) => None,
        (_, state) => state.or(file.state),
    };
    if state.is_some() && release_keys.is_empty() {
        return Err(ConfigError::Args(
            "--state keeps a floor of signed release numbers: it needs --release-key PUBFILE"
                .into(),
        ));
    }
    if allow_downgrade && state.is_none() {
        return Err(ConfigError::Args(
            "--allow-downgrade only means something with --state DIR".into(),
        ));
    }
    let trusted = parse_peer_ids("--trust / [discover] trusted_providers", trust)?;
    let fetch = match (fetch, fetch_all, output) {
        (Some(_), Some(_), _) => {
            return Err(ConfigError::Args(
                "give either --fetch NAME or --fetch-all DIR, not both".into(),
            ))
        }
        (None, _, Some(_)) => {
            return Err(ConfigError::Args(
                "-o/--output goes with --fetch NAME".into(),
            ))
        }
        (Some(name), None, out) => {
            if !crate::channel::is_safe_file_name(&name) {
                return Err(ConfigError::Invalid(format!(
                    "--fetch {name:?}: not a file name"
                )));
            }
            Some(FetchTarget::One { name, out })
        }
        (None, Some(dir), None) => Some(FetchTarget::All { dir }),
        (None, None, None) => None,
    };
    if (!peers.is_empty() || seed.is_some()) && fetch.is_none() {
        return Err(ConfigError::Args(
            "--peer and --seed go with --fetch NAME or --fetch-all DIR".into(),
        ));
    }
    if (linger.is_some() || seed_rate.is_some()) && seed.is_none() {
        return Err(ConfigError::Args(
            "--seed-linger and --seed-rate go with --seed".into(),
        ));
    }
    for peer in &peers {
        crate::fetch::check_url(peer).map_err(|e| ConfigError::Invalid(format!("--peer: {e}")))?;
    }
    let seed = seed
        .map(|s| {
            s.parse::<std::net::SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!(
                    "--seed {s:?}: not an address and port (e.g. 0.0.0.0:8090)"
                ))
            })
        })
        .transpose()?;
    let mut share = ShareConfig {
        peers,
        seed,
        rate: in_range(
            "--seed-rate",
            seed_rate.unwrap_or(0),
            0,
            MAX_MIN_RATE,
            "bytes per second",
        )?,
        ..ShareConfig::default()
    };
    if let Some(max) = linger {
        let max = in_range("--seed-linger", max, 0, 3600, "seconds")?;
        share.linger.max = Duration::from_secs(max);
    }
    let watch = match (watch, interval) {
        (false, Some(_)) => {
            return Err(ConfigError::Args("--interval goes with --watch".into()));
        }
        (false, None) => None,
        (true, _) if fetch.is_some() || state.is_some() => {
            return Err(ConfigError::Args(
                "--watch only looks: it cannot be combined with --fetch, --fetch-all or --state"
                    .into(),
            ));
        }
        (true, i) => Some(Duration::from_secs(in_range(
            "--interval",
            i.unwrap_or(DEFAULT_WATCH_INTERVAL),
            1,
            3600,
            "seconds",
        )?)),
    };
    let all = all || watch.is_some();
    let channel = channel.ok_or_else(|| ConfigError::Args("missing --channel C".into()))?;
    let arch = arch.ok_or_else(|| ConfigError::Args("missing --arch A".into()))?;
    check_name("channel", &channel).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    check_name("arch", &arch).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if bootstrap.is_empty() && !mdns {
        return Err(ConfigError::Args(
            "no DHT peer to ask: give --bootstrap MULTIADDR (the address `plasmd serve` or `plasmd node` prints), or --mdns to find peers on the LAN".into(),
        ));
    }
    let defaults = crate::fetch::Limits::default();
    let limits = crate::fetch::Limits {
        min_rate: in_range(
            "--min-rate / [discover] min_rate",
            min_rate.or(file.min_rate).unwrap_or(defaults.min_rate),
            0,
            MAX_MIN_RATE,
            "bytes per second",
        )?,
        window: Duration::from_secs(in_range(
            "--rate-window / [discover] rate_window",
            rate_window
                .or(file.rate_window)
                .unwrap_or(defaults.window.as_secs()),
            1,
            MAX_RATE_WINDOW,
            "seconds",
        )?),
        ..defaults
    };
    let timeout = in_range(
        "--timeout / [discover] timeout",
        timeout,
        1,
        MAX_DISCOVER_TIMEOUT,
        "seconds",
    )?;
    Ok(DiscoverCommand::Run(Box::new(DiscoverConfig {
        query: Query {
            channel,
            arch,
            bootstrap: parse_bootstrap(&bootstrap)?,
            mdns,
            timeout: Duration::from_secs(timeout),
            trusted,
            release_keys,
            state,
            allow_downgrade,
            trusted_time: crate::time::BUILD_TIME,
            limits,
        },
        json,
        fetch,
        all,
        watch,
        share,
    })))
}

/// What `phase-boot` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum BootCommand {
    /// Boot with this kernel command line (`--cmdline`), or the running
    /// kernel's (`/proc/cmdline`) when `None`.
    Run(Option<String>),
    Print(String),
}

/// Parses `phase-boot`'s arguments (without the program name). Its
/// settings come from the kernel command line (see `boot::cmdline`).
pub fn parse_boot<I>(args: I) -> Result<BootCommand, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut cmdline = None;
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(BootCommand::Print(PHASE_BOOT_HELP.into())),
            Long("cmdline") => cmdline = Some(string(&mut p, "--cmdline")?),
            other => {
                return Err(ConfigError::Args(format!(
                    "{} (see phase-boot --help)",
                    other.unexpected()
                )))
            }
        }
    }
    Ok(BootCommand::Run(cmdline))
}

const PHASE_BOOT_HELP: &str = "\
phase-boot: the stage 1 of a netbooting board: find a provider, verify the release, kexec into it

Usage: phase-boot [--cmdline STRING]

Reads its settings from the kernel command line (/proc/cmdline, or --cmdline):
  phase.channel=C           the channel to boot (required)
  phase.arch=A              the architecture (default: the running one)
  phase.release_key=BASE64  a release key (the second line of a minisign .pub file),
                            repeatable; keys in /etc/phase/release-keys/*.pub count too
  phase.mdns=0|1            find providers on the LAN by mDNS (default 1)
  phase.bootstrap=MULTIADDR a DHT peer to ask, repeatable
  phase.state=LABEL         a partition holding the rollback floor
  phase.timeout=SECS        one lookup round (default 15)
  phase.min_rate=BYTES      pass over a provider sending slower than this, averaged over
                            the window (default 65536; 0 turns the rule off)
  phase.rate_window=SECS    the window the minimum rate is judged over (default 10)
  phase.share_port=PORT     serve verified chunks to the rest of the rack while downloading,
                            on this port (default 8090; 0: do not share)
  phase.seed_linger=SECS    after the download, keep serving until nothing was asked for 5 s,
                            at most this long (default 60)
  phase.share_rate=BYTES    send other boards at most this many bytes per second in all
                            (default 0: no cap)
Runs until it has kexec'd into a verified release; never gives up.
";
