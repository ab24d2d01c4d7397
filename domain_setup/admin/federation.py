"""`federation enable`: let this hospital act as a secure-aggregation party.

The hospital's X25519 private key becomes a private asset of a dataset named
``aggregation`` (its mock is 32 random bytes, not the key). An approved
aggregation plan takes it as input, opens the shares sealed to this hospital and
releases only their sum; the key itself never leaves the domain.
"""

from __future__ import annotations

import os

import numpy as np

from common.aggregation import AGGREGATION_ASSET, AGGREGATION_DATASET
from common import syft_compat
from common.errors import DomainError
from domain_setup.aggregation_key import load_or_create_private_key, public_key_text



def enable_aggregation(session) -> str:
    """Upload the aggregation key asset (once); returns the public key text."""
    import syft as sy

    client = session.client()
    if any(d.name == AGGREGATION_DATASET for d in client.datasets.get_all()):
        return public_key_text(session.state)
    private = np.frombuffer(load_or_create_private_key(session.state), dtype=np.uint8).copy()
    mock = np.frombuffer(os.urandom(private.size), dtype=np.uint8).copy()
    dataset = sy.Dataset(name=AGGREGATION_DATASET,
                         summary="This hospital's secure-aggregation key (X25519)",
                         description="Private: the key that opens shares sealed to this hospital. "
                                     "Mock: random bytes. Only the vetted aggregation plan may use it.")
    dataset.add_asset(sy.Asset(name=AGGREGATION_ASSET, data=private, mock=mock))
    with syft_compat.muted():
        result = client.upload_dataset(dataset)
    if syft_compat.is_syft_error(result):
        raise DomainError(f"could not publish the aggregation key: {syft_compat.error_text(result)}")
    session.audit("federation.enable", target=AGGREGATION_DATASET)
    return public_key_text(session.state)
