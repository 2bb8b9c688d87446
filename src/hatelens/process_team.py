"""Several processes of one command (`accelerate launch` / torchrun): who they are, what they share.
Used by `hatelens evaluate` (each process scores its shard) and `hatelens train` (data-parallel)."""

import os


def process_team(device: str):
    """accelerate's PartialState (one GPU per process, or CPU processes over gloo) when launched as several
    processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def broadcast(team, value: str) -> str:
    """The main process's `value`, in every process."""
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value if team.is_main_process else None])[0]
