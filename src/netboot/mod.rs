//! Answering the firmware's own network boot (issue 20, in progress): what
//! a board with nothing on it asks for before any plasmd code runs on it.
//!
//! - [`tftp`]: a read-only TFTP server (its packets in `tftp::packet`).
//!
//! Not here yet: ProxyDHCP, the TFTP transfers themselves, UEFI HTTP boot
//! and the wiring into `plasmd serve --netboot`. Nothing in this module
//! listens on any port.

pub mod tftp;
