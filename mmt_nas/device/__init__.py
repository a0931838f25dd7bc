"""What runs on the device with the base install (MNN, numpy, PyYAML; never torch or scikit-learn).

- :mod:`~mmt_nas.device.timing`: an MNN session and the one timing loop (:func:`time_model`);
- :mod:`~mmt_nas.device.facts`: the device's facts (CPU, cores, MNN version) a table records;
- :mod:`~mmt_nas.device.profile`: per-op times in context, hot and cold (:func:`profile_model`);
- :mod:`~mmt_nas.device.rounds`, :mod:`~mmt_nas.device.sentinel`, :mod:`~mmt_nas.device.state`: shuffled rounds,
  the sentinel op, and the device's activity while metering;
- :mod:`~mmt_nas.device.meter`: metering an ops folder into a table (:func:`meter_ops`);
- :mod:`~mmt_nas.device.endtoend`: timing whole models end to end, interleaved.

Nothing is imported here.
"""
