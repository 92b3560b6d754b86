"""The GPU workload of bench/real_gpu.py on a real card: PyTorch holding a few GiB and
multiplying bf16 matrices for a while, so utilisation, power, clocks and the per-process
series have something to show.

    python3 bench/real_gpu_load.py --seconds 40 --gib 4 [--device 0]

Prints `ready` once the memory is held and the first products are done, then `done` when it
stops (it ends by itself; the check never has to kill a process holding the card).
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--gib", type=float, default=4.0, help="GPU memory to hold")
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args(argv)

    import torch  # only here: the check itself runs without PyTorch

    if not torch.cuda.is_available():
        print("real_gpu_load: PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda", args.device)
    held = torch.empty(int(args.gib * 2**30), dtype=torch.uint8, device=device)
    held.fill_(1)
    size = 8192
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    (a @ b).sum().item()
    torch.cuda.synchronize(device)
    print("ready", flush=True)
    end = time.monotonic() + args.seconds
    products = 0
    while time.monotonic() < end:
        for _ in range(16):
            c = a @ b
        torch.cuda.synchronize(device)
        products += 16
    seconds = args.seconds
    tflops = products * 2 * size**3 / seconds / 1e12
    del c, held
    print(f"done {products} products, {tflops:.0f} TFLOP/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
