"""Installer tools: what an installer runs on site before leaving.

Lives here: `checks` (`gateway check`: each device and the broker, live), `provision`
(identity and files for a new gateway), `firstboot` (the first-boot unit's work) and `firstboot_check` (its checks of the card's
folder, the config validated in a child process).

May import: every `gateway` package except `gateway.cli`.
"""
