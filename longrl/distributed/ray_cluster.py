"""Scale-out on Ray (DESIGN §7): the driver is k1.5's central master, the work runs in workers.

The driver keeps the sampler, the replay buffer and the schedule (``Trainer.step`` unchanged);
three groups of Ray actors, placed together in one placement group, do the heavy parts:

- a **trainer group** of N torch.distributed workers (gloo on CPU, NCCL on GPU) running
  :func:`longrl.train.update.iteration_update` data-parallel: each rank takes its share of every
  mini-batch and the gradients are summed before the step, so the update is the single-process one.
  ``cluster.sharding=replicate`` keeps a full copy of the model, gradients and AdamW state on every
  rank; ``fsdp`` shards all three with FSDP2 (:mod:`longrl.distributed.fsdp`);
- a **rollout group** of M engines (``hf`` or ``vllm``) that splits each batch of requests
  between them — every request carries its own seed, so the split does not change the samples;
- a **reward pool** of scoring actors (graders, sandbox clients), or scoring in the driver.

After each update, rank 0's weights go once into Ray's object store and every rollout worker
loads them from there (a broadcast through the store, no checkpoint written); the driver's own
copy, used for checkpoints, is refreshed from the same object. Sharded, the same happens one
decoder layer at a time: the ranks gather the layer, rank 0 passes it on, and it is freed. A worker that dies or raises stops
the run with one message naming the worker, its node and the error; checkpoints are written
atomically, so the last one stays intact.

Sharded, each checkpoint also holds the ranks' own shards (:meth:`TrainerGroup.save_shards`, written by
every rank into the checkpoint's folder: on several nodes the run directory must be on a shared
filesystem), and a group started from a checkpoint that has them loads its weights from them, whatever
the number of ranks that wrote them (``longrl.train.checkpoint``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import torch

from longrl.errors import UserError, WorkerFailed
from longrl.rewards import show_tracebacks
from longrl.train.backends import Workers


def require_ray():
    try:
        import ray
    except ImportError:
        raise UserError('cluster.backend=ray needs Ray: pip install -e ".[ray]"') from None
    return ray


# ----------------------------------------------------------------------------- workers (actors)


def _worker_setup(cpus: float) -> None:
    """A worker process's own setup: its torch threads, and transformers' progress bars off (a
    worker's stderr reaches the driver, which shows longrl's progress)."""
    from longrl.models.loading import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(max(1, int(cpus)))


def _node() -> str:
    import ray

    return ray.util.get_node_ip_address()


class TrainerWorker:
    """One rank of the trainer group: the policy (a full replica, or its FSDP shard) and its share of
    each mini-batch. ``units`` lists the parameter names of each weight-sync unit (:meth:`weights`)."""

    def __init__(self, cfg, model_dir: str, rank: int, world: int, cpus: float):
        _worker_setup(cpus)
        self.cfg, self.model_dir, self.rank, self.world = cfg, model_dir, rank, world

    def node(self) -> str:
        return _node()

    def rendezvous(self) -> str:
        """Rank 0: an address ``HOST:PORT`` the group meets at."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{_node()}:{port}"

    def setup(self, address: str, shards: str | None = None) -> int:
        """Join the process group, load the policy and (fsdp) shard it, then load ``shards`` (a
        checkpoint's ``sharded`` folder, written by any number of ranks) into it when given."""
        import torch.distributed as dist

        from longrl.models.loading import load_model
        from longrl.models.precision import enable_activation_checkpointing, master_dtype
        from longrl.train.update import DataParallel

        # Ray hides GPUs from a worker that asked for none; with one, gradients go over NCCL and the
        # CPU statistics over gloo (NOT YET VERIFIED on a GPU)
        gpu = torch.cuda.is_available()
        dist.init_process_group("cpu:gloo,cuda:nccl" if gpu else "gloo", init_method=f"tcp://{address}",
                                rank=self.rank, world_size=self.world, timeout=timedelta(minutes=5))
        self.model, self.tokenizer = load_model(self.model_dir, master_dtype(self.cfg.model.dtype))
        self.model.to("cuda" if gpu else "cpu")
        if self.cfg.model.freeze_vision_tower:
            from longrl.models.vision import freeze_vision_tower

            freeze_vision_tower(self.model)
        if self.cfg.rl.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        if self.cfg.cluster.sharding == "fsdp":
            from longrl.distributed.fsdp import ShardedDataParallel, load_shards, shard_model, sync_units

            shard_model(self.model, self.cfg.cluster)
            if shards is not None:
                load_shards(self.model, shards)
            self.dp = ShardedDataParallel(dist.group.WORLD)
            self.units = sync_units(self.model)
        else:
            self.dp = DataParallel(dist.group.WORLD)
            self.units = [[n for n, _ in self.model.named_parameters()]]
        return len(self.units)

    def update(self, seqs, versions, iteration: int, recompute: bool, lr_scale: float = 1.0):
        from longrl.train.update import iteration_update

        return iteration_update(self.model, seqs, versions, self.cfg, iteration,
                                self.tokenizer.pad_token_id, recompute, self.dp, lr_scale)

    def gradient(self, seqs) -> torch.Tensor:
        """The flat gradient of one mini-batch's loss (summed over ranks); for checks and benchmarks."""
        from longrl.train.update import UpdateStats, batch_gradient

        self.model.zero_grad(set_to_none=True)
        batch_gradient(self.model, seqs, self.cfg, self.tokenizer.pad_token_id, self.dp, UpdateStats())
        flat = torch.cat([_full(p.grad).reshape(-1).cpu() for p in self.model.parameters()])
        self.model.zero_grad(set_to_none=True)
        return flat

    def weights(self, unit: int = 0) -> dict[str, torch.Tensor]:
        """The full parameters of sync unit ``unit`` by name (tied weights once), on the CPU.

        Replicated: one unit, every parameter, asked of rank 0 alone. Sharded: one decoder layer (or
        the root's own parameters) per unit, gathered by every rank at once (a collective) and
        returned by rank 0 only, so no rank holds more than one unit's full weights for the sync.
        """
        if self.cfg.cluster.sharding == "fsdp":
            from longrl.distributed.fsdp import gather_unit

            return gather_unit(self.model, self.units[unit], keep=self.rank == 0)
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().cpu() for n in self.units[unit]}

    def save_shards(self, folder: str) -> None:
        """This rank's shard of the weights into ``folder`` (a collective: :func:`longrl.distributed.fsdp.save_shards`)."""
        from longrl.distributed.fsdp import save_shards

        save_shards(self.model, folder)

    def footprint(self, seqs) -> dict[str, int]:
        """This rank's training-state bytes after one mini-batch's gradient and a fresh optimizer's step
        (parameters, gradients, optimizer moments: local shards under FSDP), and its resident memory
        now and at peak; for benchmarks. Steps the weights."""
        import resource

        from longrl.train.update import UpdateStats, batch_gradient, fresh_optimizer

        self.model.zero_grad(set_to_none=True)
        batch_gradient(self.model, seqs, self.cfg, self.tokenizer.pad_token_id, self.dp, UpdateStats())
        opt = fresh_optimizer(self.model, self.cfg.rl, self.cfg.rl.lr)
        opt.step()
        params = list(self.model.parameters())
        moments = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t) and t.dim()]
        out = {"params": _local_bytes(params), "grads": _local_bytes(p.grad for p in params),
               "optimizer": _local_bytes(moments)}
        self.model.zero_grad(set_to_none=True)
        with open("/proc/self/statm") as f:
            out["rss"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return out


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (an all-gather every rank must join), or ``t`` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _local_bytes(tensors) -> int:
    """Bytes this rank stores for ``tensors`` (a DTensor's local shard only)."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


class RolloutWorker:
    """A rollout engine on its own copy of the policy."""

    def __init__(self, cfg, model_dir: str, cpus: float):
        _worker_setup(cpus)
        from longrl.models.loading import load_model
        from longrl.models.precision import master_dtype
        from longrl.train.loop import make_engine

        # the hf engine computes as the trainer does (fp32 weights, autocast), so its recorded log-probs
        # are log pi_i; vLLM loads its own copy in model.dtype
        self.model, self.tokenizer = load_model(model_dir, master_dtype(cfg.model.dtype)
                                                if cfg.rollout.engine == "hf" else cfg.model.dtype)
        if cfg.rollout.engine == "hf":
            self.model.to("cuda" if torch.cuda.is_available() else "cpu")
        self.engine = make_engine(cfg, self.model, self.tokenizer, model_dir)
        if cfg.rollout.engine != "hf":
            self.model = None  # vLLM holds its own copy of the weights

    def node(self) -> str:
        return _node()

    def generate(self, requests, params):
        return self.engine.generate(requests, params)

    def update_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.engine.update_weights(state.items())

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()


class RewardWorker:
    """Scores with the run config's ``rewards`` section; ``base_dir`` is the driver's working
    directory, where relative reward-function paths and modules are looked for."""

    def __init__(self, cpus: float, rewards=None, base_dir: str | None = None):
        _worker_setup(cpus)
        from longrl.rewards.compose import build_router

        self.router = build_router(rewards, base_dir=base_dir)  # a bad option fails the worker's start

    def node(self) -> str:
        return _node()

    def score(self, prompts, texts):
        return self.router(prompts, texts)

    def close(self) -> None:
        self.router.close()


# ----------------------------------------------------------------------------- driver side


def _split(items: list, parts: int) -> list[list]:
    """Contiguous, balanced chunks (order kept when concatenated); empty chunks dropped."""
    n, parts = len(items), max(1, min(parts, len(items)))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


class _Group:
    """Actors of one kind, with calls that turn a worker's death or error into one clear message."""

    def __init__(self, ray, kind: str, actors: list):
        self.ray, self.kind, self.actors = ray, kind, actors
        self.nodes = ["?"] * len(actors)  # filled in once the actors answer

    def get(self, refs: list) -> list:
        """Results of ``refs``, one per worker in actor order; a failure raises :class:`WorkerFailed`.

        Results are taken as they arrive, so a worker that fails is reported at once even while
        its peers wait for it in a collective (closing the cluster then kills them). A worker that
        died is reported before one that raised: when a rank dies its peers fail too (a broken
        collective), and the dead one is the cause. A :class:`UserError` raised in a worker (bad
        input, a missing extra) is raised again as itself.
        """
        ray = self.ray
        worker = {ref: i for i, ref in enumerate(refs)}
        results, failures, pending = {}, [], list(refs)
        while pending and not failures:
            ready, pending = ray.wait(pending, num_returns=1)
            self._collect(ready, results, failures, worker)
        if failures and pending:  # give the failed worker's peers a moment to fail with it
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=2)
            self._collect(ready, results, failures, worker)
        if failures:
            _, i, e = min(failures, key=lambda f: f[:2])
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            user = next((ln.split("UserError:", 1)[1].strip() for ln in reversed(lines) if "UserError:" in ln), None)
            if user:
                raise UserError(user) from e
            why = lines[-1] if lines else repr(e)
            if isinstance(e, ray.exceptions.RayActorError):
                why = f"the worker died ({why})"
            raise WorkerFailed(f"{self.kind} worker {i} on node {self.nodes[i]} failed: {why}") from e
        return [results[r] for r in refs]

    def _collect(self, ready, results, failures, worker) -> None:
        for ref in ready:
            try:
                results[ref] = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                failures.append((0, worker[ref], e))
            except self.ray.exceptions.RayTaskError as e:
                failures.append((1, worker[ref], e))


class TrainerGroup(_Group):
    def update(self, seqs, versions, iteration: int, recompute: bool, lr_scale: float = 1.0):
        seqs_ref, versions_ref = self.ray.put(seqs), self.ray.put(versions)
        stats = self.get([a.update.remote(seqs_ref, versions_ref, iteration, recompute, lr_scale)
                          for a in self.actors])
        return stats[0]  # every rank ends with the same weights and the same reduced statistics

    def gradient(self, seqs) -> torch.Tensor:
        ref = self.ray.put(seqs)
        return self.get([a.gradient.remote(ref) for a in self.actors])[0]

    units = 1  # weight-sync units, set by RayCluster.trainer_group: 1 replicated, layers + 1 sharded
    sharded = False

    def save_shards(self, folder: Path) -> None:
        """Every rank's shard of the weights into ``folder`` (sharded groups only; called by
        ``longrl.train.checkpoint.save_checkpoint`` with its temporary folder's ``sharded``)."""
        ref = str(Path(folder).resolve())  # the workers' working directory need not be the driver's
        self.get([a.save_shards.remote(ref) for a in self.actors])

    def sync_to(self, engine, model) -> None:
        """The trainer's weights into the rollout engine(s) and into the driver's copy of the policy.

        Replicated: rank 0's whole state at once. Sharded: one unit (a decoder layer, then the root's
        own parameters) at a time, gathered by all ranks and passed on by rank 0, then freed.
        """
        params = dict(model.named_parameters())
        for unit in range(self.units):
            refs = [a.weights.remote(unit) for a in (self.actors if self.sharded else self.actors[:1])]
            state = self.get(refs)[0]  # a failure here is the trainer's, not the rollout workers'
            if isinstance(engine, RolloutGroup):
                engine.load_remote(refs[0])
            else:
                engine.update_weights(state.items())
            with torch.no_grad():
                for name, t in state.items():
                    params[name].copy_(t)
            del state, refs


class RolloutGroup(_Group):
    """The engine protocol over M rollout workers: each ``generate`` call is split between them."""

    def generate(self, requests, params):
        chunks = _split(list(requests), len(self.actors))
        parts = self.get([a.generate.remote(c, params) for a, c in zip(self.actors, chunks)])
        return [r for part in parts for r in part]

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.load_remote(self.ray.put({k: v.detach().cpu() for k, v in named_tensors}))

    def load_remote(self, state_ref) -> None:
        self.get([a.update_weights.remote(state_ref) for a in self.actors])

    def sleep(self) -> None:
        self.get([a.sleep.remote() for a in self.actors])

    def wake(self) -> None:
        self.get([a.wake.remote() for a in self.actors])


class RewardPool(_Group):
    """Scores in parallel over the reward workers; called like a :class:`~longrl.rewards.ScoreRouter`."""

    def __call__(self, prompts, texts):
        chunks = _split(list(zip(prompts, texts)), len(self.actors))
        parts = self.get([a.score.remote([p for p, _ in c], [t for _, t in c])
                          for a, c in zip(self.actors, chunks)])
        scores = [s for part in parts for s in part]
        show_tracebacks(scores)  # a worker's stderr does not reach the driver
        return scores

    def close(self) -> None:
        try:
            self.get([a.close.remote() for a in self.actors])
        except WorkerFailed:
            pass


class RayCluster:
    """Connects to (or starts) Ray, checks resources, and places the worker groups together."""

    def __init__(self, cfg):
        self.cfg = cfg
        c = cfg.cluster
        ray = self.ray = require_ray()
        self.started = not ray.is_initialized() and c.address is None
        if c.address is None:
            if not ray.is_initialized():
                ray.init(num_cpus=c.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
        else:
            ray.init(address=c.address, log_to_driver=False, configure_logging=False)
        have = ray.cluster_resources()
        workers = c.trainer_workers + c.rollout_workers + c.reward_workers
        need_cpu = workers * c.cpus_per_worker
        need_gpu = (c.trainer_workers + c.rollout_workers) * c.gpus_per_worker
        if need_cpu > have.get("CPU", 0) or need_gpu > have.get("GPU", 0):
            self.close()
            raise UserError(
                f"cluster: {c.trainer_workers} trainer + {c.rollout_workers} rollout + {c.reward_workers} reward "
                f"workers need {need_cpu:g} CPUs and {need_gpu:g} GPUs, but the Ray cluster has "
                f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs; lower cluster.*_workers or "
                "cluster.cpus_per_worker / cluster.gpus_per_worker")
        from ray.util.placement_group import placement_group

        bundles = [self._bundle(gpu=i < c.trainer_workers + c.rollout_workers) for i in range(workers)]
        self.pg = placement_group(bundles, strategy="PACK")
        try:
            ray.get(self.pg.ready(), timeout=120)
        except Exception as e:
            self.close()
            raise UserError(f"cluster: could not place {workers} workers on the Ray cluster: {e}") from None
        self._next_bundle = 0
        self.groups: list[_Group] = []

    def _bundle(self, gpu: bool) -> dict[str, float]:
        c = self.cfg.cluster
        b = {"CPU": c.cpus_per_worker}
        if gpu and c.gpus_per_worker:
            b["GPU"] = c.gpus_per_worker
        return b

    def _actors(self, cls, n: int, gpu: bool, make_args) -> list:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        c = self.cfg.cluster
        remote = self.ray.remote(cls)
        actors = []
        for i in range(n):
            strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=self._next_bundle)
            self._next_bundle += 1
            actors.append(remote.options(num_cpus=c.cpus_per_worker,
                                         num_gpus=c.gpus_per_worker if gpu else 0,
                                         scheduling_strategy=strategy).remote(*make_args(i)))
        return actors

    def _group(self, group_cls, kind: str, actors: list):
        group = group_cls(self.ray, kind, actors)
        group.nodes = group.get([a.node.remote() for a in actors])
        self.groups.append(group)
        return group

    def trainer_group(self, model_dir) -> TrainerGroup:
        """The trainer ranks on the policy in ``model_dir``; sharded, a checkpoint's own shards
        (``iter_N/sharded``) are loaded over its Hugging Face weights (the same values, to the bit)."""
        from longrl.train.checkpoint import sharded_weights

        c = self.cfg.cluster
        n = c.trainer_workers
        actors = self._actors(TrainerWorker, n, True,
                                 lambda i: (self.cfg, str(model_dir), i, n, c.cpus_per_worker))
        group = self._group(TrainerGroup, "trainer", actors)
        address = group.get([actors[0].rendezvous.remote()])[0]
        shards = sharded_weights(Path(model_dir)) if c.sharding == "fsdp" else None
        shards = None if shards is None else str(shards.resolve())
        group.units = group.get([a.setup.remote(address, shards) for a in actors])[0]
        group.sharded = c.sharding == "fsdp"
        return group

    def rollout_group(self, model_dir) -> RolloutGroup:
        c = self.cfg.cluster
        actors = self._actors(RolloutWorker, c.rollout_workers, True,
                                 lambda i: (self.cfg, str(model_dir), c.cpus_per_worker))
        return self._group(RolloutGroup, "rollout", actors)

    def reward_pool(self) -> RewardPool | None:
        c = self.cfg.cluster
        if not c.reward_workers:
            return None
        actors = self._actors(RewardWorker, c.reward_workers, False,
                              lambda i: (c.cpus_per_worker, self.cfg.rewards, os.getcwd()))
        return self._group(RewardPool, "reward", actors)

    def close(self) -> None:
        """Kill the actors and free the placement group; stop Ray if this process started it."""
        ray = self.ray
        for g in getattr(self, "groups", []):
            for a in g.actors:
                try:
                    ray.kill(a)
                except Exception:
                    pass
        if getattr(self, "pg", None) is not None:
            from ray.util.placement_group import remove_placement_group

            try:
                remove_placement_group(self.pg)
            except Exception:
                pass
            self.pg = None
        if self.started and ray.is_initialized():
            ray.shutdown()


def ray_workers(cfg, model, tokenizer, start_dir) -> Workers:
    """The ``ray`` backend (:mod:`longrl.train.backends`): trainer, rollout and reward groups on Ray.

    The workers hold the working copies of the policy; the driver's stays on the CPU for checkpoints.
    """
    from longrl.rewards.compose import build_router

    model.to("cpu")
    cluster = RayCluster(cfg)
    try:
        learner = cluster.trainer_group(start_dir)
        engine = cluster.rollout_group(start_dir)
        router = cluster.reward_pool() or build_router(cfg.rewards)
    except BaseException:
        cluster.close()
        raise
    return Workers(engine, router, learner, release=cluster.close)
