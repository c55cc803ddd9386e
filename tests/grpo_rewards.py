"""Reward functions for the GRPO tests (`++env.reward_function=grpo_rewards:NAME`): cheap, with variance even
for an untrained tiny model, so advantages, ratios and clipping are exercised."""


def digit_count(response: str, expected_answer: str, truncated: bool) -> float:
    """More digits, more reward (capped): random tiny models emit digits often enough to differ within a group."""
    return min(sum(c.isdigit() for c in response), 4) / 4
