SUMMARY = "plasmd: netboot artifact provider for ARM64 SBC fleets"
DESCRIPTION = "Serves boot artifacts over HTTP and advertises them in a libp2p \
Kademlia DHT; finds the netboot partition by label and pets the hardware \
watchdog while healthy."
LICENSE = "MIT | Apache-2.0"
# The license statement is the `license` line of Cargo.toml.
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=86b31c7756a1a7962f28b62856ed4f05"

# Point this at your clone of the plasmd repository (e.g. in local.conf):
#   PLASMD_GIT_REPO = "/srv/src/plasmd"
PLASMD_GIT_REPO ??= "${TOPDIR}/../plasmd"
SRC_URI = "git://${PLASMD_GIT_REPO};protocol=file;branch=main"
SRCREV = "${AUTOREV}"
PV = "0.1.0+git"
S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd update-rc.d

# Crates from Cargo.lock (regenerate with image/yocto/gen-crates-inc or
# `bitbake -c update_crates plasmd`).
require ${BPN}-crates.inc

# Boards answer the firmware's own network boot (`plasmd serve --netboot`);
# about 100 KB more binary (README, "Binary size").
CARGO_BUILD_FLAGS:append = " --features netboot"

SYSTEMD_SERVICE:${PN} = "plasmd.service"
INITSCRIPT_NAME = "plasmd"
INITSCRIPT_PARAMS = "defaults 50"

do_install:append() {
    install -d ${D}${sysconfdir}/plasmd
    install -m 0644 ${S}/image/init/plasmd.toml ${D}${sysconfdir}/plasmd/plasmd.toml
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/image/init/plasmd.service ${D}${systemd_system_unitdir}/plasmd.service
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -d ${D}${sysconfdir}/init.d
        install -m 0755 ${S}/image/init/S50plasmd ${D}${sysconfdir}/init.d/plasmd
    fi
}

CONFFILES:${PN} = "${sysconfdir}/plasmd/plasmd.toml"
