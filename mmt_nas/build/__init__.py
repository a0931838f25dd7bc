"""Building MNN models here (torch → ONNX → MNN): every op of a space, and whole models to time end to end.

- :mod:`~mmt_nas.build.export`: one torch module to ``.mnn`` (:func:`export_to_mnn`);
- :mod:`~mmt_nas.build.generate`: an ops folder from an op space (:func:`generate_ops_list`);
- :mod:`~mmt_nas.build.measure`: a model exported and timed end to end (:func:`measure_latency`).

Nothing is imported here; these modules import torch when they run, not when imported.
"""
