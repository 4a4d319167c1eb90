"""Tests of the IoT Hub emulator device side (MQTT over TLS)."""
