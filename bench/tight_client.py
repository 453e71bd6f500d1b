"""The floor: a tight ACME client with the `acme` library, nothing around it (no
store, no checks, no config). It orders COUNT certificates from an always-valid pebble,
one after another; several of these processes at once measure the CA's ceiling.

Usage: tight_client.py DIRECTORY ROOT COUNT PREFIX   (prints the seconds it took)
"""

from __future__ import annotations

import sys
import time

from acme import client, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from josepy import ES256, JWKEC


def csr(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return req.public_bytes(serialization.Encoding.PEM)


def main() -> int:
    directory, root, count, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=ES256, user_agent="tight-bench")
    net.verify_ssl = root  # type: ignore[assignment]
    acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net)
    acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True))
    start = time.monotonic()
    for i in range(count):
        order = acme.new_order(csr(f"t{i}.{prefix}.bench.test"))
        for authz in order.authorizations:
            for challb in authz.body.challenges:
                if challb.chall.typ == "http-01":
                    acme.answer_challenge(challb, challb.response(key))
        for authz in order.authorizations:  # polled at once, not after the library's 1 s
            while acme.poll(authz)[0].body.status != messages.STATUS_VALID:
                time.sleep(0.005)
        body = acme.begin_finalization(order).body
        while body.status != messages.STATUS_VALID:
            time.sleep(0.005)
            body = messages.Order.from_json(acme._post_as_get(order.uri).json())
        acme._post_as_get(body.certificate)
    print(f"{time.monotonic() - start:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
