"""`openai`: an external OpenAI-compatible API (`--server_address`), never hosted by a job. The client
neither sends it the job's API key nor parameters the official API rejects (see `inference/client.py`).

Its key lives in an environment variable: `++server.api_key_env=NAME`, else `OPENAI_API_KEY` (the official
SDK's convention). `forward_key_variable` makes that variable travel to the jobs the way every cluster
secret does (`secrets.py`): the cluster's `env_vars` gain its name, so its value goes from this process's
environment into the job's (supervisor environment, `docker run -e NAME`, Slurm's owner-only env file that
is removed once sourced) and is hidden in everything we print; no spec, script or config file holds it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import merge, overrides_to_dict
from skills_cli.inference.config import EXTERNAL_API_KIND, ServerConfig
from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.servers.base import SERVER_KINDS, ServerKind

SERVER_KINDS.register(ServerKind(EXTERNAL_API_KIND, argv=None))


def named_key_variable(overrides: Iterable[str], base: Mapping | None = None) -> str | None:
    """`server.api_key_env` as the generation program will read it: the --config file's, then the overrides'."""
    server = merge(dict(base or {}), overrides_to_dict(overrides)).get("server")
    return server.get("api_key_env") if isinstance(server, dict) else None


def forward_key_variable(
    cluster: ClusterConfig,
    server_type: str,
    overrides: Iterable[str],
    base: Mapping | None = None,
    option: str = "++server.api_key_env",
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig:
    """`cluster` with the generation's key variable among its env_vars (see the module docstring).

    A variable the user named (`option`) must be set here, at submission; the default OPENAI_API_KEY travels
    only when set (an API may need no key). A variable the cluster config already gives jobs is left to it.
    """
    environ = os.environ if environ is None else environ
    named = named_key_variable(overrides, base)
    variable = ServerConfig(server_type=server_type, api_key_env=named).key_variable  # checks the name's form
    given = {entry.partition("=")[0] for entry in [*cluster.env_vars, *cluster.required_env_vars]}
    if variable is None or variable in given:
        return cluster
    if not environ.get(variable, "").strip():
        if named:
            raise UserError(f"{option}={variable}: environment variable {variable} is not set here; export it "
                            "before running ns (jobs get its value from this environment, never from a file)")  # fmt: skip
        return cluster
    return dataclasses.replace(cluster, env_vars=[*cluster.env_vars, variable])
