"""One verdict record per test sample, in the JSON Lines form ``certify suite`` writes, so that
``certify report`` can show a certified-accuracy run sample by sample.

Per sample (the L-inf ball of radius ``eps`` around it, clipped to the pixel domain):

* **violated** when the clean prediction is wrong or PGD finds an adversarial input, and that
  input *replays in onnxruntime* on the model file (otherwise: unknown);
* **holds** when one of certify's engines proves robustness (:func:`certify_sample`);
* **unknown** otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from certify.network import Network
from certify.replay import OnnxOracle, replay
from certify.train.evaluate import EvalOptions, certify_sample, pgd_attack, robustness_problem


def sample_records(model_path: Path, network: Network, x: Tensor, y: Tensor, eps: float,
                   options: EvalOptions = EvalOptions()) -> Iterator[dict[str, Any]]:
    """Yield one record per sample of ``x: [N, *in]`` with labels ``y: [N]``."""
    oracle = OnnxOracle(Path(model_path))
    net32 = network.to(dtype=torch.float32)
    image_shape = tuple(d for d in network.input_shape if d != 1) or network.input_shape
    for i in range(len(x)):
        start = time.perf_counter()
        x0 = x[i:i + 1].float()
        label = int(y[i])
        problem = robustness_problem(network, x0[0].numpy(), label, eps, options.domain,
                                     name=f"sample {i} (label {label})")
        with torch.no_grad():
            clean_ok = int(net32(x0).flatten(1).argmax(1)) == label
        candidate = x0 if not clean_ok else pgd_attack(lambda t: net32(t).flatten(1), x0, y[i:i + 1], eps,
                                                       options.pgd_steps, options.domain)
        with torch.no_grad():
            broken = int(net32(candidate).flatten(1).argmax(1)) != label
        record: dict[str, Any] = {"onnx": str(model_path), "vnnlib": problem.name, "status": "unknown",
                                  "engine": "", "reason": "", "counterexample": None}
        if broken:
            cex = replay(oracle, problem, candidate[0].numpy())
            if cex is not None:
                record.update(status="violated", engine="clean" if not clean_ok else "pgd",
                              counterexample={"x": cex.x.reshape(-1).tolist(), "y": cex.y.tolist(),
                                              "replayed": True},
                              # display copies, rounded (the exact replayed point is counterexample.x)
                              lifted={"input": np.round(cex.x.astype(np.float64), 4).reshape(image_shape).tolist(),
                                      "original": np.round(x0[0].numpy().astype(np.float64), 4)
                                      .reshape(image_shape).tolist(),
                                      "label": label, "predicted": int(np.argmax(cex.y))})
            else:
                record["reason"] = "PGD point did not replay in onnxruntime"
        else:
            engine = certify_sample(network, x0[0].numpy(), label, eps, options)
            if engine is not None:
                record.update(status="holds", engine=engine)
            else:
                record["reason"] = f"not proved by {', '.join(options.engines)} in {options.seconds_per_sample:g} s"
        record["seconds"] = round(time.perf_counter() - start, 4)
        yield record
