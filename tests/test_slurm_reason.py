"""How the Slurm executor reads one refresh round trip (sacct, squeue, sinfo's sick nodes) into job states and
reasons, on the text Slurm 22.05 printed on the local cluster when a node container was killed under a 2-node job
(tests/test_node_failure.py does that for real)."""

from __future__ import annotations

import pytest

from skills_cli.common.hostlist import expand_hostlist
from skills_cli.pipeline.executors.slurm import job_updates, refresh_command
from skills_cli.pipeline.store import JobState

# job 2143 ran on skills-n[1-2]; skills-n2 was killed; 2144 waited on it (afterok, --kill-on-invalid-dep=yes)
NODE_KILLED = """2143|NODE_FAIL|0:0|skills-n[1-2]
2144|CANCELLED|0:0|None assigned
--
2144|CANCELLED|DependencyNeverSatisfied|
2143|NODE_FAIL|NodeDown|skills-n[1-2]
--
skills-n2|down*|Not responding
"""


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("skills-n[1-2]", ["skills-n1", "skills-n2"]),
        ("vm,skills-n[1-2]", ["vm", "skills-n1", "skills-n2"]),
        ("skills-n[1-2],vm", ["skills-n1", "skills-n2", "vm"]),
        ("gpu[08-10,12]", ["gpu08", "gpu09", "gpu10", "gpu12"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("vm", ["vm"]),
        ("None assigned", []),
        ("", []),
    ],
)
def test_expand_hostlist_matches_scontrol_show_hostnames(text, names):
    assert expand_hostlist(text) == names


def test_a_job_ended_by_a_dead_node_names_the_node():
    updates = job_updates(NODE_KILLED)
    assert updates["2143"] == {
        "state": JobState.FAILED,
        "exit_code": 0,
        "reason": "node failure: skills-n2 (NODE_FAIL; down: Not responding)",
    }
    # the dependent Slurm cancelled keeps squeue's word; `explain` names the upstream on top of it
    assert updates["2144"] == {"state": JobState.CANCELLED, "exit_code": 0, "reason": "DependencyNeverSatisfied"}


def test_node_fail_after_the_node_came_back_names_the_allocation():
    accounted_only = "2143|NODE_FAIL|0:0|skills-n[1-2]\n--\n--\n"
    assert job_updates(accounted_only)["2143"]["reason"] == "node failure: one of skills-n[1-2] (NODE_FAIL)"


def test_node_fail_seen_by_squeue_before_accounting_names_the_node():
    queued_only = "--\n2143|NODE_FAIL|NodeDown|vm,skills-n1\n--\nskills-n1|down*|Not responding\n"
    assert job_updates(queued_only)["2143"] == {
        "state": JobState.FAILED,
        "reason": "node failure: skills-n1 (NODE_FAIL; down: Not responding)",
    }


def test_a_failed_job_holding_a_sick_node_blames_it_and_others_do_not():
    output = "7|FAILED|1:0|vm,skills-n1\n8|FAILED|2:0|vm\n9|COMPLETED|0:0|skills-n1\n--\n--\nskills-n1|drained|Kill task failed\n"
    updates = job_updates(output)
    assert updates["7"]["reason"] == "node failure: skills-n1 (FAILED; drained: Kill task failed)"
    assert updates["8"] == {"state": JobState.FAILED, "exit_code": 2}
    assert updates["9"] == {"state": JobState.SUCCEEDED, "exit_code": 0}


def test_pending_and_unknown_jobs():
    output = "--\n5|PENDING|Resources|\n6|SPECIAL_EXIT|None|\n--\n"
    assert job_updates(output) == {"5": {"state": JobState.PENDING, "reason": "Resources"}, "6": {"reason": ""}}


def test_the_refresh_is_one_command_that_asks_sinfo_only_after_a_failure():
    command = refresh_command(["11", "12"])
    assert command.count("-j 11,12") == 2
    assert command.index("sacct") < command.index("squeue") < command.index("*FAIL*)") < command.index("sinfo")
