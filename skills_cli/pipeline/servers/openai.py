"""`openai`: an external OpenAI-compatible API (`--server_address`), never hosted by a job. The client
neither sends it the job's API key nor parameters the official API rejects (see `inference/client.py`)."""

from __future__ import annotations

from skills_cli.inference.config import EXTERNAL_API_KIND
from skills_cli.pipeline.servers.base import SERVER_KINDS, ServerKind

SERVER_KINDS.register(ServerKind(EXTERNAL_API_KIND, argv=None))
