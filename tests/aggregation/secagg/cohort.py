"""A simulated cohort for the protocol tests: keys, clients, a server and the message flow between them.

Everything runs in-process through the messages' canonical bytes, so every
test also exercises the encoding the integrator stores and transports.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from aggregation.secagg import (
    Attestation,
    ClientRound,
    MaskedInput,
    NoisePlan,
    RosterEntry,
    RoundContext,
    ServerRound,
    UnmaskRequest,
    UnmaskResponse,
    plan_noise,
)


def seeded_keypair(rnd: random.Random) -> tuple[bytes, bytes]:
    private = X25519PrivateKey.from_private_bytes(rnd.randbytes(32))
    return (
        private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def fake_sign(tenant_id: str, digest: bytes) -> bytes:
    # Stand-in for the integrator's Ed25519 identity signature: a tag only the
    # verifier below accepts, so tests can forge a *wrong* one deliberately.
    return b"sig:" + tenant_id.encode() + b":" + digest


def fake_verify(tenant_id: str, digest: bytes, signature: bytes) -> bool:
    return signature == fake_sign(tenant_id, digest)


@dataclass
class Cohort:
    ctx: RoundContext
    plan: NoisePlan
    keys: dict[str, bytes]
    clients: dict[str, ClientRound]
    server: ServerRound
    tables: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ids(self) -> tuple[str, ...]:
        return self.ctx.tenant_ids

    def submit(self, senders: Iterable[str]) -> None:
        for tid in senders:
            msg = self.clients[tid].submit(self.tables[tid])
            self.server.add_input(MaskedInput.from_bytes(msg.to_bytes(), self.ctx))

    def attest(self) -> list[Attestation]:
        atts = []
        for tid in sorted(self.server.survivors):
            digest = self.clients[tid].attest(self.server.unmask_request_for(tid))
            att = Attestation(tid, digest, fake_sign(tid, digest))
            self.server.add_attestation(Attestation.from_bytes(att.to_bytes()))
            atts.append(att)
        return atts

    def unmask(self, responders: Iterable[str]) -> None:
        atts = self.server.attestations()
        for tid in responders:
            req = UnmaskRequest.from_bytes(self.server.unmask_request_for(tid).to_bytes(), self.ctx)
            resp = self.clients[tid].unmask(req, atts)
            self.server.add_unmask(UnmaskResponse.from_bytes(resp.to_bytes()))

    def expected(self, survivors: Iterable[str]) -> np.ndarray:
        total = np.zeros(self.ctx.length, dtype=np.int64)
        for tid in survivors:
            share = self.clients[tid].noise_share
            assert share is not None
            total += self.tables[tid] + share
        return total

    def run(self, senders: Iterable[str], responders: Iterable[str] | None = None) -> np.ndarray:
        senders = list(senders)
        self.submit(senders)
        survivors = self.server.close()
        self.attest()
        self.unmask(sorted(survivors) if responders is None else responders)
        return self.server.result()


def make_cohort(
    n: int,
    length: int = 16,
    *,
    threshold: int | None = None,
    degree: int | None = None,
    seed: int = 0,
    bits: int = 32,
    cohort: str = "cohort-a",
    schema_version: int = 3,
    window_start: int = 1_700_000_000,
    round_id: str = "round-1",
    sigma_central: float = 4.0,
    keys: dict[str, bytes] | None = None,
) -> Cohort:
    rnd = random.Random(seed)
    ids = [f"tenant-{i:04d}" for i in range(n)]
    if keys is None:
        pairs = {tid: seeded_keypair(rnd) for tid in ids}
    else:
        pairs = {tid: (keys[tid], _public(keys[tid])) for tid in ids}
    t = threshold if threshold is not None else max(2, (2 * n) // 3)
    ctx = RoundContext(
        cohort=cohort,
        schema_version=schema_version,
        window_start=window_start,
        round_id=round_id,
        length=length,
        modulus_bits=bits,
        threshold=t,
        roster=tuple(RosterEntry(tid, pub) for tid, (_, pub) in pairs.items()),
        neighbour_degree=degree,
    )
    plan = plan_noise(sigma_central, 2, 1, n, t)
    clients = {
        tid: ClientRound(ctx, tid, priv, plan, rng=random.Random(f"{seed}:{tid}").randbytes, verify=fake_verify)
        for tid, (priv, _) in pairs.items()
    }
    tables_rng = np.random.default_rng(seed)
    tables = {tid: tables_rng.integers(-3, 50, size=length).astype(np.int64) for tid in ids}
    return Cohort(ctx, plan, {t: p for t, (p, _) in pairs.items()}, clients, ServerRound(ctx), tables)


def _public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
