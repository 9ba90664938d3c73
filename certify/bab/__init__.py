"""Branch and bound: the machinery behind the ``bab`` engine (:mod:`certify.engines.bab`).

* :mod:`certify.bab.common`: options, the falsification check shared by both split modes;
* :mod:`certify.bab.input_split`: batched input-box splitting (low-dimensional inputs);
* :mod:`certify.bab.relu_split`: batched ReLU splitting with beta-CROWN bounds and an exact LP
  at fully split leaves (high-dimensional inputs).
"""
