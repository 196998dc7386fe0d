"""Fan-out of one classified directive to K recipients (default 3,000 communes), in one process.

A Tối mật directive from the Government Office to K communes: verified, encrypted once with
AES-256-GCM, its content key wrapped K times (one EncryptedKey per commune), stored with K
deliveries, then sealed and carried into every inbox.

    .venv/bin/python bench/fanout.py [K] [--key p256|rsa2048]

Reports the time to accept (202), the time until every delivery is in its inbox, the package
sizes and the peak memory of the process. A benchmark: it never fails on slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.agency_side.packages import sign_package
from gateway.crypto.pki import KeyType
from gateway.domain.agencies import DEMO_AGENCIES, Agency, AgencyState
from gateway.domain.edxml import NewEdoc, Organ, build_edoc
from gateway.domain.vocabulary import Classification, DeliveryState, Network
from gateway.infra.files.pki_init import ensure_dev_pki
from gateway.infra.files.registry_csv import write_registry
from gateway.runtime.config import load_config
from gateway.runtime.node import Node, init_home
from tests.conftest import set_setting

SENDER = "000.00.00.G22"


async def run(k: int, key_type: KeyType) -> None:
    home = Path(tempfile.mkdtemp(prefix="gw-fanout-"))
    init_home(home, now=datetime.now(UTC))
    set_setting(home, "carriers", "0")
    communes = [
        Agency(f"H41.{i // 100 + 10:02d}.{i % 100:02d}", f"UBND xã số {i}", Network.GOVERNMENT,
               "000.00.00.H41", Classification.TOI_MAT, AgencyState.ACTIVE)
        for i in range(k)
    ]  # fmt: skip
    agencies = [a for a in DEMO_AGENCIES if not a.code.startswith("H41.1")] + communes
    config = load_config(home)
    write_registry(config.registry, agencies)
    t = time.perf_counter()
    ensure_dev_pki(
        config.certs,
        agencies=[(a.code, a.name, a.network) for a in agencies if a.state is AgencyState.ACTIVE],
        now=datetime.now(UTC),
        key_type=key_type,
    )
    print(f"set-up: {k} communes with {key_type.value} certificates in {time.perf_counter() - t:.1f} s")
    package = sign_package(
        config.certs,
        SENDER,
        build_edoc(
            NewEdoc(
                sender=Organ(SENDER, "Văn phòng Chính phủ"),
                recipients=[Organ(c.code) for c in communes],
                document_id=f"{SENDER},2026/11/22,1/CĐ-TTg",
                subject="Công điện hỏa tốc về ứng phó bão số 3",
                content="Nội dung chỉ đạo " * 500,
                classification=Classification.TOI_MAT,
            ),
            now=datetime.now(UTC),
        ),
    )
    node = Node(config)
    try:
        start = time.perf_counter()
        accepted = await node.intake.submit(SENDER, package, declared=Classification.TOI_MAT)
        accept_s = time.perf_counter() - start
        while await node.courier.run_once():
            pass
        delivered_s = time.perf_counter() - start
        deliveries = await node.store.deliveries(accepted.id)
        in_inbox = sum(d.state is DeliveryState.DELIVERED for d in deliveries)
        stored = await node.store.package(accepted.id) or b""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"fan-out: 1 Tối mật directive ({len(package)} bytes signed) to {k} recipients "
            f"({key_type.value}): accepted in {accept_s:.2f} s (encrypted once, {k} wrapped keys, "
            f"{len(stored) / 1e6:.1f} MB stored), "
            f"{in_inbox} in their inboxes after {delivered_s:.2f} s, peak memory {peak:.0f} MB"
        )
    finally:
        node.courier.close()
        await node.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("k", type=int, nargs="?", default=3000)
    parser.add_argument(
        "--key", choices=[t.value for t in KeyType if t is not KeyType.RSA3072], default="p256"
    )
    args = parser.parse_args()
    asyncio.run(run(args.k, KeyType(args.key)))


if __name__ == "__main__":
    main()
