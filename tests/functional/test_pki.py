"""The PKI end to end with real processes and independent tools: `acar init`, `acar cert issue/revoke/show`,
`acar ca import`, a real `acar serve`, and the real `openssl verify`, `openssl ocsp` and `openssl crl`.
The refusals of bad input run `acar` in-process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.deps import Services
from keys.models import CertificateAuthority, CRLRecord, IssuedCertificate
from tests.functional.helpers import InProcessAcar, Server, acar_json
from tests.pki_tools import MALFORMED_REQUEST, openssl, verify_chain, x509_text
from tests.softhsm import SoftHsmToken

ISSUER = "http://localhost:8000"


def _issue(acar: InProcessAcar, env: dict[str, str], *args: str) -> dict[str, Any]:
    return dict(json.loads(acar("cert", "issue", *args, env=env).stdout))


def _save(tmp_path: Path, name: str, issued: dict[str, Any]) -> tuple[Path, Path, Path]:
    cert = tmp_path / f"{name}.pem"
    cert.write_text(issued["certificate_pem"])
    issuing, root = tmp_path / "issuing.pem", tmp_path / "root.pem"
    issuing.write_text(issued["chain_pem"][0])
    root.write_text(issued["chain_pem"][1])
    return cert, issuing, root


def _ec_key(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key, pub = tmp_path / f"{name}.key", tmp_path / f"{name}.pub"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    return key, pub


def _csr(tmp_path: Path, name: str) -> Path:
    key, _ = _ec_key(tmp_path, name)
    csr = tmp_path / f"{name}.csr"
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=ignored by the CA", "-out", str(csr))
    return csr


async def _count(services: Services, model: type) -> int:
    async with services.sessions() as session:
        return (await session.execute(select(func.count()).select_from(model))).scalar_one()


def _ocsp(server: Server, issuing: Path, root: Path, *target: str) -> str:
    proc = openssl("ocsp", "-issuer", str(issuing), *target, "-url", server.base + "/pki/ocsp", "-CAfile", str(root))
    return proc.stdout + proc.stderr


async def test_issue_verify_ocsp_revoke_crl(acar: InProcessAcar, cli_env: dict[str, str], services: Services,
                                            tmp_path: Path) -> None:
    first = acar_json(cli_env, "init")  # the installed command; the steps after run in-process
    assert first["ca_created"] == ["root", "issuing"]
    assert [s.split(":")[0] for s in first["service_certificates_created"]] == ["ocsp-responder", "tsa"]
    again = acar.json("init", env=cli_env)
    assert (again["ca_created"], again["service_certificates_created"]) == ([], [])

    _, pub = _ec_key(tmp_path, "person")
    signing = _issue(acar, cli_env, "--profile", "natural-person-signing", "--fin", "5abc12d", "--given-name", "Aysel",
                     "--surname", "Məmmədova", "--public-key", str(pub))
    seal = _issue(acar, cli_env, "--profile", "legal-person-seal", "--voen", "1234567890", "--org", "Nümunə MMC",
                  "--csr", str(_csr(tmp_path, "seal")), "--days", "30")
    auth = _issue(acar, cli_env, "--profile", "authentication", "--fin", "7XYZ890", "--given-name", "Elvin",
                  "--surname", "Quliyev", "--csr", str(_csr(tmp_path, "auth")))
    checks = {
        "signing": (signing, ["serialNumber=PNOAZ-5ABC12D", "GN=Aysel", "SN=Məmmədova",
                              "X509v3 Key Usage: critical\n                Non Repudiation"]),
        "seal": (seal, ["organizationIdentifier=NTRAZ-1234567890", "O=Nümunə MMC",
                        "X509v3 Key Usage: critical\n                Non Repudiation"]),
        "auth": (auth, ["serialNumber=PNOAZ-7XYZ890", "TLS Web Client Authentication"]),
    }
    for name, (issued, expected) in checks.items():
        cert, issuing, root = _save(tmp_path, name, issued)
        verify_chain(tmp_path, root, issuing, cert)
        text = x509_text(cert)
        for fragment in [*expected, "Policy: 1.3.6.1.4.1.99999.1.1", f"OCSP - URI:{ISSUER}/pki/ocsp",
                         f"CA Issuers - URI:{ISSUER}/pki/ca/issuing.crt", f"URI:{ISSUER}/pki/crl/issuing.crl"]:
            assert fragment in text, (name, fragment)
    cert, issuing, root = _save(tmp_path, "signing", signing)
    serial = signing["serial"]

    server = Server(cli_env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        answer = _ocsp(server, issuing, root, "-cert", str(cert))
        assert "Response verify OK" in answer and f"{cert}: good" in answer, answer
        assert "nonce" not in answer.lower()  # openssl sends a nonce and warns when it is not echoed

        revoked = acar.json("cert", "revoke", serial.upper(), "--reason", "keyCompromise", env=cli_env)
        assert (revoked["serial"], revoked["reason"]) == (serial, "keyCompromise")
        answer = _ocsp(server, issuing, root, "-cert", str(cert))
        assert "Response verify OK" in answer and f"{cert}: revoked" in answer and "Reason: keyCompromise" in answer

        seal_cert, _, _ = _save(tmp_path, "seal", seal)
        assert f"{seal_cert}: good" in _ocsp(server, issuing, root, "-sha256", "-cert", str(seal_cert))
        assert "0x1234: unknown" in _ocsp(server, issuing, root, "-serial", "0x1234")
        # the issuing CA's own certificate, named under the root: another issuer, so unknown (and openssl rightly
        # does not accept our responder, delegated by the issuing CA, as authorized for the root's certificates)
        assert f"{issuing}: unknown" in _ocsp(server, root, root, "-cert", str(issuing), "-noverify")

        async with httpx.AsyncClient(base_url=server.base) as http:
            crl = await http.get("/pki/crl/issuing.crl")
            bad = await http.post("/pki/ocsp", content=b"\x30\x03\x02\x01",
                                  headers={"Content-Type": "application/ocsp-request"})
        assert crl.status_code == 200 and crl.headers["content-type"] == "application/pkix-crl"
        crl_path = tmp_path / "issuing.crl"
        crl_path.write_bytes(crl.content)
        listed = openssl("crl", "-inform", "DER", "-in", str(crl_path), "-CAfile", str(issuing), "-noout", "-text")
        assert "verify OK" in listed.stderr + listed.stdout
        assert f"Serial Number: {serial.upper()}\n" in listed.stdout and "Key Compromise" in listed.stdout
        assert seal["serial"].upper() not in listed.stdout

        assert bad.status_code == 200 and bad.content == MALFORMED_REQUEST
        assert bad.headers["content-type"] == "application/ocsp-response"
    finally:
        assert server.stop(signal.SIGINT) == 0, server.log()

    shown = acar.json("cert", "show", serial, env=cli_env)
    assert (shown["status"], shown["revocation_reason"], shown["profile"]) == (
        "revoked", "keyCompromise", "natural-person-signing")
    crls = await _count(services, CRLRecord)
    again_revoke = acar("cert", "revoke", serial, "--reason", "superseded", check=False, env=cli_env)
    assert again_revoke.returncode == 1 and "was revoked at" in again_revoke.stderr
    unknown = acar("cert", "revoke", "abcdef", "--reason", "keyCompromise", check=False, env=cli_env)
    assert unknown.returncode == 1
    assert unknown.stderr == "acar: error: no certificate with serial abcdef was issued by this CA\n"
    assert await _count(services, CRLRecord) == crls  # no state change


@pytest.mark.parametrize(("args", "message"), [
    (["--profile", "natural-person-signing", "--fin", "12345", "--given-name", "A", "--surname", "B"],
     "FIN must be exactly 7"),
    (["--profile", "legal-person-seal", "--voen", "12345", "--org", "X"], "VÖEN must be exactly 10 digits"),
    (["--profile", "legal-person-seal", "--voen", "1234567890", "--org", "X", "--fin", "1234567"],
     "drop --fin"),
    (["--profile", "authentication", "--fin", "1234567", "--given-name", "A", "--surname", "B", "--days", "0"],
     "validity must be 1 to 1095 days"),
    (["--profile", "authentication", "--fin", "1234567", "--given-name", "A", "--surname", "B",
      "--public-key", "/nonexistent.pem"], "--public-key: cannot read /nonexistent.pem"),
])
async def test_cert_issue_refuses_bad_input_in_one_line(
    acar: InProcessAcar, services: Services, tmp_path: Path, args: list[str], message: str
) -> None:
    acar("init")
    before = await _count(services, IssuedCertificate)
    if "--public-key" not in args:
        args = [*args, "--public-key", str(_ec_key(tmp_path, "k")[1])]
    proc = acar("cert", "issue", *args, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("acar: error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert await _count(services, IssuedCertificate) == before


async def test_cert_issue_refuses_a_csr_whose_signature_fails(
    acar: InProcessAcar, services: Services, tmp_path: Path
) -> None:
    acar("init")
    before = await _count(services, IssuedCertificate)
    csr = _csr(tmp_path, "x")
    openssl("req", "-in", str(csr), "-outform", "DER", "-out", str(tmp_path / "x.der"))
    der = bytearray((tmp_path / "x.der").read_bytes())
    der[-1] ^= 0x01  # one bit of the signature
    (tmp_path / "forged.der").write_bytes(bytes(der))
    proc = acar("cert", "issue", "--profile", "authentication", "--fin", "1234567", "--given-name", "A",
                "--surname", "B", "--csr", str(tmp_path / "forged.der"), check=False)
    assert proc.returncode == 1 and "the CSR signature does not verify" in proc.stderr
    assert await _count(services, IssuedCertificate) == before


def _openssl_hierarchy(tmp_path: Path) -> dict[str, Path]:
    """A root and an issuing CA made by openssl alone, as an operator's key ceremony would."""
    paths = {n: tmp_path / n for n in ("root.key", "root.pem", "issuing.key", "issuing.csr", "issuing.pem",
                                       "ext.cnf", "password", "issuing-enc.key")}
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
            "-keyout", str(paths["root.key"]), "-out", str(paths["root.pem"]), "-days", "3650",
            "-subj", "/C=AZ/O=Operator/CN=Operator Root CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes",
            "-keyout", str(paths["issuing.key"]), "-out", str(paths["issuing.csr"]),
            "-subj", "/C=AZ/O=Operator/CN=Operator Issuing CA")
    paths["ext.cnf"].write_text("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", str(paths["issuing.csr"]), "-CA", str(paths["root.pem"]),
            "-CAkey", str(paths["root.key"]), "-CAcreateserial", "-out", str(paths["issuing.pem"]), "-days", "1825",
            "-extfile", str(paths["ext.cnf"]))
    paths["password"].write_text("correct horse battery staple\n")
    openssl("pkey", "-in", str(paths["issuing.key"]), "-aes256", "-passout", f"file:{paths['password']}",
            "-out", str(paths["issuing-enc.key"]))
    return paths


async def test_ca_import_from_files(acar: InProcessAcar, services: Services, tmp_path: Path) -> None:
    env = {**acar.env, "ACAR_ENV": "development"}
    ext = _openssl_hierarchy(tmp_path)

    def ca_import(name: str, key: str, *extra: str) -> Any:
        return acar("ca", "import", "--name", name, "--cert", str(ext[f"{name}.pem"]), "--key", str(ext[key]),
                    *extra, "--json", check=False, env=env)

    acar("migrate", env=env)
    refused = ca_import("issuing", "issuing.key")
    assert refused.returncode == 1 and "import the root CA before the issuing CA" in refused.stderr
    refused = ca_import("root", "issuing.key")
    assert refused.returncode == 1 and "the key does not match the root certificate" in refused.stderr
    assert await _count(services, CertificateAuthority) == 0

    root = json.loads(ca_import("root", "root.key").stdout)
    assert (root["ca"], root["backend"], root["service_certificates_created"]) == ("root", "software", [])
    refused = ca_import("issuing", "issuing-enc.key")
    assert refused.returncode == 1 and "cannot read the private key" in refused.stderr
    issuing = json.loads(ca_import("issuing", "issuing-enc.key", "--key-password-file", str(ext["password"])).stdout)
    assert [s.split(":")[0] for s in issuing["service_certificates_created"]] == ["ocsp-responder", "tsa"]
    assert acar.json("init", env=env)["ca_created"] == []  # imported CAs are never replaced

    _, pub = _ec_key(tmp_path, "person")
    issued = json.loads(acar("cert", "issue", "--profile", "natural-person-signing", "--fin", "5ABC12D",
                             "--given-name", "Aysel", "--surname", "Məmmədova", "--public-key", str(pub),
                             env=env).stdout)
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(issued["certificate_pem"])
    verify_chain(tmp_path, ext["root.pem"], ext["issuing.pem"], leaf)
    assert "Issuer: C=AZ, O=Operator, CN=Operator Issuing CA" in x509_text(leaf)


async def _hsm_hierarchy(services: Services, token: SoftHsmToken, tmp_path: Path) -> dict[str, str]:
    """CA key pairs generated on the token and their certificates, as a ceremony elsewhere would leave them:
    the database rows are rolled back, the key pairs stay on the token under labels of their own."""
    import secrets

    from pkcs11 import Attribute, ObjectClass

    from keys.ca import CertificateAuthorityService, PkiUrls
    from keys.pkcs11 import Pkcs11KeyStore

    store = Pkcs11KeyStore(module_path=token.module, token_label=token.label, pin=token.pin)
    labels: dict[str, str] = {}
    try:
        ca = CertificateAuthorityService(store, urls=PkiUrls(ISSUER), policy=services.pki.ca.policy)
        async with services.sessions() as session:
            transaction = await session.begin()
            await ca.ensure_hierarchy(session, actor="ceremony")
            for name in ("root", "issuing"):
                row = await session.get(CertificateAuthority, name)
                assert row is not None and row.key_id is not None
                (tmp_path / f"hsm-{name}.der").write_bytes(row.certificate_der)
                label = f"ceremony-{name}-{secrets.token_hex(3)}"
                with token.session(rw=True) as p11:  # relabel, so the label names this pair alone
                    for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                        for obj in p11.get_objects({Attribute.CLASS: cls, Attribute.ID: row.key_id.encode()}):
                            obj[Attribute.LABEL] = label
                labels[name] = label
            await transaction.rollback()
    finally:
        store.close()
    return labels


@pytest.mark.pkcs11
async def test_ca_import_from_the_hsm(
    acar: InProcessAcar, cli_env: dict[str, str], services: Services, softhsm_token: SoftHsmToken, tmp_path: Path
) -> None:
    env = {**cli_env, **softhsm_token.acar_env()}
    labels = await _hsm_hierarchy(services, softhsm_token, tmp_path)
    assert await _count(services, CertificateAuthority) == 0
    acar("migrate", env=env)
    refused = acar("ca", "import", "--name", "root", "--cert", str(tmp_path / "hsm-root.der"),
                   "--pkcs11-label", labels["issuing"], check=False, env=env)
    assert refused.returncode == 1 and "the key does not match the root certificate" in refused.stderr
    refused = acar("ca", "import", "--name", "root", "--cert", str(tmp_path / "hsm-root.der"),
                   "--key", str(tmp_path / "hsm-root.der"), check=False, env=env)
    assert refused.returncode == 1 and "--pkcs11-label" in refused.stderr
    for name in ("root", "issuing"):
        result = acar.json("ca", "import", "--name", name, "--cert", str(tmp_path / f"hsm-{name}.der"),
                           "--pkcs11-label", labels[name], env=env)
        assert (result["ca"], result["backend"]) == (name, "pkcs11")
    assert [s.split(":")[0] for s in result["service_certificates_created"]] == ["ocsp-responder", "tsa"]

    _, pub = _ec_key(tmp_path, "person")
    issued = _issue(acar, env, "--profile", "authentication", "--fin", "5ABC12D", "--given-name", "Aysel",
                    "--surname", "Məmmədova", "--public-key", str(pub))
    cert, issuing, root = _save(tmp_path, "leaf", issued)
    verify_chain(tmp_path, root, issuing, cert)
    server = Server(env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        answer = _ocsp(server, issuing, root, "-cert", str(cert))  # signed on the token by the responder key
        assert "Response verify OK" in answer and f"{cert}: good" in answer, answer
    finally:
        assert server.stop(signal.SIGINT) == 0, server.log()


def _offline_crl(tmp_path: Path, ext: dict[str, Path], name: str, *, revoke: Path | None = None) -> Path:
    """A root CRL made the way an offline ceremony makes one: `openssl ca -gencrl` with the root key."""
    index, number, config = tmp_path / "index.txt", tmp_path / "crlnumber", tmp_path / "ca.cnf"
    if not config.exists():
        index.touch()
        number.write_text("01\n")
        config.write_text(
            "[ ca ]\ndefault_ca = offline_root\n\n[ offline_root ]\n"
            f"database = {index}\ncrlnumber = {number}\ncertificate = {ext['root.pem']}\n"
            f"private_key = {ext['root.key']}\ndefault_md = sha384\ndefault_crl_days = 30\n"
            "crl_extensions = crl_ext\n\n[ crl_ext ]\nauthorityKeyIdentifier = keyid:always\n")
    if revoke is not None:
        openssl("ca", "-config", str(config), "-revoke", str(revoke), "-crl_reason", "cACompromise")
    out = tmp_path / name
    openssl("ca", "-config", str(config), "-gencrl", "-out", str(out))
    return out


async def test_offline_root_ca_import_and_crl_import(
    acar: InProcessAcar, cli_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    """`acar ca import --name root --cert` without a key; root CRLs signed by `openssl ca` and imported with
    `acar crl import`; revocation under the root refused; a root CRL revoking the issuing CA stops issuance."""
    env = {**cli_env, "ACAR_ENV": "development"}
    ext = _openssl_hierarchy(tmp_path)
    acar("migrate", env=env)
    root = acar.json("ca", "import", "--name", "root", "--cert", str(ext["root.pem"]), env=env)
    assert (root["ca"], root["key_offline"], root["crls_published"]) == ("root", True, [])
    refused = acar("ca", "import", "--name", "issuing", "--cert", str(ext["issuing.pem"]), check=False, env=env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "the issuing CA needs its key" in refused.stderr
    issuing = acar.json("ca", "import", "--name", "issuing", "--cert", str(ext["issuing.pem"]),
                        "--key", str(ext["issuing.key"]), env=env)
    assert issuing["crls_published"] == ["issuing"]
    assert acar.json("init", env=env)["crls_published"] == []  # development init never signs for the offline root

    first = _offline_crl(tmp_path, ext, "first.crl")
    imported = acar.json("crl", "import", "--ca", "root", str(first), env=env)
    assert (imported["crl_number"], imported["newly_revoked"]) == (1, [])
    again = acar("crl", "import", "--ca", "root", str(first), check=False, env=env)
    assert again.returncode == 1
    assert again.stderr == "acar: error: the CRL number 1 is not higher than that of the current root CRL (1)\n"
    forged = acar("crl", "import", "--ca", "root", str(ext["issuing.pem"]), check=False, env=env)
    assert forged.returncode == 1 and forged.stderr == "acar: error: the file is not a DER or PEM X.509 CRL\n"

    server = Server(env, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.base) as http:
            served = await http.get("/pki/crl/root.crl")
        assert served.status_code == 200 and served.content == _der_crl(first)

        issuing_serial = format(int(openssl("x509", "-in", str(ext["issuing.pem"]), "-noout", "-serial")
                                    .stdout.strip().split("=")[1], 16), "x")
        crls = await _count(services, CRLRecord)
        revoke = acar("cert", "revoke", issuing_serial, "--reason", "cACompromise", check=False, env=env)
        assert revoke.returncode == 1
        assert revoke.stderr == ("acar: error: the root CA key is offline; revoke by publishing a root CRL "
                                 "signed offline\n")
        assert acar.json("cert", "show", issuing_serial, env=env)["status"] == "valid"
        assert await _count(services, CRLRecord) == crls

        second = _offline_crl(tmp_path, ext, "second.crl", revoke=ext["issuing.pem"])
        imported = acar.json("crl", "import", "--ca", "root", str(second), env=env)
        assert (imported["crl_number"], imported["newly_revoked"]) == (2, [issuing_serial])
        shown = acar.json("cert", "show", issuing_serial, env=env)
        assert (shown["status"], shown["revocation_reason"]) == ("revoked", "cACompromise")
        async with httpx.AsyncClient(base_url=server.base) as http:
            assert (await http.get("/pki/crl/root.crl")).content == _der_crl(second)
    finally:
        assert server.stop(signal.SIGINT) == 0, server.log()

    _, pub = _ec_key(tmp_path, "person")
    refused = acar("cert", "issue", "--profile", "authentication", "--fin", "5ABC12D", "--given-name",
                   "Aysel", "--surname", "Məmmədova", "--public-key", str(pub), check=False, env=env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "the issuing CA certificate was revoked at" in refused.stderr and "it issues nothing" in refused.stderr


def _der_crl(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_crl(path.read_bytes()).public_bytes(Encoding.DER)


def _curve_key(tmp_path: Path, curve: str) -> tuple[Path, Path]:
    key, pub = tmp_path / f"{curve}.key", tmp_path / f"{curve}.pub"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}", "-out", str(key))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    return key, pub


@pytest.mark.parametrize(("curve", "message"), [
    ("brainpoolP512t1", "is not supported"),  # a curve `cryptography` cannot load at all (UnsupportedAlgorithm)
    ("secp224r1", "EC keys must be on P-256, P-384 or P-521, not secp224r1"),
    ("brainpoolP256r1", "EC keys must be on P-256, P-384 or P-521, not brainpoolP256r1"),
])
async def test_keys_on_unsupported_curves_are_one_line_errors(
    acar: InProcessAcar, services: Services, tmp_path: Path, curve: str, message: str
) -> None:
    key, pub = _curve_key(tmp_path, curve)
    ext = _openssl_hierarchy(tmp_path)  # a well-formed root certificate: the key is what is refused
    acar("migrate")
    proc = acar("ca", "import", "--name", "root", "--cert", str(ext["root.pem"]), "--key", str(key), check=False)
    expected = "cannot use the private key: Curve" if curve == "brainpoolP512t1" else \
        "only EC P-256/P-384, RSA 2048/3072 and Ed25519 keys are supported"
    assert proc.returncode == 1 and proc.stderr.startswith("acar: error: ") and expected in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert await _count(services, CertificateAuthority) == 0

    acar("init")
    before = await _count(services, IssuedCertificate)
    proc = acar("cert", "issue", "--profile", "authentication", "--fin", "5ABC12D", "--given-name", "A",
                "--surname", "B", "--public-key", str(pub), check=False)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("acar: error: ") and proc.stderr.count("\n") == 1 and message in proc.stderr
    assert await _count(services, IssuedCertificate) == before


async def test_a_relying_party_fetches_everything_it_needs_over_http(
    acar: InProcessAcar, cli_env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    """pyhanko-certvalidator as a relying party on the network: only the root is given; it follows the signing
    certificate's AIA OCSP and the issuing CA's CRL distribution point to a real `acar serve` (the PKI URLs
    are http, ACAR_PKI_BASE_URL), with revocation information required for every certificate. The OCSP
    responder's certificate, validated the same way, has no OCSP pointer back at its own responder (the loop
    pyhanko-certvalidator refuses with "Recursion detected in OCSP responder authorisation check")."""
    from asn1crypto import x509 as asn1_x509
    from pyhanko_certvalidator import CertificateValidator, ValidationContext
    from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend

    from keys.profiles import Profile
    from tests.local_http import free_port

    port = free_port()
    env = {**cli_env, "ACAR_PKI_BASE_URL": f"http://127.0.0.1:{port}"}
    acar.json("init", env=env)
    _, pub = _ec_key(tmp_path, "person")
    signing = _issue(acar, env, "--profile", "natural-person-signing", "--fin", "5abc12d", "--given-name", "Aysel",
                     "--surname", "Məmmədova", "--public-key", str(pub))
    cert, _, root = _save(tmp_path, "signing", signing)
    assert f"OCSP - URI:http://127.0.0.1:{port}/pki/ocsp" in x509_text(cert)
    responder = (await services.pki.certified_key(Profile.OCSP_RESPONDER)).certificate

    def context() -> ValidationContext:
        return ValidationContext(trust_roots=[asn1_x509.Certificate.load(_der(root))], allow_fetching=True,
                                 revocation_mode="require", fetcher_backend=RequestsFetcherBackend())

    server = Server(env, port=port, log_path=tmp_path / "server.log")
    try:
        server.wait_ready()
        signer = asn1_x509.Certificate.load(_der(cert))
        path = await CertificateValidator(signer, validation_context=context()).async_validate_usage(
            {"non_repudiation"})
        assert len(path) == 3 and path.leaf.sha256 == signer.sha256
        path = await CertificateValidator(responder, validation_context=context()).async_validate_usage(
            {"digital_signature"}, extended_key_usage={"ocsp_signing"})
        assert path.leaf.sha256 == responder.sha256
    finally:
        assert server.stop(signal.SIGINT) == 0, server.log()


def _der(pem: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER)
