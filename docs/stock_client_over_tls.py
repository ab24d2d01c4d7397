"""A stock syft 0.9.5 client on a PneumoSyft domain that serves HTTPS (README, "TLS").

    python docs/stock_client_over_tls.py CONNECTION_FILE

Only syft and the standard library: the certificate in the connection file becomes the only
CA this process trusts (so the server must present exactly it, for the address in the URL),
and the token rides in the header of every request.
"""
import json
import os
import sys
import tempfile
from urllib.parse import urlparse

details = json.load(open(sys.argv[1]))
bundle = os.path.join(tempfile.mkdtemp(), "domain.pem")
with open(bundle, "w") as handle:
    handle.write(details["tls_certificate"])
os.environ["REQUESTS_CA_BUNDLE"] = bundle  # before syft sends anything

from syft.client.client import HTTPConnection  # noqa: E402
from syft.types.server_url import ServerURL  # noqa: E402

# syft 0.9.5 puts every https URL on port 443 when it copies one; keep the domain's port
ServerURL.__copy__ = lambda u: ServerURL(protocol=u.protocol, host_or_ip=u.host_or_ip,
                                         port=u.port, path=u.path, query=u.query)
url = urlparse(details["url"])
connection = HTTPConnection(url=ServerURL(protocol="https", host_or_ip=url.hostname,
                                          port=url.port or 443),
                            headers={"Authorization": f"Bearer {details['token']}"})
client = connection.get_client_type().unwrap()(connection=connection).login(
    email=details["email"], password=details["password"])
print("datasets:", ", ".join(d.name for d in client.datasets.get_all()))
