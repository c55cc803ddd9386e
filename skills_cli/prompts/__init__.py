"""Layer 1: prompt configs (system/user templates, few-shot examples) and client-side chat templates."""

from skills_cli.prompts.prompt_config import PromptConfig, load_prompt_config

__all__ = ["PromptConfig", "load_prompt_config"]
