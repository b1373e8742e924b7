include $(sort $(wildcard $(BR2_EXTERNAL_PLASMD_PATH)/package/*/*.mk))
