"""What ops a space or a model has.

- :mod:`~mmt_nas.space.opspace`: the op-space YAML (MMT's format), its expansion into :class:`OpSpec` s, loading
  user modules;
- :mod:`~mmt_nas.space.generic`: the generic op space (``mmt-nas sample --generic``);
- :mod:`~mmt_nas.space.ops`: tensor-function ops (``torch.cat``, ``+``, ``flatten``) as modules;
- :mod:`~mmt_nas.space.trace`: tracing a model into the ops MNN runs (:func:`parse_model`);
- :mod:`~mmt_nas.space.describe`: a model's op space and a traced op's record (:func:`space_from_model`).

Nothing is imported here: :mod:`~mmt_nas.space.opspace` needs PyYAML only, the tracer torch.
"""
