//! Command-line flags and the TOML config file, turned into one validated
//! configuration per command.
//!
//! Every default and every check on user input lives here, so the rest of
//! the program can trust what it is given. Flags win over the file. Errors
//! are one line naming the flag, key, file or value at fault; the binaries
//! map them to exit code 2. This module does not open sockets or read the
//! artifacts (except to check the directory exists).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;

use crate::board::BoardProfile;
use crate::channel::check_name;
use crate::http::HttpLimits;
use crate::minisign::SecretKey;
use crate::release::ReleaseKeys;

mod release;
pub use release::ReleaseCommand;

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Default p2p listen address.
pub const DEFAULT_P2P_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";
/// Default record TTL, from the conventions.
pub const DEFAULT_RECORD_TTL: u64 = 3600;
/// Default `phase-discover` timeout.
pub const DEFAULT_DISCOVER_TIMEOUT: u64 = 30;
/// Seconds between `phase-discover --watch` rounds.
pub const DEFAULT_WATCH_INTERVAL: u64 = 5;
/// Longest record TTL (7 days): a record meant to outlive a week is a
/// mistake, and bounding it keeps every deadline computed from it finite.
pub const MAX_RECORD_TTL: u64 = crate::record::MAX_RECORD_TTL_SECS;
/// Longest `phase-discover --timeout` (1 day); a board that must wait
/// longer runs it again.
pub const MAX_DISCOVER_TIMEOUT: u64 = 24 * 3600;
/// Longest `--http-rate-window` (1 hour).
pub const MAX_RATE_WINDOW: u64 = 3600;
/// Largest `--http-min-rate` (1 GiB/s); 0 turns the rule off.
pub const MAX_MIN_RATE: u64 = 1 << 30;
/// Largest config file we read: a config is a few hundred bytes.
const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// A bad flag, config file or value. Always the user's to fix: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Args(String),
    #[error("config file {0}: {1}")]
    File(PathBuf, String),
    #[error("{0}")]
    Invalid(String),
}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError::Args(e.to_string())
    }
}

/// What `plasmd` was asked to do.
#[derive(Debug)]
pub enum Command {
    Serve(Box<ServeConfig>),
    Node(NodeConfig),
    Id {
        identity: PathBuf,
    },
    /// `plasmd release keygen|sign|verify`.
    Release(ReleaseCommand),
    /// `plasmd status --url URL`: ask a running plasmd.
    Status {
        url: String,
    },
    /// `plasmd serve --check-config`: the config is valid (this line says
    /// so); show what would be advertised.
    CheckServe(Box<ServeConfig>, String),
    /// Print this text on stdout and exit 0 (`--help`, `--version`).
    Print(String),
}

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
}

/// The libp2p side, shared by `serve` and `node`.
#[derive(Debug, Clone)]
pub struct P2pConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses announced to peers instead of the listen addresses.
    pub announce: Vec<Multiaddr>,
    /// Find and be found by peers on the LAN with mDNS.
    pub mdns: bool,
    pub identity: PathBuf,
    /// Cap on how long this node keeps any record, its own or received.
    pub record_ttl: Duration,
    /// `--trust` / `[p2p] trusted_publishers`: store only their records.
    pub trusted_publishers: Vec<libp2p::PeerId>,
}

/// Everything `plasmd node` needs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub p2p: P2pConfig,
    /// `--metrics-listen`: serve `/metrics` here (off by default).
    pub metrics_listen: Option<SocketAddr>,
}

/// Everything `phase-discover` needs.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    pub channel: String,
    pub arch: String,
    pub bootstrap: Vec<Multiaddr>,
    /// Find DHT peers on the LAN with mDNS (no --bootstrap needed).
    pub mdns: bool,
    pub timeout: Duration,
    pub json: bool,
    /// Accept records only from these publishers (`--trust`); empty: any
    /// validly signed record.
    pub trusted: Vec<libp2p::PeerId>,
    /// Download and verify artifacts after finding the record.
    pub fetch: Option<FetchTarget>,
    /// List every valid provider instead of picking one.
    pub all: bool,
    /// Release keys (`--release-key`): when set, only providers serving a
    /// release signed by one of them are accepted.
    pub release_keys: ReleaseKeys,
    /// `--state DIR`: where the rollback floor is kept.
    pub state: Option<PathBuf>,
    /// `--allow-downgrade`: accept a release below the floor (and lower it).
    pub allow_downgrade: bool,
    /// A time known to have passed (the build, or the newest time the
    /// rollback floor saw): a clock reading earlier is treated as unknown.
    pub trusted_time: u64,
    /// `--watch`: keep looking, and print every provider again after each
    /// pause of this long.
    pub watch: Option<Duration>,
}

/// What `--fetch` / `--fetch-all` download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchTarget {
    /// One artifact, to `out` (default: its name in the current directory).
    One { name: String, out: Option<PathBuf> },
    /// Every artifact of the manifest, into a directory.
    All { dir: PathBuf },
}

/// What `phase-discover` was asked to do.
#[derive(Debug)]
pub enum DiscoverCommand {
    Run(Box<DiscoverConfig>),
    Print(String),
}

// ---------------------------------------------------------------------------
// The config file

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    board: BoardSection,
    #[serde(default)]
    provider: ProviderSection,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    p2p: P2pSection,
    #[serde(default)]
    discover: DiscoverSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoverSection {
    bootstrap: Option<Vec<String>>,
    mdns: Option<bool>,
    timeout: Option<u64>,
    trusted_providers: Option<Vec<String>>,
    release_keys: Option<Vec<PathBuf>>,
    state: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardSection {
    profile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderSection {
    artifacts: Option<PathBuf>,
    channels: Option<Vec<String>>,
    archs: Option<Vec<String>>,
    name: Option<String>,
    external_url: Option<String>,
    sign_key: Option<PathBuf>,
    #[serde(default)]
    dht: DhtSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DhtSection {
    record_ttl: Option<u64>,
    refresh_interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Option<String>,
    min_rate: Option<u64>,
    rate_window: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct P2pSection {
    listen: Option<Vec<String>>,
    bootstrap: Option<Vec<String>>,
    announce: Option<Vec<String>>,
    mdns: Option<bool>,
    identity: Option<PathBuf>,
    trusted_publishers: Option<Vec<String>>,
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    use std::io::Read;
    let err = |m: String| ConfigError::File(path.to_path_buf(), m);
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(err(
            "larger than 256 KiB; is this really a config file?".into()
        ));
    }
    toml::from_str(&text).map_err(|e| err(one_line(&e.to_string())))
}

/// toml's messages span several lines with a source excerpt; keep them to one.
pub(crate) fn one_line(msg: &str) -> String {
    let mut parts: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect();
    parts.dedup();
    parts.join(": ")
}

// ---------------------------------------------------------------------------
// plasmd's command line

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
pub fn version_line(bin: &str) -> String {
    format!("{bin} {}\n", env!("CARGO_PKG_VERSION"))
}

/// Flags collected from the command line, before merging with the file.
#[derive(Default)]
struct Flags {
    config: Option<PathBuf>,
    artifacts: Option<PathBuf>,
    channels: Vec<String>,
    archs: Vec<String>,
    http_listen: Option<String>,
    http_min_rate: Option<u64>,
    http_rate_window: Option<u64>,
    p2p_listen: Vec<String>,
    bootstrap: Vec<String>,
    announce: Vec<String>,
    mdns: bool,
    board: Option<String>,
    check_config: bool,
    external_url: Option<String>,
    identity: Option<PathBuf>,
    provider_name: Option<String>,
    record_ttl: Option<u64>,
    refresh_interval: Option<u64>,
    sign_key: Option<PathBuf>,
    trust: Vec<String>,
    metrics_listen: Option<String>,
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
            Some("status") => return parse_status(&mut p),
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
            | "http-rate-window" | "external-url" | "provider-name" | "refresh-interval"
            | "check-config" | "sign-key" => sub == Sub::Serve,
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
                let v = string(&mut p, "--http-min-rate")?;
                f.http_min_rate = Some(v.parse().map_err(|_| {
                    ConfigError::Args(format!(
                        "--http-min-rate: {v:?} is not a whole number of bytes per second"
                    ))
                })?)
            }
            Long("http-rate-window") => {
                f.http_rate_window = Some(secs(&mut p, "--http-rate-window")?)
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

const STATUS_HELP: &str = "\
plasmd status: ask a running plasmd (its /status.json) what it advertises and how it is doing

Usage: plasmd status [--url URL]

  --url URL    the plasmd's HTTP base URL (default http://127.0.0.1:8080)
Exit codes: 0 healthy, 1 cannot ask, 2 bad usage, 3 unhealthy (each problem is printed).
";

/// Parses what follows `plasmd status`.
fn parse_status(p: &mut lexopt::Parser) -> Result<Command, ConfigError> {
    use lexopt::prelude::*;
    let mut url = "http://127.0.0.1:8080".to_string();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Print(STATUS_HELP.into())),
            Long("url") => url = string(p, "--url")?,
            other => {
                return Err(ConfigError::Args(format!(
                    "{} (see plasmd status --help)",
                    other.unexpected()
                )))
            }
        }
    }
    if !url.starts_with("http://") {
        return Err(ConfigError::Invalid(format!(
            "--url {url:?}: expected http://HOST:PORT"
        )));
    }
    Ok(Command::Status { url })
}

fn sub_name(sub: Sub) -> &'static str {
    match sub {
        Sub::Serve => "serve",
        Sub::Node => "node",
        Sub::Id => "id",
    }
}

fn string(p: &mut lexopt::Parser, flag: &str) -> Result<String, ConfigError> {
    p.value()?
        .into_string()
        .map_err(|v| ConfigError::Args(format!("{flag}: {v:?} is not valid UTF-8")))
}

/// `value` if it lies in `min..=max`, else an error naming the setting and
/// its bounds (never a panic, however large the number).
fn in_range(what: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid(format!(
            "{what} {value}: use {min} to {max} {unit}"
        )))
    }
}

fn secs(p: &mut lexopt::Parser, flag: &str) -> Result<u64, ConfigError> {
    let v = string(p, flag)?;
    v.parse()
        .map_err(|_| ConfigError::Args(format!("{flag}: {v:?} is not a whole number of seconds")))
}

fn build_p2p(f: &Flags, file: &FileConfig) -> Result<P2pConfig, ConfigError> {
    let listen_src: Vec<String> = if !f.p2p_listen.is_empty() {
        f.p2p_listen.clone()
    } else {
        file.p2p
            .listen
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_P2P_LISTEN.to_string()])
    };
    if listen_src.is_empty() {
        return Err(ConfigError::Invalid(
            "[p2p] listen is empty: give at least one address".into(),
        ));
    }
    let listen = listen_src
        .iter()
        .map(|s| parse_multiaddr("--p2p-listen / [p2p] listen", s))
        .collect::<Result<Vec<_>, _>>()?;
    let bootstrap_src = if !f.bootstrap.is_empty() {
        f.bootstrap.clone()
    } else {
        file.p2p.bootstrap.clone().unwrap_or_default()
    };
    let bootstrap = parse_bootstrap(&bootstrap_src)?;
    let announce_src = if !f.announce.is_empty() {
        f.announce.clone()
    } else {
        file.p2p.announce.clone().unwrap_or_default()
    };
    let announce = announce_src
        .iter()
        .map(|s| parse_multiaddr("--p2p-announce / [p2p] announce", s))
        .collect::<Result<Vec<_>, _>>()?;
    let identity = match f.identity.clone().or_else(|| file.p2p.identity.clone()) {
        Some(p) => p,
        None => default_identity_path()?,
    };
    let ttl = in_range(
        "record TTL (--record-ttl / [provider.dht] record_ttl)",
        f.record_ttl
            .or(file.provider.dht.record_ttl)
            .unwrap_or(DEFAULT_RECORD_TTL),
        1,
        MAX_RECORD_TTL,
        "seconds",
    )?;
    Ok(P2pConfig {
        listen,
        bootstrap,
        announce,
        mdns: f.mdns || file.p2p.mdns.unwrap_or(false),
        identity,
        record_ttl: Duration::from_secs(ttl),
        trusted_publishers: parse_peer_ids(
            "--trust / [p2p] trusted_publishers",
            if f.trust.is_empty() {
                file.p2p.trusted_publishers.clone().unwrap_or_default()
            } else {
                f.trust.clone()
            },
        )?,
    })
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
    let http_limits = HttpLimits {
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

    Ok(ServeConfig {
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

/// Peer ids from flags or the file, `what` naming where they came from.
fn parse_peer_ids(what: &str, ids: Vec<String>) -> Result<Vec<libp2p::PeerId>, ConfigError> {
    ids.iter()
        .map(|t| {
            t.parse::<libp2p::PeerId>()
                .map_err(|e| ConfigError::Invalid(format!("{what}: {t:?} is not a peer id: {e}")))
        })
        .collect()
}

fn parse_multiaddr(what: &str, s: &str) -> Result<Multiaddr, ConfigError> {
    s.parse::<Multiaddr>()
        .map_err(|e| ConfigError::Invalid(format!("{what}: {s:?} is not a valid multiaddr: {e}")))
}

/// Parses bootstrap multiaddrs (each must name a TCP port).
pub(crate) fn parse_bootstrap(list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|s| {
            let addr = parse_multiaddr("--bootstrap / [p2p] bootstrap", s)?;
            let has_transport = addr
                .iter()
                .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)));
            if !has_transport {
                return Err(ConfigError::Invalid(format!(
                    "--bootstrap: {s:?} has no /tcp/PORT; expected /ip4/ADDR/tcp/PORT/p2p/PEER_ID"
                )));
            }
            Ok(addr)
        })
        .collect()
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

/// `/var/lib/plasmd/identity.key` when that directory is (or can be made)
/// writable, else under `$XDG_STATE_HOME` or `~/.local/state`.
fn default_identity_path() -> Result<PathBuf, ConfigError> {
    let system = Path::new("/var/lib/plasmd");
    if std::fs::create_dir_all(system).is_ok() && dir_writable(system) {
        return Ok(system.join("identity.key"));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            ConfigError::Invalid(
                "no place for the identity key: /var/lib/plasmd is not writable and neither XDG_STATE_HOME nor HOME is set; give --identity FILE".into(),
            )
        })?;
    Ok(state.join("plasmd").join("identity.key"))
}

fn dir_writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

// ---------------------------------------------------------------------------
// phase-discover's command line

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
            Long("json") => json = true,
            Long("mdns") => mdns = true,
            Long("all") => all = true,
            Long("release-key") => release_keys.push(p.value()?.into()),
            Long("state") => state = Some(p.value()?.into()),
            Long("allow-downgrade") => allow_downgrade = true,
            Long("watch") => watch = true,
            Long("interval") => interval = Some(secs(&mut p, "--interval")?),
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
    let timeout = in_range(
        "--timeout / [discover] timeout",
        timeout,
        1,
        MAX_DISCOVER_TIMEOUT,
        "seconds",
    )?;
    Ok(DiscoverCommand::Run(Box::new(DiscoverConfig {
        channel,
        arch,
        bootstrap: parse_bootstrap(&bootstrap)?,
        mdns,
        timeout: Duration::from_secs(timeout),
        json,
        trusted,
        fetch,
        all,
        release_keys,
        state,
        allow_downgrade,
        trusted_time: crate::time::BUILD_TIME,
        watch,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut all = vec!["serve", "--identity", "/tmp/x.key"];
        all.extend_from_slice(args);
        match parse_plasmd(all)? {
            Command::Serve(c) => Ok(*c),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_conventions() {
        let c = serve(&["--artifacts", "/"]).unwrap();
        assert_eq!(c.http_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.p2p.listen[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(c.dht.record_ttl, Duration::from_secs(3600));
        assert_eq!(c.dht.refresh_interval, Duration::from_secs(2400));
        assert_eq!(c.http_limits, HttpLimits::default());
    }

    #[test]
    fn http_limits_from_flags_and_file() {
        let c = serve(&[
            "--artifacts",
            "/",
            "--http-min-rate",
            "65536",
            "--http-rate-window",
            "2",
        ])
        .unwrap();
        assert_eq!(c.http_limits.min_rate, 65536);
        assert_eq!(c.http_limits.rate_window, Duration::from_secs(2));
        for bad in [
            &["--http-min-rate", "fast"][..],
            &["--http-min-rate", "-1"],
            &["--http-rate-window", "0"],
            &["--http-rate-window", "3601"],
        ] {
            let mut args = vec!["--artifacts", "/"];
            args.extend_from_slice(bad);
            assert!(serve(&args).is_err(), "{bad:?}");
        }
        let path = std::env::temp_dir().join(format!("plasmd-http-{}.toml", std::process::id()));
        std::fs::write(&path, "[http]\nmin_rate = 1000\nrate_window = 10\n").unwrap();
        let c = serve(&["--artifacts", "/", "--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.http_limits.min_rate, 1000);
        assert_eq!(c.http_limits.rate_window, Duration::from_secs(10));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn bad_timing_is_refused() {
        assert!(serve(&["--artifacts", "/", "--record-ttl", "0"]).is_err());
        let e = serve(&[
            "--artifacts",
            "/",
            "--record-ttl",
            "6",
            "--refresh-interval",
            "6",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("shorter than the record TTL"), "{e}");
        assert!(serve(&["--artifacts", "/", "--record-ttl", "1"]).is_err());
        assert!(serve(&["--artifacts", "/", "--record-ttl", "x"]).is_err());
    }

    #[test]
    fn every_duration_has_a_maximum() {
        let max_ttl = MAX_RECORD_TTL.to_string();
        let c = serve(&["--artifacts", "/", "--record-ttl", &max_ttl]).unwrap();
        assert_eq!(c.dht.record_ttl, Duration::from_secs(MAX_RECORD_TTL));
        for (flag, beyond) in [
            ("--record-ttl", (MAX_RECORD_TTL + 1).to_string()),
            ("--record-ttl", u64::MAX.to_string()),
            ("--refresh-interval", u64::MAX.to_string()),
            ("--http-rate-window", (MAX_RATE_WINDOW + 1).to_string()),
            ("--http-min-rate", (MAX_MIN_RATE + 1).to_string()),
        ] {
            let e = serve(&["--artifacts", "/", flag, &beyond]).unwrap_err();
            assert!(matches!(e, ConfigError::Invalid(_)), "{flag} {beyond}: {e}");
        }
        let e = serve(&["--artifacts", "/", "--record-ttl", &u64::MAX.to_string()]).unwrap_err();
        assert!(e.to_string().contains("use 1 to 604800 seconds"), "{e}");
        let node =
            |ttl: &str| parse_plasmd(["node", "--identity", "/tmp/x.key", "--record-ttl", ttl]);
        assert!(node(&max_ttl).is_ok());
        assert!(node(&u64::MAX.to_string()).is_err());
    }

    #[test]
    fn bad_values_name_the_culprit() {
        let e = serve(&["--artifacts", "/nonexistent-dir"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir"));
        let e = serve(&["--artifacts", "/", "--channel", "Bad"]).unwrap_err();
        assert!(e.to_string().contains("\"Bad\""));
        let e = serve(&["--artifacts", "/", "--bootstrap", "nope"]).unwrap_err();
        assert!(e.to_string().contains("nope"));
        let e = serve(&["--artifacts", "/", "--external-url", "ftp://x"]).unwrap_err();
        assert!(e.to_string().contains("http://"));
        let e = serve(&["--artifacts", "/", "--http-listen", "8080"]).unwrap_err();
        assert!(e.to_string().contains("IP:PORT"));
        let e = serve(&["--frobnicate"]).unwrap_err();
        assert!(e.to_string().contains("frobnicate"));
        assert!(parse_plasmd(["id", "--artifacts", "/"]).is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("plasmd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("plasmd.toml");
        std::fs::write(
            &file,
            "[provider]\nartifacts = \"/\"\nname = \"rack\"\nchannels = [\"stable\"]\n\
             [provider.dht]\nrecord_ttl = 60\nrefresh_interval = 30\n[http]\nlisten = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = serve(&["--config", path]).unwrap();
        assert_eq!(c.provider_name.as_deref(), Some("rack"));
        assert_eq!(c.channels, vec!["stable"]);
        assert_eq!(c.dht.refresh_interval, Duration::from_secs(30));
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9");
        let c = serve(&["--config", path, "--http-listen", "127.0.0.1:10"]).unwrap();
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:10");

        std::fs::write(&file, "[provider]\nartifacts = \"/\"\nbogus = 1\n").unwrap();
        let e = serve(&["--config", path]).unwrap_err().to_string();
        assert!(e.contains("bogus") && !e.contains('\n'), "{e}");
        std::fs::write(&file, "[provider.dht]\nrecord_ttl = \"long\"\n").unwrap();
        let e = serve(&["--config", path]).unwrap_err().to_string();
        assert!(e.contains("record_ttl"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn discover_timeout_is_bounded() {
        let with = |t: &str| lookup(&["--timeout", t]);
        assert!(with(&MAX_DISCOVER_TIMEOUT.to_string()).is_ok());
        for bad in ["0", "86401", "18446744073709551615"] {
            let e = with(bad).unwrap_err();
            assert!(
                e.to_string().contains("use 1 to 86400 seconds"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn discover_needs_channel_arch_and_a_peer() {
        assert!(
            parse_discover(["--arch", "arm64", "--bootstrap", "/ip4/127.0.0.1/tcp/1"]).is_err()
        );
        assert!(parse_discover(["--channel", "stable", "--arch", "arm64"]).is_err());
        let ok = lookup(&["--timeout", "5"]).unwrap();
        assert!(matches!(ok, DiscoverCommand::Run(c) if c.timeout == Duration::from_secs(5)));
    }

    /// `phase-discover` of stable/arm64 through one peer, and `extra`.
    fn lookup(extra: &[&str]) -> Result<DiscoverCommand, ConfigError> {
        let mut a = vec![
            "--channel",
            "stable",
            "--arch",
            "arm64",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/4001",
        ];
        a.extend_from_slice(extra);
        parse_discover(a)
    }

    #[test]
    fn watch_leaves_a_config_files_state_alone() {
        // A board's config names its state directory (and would need a
        // release key for it); a watch with that config only looks.
        let path = std::env::temp_dir().join(format!("plasmd-watch-{}.toml", std::process::id()));
        std::fs::write(&path, "[discover]\nstate = \"/var/lib/phase\"\n").unwrap();
        let config = ["--config", path.to_str().unwrap()];
        let watch = lookup(&[&config[..], &["--watch"]].concat());
        let plain = lookup(&config);
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(watch, Ok(DiscoverCommand::Run(ref c)) if c.state.is_none() && c.watch.is_some()),
            "{watch:?}"
        );
        assert!(plain
            .unwrap_err()
            .to_string()
            .contains("needs --release-key"));
    }
}
