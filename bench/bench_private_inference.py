"""Private inference (common/mpc): one pneumonia prediction on a secret-shared 64 px X-ray
with a secret-shared small_cnn, the two computing parties in processes of their own over a
loopback TCP connection (one thread each), the dealer in this process.

Measured in the same run: the latency of one private prediction (preprocessing by the
dealer, then the online phase: computation, and communication with its bytes and rounds per
layer kind), the same prediction through three live domains (two compute, one deals), the throughput of a batch of 100, the agreement of private and plaintext labels
and AUC on 1,000 held-out synthetic X-rays, and beside it the plaintext model (one thread)
and CrypTen 0.4.1 (bench/crypten_side.py in bench/.crypten-venv, `make bench-crypten`) on
the same model, weights and image, with its trusted third party as the dealer.

    .venv/bin/python bench/bench_private_inference.py [--train 2400] [--test 1000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common.models import build_model  # noqa: E402
from common.mpc import compile_model, deal, prepare, private_predict_local, reveal  # noqa: E402
from common.mpc.channel import SocketChannel, connect_pair  # noqa: E402
from common.mpc.party import Party  # noqa: E402
from common.training import train  # noqa: E402
from datasets.xray.synthetic import generate  # noqa: E402

SIZE = 64
CRYPTEN_PYTHON = Path(__file__).resolve().parent / ".crypten-venv" / "bin" / "python"


def party_main(index, sock, steps, inputs, material, conn) -> None:
    """A computing party's process: wait for the start, run, report."""
    torch.set_num_threads(1)
    channel = SocketChannel(sock)
    party = Party(index, channel, material)
    conn.send("ready")
    conn.recv()
    started = time.perf_counter()
    out = party.run(steps, *inputs)
    online = time.perf_counter() - started
    conn.send({"out": out, "online": online, "compute": dict(party.compute_seconds),
               "rounds": dict(channel.rounds), "bytes": dict(channel.bytes_sent)})
    channel.close()


def private_run(steps, images: np.ndarray, weights: dict) -> dict:
    """One private prediction with the parties in two processes: timings and logits."""
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    inputs, _ = prepare(steps, images, weights)
    sharing = time.perf_counter() - started
    started = time.perf_counter()
    materials = deal(steps)
    dealing = time.perf_counter() - started
    sockets = connect_pair()
    pipes = [context.Pipe() for _ in (0, 1)]
    processes = [context.Process(target=party_main, args=(i, sockets[i], steps, inputs[i],
                                                            materials[i], pipes[i][1]))
                 for i in (0, 1)]
    for process in processes:
        process.start()
    for sock in sockets:
        sock.close()
    for parent, _ in pipes:
        assert parent.recv() == "ready"
    started = time.perf_counter()
    for parent, _ in pipes:
        parent.send("go")
    reports = [parent.recv() for parent, _ in pipes]
    online = time.perf_counter() - started
    for process in processes:
        process.join(timeout=60)
    return {"sharing": sharing, "dealing": dealing, "online": online,
            "material_bytes": materials[1].nbytes() + 32, "reports": reports,
            "logits": reveal(reports[0]["out"], reports[1]["out"])}


def trained_weights(n: int) -> dict:
    images, labels = generate(n, size=SIZE, seed=11)
    result = train(images, labels, model="small_cnn", epochs=3, batch_size=64, seed=0)
    return {k: np.asarray(v, dtype=np.float64) for k, v in result["weights"].items()}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def crypten_latency(weights: dict, image: np.ndarray, passes: int) -> dict | None:
    if not CRYPTEN_PYTHON.exists():
        return None
    with tempfile.TemporaryDirectory() as work:
        source, target = Path(work) / "in.npz", Path(work) / "out.json"
        np.savez(source, images=image.astype(np.float32),
                 **{k: v.astype(np.float32) for k, v in weights.items()})
        done = subprocess.run([str(CRYPTEN_PYTHON), str(Path(__file__).parent / "crypten_side.py"),
                               str(source), str(target), "--passes", str(passes)],
                              capture_output=True, text=True, timeout=900,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        if done.returncode != 0 or not target.exists():
            print(f"CrypTen failed: {done.stderr.strip().splitlines()[-1:]}")
            return None
        return json.loads(target.read_text())


def domain_latency(weights: dict, image: np.ndarray, passes: int) -> dict:
    """The same prediction through three live domains on loopback (two compute, one deals):
    offered, approved by each admin, then asked `passes` times; the seconds of each step."""
    from demos.local_domain import TRUSTED, join_federation, start_domains
    from domain_setup import PROJECT_ROOT
    from scientist.federated import join
    from scientist.inference import PrivateInference, offer_model

    with tempfile.TemporaryDirectory(prefix="pneumosyft-inference-") as work:
        root = Path(work)
        domains = start_domains(
            [(name, root / f"h{i}") for i, name in enumerate(("St Mary", "Royal Infirmary",
                                                              "County General"))],
            prepare=lambda i, d: d.cli("accounts", "apply",
                                       str(PROJECT_ROOT / "policies" / "accounts.yaml")),
            extra_args=TRUSTED)
        try:
            join_federation(domains)
            hospitals = [join(str(d.researcher_file("ada@pneumosyft-research.org",
                                                    root / f"ada-{i}.json")))
                         for i, d in enumerate(domains)]
            offered = offer_model(hospitals[:2], dealer=hospitals[2].name, weights=weights,
                                  image_size=SIZE, queries=passes + 1, reason="benchmark")
            for domain, submission in zip(domains, offered):
                domain.admin.approve(submission.request_id)
            inference = PrivateInference(hospitals[:2], hospitals[2], offered, image_size=SIZE)
            inference.predict(image)  # warm: the first query imports and compiles on each side
            answers = []
            for _ in range(passes):
                started = time.perf_counter()
                answer = inference.predict(image)
                answers.append({**answer.seconds, "total": time.perf_counter() - started,
                                "logits": answer.logits})
            return {k: statistics.median(a[k] for a in answers)
                    for k in ("share", "dealer", "computing hospitals", "total")} | {
                "logits": answers[-1]["logits"]}
        finally:
            for domain in domains:
                domain.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2400, help="training images")
    parser.add_argument("--test", type=int, default=1000, help="held-out images compared")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"training small_cnn on {args.train} synthetic X-rays at {SIZE} px ...", flush=True)
    weights = trained_weights(args.train)
    model = build_model("small_cnn", image_size=SIZE).eval()
    model.load_state_dict({k: torch.from_numpy(v).float() for k, v in weights.items()})
    test_images, test_labels = generate(args.test, size=SIZE, seed=12)
    pixels = test_images.astype(np.float32) / 255.0

    # agreement on the held-out set (parties in threads: the same protocol, faster to run)
    private = np.concatenate([private_predict_local("small_cnn", weights, pixels[i:i + 100])
                              for i in range(0, len(pixels), 100)])
    with torch.no_grad():
        plain = model(torch.from_numpy(pixels)).numpy()
    same = float((private.argmax(1) == plain.argmax(1)).mean())
    private_auc = auc(private[:, 1] - private[:, 0], test_labels)
    plain_auc = auc(plain[:, 1] - plain[:, 0], test_labels)

    one = pixels[:1]
    steps = compile_model("small_cnn", SIZE, batch=1)
    runs = [private_run(steps, one, weights) for _ in range(args.passes)]
    with torch.no_grad():
        plain_seconds = []
        for _ in range(20):
            started = time.perf_counter()
            model(torch.from_numpy(one))
            plain_seconds.append(time.perf_counter() - started)
    batch = private_run(compile_model("small_cnn", SIZE, batch=100), pixels[:100], weights)
    crypten = crypten_latency(weights, one, args.passes)
    live = domain_latency(weights, one, args.passes)

    med = statistics.median
    total = [r["dealing"] + r["online"] for r in runs]
    best = runs[int(np.argsort(total)[len(total) // 2])]
    print(f"\nagreement on {args.test} held-out X-rays: {same:.1%} identical labels; AUC private "
          f"{private_auc:.4f} vs plaintext {plain_auc:.4f} (difference "
          f"{abs(private_auc - plain_auc):.4f}); largest logit difference "
          f"{np.abs(private - plain).max():.5f}")
    print(f"one private prediction ({SIZE} px, small_cnn), median of {args.passes}: "
          f"{med(total):.3f} s = dealer {med(r['dealing'] for r in runs):.3f} s + online "
          f"{med(r['online'] for r in runs):.3f} s (input sharing {med(r['sharing'] for r in runs):.3f} s "
          f"at the holders); material {best['material_bytes'] / 1e6:.1f} MB to party 1, 32 bytes "
          f"to party 0")
    report = best["reports"][0]
    compute = sum(report["compute"].values())
    print(f"  online: computation {compute:.3f} s, communication and waiting "
          f"{best['online'] - compute:.3f} s; per layer kind (party 0):")
    for kind in ("conv", "maxpool", "relu", "avgpool", "linear"):
        print(f"    {kind:<8} rounds {report['rounds'].get(kind, 0):4d}  sent "
              f"{report['bytes'].get(kind, 0) / 1e6:7.2f} MB  compute "
              f"{report['compute'].get(kind, 0.0) * 1000:7.1f} ms")
    print(f"  rounds {sum(report['rounds'].values())}, sent by each party "
          f"{sum(report['bytes'].values()) / 1e6:.2f} MB")
    batch_total = batch["dealing"] + batch["online"]
    print(f"batch of 100: {batch_total:.2f} s ({100 / batch_total:.1f} X-rays/s; online only "
          f"{100 / batch['online']:.1f}/s)")
    print(f"plaintext model, one image, one thread: {med(plain_seconds) * 1000:.2f} ms "
          f"(private / plaintext {med(total) / med(plain_seconds):.0f}x)")
    print(f"through three live domains on loopback (HTTP, one exchange per round; dealer a third "
          f"domain): {live['total']:.3f} s = sharing {live['share']:.3f} + dealer "
          f"{live['dealer']:.3f} + the computing hospitals {live['computing hospitals']:.3f} s "
          f"(logits within {np.abs(live['logits'] - plain[:1]).max():.5f} of plaintext)")
    if crypten:
        theirs = med(crypten["seconds"])
        diff = np.abs(np.array(crypten["logits"]) - plain[:1]).max()
        print(f"CrypTen 0.4.1 (2 parties + its trusted third party, gloo over loopback, one "
              f"thread each): {theirs:.3f} s (logits within {diff:.4f} of plaintext); ratio "
              f"ours / CrypTen {med(total) / theirs:.2f} (goal <= 1.0)")
    else:
        print("CrypTen: not installed here (make bench-crypten sets up bench/.crypten-venv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
