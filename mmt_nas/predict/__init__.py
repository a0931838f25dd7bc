"""Predicting a model's latency from a table.

- :mod:`~mmt_nas.predict.predictor`: :class:`LatencyPredictor` and its :class:`Prediction`;
- :mod:`~mmt_nas.predict.cache`: the cache state of an op in a model (hot, cold);
- :mod:`~mmt_nas.predict.fallback`: the regression fallback for ops the table lacks;
- :mod:`~mmt_nas.predict.calibration`: the in-context calibration;
- :mod:`~mmt_nas.predict.intervals`: prediction intervals;
- :mod:`~mmt_nas.predict.decisions`: which models to measure next, near a budget.

Nothing is imported here; none of these imports torch or scikit-learn at import.
"""
