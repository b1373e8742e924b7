//! `plasmd serve`, `plasmd node` and `plasmd id`: their flags and the
//! `[provider]`, `[http]`, `[p2p]` and `[board]` sections of the file,
//! checked and merged (flags win) into a [`ServeConfig`] or [`NodeConfig`].
//! `plasmd release` and `plasmd status` are handed to their own files.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::{load_file, FileConfig};
pub use super::mirror::MirrorConfig;
use super::mirror::{build_mirror, MirrorFlags};
use super::netboot::{build_netboot, NetbootFlags};
use super::p2p::build_p2p;
pub use super::p2p::P2pConfig;
use super::{
    bytes_per_sec, count, in_range, release, secs, status, string, version_line, Command,
    ConfigError, DEFAULT_HTTP_LISTEN, MAX_MIN_RATE, MAX_RATE_WINDOW,
};
use crate::board::BoardProfile;
use crate::channel::check_name;
use crate::http::HttpLimits;
use crate::minisign::SecretKey;

/// Record lifetime settings (`[provider.dht]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtTiming {
    /// How long a record lives in the DHT after each put.
    pub record_ttl: Duration,
    /// How often the provider puts its records again; always < `record_ttl`.
    pub refresh_interval: Duration,
}

/// Everything `plasmd serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The artifacts root; `None` when the board layer finds it on the
    /// netboot partition.
    pub artifacts: Option<PathBuf>,
    /// The board profile (`--board`), if running on a board.
    pub board: Option<BoardProfile>,
    pub channels: Vec<String>,
    pub archs: Vec<String>,
    pub http_listen: SocketAddr,
    /// How slow a download may be before it is cut off.
    pub http_limits: HttpLimits,
    pub p2p: P2pConfig,
    /// Base URL advertised instead of one derived from the HTTP address.
    pub external_url: Option<String>,
    pub provider_name: Option<String>,
    pub dht: DhtTiming,
    /// `--sign-key`: sign generated manifests as releases (a one-provider lab).
    pub sign_key: Option<std::sync::Arc<SecretKey>>,
    /// `--mirror`: channel/archs followed from other providers.
    pub mirror: Option<MirrorConfig>,
    /// `--netboot`: answer the firmware's own network boot.
    pub netboot: Option<crate::netboot::NetbootConfig>,
}

/// Everything `plasmd node` needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub p2p: P2pConfig,
    /// `--metrics-listen`: serve `/metrics` here (off by default).
    pub metrics_listen: Option<SocketAddr>,
}

const PLASMD_HELP: &str = "\
plasmd: serve netboot artifacts over HTTP and advertise them in a Kademlia DHT

Usage:
  plasmd serve [OPTIONS]     serve an artifacts tree and advertise each channel/arch
  plasmd node [OPTIONS]      run a DHT-only storage/bootstrap node
  plasmd id --identity FILE  print the peer id of a key file (created if missing)
  plasmd release keygen|sign|verify   make a fleet key, sign a release offline, check one
  plasmd status [--url URL]  ask a running plasmd what it advertises and whether it is healthy

Run `plasmd <command> --help` for the options of each command.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input.
";

const SERVE_HELP: &str = "\
plasmd serve: serve boot artifacts over HTTP and advertise every channel/arch in the DHT

Usage: plasmd serve [OPTIONS]

Options (each also settable in the --config file; flags win):
  --config FILE            TOML config file ([provider], [provider.dht], [http], [p2p])
  --artifacts DIR          artifacts root holding <channel>/<arch>/<files>   [provider] artifacts
                           (with --board: default is the board's netboot partition)
  --board NAME|FILE        board profile (built in: qemu-virt, raspberrypi4, rock5b; or
                           /etc/plasmd/boards/NAME.toml, or a path): netboot partition, watchdog
  --channel C              serve only this channel (repeatable; default: every directory)
  --arch A                 serve only this architecture (repeatable; default: every directory)
  --http-listen ADDR:PORT  HTTP listen address (default 0.0.0.0:8080)          [http] listen
  --http-min-rate BYTES    a response slower than this many bytes/s, averaged over the
                           window, is cut off (default 4096; 0 turns it off)  [http] min_rate
  --http-rate-window SECS  the window the minimum rate is averaged over (default 30,
                           at most 3600)                                     [http] rate_window
  --http-max-rate BYTES    all responses together send at most this many bytes/s (default 0:
                           no cap; e.g. a booted board mirroring while it works) [http] max_rate
  --p2p-listen MULTIADDR   libp2p listen address, repeatable (default /ip4/0.0.0.0/tcp/4001)
  --bootstrap MULTIADDR    a DHT peer to join through, repeatable (/ip4/.../tcp/.../p2p/<id>)
  --p2p-announce MULTIADDR address peers should dial, repeatable (e.g. a port forward); when
                           set, the listen addresses are not announced
  --mdns                   find and be found by peers on the LAN with mDNS (default off)
  --external-url URL       base URL to advertise, e.g. http://boot.lab:8080 (default: derived
                           from --http-listen, or the first non-loopback address for 0.0.0.0)
  --identity FILE          ed25519 key file, created with mode 0600 if missing (default
                           /var/lib/plasmd/identity.key, else $XDG_STATE_HOME/plasmd/identity.key)
  --provider-name NAME     human-readable name put in the records
  --record-ttl SECS        lifetime of each DHT record (default 3600, at most 604800 = 7 days)
  --refresh-interval SECS  how often records are put again (default 2/3 of the TTL; < TTL)
  --sign-key SECFILE       sign the manifests plasmd generates with this release key (minisign
                           secret key; a one-provider lab: weaker than signing offline with
                           `plasmd release sign`, see the README)            [provider] sign_key
  --mirror C/A             follow channel/arch C/A from other providers (repeatable): fetch
                           each newer signed release, peers first, and serve it; kept in
                           ARTIFACTS/.mirror                                   [provider] mirror
  --release-key PUBFILE    with --mirror: follow only releases signed by this key; with
                           --netboot: the key the stage-1 trusts (repeatable; required by
                           both)                                        [provider] release_keys
  --mirror-keep N          releases kept per mirrored channel/arch, the served one included
                           (default 2: the previous one stays for boards still fetching it;
                           1 to 8)                                        [provider] mirror_keep
  --mirror-interval SECS   how often to look for a newer release (default 15)
                                                                      [provider] mirror_interval
  --netboot                answer the firmware's own network boot (ProxyDHCP on UDP 67 and
                           4011, TFTP on 69, UEFI HTTP boot under /_netboot/): boards with
                           nothing on them get the stage-1, which boots only releases signed
                           by --release-key. Needs root or CAP_NET_BIND_SERVICE, and a plasmd
                           built with the netboot feature (the Debian package and the board
                           image are; README, Booting boards with nothing on them)
                                                                           [netboot] enabled
  --netboot-dir DIR        holds stage1.efi from image/build-stage1 (default
                           /var/lib/plasmd/netboot); the copies with this provider's
                           settings go to --netboot-cache                      [netboot] dir
  --netboot-cache DIR      where those copies are written and served from (default
                           DIR/.prepared; about 40 MB per channel)           [netboot] cache
  --netboot-channel C/A    the channel/arch the stage-1 boots (default: the one --channel and
                           --arch name)                                    [netboot] channel
  --netboot-cmdline WORDS  more kernel command line words for the stage-1, e.g.
                           phase.bootstrap=/ip4/192.0.2.1/tcp/4001         [netboot] cmdline
  --check-config           check the flags and config file (and board profile), print OK and
                           what would be advertised (channel/arch, version, signature, URL), exit
  -h, --help               print this help
  -V, --version            print the version
";

const NODE_HELP: &str = "\
plasmd node: a DHT-only peer that stores records and lets others join the DHT

Usage: plasmd node [OPTIONS]

Options (each also settable in the --config file; flags win):
  --config FILE            TOML config file ([p2p], [provider.dht] record_ttl)
  --p2p-listen MULTIADDR   libp2p listen address, repeatable (default /ip4/0.0.0.0/tcp/4001)
  --bootstrap MULTIADDR    another DHT peer to join through, repeatable
  --p2p-announce MULTIADDR address peers should dial, repeatable (replaces the listen addresses)
  --mdns                   find and be found by peers on the LAN with mDNS (default off)
  --identity FILE          ed25519 key file, created with mode 0600 if missing
  --record-ttl SECS        longest time any record is kept (default 3600, at most 604800)
  --metrics-listen ADDR:PORT  serve Prometheus metrics at http://ADDR:PORT/metrics (default off)
  --trust PEER_ID          a closed fleet: store only records published by these peers
                           (repeatable; default: any validly signed record)
                                                             [p2p] trusted_publishers
  -h, --help               print this help
  -V, --version            print the version
";

const ID_HELP: &str = "\
plasmd id: print the peer id of an identity key file

Usage: plasmd id --identity FILE

Creates FILE (an ed25519 key, mode 0600) if it does not exist.
";

/// `plasmd <version>`.
/// Flags collected from the command line, before merging with the file.
#[derive(Default)]
pub(super) struct Flags {
    pub(super) config: Option<PathBuf>,
    pub(super) artifacts: Option<PathBuf>,
    pub(super) channels: Vec<String>,
    pub(super) archs: Vec<String>,
    pub(super) http_listen: Option<String>,
    pub(super) http_min_rate: Option<u64>,
    pub(super) http_rate_window: Option<u64>,
    pub(super) http_max_rate: Option<u64>,
    pub(super) p2p_listen: Vec<String>,
    pub(super) bootstrap: Vec<String>,
    pub(super) announce: Vec<String>,
    pub(super) mdns: bool,
    pub(super) board: Option<String>,
    pub(super) check_config: bool,
    pub(super) external_url: Option<String>,
    pub(super) identity: Option<PathBuf>,
    pub(super) provider_name: Option<String>,
    pub(super) record_ttl: Option<u64>,
    pub(super) refresh_interval: Option<u64>,
    pub(super) sign_key: Option<PathBuf>,
    pub(super) trust: Vec<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) mirror: MirrorFlags,
    pub(super) release_keys: Vec<PathBuf>,
    pub(super) netboot: NetbootFlags,
}

/// Which flags a subcommand accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sub {
    Serve,
    Node,
    Id,
}

/// Parses `plasmd`'s arguments (without the program name).
pub fn parse_plasmd<I>(args: I) -> Result<Command, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let sub = match p.next()? {
        Some(Value(v)) => match v.to_str() {
            Some("serve") => Sub::Serve,
            Some("node") => Sub::Node,
            Some("id") => Sub::Id,
            Some("release") => return release::parse(&mut p).map(Command::Release),
            Some("status") => return status::parse(&mut p),
            _ => {
                return Err(ConfigError::Args(format!(
                    "unknown command {:?}; expected serve, node, id or release (see plasmd --help)",
                    v
                )))
            }
        },
        Some(Short('h') | Long("help")) => return Ok(Command::Print(PLASMD_HELP.into())),
        Some(Short('V') | Long("version")) => return Ok(Command::Print(version_line("plasmd"))),
        Some(other) => return Err(other.unexpected().into()),
        None => {
            return Err(ConfigError::Args(
                "missing command: serve, node or id (see plasmd --help)".into(),
            ))
        }
    };
    let mut f = Flags::default();
    while let Some(arg) = p.next()? {
        let name = match &arg {
            Long(n) => *n,
            Short(_) => "",
            Value(_) => "",
        };
        let allowed = match name {
            "config" | "p2p-listen" | "bootstrap" | "p2p-announce" | "mdns" | "record-ttl"
            | "trust" => sub != Sub::Id,
            "identity" => true,
            "metrics-listen" => sub == Sub::Node,
            "artifacts" | "board" | "channel" | "arch" | "http-listen" | "http-min-rate"
            | "http-rate-window" | "http-max-rate" | "external-url" | "provider-name"
            | "refresh-interval" | "check-config" | "sign-key" | "mirror" | "mirror-keep"
            | "mirror-interval" | "release-key" | "netboot" | "netboot-dir" | "netboot-cache"
            | "netboot-channel" | "netboot-cmdline" => sub == Sub::Serve,
            _ => true,
        };
        if !allowed {
            return Err(ConfigError::Args(format!(
                "--{name} is not an option of `plasmd {}` (see its --help)",
                sub_name(sub)
            )));
        }
        match arg {
            Short('h') | Long("help") => {
                return Ok(Command::Print(
                    match sub {
                        Sub::Serve => SERVE_HELP,
                        Sub::Node => NODE_HELP,
                        Sub::Id => ID_HELP,
                    }
                    .into(),
                ))
            }
            Short('V') | Long("version") => return Ok(Command::Print(version_line("plasmd"))),
            Long("config") => f.config = Some(p.value()?.into()),
            Long("artifacts") => f.artifacts = Some(p.value()?.into()),
            Long("channel") => f.channels.push(string(&mut p, "--channel")?),
            Long("arch") => f.archs.push(string(&mut p, "--arch")?),
            Long("http-listen") => f.http_listen = Some(string(&mut p, "--http-listen")?),
            Long("http-min-rate") => {
                f.http_min_rate = Some(bytes_per_sec(&mut p, "--http-min-rate")?)
            }
            Long("http-rate-window") => {
                f.http_rate_window = Some(secs(&mut p, "--http-rate-window")?)
            }
            Long("http-max-rate") => {
                f.http_max_rate = Some(bytes_per_sec(&mut p, "--http-max-rate")?)
            }
            Long("p2p-listen") => f.p2p_listen.push(string(&mut p, "--p2p-listen")?),
            Long("bootstrap") => f.bootstrap.push(string(&mut p, "--bootstrap")?),
            Long("p2p-announce") => f.announce.push(string(&mut p, "--p2p-announce")?),
            Long("board") => f.board = Some(string(&mut p, "--board")?),
            Long("mdns") => f.mdns = true,
            Long("check-config") => f.check_config = true,
            Long("external-url") => f.external_url = Some(string(&mut p, "--external-url")?),
            Long("identity") => f.identity = Some(p.value()?.into()),
            Long("sign-key") => f.sign_key = Some(p.value()?.into()),
            Long("mirror") => f.mirror.mirror.push(string(&mut p, "--mirror")?),
            Long("mirror-keep") => f.mirror.keep = Some(count(&mut p, "--mirror-keep")?),
            Long("mirror-interval") => f.mirror.interval = Some(secs(&mut p, "--mirror-interval")?),
            Long("release-key") => f.release_keys.push(p.value()?.into()),
            Long("netboot") => f.netboot.on = true,
            Long("netboot-dir") => f.netboot.dir = Some(p.value()?.into()),
            Long("netboot-cache") => f.netboot.cache = Some(p.value()?.into()),
            Long("netboot-channel") => {
                f.netboot.channel = Some(string(&mut p, "--netboot-channel")?)
            }
            Long("netboot-cmdline") => {
                f.netboot.cmdline = Some(string(&mut p, "--netboot-cmdline")?)
            }
            Long("trust") => f.trust.push(string(&mut p, "--trust")?),
            Long("metrics-listen") => f.metrics_listen = Some(string(&mut p, "--metrics-listen")?),
            Long("provider-name") => f.provider_name = Some(string(&mut p, "--provider-name")?),
            Long("record-ttl") => f.record_ttl = Some(secs(&mut p, "--record-ttl")?),
            Long("refresh-interval") => {
                f.refresh_interval = Some(secs(&mut p, "--refresh-interval")?)
            }
            other => {
                return Err(ConfigError::Args(format!(
                    "{} (see plasmd {} --help)",
                    other.unexpected(),
                    sub_name(sub)
                )))
            }
        }
    }
    match sub {
        Sub::Id => {
            let identity = f
                .identity
                .ok_or_else(|| ConfigError::Args("plasmd id needs --identity FILE".into()))?;
            Ok(Command::Id { identity })
        }
        Sub::Node => build_node(f).map(Command::Node),
        Sub::Serve if f.check_config => {
            let what = f
                .config
                .as_ref()
                .map_or_else(|| "flags".to_string(), |p| p.display().to_string());
            build_serve(f).map(|c| Command::CheckServe(Box::new(c), format!("{what}: OK\n")))
        }
        Sub::Serve => build_serve(f).map(|c| Command::Serve(Box::new(c))),
    }
}

fn sub_name(sub: Sub) -> &'static str {
    match sub {
        Sub::Serve => "serve",
        Sub::Node => "node",
        Sub::Id => "id",
    }
}

fn load_flags_file(f: &Flags) -> Result<FileConfig, ConfigError> {
    match &f.config {
        Some(path) => load_file(path),
        None => Ok(FileConfig::default()),
    }
}

fn build_node(f: Flags) -> Result<NodeConfig, ConfigError> {
    let file = load_flags_file(&f)?;
    let metrics_listen = match &f.metrics_listen {
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            ConfigError::Invalid(format!("--metrics-listen {a:?}: not an ADDR:PORT"))
        })?),
        None => None,
    };
    Ok(NodeConfig {
        p2p: build_p2p(&f, &file)?,
        metrics_listen,
    })
}

fn build_serve(f: Flags) -> Result<ServeConfig, ConfigError> {
    let file = load_flags_file(&f)?;
    let p2p = build_p2p(&f, &file)?;

    let board = match f.board.clone().or_else(|| file.board.profile.clone()) {
        Some(name) => {
            Some(BoardProfile::load(&name).map_err(|e| ConfigError::Invalid(e.to_string()))?)
        }
        None => None,
    };
    let artifacts = f
        .artifacts
        .clone()
        .or_else(|| file.provider.artifacts.clone());
    match &artifacts {
        None if board.is_none() => {
            return Err(ConfigError::Invalid(
                "no artifacts directory: give --artifacts DIR, [provider] artifacts, or a --board whose netboot partition holds them".into(),
            ))
        }
        None => {}
        Some(dir) => match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ConfigError::Invalid(format!(
                    "artifacts directory {}: not a directory",
                    dir.display()
                )))
            }
            Err(e) => {
                return Err(ConfigError::Invalid(format!(
                    "artifacts directory {}: {e}",
                    dir.display()
                )))
            }
        },
    }

    let pick = |flags: &Vec<String>, file: &Option<Vec<String>>| {
        if flags.is_empty() {
            file.clone().unwrap_or_default()
        } else {
            flags.clone()
        }
    };
    let channels = pick(&f.channels, &file.provider.channels);
    let archs = pick(&f.archs, &file.provider.archs);
    for c in &channels {
        check_name("channel", c).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    for a in &archs {
        check_name("arch", a).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }

    let http_src = f
        .http_listen
        .clone()
        .or_else(|| file.http.listen.clone())
        .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_string());
    let http_listen: SocketAddr = http_src.parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "--http-listen / [http] listen: {http_src:?} is not an IP:PORT address (e.g. 0.0.0.0:8080)"
        ))
    })?;

    let defaults = HttpLimits::default();
    let min_rate = in_range(
        "--http-min-rate / [http] min_rate",
        f.http_min_rate
            .or(file.http.min_rate)
            .unwrap_or(defaults.min_rate),
        0,
        MAX_MIN_RATE,
        "bytes per second",
    )?;
    let rate_window = Duration::from_secs(in_range(
        "--http-rate-window / [http] rate_window",
        f.http_rate_window
            .or(file.http.rate_window)
            .unwrap_or(defaults.rate_window.as_secs()),
        1,
        MAX_RATE_WINDOW,
        "seconds",
    )?);
    let max_rate = in_range(
        "--http-max-rate / [http] max_rate",
        f.http_max_rate.or(file.http.max_rate).unwrap_or(0),
        0,
        MAX_MIN_RATE,
        "bytes per second",
    )?;
    let http_limits = HttpLimits {
        max_rate,
        min_rate,
        rate_window,
    };

    let external_url = match f
        .external_url
        .clone()
        .or_else(|| file.provider.external_url.clone())
    {
        Some(u) => Some(check_base_url(&u)?),
        None => None,
    };

    let provider_name = f
        .provider_name
        .clone()
        .or_else(|| file.provider.name.clone());
    if let Some(name) = &provider_name {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "provider name {name:?}: use 1-64 printable characters"
            )));
        }
    }

    let ttl = p2p.record_ttl.as_secs();
    let refresh = f
        .refresh_interval
        .or(file.provider.dht.refresh_interval)
        .unwrap_or(ttl * 2 / 3);
    if refresh == 0 {
        return Err(ConfigError::Invalid(format!(
            "refresh interval (--refresh-interval / [provider.dht] refresh_interval) must be at least 1 second (record TTL is {ttl} s)"
        )));
    }
    if refresh >= ttl {
        return Err(ConfigError::Invalid(format!(
            "refresh interval {refresh} s must be shorter than the record TTL {ttl} s, or records lapse between refreshes"
        )));
    }

    let sign_key =
        match f.sign_key.clone().or(file.provider.sign_key.clone()) {
            Some(path) => Some(crate::release::sign::load_key(&path).map_err(|e| {
                ConfigError::Invalid(format!("--sign-key / [provider] sign_key: {e}"))
            })?),
            None => None,
        };

    let key_files = if f.release_keys.is_empty() {
        file.provider.release_keys.clone().unwrap_or_default()
    } else {
        f.release_keys.clone()
    };
    let release_keys = crate::release::ReleaseKeys::load(&key_files).map_err(|e| {
        ConfigError::Invalid(format!("--release-key / [provider] release_keys: {e}"))
    })?;
    let mirror = build_mirror(&f.mirror, &file, artifacts.as_deref(), &release_keys)?;
    let netboot = build_netboot(&f.netboot, &file.netboot, &channels, &archs, &release_keys)?;
    if !f.release_keys.is_empty() && mirror.is_none() && netboot.is_none() {
        return Err(ConfigError::Invalid(
            "--release-key goes with --mirror C/A or --netboot".into(),
        ));
    }

    Ok(ServeConfig {
        mirror,
        netboot,
        sign_key,
        artifacts,
        board,
        channels,
        archs,
        http_listen,
        http_limits,
        dht: DhtTiming {
            record_ttl: p2p.record_ttl,
            refresh_interval: Duration::from_secs(refresh),
        },
        p2p,
        external_url,
        provider_name,
    })
}

/// Checks an `--external-url` and returns it without a trailing slash.
fn check_base_url(u: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Invalid(format!(
            "--external-url / [provider] external_url {u:?}: {why} (expected e.g. http://boot.lab:8080)"
        ))
    };
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) || u.contains(['?', '#']) {
        return Err(bad("must not contain spaces, a query or a fragment"));
    }
    if u.len() > 512 {
        return Err(bad("longer than 512 bytes"));
    }
    Ok(u.trim_end_matches('/').to_string())
}
