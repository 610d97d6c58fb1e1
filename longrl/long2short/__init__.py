"""long2short (k1.5 §2.4): carry a long-CoT model's accuracy into short answers.

- :mod:`~longrl.long2short.merge`: weight averaging of a long- and a short-CoT model from one base;
- :mod:`~longrl.long2short.select`: shortest-correct selection and DPO pairs (pure functions);
- :mod:`~longrl.long2short.sample`: n scored samples per prompt;
- :mod:`~longrl.long2short.compare`: accuracy against mean response tokens (k1.5 Figure 7);
- :mod:`~longrl.long2short.io`: lineage records and staged output folders;
- the ``long2short_rl`` preset (``longrl/configs/long2short_rl.yaml``) for long2short RL;
- :mod:`~longrl.long2short.cli`: the ``longrl long2short`` verb.

DPO training itself lives in :mod:`longrl.train.dpo`, its loss in :mod:`longrl.algo.losses`.
"""
