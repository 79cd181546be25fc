"""Notifiers that reach staff who are not looking at a screen (SMS through a modem).

Only the config model is imported here, so that `gateway.config` can use it without
importing pyserial's modem code; `gateway.notify.sms.attach_sms` wires a notifier in.
"""

from gateway.notify.settings import NotifyConfig, Recipient, SmsConfig

__all__ = ["NotifyConfig", "Recipient", "SmsConfig"]
