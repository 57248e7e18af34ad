"""Option hedging: the environment, the published baselines, the deep-hedging agent and its evaluation."""
