"""Configuration: the YAML file's models, its loading and validation, and the CLI option.

Lives here: `model` (pydantic models of the core sections), `load` (`load_config`, every
problem with file:line, read by the driver kit's `yamlsource` and `problems`), `tlsfiles` (TLS files checked as the uplink will load them), `cli` (`--config` option).

May import: `gateway.sdk`, `gateway.storage.sqlitestore` (for `SyncMode`), and the
`settings` module of each feature package (alarms, notify, security, sinks, web,
wellness), which import only `gateway.sdk`.  Nothing here
connects anywhere.  The names below are the public API, re-exported for callers.
"""

from gateway.config.load import (
    ConfigError,
    conflicting_devices,
    device_conflicts,
    load_config,
    paths_in,
    pydantic_problems,
    validate_pruned,
)
from gateway.config.model import (
    CONFIG_VERSION,
    BrokerConfig,
    ClockCheck,
    DeviceConfig,
    GatewayConfig,
    LoadedConfig,
    LogFormat,
    MqttProtocol,
    SyncMode,
)
from gateway.sdk.secrets import SecretRef

__all__ = [
    "CONFIG_VERSION",
    "BrokerConfig",
    "ClockCheck",
    "ConfigError",
    "DeviceConfig",
    "GatewayConfig",
    "LoadedConfig",
    "LogFormat",
    "MqttProtocol",
    "SecretRef",
    "SyncMode",
    "conflicting_devices",
    "device_conflicts",
    "load_config",
    "paths_in",
    "pydantic_problems",
    "validate_pruned",
]
