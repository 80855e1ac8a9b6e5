"""What the variants of one model cost in memory and in garbage-collector work.

    python benchmarks/variant_memory.py 8     # the 4-layer BERT encoder at 8 sequence lengths

Compiles `bert_with_symbolic_shapes(bert_encoder(layers=4, seq=128, hidden=256))` with
`batch_polymorphic=False`, runs it at the first N of 8 lengths (one variant each), and prints:
GC-tracked objects added (`len(gc.get_objects())` after minus before), the minimum CPU time
of 3 full `gc.collect()` calls, the process's RSS and PSS change (/proc/self/smaps_rollup,
both sides after `malloc_trim(0)`, so freed heap is not counted), and the bytes of weights the
variants hold (`SpecializingModel.weight_bytes`). PSS, not RSS, shows weights shared between
variants: a page mapped in several blobs counts once per mapping in RSS.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import time

import numpy as np

import ember
from ember.tools.model_zoo import bert_encoder
from ember.tools.symbolic_zoo import bert_with_symbolic_shapes

LENGTHS = (16, 24, 32, 48, 64, 80, 96, 128)


def memory_mb() -> dict[str, int]:
    """Rss and Pss of this process in MB, freed heap returned to the system first."""
    ctypes.CDLL(None).malloc_trim(0)
    found = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            key, *value = line.split()
            if key in ("Rss:", "Pss:"):
                found[key[:-1]] = int(value[0]) // 1024
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=int, choices=range(1, len(LENGTHS) + 1))
    args = parser.parse_args()
    model = bert_with_symbolic_shapes(
        bert_encoder(layers=4, seq=128, hidden=256, heads=4, vocab=1000)
    )
    gc.collect()
    objects, before = len(gc.get_objects()), memory_mb()
    compiled = ember.compile(model, threads=1, batch_polymorphic=False, progress=False)
    rng = np.random.default_rng(0)
    for length in LENGTHS[: args.variants]:
        compiled.run({compiled.input_names[0]: rng.integers(0, 1000, (1, length))})
    gc.collect()
    after = memory_mb()
    pauses = []
    for _ in range(3):
        start = time.process_time()
        gc.collect()
        pauses.append(time.process_time() - start)
    print(
        f"variants={args.variants} gc_objects={len(gc.get_objects()) - objects} "
        f"gc_collect_s={min(pauses):.3f} rss_mb={after['Rss'] - before['Rss']} "
        f"pss_mb={after['Pss'] - before['Pss']} "
        f"weights_mb={compiled.weight_bytes / 2**20:.1f}"
    )


if __name__ == "__main__":
    main()
