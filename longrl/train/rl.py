"""The RL trainer: one iteration of Kimi k1.5 online policy mirror descent (DESIGN §2).

``Trainer.step`` reads like the algorithm — sample → roll out → score → baseline → update → sync
→ bookkeeping — and each callee is short and replaceable. The loop around it (evaluation,
logging, checkpoints, progress) lives in :mod:`longrl.train.loop`.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import numpy as np
import torch

from longrl.algo import get_algorithm
from longrl.config import RunConfig
from longrl.models.vision import Encoded, encode_prompt_mm
from longrl.rewards import ScoreRouter
from longrl.rewards.compose import term_metrics, total_reward
from longrl.rewards.length import length_penalty_weight, length_rewards
from longrl.sampling import PromptSampler
from longrl.train.batch import Seq
from longrl.train.partial import ReplayBuffer, loss_start, vocab_signature
from longrl.train.update import UpdateStats, iteration_update, response_lr_scale
from longrl.types import Prompt, SamplingParams, Trajectory


class Trainer:
    """Holds the policy, its rollout engine, the sampler and the scorers for one run."""

    def __init__(self, cfg: RunConfig, model, tokenizer, engine, prompts: list[Prompt],
                 router: ScoreRouter, iteration: int = 0, learner=None, processor=None):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.processor = processor  # a vision-language model's processor (image prompts); None: text only
        self.engine = engine
        self.prompts = {p.id: p for p in prompts}
        self.router = router
        self.algo = get_algorithm(cfg.rl.algorithm)
        self.iteration = iteration
        s = cfg.sampling
        self.sampler = PromptSampler(prompts, strategy=s.strategy, seed=cfg.seed,
                                     curriculum_warmup_iters=s.warmup_iters(cfg.rl.iterations),
                                     hard_threshold=s.hard_threshold, eps=s.eps,
                                     initial_success={p.id: p.pass_rate for p in prompts if p.pass_rate is not None})
        self._encoded: dict[str, Encoded] = {}
        r, pc = cfg.rollout, cfg.partial
        self.buffer = ReplayBuffer(r.k, r.max_length, pc.budget_for(r.max_length), pc.max_staleness)
        self.signature = vocab_signature(tokenizer, model)
        self.trained: list[Trajectory] = []  # the trajectories of the last update, for the rollout log
        self.learner = learner  # a Ray trainer group, or None: update in this process
        # log pi_i must be recomputed when the engine's log-probs are not the trainer's own numbers: older
        # policies' tokens (partial rollouts), another engine, or top-p's renormalised nucleus (the loss is of
        # the full softmax) -- and only for an update rule that reads log pi_i
        self.recompute = self.algo.uses_ref and (cfg.partial.enabled or cfg.rollout.engine != "hf"
                                                 or cfg.rollout.top_p < 1)

    # ------------------------------------------------------------------ one iteration (k1.5 §2.3)

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        dropped = self.buffer.drop_stale(self.iteration)
        started = self.start_groups()
        switch = self.switch("wake")  # train -> rollout (colocated: the engine re-acquires its memory)
        t_gen = time.perf_counter()
        stops, generated = self.rollout()
        t_gen = time.perf_counter() - t_gen
        switch |= self.switch("sleep")  # rollout -> train (colocated: the engine releases it)
        trajs = [t for g in self.buffer.release() for t in g.trajs]  # groups whose k samples finished
        t_roll = time.perf_counter()
        if trajs:
            self.score(trajs)
            self.baseline(trajs)
        t_score = time.perf_counter()
        stats = self.update(trajs)
        t_update = time.perf_counter()
        switch |= self.sync()
        self.record_outcomes(trajs)
        self.trained = trajs
        t_end = time.perf_counter()
        m = self.metrics(trajs, stats, {"rollout": t_roll - t0, "generate": t_gen, "score": t_score - t_roll,
                                        "update": t_update - t_score, **switch, "iter": t_end - t0},
                         stops, generated, started, len(dropped))
        self.iteration += 1
        return m

    # ------------------------------------------------------------------ callees

    def start_groups(self) -> int:
        """Sample new prompts for the places the continuing trajectories leave in the batch; how many."""
        n = self.buffer.new_group_slots(self.cfg.rollout.batch_prompts * self.cfg.rollout.k)
        ids = self.sampler.sample(n, self.iteration, exclude=self.buffer.prompt_ids())
        self.buffer.start([self.prompts[i] for i in ids], self.iteration, lambda p: self.encode(p).ids, self._seed)
        return len(ids)

    def encode(self, p: Prompt) -> Encoded:
        """The prompt's ids (processor-expanded for images) and pixel inputs, computed once per prompt."""
        if p.id not in self._encoded:
            self._encoded[p.id] = encode_prompt_mm(self.tokenizer, self.processor, p, self.cfg.model.chat_template)
        return self._encoded[p.id]

    def pixels(self, prompt_id: str):
        """The pixel inputs of a prompt's trajectories (None for a text prompt): the same tensors go
        to the engine with every segment and to the trainer's forward, so their log-probs agree."""
        return self.encode(self.prompts[prompt_id]).mm

    def rollout(self) -> tuple[Counter, int]:
        """One segment per unfinished trajectory from the current policy pi_i: (stop reasons, tokens).

        Each sample has its own seed for its whole life, so a trajectory continued over several
        iterations draws the same noise as one generated at once.
        """
        r = self.cfg.rollout
        trajs, reqs = self.buffer.requests()
        for t, req in zip(trajs, reqs):
            req.mm, req.images = self.pixels(t.prompt_id), self.prompts[t.prompt_id].images
        results = self.engine.generate(reqs, SamplingParams(r.temperature, r.top_p, r.repeat_max_period,
                                                            r.repeat_window))
        stops = Counter(self.buffer.extend(t, res, self.iteration) for t, res in zip(trajs, results))
        return stops, sum(len(res.token_ids) for res in results)

    def _seed(self, group: int, sample: int) -> int:
        return random.Random(f"{self.cfg.seed}-{self.iteration}-{group}-{sample}").getrandbits(62)

    def score(self, trajs: list[Trajectory]) -> None:
        """Task reward from each prompt's scorer, plus the k1.5 length reward per group (§3)."""
        texts = self.tokenizer.batch_decode([t.response_ids for t in trajs], skip_special_tokens=True)
        for t, text in zip(trajs, texts):
            t.response_text = text
        scores = self.router([self.prompts[t.prompt_id] for t in trajs], texts)
        for t, s in zip(trajs, scores):
            t.score = s
        lp = self.cfg.length_penalty
        w = length_penalty_weight(self.iteration, lp.weight, lp.warmup_iters)
        for group in _groups(trajs):
            bonus = length_rewards([t.num_tokens for t in group], [t.score.correct for t in group])
            for t, b in zip(group, bonus):
                t.len_reward = b
                t.reward = total_reward(t.score) + w * b  # task reward + weighted terms + length term
                if t.stop_reason == "repetition":
                    t.reward += self.cfg.rollout.repeat_penalty

    def baseline(self, trajs: list[Trajectory]) -> None:
        """Advantages per group: k1.5's A_j = r_j − mean of the group's k rewards (§2.3.2).

        With ``rl.mask_truncated`` the responses cut at the cap leave the loss but stay in the mean, so
        each response kept trains with exactly the advantage the paper's unmasked form gives it (DAPO's
        overlong filtering does the same). Those advantages need not sum to zero: the kept ones are
        pushed, together, away from the cut ones — up when the cut ones scored less (with the length
        penalty on, 4 finished wrong answers beside 4 longer cut ones get +0.17 each, as in the
        unmasked form). ``rl.mask_truncated_baseline`` takes the mean over the kept responses instead,
        so that their advantages sum to zero; on the quickstart that cost 2.9 points over 3 seeds
        (docs/benchmarks.md)."""
        groups = _groups(trajs)
        rewards = torch.tensor([[t.reward for t in g] for g in groups])
        correct = torch.tensor([[t.score.correct for t in g] for g in groups])
        kept = None
        if self.cfg.rl.mask_truncated_baseline:
            kept = torch.tensor([[self.kept(t) for t in g] for g in groups])
        adv = self.algo.advantages(rewards, correct, self.cfg.rl.scale_rewards or self.algo.scale_rewards,
                                   None if kept is None or bool(kept.all()) else kept)
        for g, row in zip(groups, adv.tolist()):
            for t, a in zip(g, row):
                t.advantage = a

    def update(self, trajs: list[Trajectory]) -> UpdateStats:
        """The k1.5 update on this iteration's trajectories (:mod:`longrl.train.update`).

        log π_i is the engine's per-token log-probs of the sampled tokens, recorded by π_i itself
        before any update of this iteration (the hf engine runs the trainer's own module). When
        some loss tokens come from older policies (partial rollouts) or from another engine
        (vLLM), π_i is recomputed by the trainer first. With a Ray trainer group the same code
        runs data-parallel in its workers.
        """
        seqs, versions = [], {}
        for i, t in enumerate(trajs):
            start = loss_start(t, self.cfg.partial.loss_segments)
            first = start - len(t.prompt_ids)
            seqs.append(Seq(ids=t.prompt_ids + t.response_ids, loss_start=start, advantage=t.advantage,
                            ref_logp=t.logprobs[first:], index=i, mm=self.pixels(t.prompt_id)))
            versions[i] = t.versions[first:]
        lr_scale = response_lr_scale(self.cfg, len(trajs))
        seqs = [s for s in seqs if self.in_loss(trajs[s.index])]
        if self.learner is not None:
            return self.learner.update(seqs, versions, self.iteration, self.recompute, lr_scale)
        return iteration_update(self.model, seqs, versions, self.cfg, self.iteration,
                                self.tokenizer.pad_token_id, self.recompute, lr_scale=lr_scale)

    def kept(self, t: Trajectory) -> bool:
        """Whether a trajectory may enter the loss: ``rl.mask_truncated`` leaves out the responses cut at
        ``rollout.max_length`` (a search not finished yet is not pushed down as a wrong answer)."""
        return not (self.cfg.rl.mask_truncated and t.stop_reason == "max_length")

    def in_loss(self, t: Trajectory) -> bool:
        """Whether a scored trajectory enters the loss: the kept ones, less `rest`'s zero-weight samples."""
        if self.algo.name == "rest" and t.advantage <= 0:
            return False
        return self.kept(t)

    def switch(self, to: str) -> dict[str, float]:
        """Hybrid deployment (``rollout.placement=colocated``): the engine's ``wake`` before a rollout
        and ``sleep`` after it, so training and inference take turns on the same devices."""
        if self.cfg.rollout.placement != "colocated":
            return {}
        t0 = time.perf_counter()
        getattr(self.engine, to)()
        return {f"switch_{'to_rollout' if to == 'wake' else 'to_train'}": time.perf_counter() - t0}

    def sync(self) -> dict[str, float]:
        """Push the new weights to the rollout engine (in place for the in-process hf engine).

        With a Ray trainer group the weights come from its rank 0; the driver's copy of the
        policy (used for checkpoints and evaluation) is refreshed from the same tensors.
        """
        t0 = time.perf_counter()
        if self.learner is not None:
            self.learner.sync_to(self.engine, self.model)
        else:
            self.engine.update_weights(self.model.named_parameters())
        return {"weight_sync": time.perf_counter() - t0}

    def record_outcomes(self, trajs: list[Trajectory]) -> None:
        for g in _groups(trajs):
            self.sampler.update(g[0].prompt_id, sum(t.score.correct for t in g), len(g))

    # ------------------------------------------------------------------ metrics

    def metrics(self, trajs: list[Trajectory], st: UpdateStats, times: dict[str, float], stops: Counter,
                generated: int, started: int, dropped: int) -> dict[str, float]:
        """This iteration's figures; the trajectory statistics cover the groups trained on."""
        lp = self.cfg.length_penalty
        m: dict[str, float] = {
            "length_penalty/weight": length_penalty_weight(self.iteration, lp.weight, lp.warmup_iters),
            "lr": st.lr,
            "loss": st.loss,
            "grad_norm": st.grad_norm,
            "update/delta_abs": st.delta_abs,
            "update/steps": st.steps,
            **({"mismatch/logp_abs_mean": st.mismatch_sum / st.mismatch_tokens,
                "mismatch/logp_abs_max": st.mismatch_max} if st.mismatch_tokens else {}),
            "perf/tokens_per_s": generated / max(times["generate"], 1e-9),
            "perf/train_tokens_per_s": st.tokens / max(times["update"], 1e-9),
            "train/groups": len(_groups(trajs)),
            "train/new_groups": started,
        }
        if trajs:
            lengths = np.array([t.num_tokens for t in trajs], dtype=float)
            m.update({
                "reward/mean": float(np.mean([t.reward for t in trajs])),
                "reward/task_mean": float(np.mean([t.score.value for t in trajs])),
                "train/accuracy": float(np.mean([t.score.correct for t in trajs])),
                "train/informative_groups": float(np.mean([len({t.reward for t in g}) > 1 for g in _groups(trajs)])),
                # mean advantage of the responses in the loss: 0 for a full group; with rl.mask_truncated the
                # net push on the kept ones; for rest, its weights
                "train/adv_mean_in_loss": float(np.mean([t.advantage for t in trajs if self.in_loss(t)] or [0.0])),
                "response/len_mean": float(lengths.mean()),
                "response/len_p90": float(np.percentile(lengths, 90)),
                "response/clip_frac": float(np.mean([t.stop_reason != "eos" for t in trajs])),
            })
            for reason, n in Counter(t.score.reason for t in trajs).items():
                m[f"reward/reason/{reason}"] = n
            m.update(self.modality_metrics(trajs))
            terms = term_metrics([t.score for t in trajs])  # with rewards.terms: each weighted term's mean
            if terms:  # ... and the length term's, so that the terms add up to reward/mean (less repeat_penalty)
                w = m["length_penalty/weight"]
                terms["reward/term/length"] = float(np.mean([w * t.len_reward for t in trajs]))
            m.update(terms)
        m.update({f"time/{k}_s": v for k, v in times.items()})
        for reason, n in stops.items():  # of the segments generated this iteration
            m[f"stop/{reason}"] = n
        if self.cfg.partial.enabled:
            first = [loss_start(t, self.cfg.partial.loss_segments) - len(t.prompt_ids) for t in trajs]
            loss_versions = [v for t, f in zip(trajs, first) for v in t.versions[f:]]
            m.update({
                "partial/buffer_groups": len(self.buffer.groups),
                "partial/buffer_unfinished": len(self.buffer.in_flight()),
                "partial/oldest_age": self.buffer.oldest_age(self.iteration),
                "partial/dropped_stale": dropped,
                "partial/old_policy_token_share": float(np.mean([v < self.iteration for v in loss_versions]))
                if loss_versions else 0.0,
                "partial/offpolicy_logp_gap": st.offpolicy_gap,
            })
        m.update(self.sampler.stats())
        return m

    def modality_metrics(self, trajs: list[Trajectory]) -> dict[str, float]:
        """Accuracy and length per modality (``text``, ``image``) when a batch mixes them (``data.mix``)."""
        by: dict[str, list[Trajectory]] = {}
        for t in trajs:
            by.setdefault("image" if self.prompts[t.prompt_id].images else "text", []).append(t)
        if len(by) < 2:
            return {}
        m = {}
        for name, ts in by.items():
            m[f"train/accuracy/{name}"] = float(np.mean([t.score.correct for t in ts]))
            m[f"response/len_mean/{name}"] = float(np.mean([t.num_tokens for t in ts]))
            m[f"train/responses/{name}"] = len(ts)
        return m

    def rollout_records(self) -> list[dict]:
        """One record per group trained in the last iteration: what ``rollouts.jsonl`` keeps."""
        return [{"iter": self.iteration, "prompt_id": g[0].prompt_id,
                 "rewards": [round(t.reward, 6) for t in g], "correct": [t.score.correct for t in g],
                 "lengths": [t.num_tokens for t in g], "stop": [t.stop_reason for t in g],
                 "sample": g[0].response_text}
                for g in _groups(self.trained)]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "sampler": self.sampler.state_dict(),
                "buffer": self.buffer.state_dict(self.signature)}

    def load_state_dict(self, state: dict, where: str = "checkpoint") -> None:
        self.iteration = state["iteration"]
        self.sampler.load_state_dict(state["sampler"])
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"], self.signature, where)


def _groups(trajs: list[Trajectory]) -> list[list[Trajectory]]:
    """Trajectories by group id, each group in sample order."""
    by: dict[int, list[Trajectory]] = {}
    for t in trajs:
        by.setdefault(t.group_id, []).append(t)
    return [sorted(g, key=lambda t: t.sample_index) for _, g in sorted(by.items())]
