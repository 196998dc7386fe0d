"""Time ``load_registry`` on a generated 120,000-agency registry.

Run from the project root: ``.venv/bin/python bench/registry_load.py [count]``.
Prints one line; exits non-zero only when generating or loading fails, never for slowness.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

# Runnable as a plain script from the project root, without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.domain.agencies import Agency, AgencyState
from gateway.domain.vocabulary import Classification, Network
from gateway.infra.files.registry_csv import load_registry, write_registry

COUNT = 120_000
RETIRED_SHARE = 0.05
ROUNDS = 3

_PLACES = [
    "Nghi Lộc",
    "Diễn Châu",
    "Quỳnh Lưu",
    "Hưng Nguyên",
    "Thanh Chương",
    "Đô Lương",
    "Yên Thành",
    "Tân Kỳ",
    "Anh Sơn",
    "Con Cuông",
    "Quế Phong",
    "Kỳ Sơn",
    "Tương Dương",
    "Nam Đàn",
    "Cửa Lò",
    "Hoàng Mai",
    "Thái Hòa",
    "Vinh Hưng",
    "Phú Xuân",
    "Hải Châu",
    "Ba Đình",
    "Hoàn Kiếm",
    "Đống Đa",
    "Cầu Giấy",
    "Bến Thành",
    "Sài Gòn",
    "Thủ Đức",
    "Ninh Kiều",
    "Hạ Long",
    "Móng Cái",
    "Điện Biên Phủ",
]
_NETWORK_OF_LETTER = {"A": Network.PARTY, "B": Network.PARTY, "I": Network.FRONT}  # others: government
_ROOT_NAMES = {
    Network.PARTY: ["Ban Tổ chức", "Ban Tuyên giáo và Dân vận", "Ủy ban Kiểm tra", "Văn phòng Tỉnh ủy"],
    Network.GOVERNMENT: ["Bộ Tài chính", "Bộ Nội vụ", "Bộ Xây dựng", "UBND tỉnh", "UBND thành phố"],
    Network.FRONT: ["Ủy ban MTTQ", "Hội Liên hiệp Phụ nữ", "Hội Nông dân", "Hội Cựu chiến binh"],
}
_ROOT_LETTERS = "ABCDEGHIKL"
_UNITS = [
    "Sở Tài chính",
    "Sở Nội vụ",
    "Sở Y tế",
    "Sở Giáo dục và Đào tạo",
    "Sở Xây dựng",
    "Thanh tra",
    "Văn phòng",
]
_LEAVES = ["UBND xã", "UBND phường", "Phòng Văn hóa - Xã hội", "Phòng Kinh tế", "Trạm Y tế", "Trường THCS"]


def _agencies(count: int, rng: random.Random) -> Iterator[Agency]:
    """Roots first, each followed by its subtree; half the subtree in each code form."""
    made = 0
    roots = [f"{letter}{number:02d}" for letter in _ROOT_LETTERS for number in range(1, 100)]
    for level1 in roots:
        if made >= count:
            return
        network = _NETWORK_OF_LETTER.get(level1[0], Network.GOVERNMENT)
        root = f"000.00.00.{level1}"
        name = f"{rng.choice(_ROOT_NAMES[network])} {rng.choice(_PLACES)}"
        yield Agency(root, name, network, None, Classification.TOI_MAT)
        made += 1
        subtree: list[tuple[str, str]] = []  # (code, parent)
        for unit in range(1, 7):
            qcvn_unit = f"000.00.{unit:02d}.{level1}"
            subtree.append((qcvn_unit, root))
            for sub in range(1, 6):
                qcvn_sub = f"000.{sub:02d}.{unit:02d}.{level1}"
                subtree.append((qcvn_sub, qcvn_unit))
                subtree.append((f"{rng.randrange(1, 1000):03d}.{sub:02d}.{unit:02d}.{level1}", qcvn_sub))
            qd20_unit = f"{level1}.{unit:02d}"
            subtree.append((qd20_unit, root))
            for leaf in range(1, 11):
                subtree.append((f"{qd20_unit}.{leaf:03d}", qd20_unit))
        seen: set[str] = set()
        earlier_siblings: dict[str, list[str]] = {}
        for code, parent in subtree:
            if made >= count:
                return
            if code in seen:
                continue  # a random level-4 group repeated
            seen.add(code)
            siblings = earlier_siblings.setdefault(parent, [])
            name = f"{rng.choice(_UNITS if parent == root else _LEAVES)} {rng.choice(_PLACES)}"
            clearance = Classification.MAT if parent == root else Classification.NONE
            if siblings and rng.random() < RETIRED_SHARE:
                # Successors always point to an earlier sibling: chains happen, cycles cannot.
                yield Agency(
                    code,
                    f"{name} (đã sáp nhập)",
                    network,
                    parent,
                    clearance,
                    AgencyState.RETIRED,
                    rng.choice(siblings),
                    date(2025, rng.choice((3, 7)), 1),
                )
            else:
                yield Agency(code, name, network, parent, clearance)
            siblings.append(code)
            made += 1
    if made < count:
        raise SystemExit(f"registry_load: the generator ran out of codes at {made}")


def main() -> int:
    """Generate the registry, load it ``ROUNDS`` times, print the best time."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else COUNT
    rng = random.Random(20250301)
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        path = Path(tmp) / "registry.csv"
        write_registry(path, _agencies(count, rng))
        size = path.stat().st_size
        best = float("inf")
        loaded = 0
        for _ in range(ROUNDS):
            started = time.perf_counter()
            registry = load_registry(path)
            best = min(best, time.perf_counter() - started)
            loaded = len(registry)
    if loaded != count:
        print(f"registry: loaded {loaded} agencies, expected {count}", file=sys.stderr)
        return 1
    print(f"registry: {loaded} agencies loaded in {best:.2f} s (best of {ROUNDS}), file {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
