"""Cells trained side by side: `hatelens sweep --workers N` (a GPU has room for many small models at once).

Each unfinished cell runs in its own process (spawned, so CUDA starts cleanly in each), with the CPU
threads shared out between the workers. A cell writes its cell.json as it would in a serial sweep;
the serial loop that follows finds every finished cell and only writes the table. A failed cell does
not stop the others: the first failure is raised once every cell has ended, and running the same
command again resumes it.
"""

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

logger = logging.getLogger(__name__)


def train_cells(config, cells: list, folders: list[Path], workers: int) -> None:
    """Run `run_cell` for each (cell, folder) in up to `workers` processes."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    failures = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_run_cell, config, cell, folder, threads): cell for cell, folder in zip(cells, folders)}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                row = future.result()
            except Exception as error:  # reported below, after the other cells have finished
                logger.error("cell %s failed: %s", cell.name, error)
                failures.append(error)
            else:
                logger.info("cell %s: F1 %.3f, ROC-AUC %.3f, %.0f s", cell.name, row["f1"], row["roc_auc"],
                            row["cell_s"])
    if failures:
        raise failures[0]


def _run_cell(config, cell, folder: Path, threads: int) -> dict:
    import torch

    from hatelens.evaluation.evaluate import evaluate
    from hatelens.sweep import run_cell
    from hatelens.training.train import train

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [{cell.name}] %(message)s")
    torch.set_num_threads(threads)
    return run_cell(config, cell, folder, train, evaluate, progress=False)
