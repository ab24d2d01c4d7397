"""What runs inside the hospital domain's server process, next to the private data:
app assembly, the JWT gate, the /pneumosyft routes, tokens, audit, permission
decisions, syft patches and the dispatch of approved code."""
