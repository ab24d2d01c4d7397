"""Code both roles import: errors, models, training loop, secret sharing, sealing."""
