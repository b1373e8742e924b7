//! Answering the firmware's own network boot (issue 20, in progress): what
//! a board with nothing on it asks for before any plasmd code runs on it.
//!
//! - [`proxy`]: the ProxyDHCP answer to a network-boot client (which file,
//!   from where, never an address);
//! - [`tftp`]: a read-only TFTP server (its packets in `tftp::packet`).
//!
//! Not here yet: the DHCP sockets, UEFI HTTP boot and the wiring into
//! `plasmd serve --netboot`; until then nothing listens for firmware.

pub mod proxy;
pub mod tftp;
