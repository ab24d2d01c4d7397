"""Names both roles use for a hospital's secure-aggregation key asset."""

AGGREGATION_DATASET = "aggregation"
AGGREGATION_ASSET = "x25519_private"
