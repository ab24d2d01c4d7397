"""Hospital side of PneumoSyft: the domain, its gate, and the admin's CLI."""
