"""The MMT tool's front door for metering: :func:`meter_ops`.

It lives in :mod:`mmt_nas.device.meter`; this module, like it, needs only the base install (no torch).
"""

from __future__ import annotations

from mmt_nas.device.meter import meter_ops

__all__ = ["meter_ops"]
