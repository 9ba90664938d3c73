"""Branch and bound: the machinery behind the ``bab`` engine (:mod:`certify.engines.bab`).

* :mod:`certify.bab.options`: the engine's options, in groups;
* :mod:`certify.bab.domains`: batches of domains and the pool of open ones;
* :mod:`certify.bab.common`: counters, verdicts, the domain cap, the bounds' candidate points;
* :mod:`certify.bab.input_split`: batched input-box splitting (low-dimensional inputs);
* :mod:`certify.bab.neuron_split`: batched neuron splitting (ReLUs and any other elementwise
  activation) with beta-CROWN bounds (high-dimensional inputs);
* :mod:`certify.bab.leaf`: the exact LP of a fully split affine-and-ReLU domain.
"""
