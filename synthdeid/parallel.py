"""Ray for the steps that run one model over many independent items
(`generate`, `annotate`, `synthdeid-deidentify --engine ray`): a local Ray
or a cluster's, and an ordered map over actors that each build their model
once. Ray is the optional extra `synthdeid[ray]`; nothing imports it before
a caller asks for the ray engine."""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple

ENGINES = ("local", "ray")  # what the parallel steps run on


def runtime_env() -> Dict[str, Any]:
    """The environment every actor needs: the hash key and offline Hugging Face."""
    names = ("SYNTHDEID_HASH_KEY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return {"env_vars": {name: os.environ[name] for name in names if name in os.environ}}


def start_ray(address: Optional[str], num_workers: int) -> bool:
    """Connect to the cluster at `address`, or start a local Ray with
    `num_workers` CPUs; False when Ray was already running (the caller's)."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray engine needs Ray: pip install 'synthdeid[ray]'") from None
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, runtime_env=runtime_env(), log_to_driver=True)
    else:
        ray.init(num_cpus=num_workers, include_dashboard=False, runtime_env=runtime_env(), log_to_driver=True)
    return True


def actor_map(actor_class: type, init_args: Sequence[Any], jobs: Iterable[Tuple[Any, Any]], *, num_workers: int = 2,
              address: Optional[str] = None, method: str = "__call__", per_worker: int = 2,
              gpus_per_worker: float = 0) -> Iterator[Tuple[Any, Any]]:
    """(result, context) for each (job, context) of `jobs`, in their order:
    `num_workers` actors each build `actor_class(*init_args)` once (a
    pipeline, a model), and each job is one call of its `method`; at most
    `per_worker` jobs per actor are in flight, and `jobs` is read no further
    ahead, so it may be endless: the caller stops when it has what it needs
    (close the iterator, `contextlib.closing`). Each actor takes one CPU and
    `gpus_per_worker` GPUs (Ray makes its GPU the actor's only visible one,
    device 0). A failed actor is a ValueError. Ray started here is shut down
    at the end."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, not {num_workers}")
    started = start_ray(address, num_workers)  # first: without Ray, it says what to install
    import ray
    from ray.exceptions import RayError
    from ray.util import ActorPool

    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus_per_worker and gpus < gpus_per_worker * num_workers:
            # Ray would wait for ever to place the actors that find no GPU.
            raise ValueError(f"ray engine: {num_workers} workers with {gpus_per_worker:g} GPU each need "
                             f"{gpus_per_worker * num_workers:g} GPUs; the cluster has {gpus:g}")
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(actor_class).options(runtime_env=runtime_env())
        pool = ActorPool([actor.remote(*init_args) for _ in range(num_workers)])
        waiting: deque = deque()  # the contexts of the jobs in flight, in order
        for job, context in jobs:
            pool.submit(lambda worker, job: getattr(worker, method).remote(job), job)
            waiting.append(context)
            if len(waiting) >= per_worker * num_workers:
                yield pool.get_next(), waiting.popleft()
        while waiting:
            yield pool.get_next(), waiting.popleft()
    except RayError as err:  # an actor that could not load its model, or failed on a job
        raise ValueError(f"ray engine: {err}") from None
    finally:
        if started:
            ray.shutdown()
