"""Flower's side of bench_vs_flower.py, one client: the hospital's training plan on its partition.

Each SuperNode is started with ``--node-config 'data="PART.npz" torch-threads=N'``:
its partition (built by the bench with the upload's own `build_dataset`) and the torch
threads a PneumoSyft domain gets on this machine. The training configuration is the
researcher's `TrainingPlan.config()`, passed as JSON in the run config, and training is
`common.vetted_plans.train_xray_plan`, the very function a hospital domain runs for a
plain federated round. The repository root is on PYTHONPATH (flower_side.py sets it).

SecAgg+ runs through Flower's `secaggplus_mod`, applied only to the training messages
that carry SecAgg+ stages, so one ClientApp serves the plain and the secure runs.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from common.models import build_model
from common.vetted_plans import train_xray_plan

LOADED = time.perf_counter()  # this process has imported torch and the project's code


class XRayClient(NumPyClient):
    def __init__(self, images: np.ndarray, labels: np.ndarray, config: dict):
        self.images, self.labels, self.config = images, labels, config
        self.names = list(build_model(config["model"], image_size=images.shape[-1]).state_dict())

    def fit(self, parameters, config):
        started = time.perf_counter()
        result = train_xray_plan(self.images, self.labels, self.config,
                                 dict(zip(self.names, parameters)))
        # one line for bench_vs_flower.py's account of where a Flower round's time goes
        print(f"[pneumosyft-bench] train {time.perf_counter() - started:.3f} s "
              f"(imports done {started - LOADED:.3f} s before)", flush=True)
        return [result["weights"][name] for name in self.names], int(result["n_samples"]), {}


def client_fn(context: Context):
    torch.set_num_threads(int(context.node_config["torch-threads"]))
    with np.load(str(context.node_config["data"]), allow_pickle=False) as part:
        images, labels = part["images"], part["labels"]
    return XRayClient(images, labels, json.loads(str(context.run_config["plan"]))).to_client()


def secaggplus_when_asked(msg: Message, context: Context, call_next) -> Message:
    """Flower's `secaggplus_mod` for SecAgg+ training messages; others pass through."""
    if (msg.metadata.message_type == MessageType.TRAIN
            and RECORD_KEY_CONFIGS in msg.content.config_records):
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(client_fn=client_fn, mods=[secaggplus_when_asked])
