"""skills-cli: the LLM post-training lifecycle as jobs."""

__version__ = "0.1.0"
