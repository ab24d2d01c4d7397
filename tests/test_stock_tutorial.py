"""PySyft's own model-training tutorial (notebooks/tutorials/model-training/ in OpenMined's
repository), followed step for step with stock syft 0.9.5 clients, only the login changed:
the data owner uploads a dataset with a mock; the data scientist explores it, finds the
private data refused, binds `asset.pointer`s in `sy.ExactMatch`, sends a `sy.Project` with
the code request; the data owner approves it; the data scientist runs it and `.get_from`s
the result. The data is not MNIST (nothing is downloaded here): 240 random 28x28 "digits"
with one-hot labels, and the network is smaller than the tutorial's, so the test is quick.

Two things of this domain show on the way, both as the README says: the dataset must be
listed for the researcher's group in permissions.yaml (datasets are not open to every
account: the session hospital lists "MNIST", conftest.session_policies), and the code is
custom code, so the approval carries an override with a reason (registered as `review
approve --override --reason` does) before `request.approve()`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import RESEARCHER, TUTORIAL_DATASET

pytestmark = pytest.mark.domain
N, PIXELS, CLASSES = 240, 28 * 28, 10


def stock_login(url: str, token: str, email: str, password: str):
    """A stock syft 0.9.5 client, logged in the way PySyft's tutorials log in, with the
    domain's token in the header (the one change)."""
    from syft.client.client import HTTPConnection

    connection = HTTPConnection(url=url, headers={"Authorization": f"Bearer {token}"})
    return connection.get_client_type().unwrap()(connection=connection).login(
        email=email, password=password)


def mnist_3_linear_layers_torch(mnist_images, mnist_labels):
    """The tutorial's shape of plan: imports inside, a small torch network trained with SGD,
    training accuracies and the weights returned (as numpy: results are plain data here)."""
    import torch
    from torch import nn

    x = torch.as_tensor(mnist_images, dtype=torch.float32)
    y = torch.as_tensor(mnist_labels, dtype=torch.float32).argmax(dim=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train_accs = []
    for _ in range(5):
        correct = 0
        for batch in torch.randperm(len(x)).split(16):
            optimizer.zero_grad()
            logits = model(x[batch])
            nn.functional.cross_entropy(logits, y[batch]).backward()
            optimizer.step()
            correct += int((logits.argmax(dim=1) == y[batch]).sum())
        train_accs.append(correct / len(x))
    return train_accs, {name: value.detach().numpy() for name, value in
                        model.state_dict().items()}


def test_pysyfts_model_training_tutorial_runs_with_a_stock_client(hospital, tmp_path):
    import syft as sy

    domain = hospital
    rng = np.random.default_rng(0)
    digits = rng.integers(0, CLASSES, N)
    images = (rng.random((N, PIXELS)) * 0.2).astype(np.float32)
    for stripe in range(50):  # each class lights its own stripe: something to learn
        images[np.arange(N), digits * 70 + stripe] = 1.0
    labels = np.eye(CLASSES, dtype=np.float32)[digits]

    # 00: the data owner uploads the dataset, with a mock of the same shape
    admin_email = domain.state.load_config().admin_email
    owner_token, _ = domain.admin.issue_token(admin_email, ttl="1h")
    do_client = stock_login(domain.url, owner_token, admin_email, domain.state.admin_password())
    dataset = sy.Dataset(name=TUTORIAL_DATASET, description="hand-written digits (random stand-ins)",
                         summary="images and one-hot labels")
    dataset.add_contributor(name="Hospital Admin", email=admin_email, note="uploaded it")
    dataset.add_asset(sy.Asset(name="mnist_data", description="28x28 images, flattened",
                               data=images, mock=rng.random((N, PIXELS)).astype(np.float32)))
    dataset.add_asset(sy.Asset(name="mnist_labels", description="one-hot labels", data=labels,
                               mock=np.eye(CLASSES, dtype=np.float32)[rng.integers(0, 10, N)]))
    assert not isinstance(do_client.upload_dataset(dataset), sy.SyftError)

    # 01: the data scientist explores, is refused the private data, submits a project
    connection = json.loads(domain.researcher_file(RESEARCHER, tmp_path / "ada.json").read_text())
    ds_client = stock_login(connection["url"], connection["token"], connection["email"],
                            connection["password"])
    mnist = [d for d in ds_client.datasets.get_all() if d.name == TUTORIAL_DATASET][0]
    training_images, training_labels = mnist.assets["mnist_data"], mnist.assets["mnist_labels"]
    assert training_images.data is None  # "You have no access to the private data"
    assert training_images.mock.shape == (N, PIXELS)
    images_pointer, labels_pointer = training_images.pointer, training_labels.pointer
    assert not np.array_equal(np.asarray(images_pointer), images)  # a pointer is not data

    function = sy.syft_function(
        input_policy=sy.ExactMatch(mnist_images=images_pointer, mnist_labels=labels_pointer),
        output_policy=sy.SingleExecutionExactOutput())(mnist_3_linear_layers_torch)
    new_project = sy.Project(name="Training a 3-layer torch network on MNIST",
                             description="the tutorial's flow", members=[ds_client])
    new_project.create_code_request(obj=function, client=ds_client)
    project = new_project.send()
    assert not isinstance(project, sy.SyftError), project

    # 02: the data owner reviews and approves (custom code: with an override and a reason)
    request = [p for p in do_client.projects if p.name == project.name][0].requests[0]
    assert request.changes[0].code.service_func_name == "mnist_3_linear_layers_torch"
    domain.admin.session.request("POST", f"/pneumosyft/requests/{request.id.no_dash}/override",
                                 json={"reason": "PySyft tutorial flow"})
    assert not isinstance(request.approve(), sy.SyftError)

    # 03: the data scientist runs it on the private data and downloads the result
    result = ds_client.code.mnist_3_linear_layers_torch(mnist_images=training_images,
                                                         mnist_labels=training_labels)
    train_accs, params = result.get_from(ds_client)
    assert len(train_accs) == 5 and train_accs[-1] > 0.5  # it learned the private digits
    assert sorted(params) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    assert params["0.weight"].shape == (64, PIXELS)
    executions = [e for e in domain.admin.audit(action="execution")
                  if e.get("function") == "mnist_3_linear_layers_torch"]
    assert executions and executions[-1]["outcome"] == "ok" and \
        executions[-1]["plan"] == "custom"
