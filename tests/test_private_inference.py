"""Private inference (common/mpc): two computing parties and a dealer compute small_cnn's
logits on a shared image with a shared model. Correct against PyTorch to fixed-point
error; the secure ReLU is exact; everything a party receives looks uniform (the tests of
the secret sharing); a party alone or the dealer alone cannot reconstruct the image (tried,
beside a positive control: a party with the dealer can); unsupported models are refused;
the same run over a real TCP connection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.models import build_model
from common.mpc import compile_model, deal, prepare, private_predict_local, reveal, run_both
from common.mpc import ring
from common.mpc.channel import LocalChannel, SocketChannel, connect_pair, local_pair
from common.mpc.circuit import Step
from test_secret_sharing import looks_uniform


def model_and_weights(size: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("small_cnn", image_size=size).eval()
    return model, {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}


def images(n: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)


@pytest.mark.parametrize("size, batch", [(64, 3), (28, 2)])  # 28 px: odd sizes, ceil pooling
def test_private_logits_match_pytorch(size, batch):
    model, weights = model_and_weights(size)
    x = images(batch, size)
    got = private_predict_local("small_cnn", weights, x)
    want = model(torch.from_numpy(x)).detach().numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 2e-3
    assert (got.argmax(1) == want.argmax(1)).all()


def test_the_secure_relu_is_exact_at_the_edges():
    values = np.array([0, 1, -1, 2 ** 40, -(2 ** 40), 2 ** 61, -(2 ** 61), 12345, -12345],
                      dtype=np.int64).view(np.uint64).reshape(1, 1, 3, 3)
    step = Step("relu", "0", values.shape, values.shape)
    share0 = ring.Stream(bytes(32)).words("x", values.shape)
    out = run_both([step], [(share0, {}), (values - share0, {})], list(deal([step])),
                   list(local_pair()))
    relu = (out[0] + out[1]).view(np.int64)
    assert relu.ravel().tolist() == [max(v, 0) for v in values.view(np.int64).ravel().tolist()]


class Recording(LocalChannel):
    """A party's end that keeps everything it receives from the other party."""

    def __init__(self, end: LocalChannel):
        super().__init__(end._out, end._in)
        self.received: list[np.ndarray] = []

    def exchange(self, words: np.ndarray) -> np.ndarray:
        theirs = super().exchange(words)
        self.received.append(theirs)
        return theirs


def recorded_run(x: np.ndarray):
    """One run at 64 px with recording ends: (inputs, materials, ends, output shares)."""
    _, weights = model_and_weights(64)
    steps = compile_model("small_cnn", 64, batch=x.shape[0])
    inputs, materials = prepare(steps, x, weights)
    ends = [Recording(end) for end in local_pair()]
    return inputs, materials, ends, run_both(steps, inputs, materials, ends)


def test_everything_a_party_receives_looks_uniform():
    # an image far from uniform: a grey square (what a party sees must still look uniform)
    inputs, _, ends, outs = recorded_run(np.full((1, 1, 64, 64), 0.5, dtype=np.float32))
    for end, (image_share, weight_shares) in zip(ends, inputs):
        words = [w for w in end.received if w.max() > 1]  # openings of whole words
        bits = [w for w in end.received if w.max() <= 1]  # openings of one bit (the sign)
        assert looks_uniform(np.concatenate(words))
        flat_bits = np.concatenate(bits)
        assert abs(flat_bits.mean() - 0.5) < 4.5 * np.sqrt(0.25 / flat_bits.size)
        assert looks_uniform(np.concatenate([image_share.ravel(),
                                             *[w.ravel() for w in weight_shares.values()]]))
    assert np.abs(reveal(*outs)).max() < 100  # and the run was a real one


def _correlation(guess: np.ndarray, x: np.ndarray) -> float:
    return float(np.corrcoef(ring.decode(guess).ravel(), x.ravel())[0, 1])


def test_a_party_alone_or_the_dealer_alone_cannot_rebuild_the_image():
    x = np.random.default_rng(7).random((1, 1, 64, 64)).astype(np.float32)
    inputs, materials, ends, _ = recorded_run(x)
    x0 = inputs[0][0]
    a0 = materials[0].own("0/A", x.shape)
    a1 = materials[1].own("0/A", x.shape)  # the dealer made both halves
    e = x0 - a0 + ends[0].received[0][:x.size].reshape(x.shape)  # E = X - A, opened to party 0
    # party 0: its share, the opening E and its half of A
    for guess in (x0, e, e + a0):
        assert abs(_correlation(guess, x)) < 0.1
    # the dealer: both halves of A, nothing opened
    assert abs(_correlation(a0 + a1, x)) < 0.1
    # positive control: party 0 with the dealer (E + A) has the image: the attack code works
    assert np.abs(ring.decode(e + a0 + a1) - x).max() < 1e-4


def test_models_with_other_layers_are_refused():
    with pytest.raises(ValueError, match="supports small_cnn"):
        compile_model("resnet18", 64)


def test_the_same_run_over_a_tcp_connection():
    model, weights = model_and_weights(64, seed=3)
    x = images(1, 64, seed=4)
    steps = compile_model("small_cnn", 64, batch=1)
    channels = [SocketChannel(s) for s in connect_pair()]
    inputs, materials = prepare(steps, x, weights)
    try:
        outs = run_both(steps, inputs, materials, channels)
    finally:
        for channel in channels:
            channel.close()
    want = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(reveal(*outs) - want).max() < 2e-3
    rounds = sum(channels[0].rounds.values())
    assert rounds == sum(channels[1].rounds.values()) and 100 < rounds < 200


def test_an_answer_is_only_a_share_of_the_logits():
    """What a computing hospital answers passes the plan kind's contract: uint64 words of
    shape (X-rays, 2), nothing else."""
    from domain_setup.vetting.contract_parts import ContractContext, ContractViolation
    from domain_setup.vetting.registry import check_result

    context = ContractContext(n_samples=2)
    check_result("private_inference", {"output_share": np.zeros((2, 2), np.uint64)}, context)
    for wrong in ({"output_share": np.zeros((2, 3), np.uint64)},
                  {"output_share": np.zeros((2, 2), np.float64)},
                  {"output_share": np.zeros((2, 2), np.uint64), "image": np.zeros(4)}):
        with pytest.raises(ContractViolation):
            check_result("private_inference", wrong, context)
