"""`hatelens train` with TrainingArguments.torch_compile on (inductor): does compiling pay on the 2-core CPU?

    python benchmarks/train_compiled.py train --config cpu_small --output-dir /tmp/compiled --name compiled \
        max_train_samples=240 max_val_samples=16 epochs=1 eval_on_start=false batch_size=8 grad_accum=1 \
        lora.dropout=0.0 template=compact_offensive
    (the same workload without compiling: SHAPES=b8d0off bash benchmarks/train_shapes.sh)

The arguments are `hatelens`'s own; this only turns torch_compile on in the SFTConfig that training builds.
The log's step lines give the rates (docs/training.md).
"""

import sys

import hatelens.training.train as training
from hatelens.cli import main

plain_config = training.SFTConfig


def compiled_config(*args, **kwargs):
    return plain_config(*args, **kwargs, torch_compile=True, torch_compile_backend="inductor")


if __name__ == "__main__":
    training.SFTConfig = compiled_config
    sys.exit(main())
