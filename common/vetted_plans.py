"""The hospital's vetted plans: the code the domain recognises by its source.

A request whose function is, token for token, one of these (whatever it is named)
is a catalogue plan: the domain checks its constants against a schema and its
inputs against the assets it must bind whole, and may approve it without a human
reading the code. Any other code is custom code and always waits for an admin.
Researchers import them through `scientist.plans`; the domain's catalogue
(`domain_setup/catalogue.py`) fingerprints them. Changing a line here changes
what the catalogue accepts: review such a change like a policy change.
"""


def train_xray_plan(images, labels, config, initial_weights):
    """Train inside the domain; return the weights and per-epoch loss/accuracy."""
    from common.training import train

    result = train(images, labels, model=config["model"], epochs=config["epochs"],
                   lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights or None)
    return {"weights": result["weights"], "history": result["history"],
            "n_samples": result["n_samples"]}


def evaluate_xray_plan(images, labels, weights, config):
    """Evaluate weights on the hospital's held-out split; return aggregate metrics only."""
    from common.training import evaluate

    return {"metrics": evaluate(images, labels, weights, model=config["model"])}


def secure_train_xray_plan(images, labels, config, initial_weights, aggregator_keys):
    """Train, scale by the sample count, share among the aggregators, seal each share."""
    from common.training import train
    from common.secret_sharing import share_state_dict
    from common.sealing import key_from_text, seal_shares

    result = train(images, labels, model=config["model"], epochs=config["epochs"],
                   lr=config["lr"], batch_size=config["batch_size"], seed=config["seed"],
                   initial_weights=initial_weights or None)
    n_samples = result["n_samples"]
    public_keys = aggregator_keys["public_keys"]
    scaled = {name: value * n_samples for name, value in result["weights"].items()}
    shares = share_state_dict(scaled, len(public_keys))
    sealed = seal_shares(shares, [key_from_text(k) for k in public_keys])
    return {"sealed_shares": sealed, "n_samples": n_samples, "history": result["history"]}


def aggregate_shares_plan(aggregation_key, sealed_shares):
    """Open the shares sealed to this hospital and release only their sum."""
    import numpy as np
    from common.sealing import open_and_sum
    from common.wire import dumps

    # the key asset is 32 uint8; syft may hand it over widened, so narrow it explicitly
    private_key = np.asarray(aggregation_key).astype(np.uint8).tobytes()
    total = open_and_sum(sealed_shares["ciphertexts"], private_key)
    return {"partial_sum": dumps(total), "n_shares": len(sealed_shares["ciphertexts"])}


def train_private_xray_plan(images, labels, config, initial_weights, privacy):
    """Train with DP-SGD; the domain sets privacy's delta and noise multiplier for the
    epsilon the researcher asked for; return the weights, history and epsilon spent."""
    from common.dp_training import train_private

    result = train_private(images, labels, noise_multiplier=privacy["noise_multiplier"],
                           max_grad_norm=privacy["max_grad_norm"], delta=privacy["delta"],
                           model=config["model"], epochs=config["epochs"], lr=config["lr"],
                           batch_size=config["batch_size"], seed=config["seed"],
                           initial_weights=initial_weights or None)
    return {"weights": result["weights"], "history": result["history"],
            "n_samples": result["n_samples"],
            "privacy": {"epsilon": result["epsilon"], "delta": result["delta"]}}


def secure_train_private_xray_plan(images, labels, config, initial_weights, aggregator_keys,
                                   privacy):
    """Train with DP-SGD (the domain's delta and noise), scale by the sample count, share
    among the aggregators, seal each share; return the epsilon spent with them."""
    from common.dp_training import train_private
    from common.secret_sharing import share_state_dict
    from common.sealing import key_from_text, seal_shares

    result = train_private(images, labels, noise_multiplier=privacy["noise_multiplier"],
                           max_grad_norm=privacy["max_grad_norm"], delta=privacy["delta"],
                           model=config["model"], epochs=config["epochs"], lr=config["lr"],
                           batch_size=config["batch_size"], seed=config["seed"],
                           initial_weights=initial_weights or None)
    n_samples = result["n_samples"]
    public_keys = aggregator_keys["public_keys"]
    scaled = {name: value * n_samples for name, value in result["weights"].items()}
    shares = share_state_dict(scaled, len(public_keys))
    sealed = seal_shares(shares, [key_from_text(k) for k in public_keys])
    return {"sealed_shares": sealed, "n_samples": n_samples, "history": result["history"],
            "privacy": {"epsilon": result["epsilon"], "delta": result["delta"]}}


def evaluate_private_xray_plan(images, labels, weights, config, privacy):
    """Count the held-out images by label and score bin; the domain adds the noise for
    the epsilon the researcher asked for and releases only metrics of the noisy counts."""
    from common.dp_metrics import evaluate_histogram

    return evaluate_histogram(images, labels, weights, model=config["model"])
