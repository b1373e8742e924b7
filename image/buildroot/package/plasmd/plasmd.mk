################################################################################
#
# plasmd
#
################################################################################

PLASMD_VERSION = 0.1.0
# The source is this repository: the external tree lives in image/buildroot.
PLASMD_SITE = $(BR2_EXTERNAL_PLASMD_PATH)/../..
PLASMD_SITE_METHOD = local
PLASMD_LICENSE = MIT or Apache-2.0
PLASMD_INIT_DIR = $(BR2_EXTERNAL_PLASMD_PATH)/../init
# Boards answer the firmware's own network boot (`plasmd serve --netboot`);
# about 100 KB more binary (README, "Binary size").
PLASMD_CARGO_BUILD_OPTS = --features netboot

define PLASMD_INSTALL_CONFIG
	$(INSTALL) -D -m 0644 $(PLASMD_INIT_DIR)/plasmd.toml \
		$(TARGET_DIR)/etc/plasmd/plasmd.toml
	$(INSTALL) -d -m 0700 $(TARGET_DIR)/var/lib/plasmd
endef
PLASMD_POST_INSTALL_TARGET_HOOKS += PLASMD_INSTALL_CONFIG

define PLASMD_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(PLASMD_INIT_DIR)/S50plasmd \
		$(TARGET_DIR)/etc/init.d/S50plasmd
endef

define PLASMD_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(PLASMD_INIT_DIR)/plasmd.service \
		$(TARGET_DIR)/usr/lib/systemd/system/plasmd.service
endef

$(eval $(cargo-package))
