"""Per-image inference paths (AutoPath, Sun et al. 2020): heuristic drop strategies, the policy network,
its REINFORCE training and the evaluation of paths. Models expose gated blocks; this package only makes masks.
"""
