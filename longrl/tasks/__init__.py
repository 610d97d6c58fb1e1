"""Built-in verifiable tasks: generators, difficulty levels, verifiers, long-CoT trace writers."""
