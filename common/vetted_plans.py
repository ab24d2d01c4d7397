"""The hospital's vetted plans: the code the domain recognises by its source.

A request whose function is, token for token, one of these (whatever it is named)
is a catalogue plan: the domain checks its constants against a schema and its
inputs against the assets it must bind whole, and may approve it without a human
reading the code. Any other code is custom code and always waits for an admin.
Researchers import them through `scientist.plans`; the domain's catalogue
(`domain_setup/vetting/kinds/`) declares them. Changing a line here changes
what the catalogue accepts: review such a change like a policy change.
"""


def train_xray_plan(images, labels, config, initial_weights):
    """Train inside the domain; return the weights, per-epoch loss/accuracy and, with a
    validation_fraction, metrics of the received model on held-out images (else None)."""
    from common.training import train

    result = train(images, labels, **config, initial_weights=initial_weights or None)
    return {"weights": result["weights"], "history": result["history"],
            "n_samples": result["n_samples"], "validation": result.get("validation")}


def evaluate_xray_plan(images, labels, weights, config):
    """Evaluate weights on the hospital's held-out split; return aggregate metrics only."""
    from common.training import evaluate

    return {"metrics": evaluate(images, labels, weights, model=config["model"])}


def secure_train_xray_plan(images, labels, config, initial_weights, aggregator_keys,
                           aggregation_key):
    """Train, then seal the weights (times n / the round's total) as seeded shares for
    the round's parties, authenticated with this hospital's aggregation key."""
    from common.aggregation import RoundSpec, contribute, private_key_bytes
    from common.training import train

    spec = RoundSpec.from_constant(aggregator_keys)
    result = train(images, labels, **config, initial_weights=initial_weights or None)
    sealed = contribute(private_key_bytes(aggregation_key), result["weights"],
                        result["n_samples"], spec)
    return {"sealed_shares": sealed, "n_samples": result["n_samples"],
            "history": result["history"], "validation": result.get("validation")}


def aggregate_round_plan(aggregation_key, aggregator_keys, ciphertexts):
    """Open one contribution from every party of the round, verified, and release
    only their sum (the domain runs this itself for a round it took part in)."""
    from common.aggregation import RoundSpec, aggregate, private_key_bytes

    spec = RoundSpec.from_constant(aggregator_keys)
    return {"partial_sum": aggregate(private_key_bytes(aggregation_key), spec, ciphertexts),
            "n_shares": len(ciphertexts)}


def train_private_xray_plan(images, labels, config, initial_weights, privacy):
    """Train with DP-SGD; the domain sets privacy's delta, noise multiplier and the seed of
    the noise and of the batches for the epsilon the researcher asked for; return the
    weights and the epsilon spent, nothing un-noised (no loss or accuracy history)."""
    from common.dp_training import train_private

    result = train_private(images, labels, noise_multiplier=privacy["noise_multiplier"],
                           max_grad_norm=privacy["max_grad_norm"], delta=privacy["delta"],
                           noise_seed=privacy.get("noise_seed"),
                           **config, initial_weights=initial_weights or None)
    return {"weights": result["weights"], "n_samples": result["n_samples"],
            "privacy": {"epsilon": result["epsilon"], "delta": result["delta"]}}


def secure_train_private_xray_plan(images, labels, config, initial_weights, aggregator_keys,
                                   aggregation_key, privacy):
    """Train with DP-SGD (the domain's delta, noise and seed), then seal the weights as
    seeded shares for the round's parties; return the epsilon spent with them."""
    from common.aggregation import RoundSpec, contribute, private_key_bytes
    from common.dp_training import train_private

    spec = RoundSpec.from_constant(aggregator_keys)
    result = train_private(images, labels, noise_multiplier=privacy["noise_multiplier"],
                           max_grad_norm=privacy["max_grad_norm"], delta=privacy["delta"],
                           noise_seed=privacy.get("noise_seed"),
                           **config, initial_weights=initial_weights or None)
    sealed = contribute(private_key_bytes(aggregation_key), result["weights"],
                        result["n_samples"], spec)
    return {"sealed_shares": sealed, "n_samples": result["n_samples"],
            "privacy": {"epsilon": result["epsilon"], "delta": result["delta"]}}


def evaluate_private_xray_plan(images, labels, weights, config, privacy):
    """Count the held-out images by label and score bin; the domain adds the noise for
    the epsilon the researcher asked for and releases only metrics of the noisy counts."""
    from common.dp_metrics import evaluate_histogram

    return evaluate_histogram(images, labels, weights, model=config["model"])


def federated_job_xray_plan(images, labels, aggregation_key, config, initial_weights, job):
    """One round of a federated job (the request approves up to job["rounds"] of them):
    the domain calls it each round with the round's global model as initial_weights and
    the round's spec as job["round"]; train (with SCAFFOLD's control variates when the
    domain adds job["control"]), then seal the weights (and the control's step) for that
    round. A SCAFFOLD round's new client control goes back to the domain, never out."""
    from common.aggregation import RoundSpec, contribute, private_key_bytes
    from common.scaffold import scaffold_round, with_control
    from common.training import train

    spec = RoundSpec.from_constant(job["round"])
    control = job.get("control")
    if control is None:
        result = train(images, labels, **config, initial_weights=initial_weights or None)
        shared, client_control = result["weights"], None
    else:
        result = scaffold_round(images, labels, initial_weights,
                                server_control=control["server"],
                                client_control=control["client"], **config)
        shared = with_control(result["weights"], result["control_delta"])
        client_control = result["client_control"]
    return {"sealed_shares": contribute(private_key_bytes(aggregation_key), shared,
                                        result["n_samples"], spec),
            "n_samples": result["n_samples"], "history": result["history"],
            "validation": result.get("validation"), "client_control": client_control}


def federated_job_private_xray_plan(images, labels, aggregation_key, config, initial_weights,
                                    job, privacy):
    """One DP round of a federated job: DP-SGD (the domain's delta, noise and seed, charged
    each round) from the round's global model, then the weights sealed for the round."""
    from common.aggregation import RoundSpec, contribute, private_key_bytes
    from common.dp_training import train_private

    spec = RoundSpec.from_constant(job["round"])
    result = train_private(images, labels, noise_multiplier=privacy["noise_multiplier"],
                           max_grad_norm=privacy["max_grad_norm"], delta=privacy["delta"],
                           noise_seed=privacy.get("noise_seed"),
                           **config, initial_weights=initial_weights or None)
    return {"sealed_shares": contribute(private_key_bytes(aggregation_key), result["weights"],
                                        result["n_samples"], spec),
            "n_samples": result["n_samples"],
            "privacy": {"epsilon": result["epsilon"], "delta": result["delta"]}}


def private_inference_plan(model_share, service):
    """An inference service: with one other member of the federation, this hospital computes
    `service['model']` on X-rays that image holders share with it, on its share of the
    model holder's weights (`common.mpc`). Approved once; each query is served by the
    inference routes and charged to the image holder's query budget, never run as code."""
    from common.mpc.service import model_share_problems, service_problems

    problems = service_problems(service) or model_share_problems(model_share, service)
    if problems:
        raise ValueError("; ".join(problems))
    return {"output_share": None}  # each query's share comes from the inference routes
